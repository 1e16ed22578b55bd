//! What bench creates and always removes: the scratch database (migrated and seeded set-based as
//! the admin role), and the naive policy's scratch schema of table copies.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::model::Schema;
use crate::pg::error::pg_error;
use crate::settings::Project;
use crate::sqlgen::bench as sql;
use crate::sqlgen::tenants::{self as tsql, NAME_COLUMN, SLUG_COLUMN};
use crate::tenants::{data_tables, seed};
use crate::{migrate, output, pg};

/// How much the scratch database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub gyms: u64,
    pub coaches: u64,
    pub members: u64,
}

/// A scratch object's name: unique to this process, so that two runs never share one.
pub fn scratch_name(prefix: &str) -> String {
    format!("{prefix}_{}", std::process::id())
}

/// Create the scratch database on the server of `server` and apply the project's migrations.
pub async fn create_database(
    project: &Project,
    server: &pg::Target,
    name: &str,
) -> Result<pg::Target> {
    let admin = pg::connect(server).await?;
    admin
        .batch_execute(&tsql::create_database(name))
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot create the scratch database {name}\n  hint: the connecting role needs CREATEDB, or run bench on an existing database without --scratch"))?;
    let url = server.with_dbname(name)?;
    let mut client = pg::connect(&url).await?;
    let hidden = indicatif::ProgressBar::hidden();
    migrate::apply_pending(&mut client, project, &hidden, false).await?;
    Ok(url)
}

pub async fn drop_database(server: &pg::Target, name: &str) -> Result<()> {
    let admin = pg::connect(server).await?;
    admin
        .batch_execute(&tsql::drop_database(name))
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot drop the scratch database {name}"))
}

/// Fill the scratch database: gyms, coaches and members, set-based with `generate_series` in one
/// transaction as the admin role, then vacuumed until the visibility map is set. Returns the time
/// it took (load and vacuum).
pub async fn seed(client: &mut Client, schema: &Schema, size: Size) -> Result<Duration> {
    check_seedable(schema)?;
    let started = Instant::now();
    let bar = output::progress(3, "seeding");
    let to_i32 = |n: u64| i32::try_from(n).context("too many rows to seed");
    let (gyms, coaches, members) = (
        to_i32(size.gyms)?,
        to_i32(size.coaches)?,
        to_i32(size.members)?,
    );
    let tx = client.transaction().await.map_err(pg_error)?;
    pg::tx::set_role(&tx, &schema.tenancy.admin_role)
        .await
        .map_err(pg_error)?;
    let steps = [
        (
            sql::seed_tenants(schema, SLUG_COLUMN, NAME_COLUMN),
            gyms,
            "gyms",
        ),
        (sql::seed_coaches(schema, seed::COACHES), coaches, "coaches"),
        (sql::seed_members(schema, seed::MEMBERS), members, "members"),
    ];
    for (statement, rows, what) in &steps {
        bar.set_message(*what);
        let params: Vec<&(dyn postgres_types::ToSql + Sync)> = if statement.contains("$2") {
            vec![rows, &coaches]
        } else {
            vec![rows]
        };
        tx.execute(statement.as_str(), &params)
            .await
            .map_err(pg_error)
            .with_context(|| format!("cannot seed the scratch database's {what}"))?;
        bar.inc(1);
    }
    tx.commit().await.map_err(pg_error)?;
    bar.finish_and_clear();
    let tables: Vec<&str> = schema.tables.keys().map(String::as_str).collect();
    settle(client, &schema.tenancy.table_schema, &tables).await?;
    Ok(started.elapsed())
}

/// The scratch seed writes the shipped tables' columns; other projects bench their own data.
fn check_seedable(schema: &Schema) -> Result<()> {
    let needs: [(&str, &[&str]); 2] = [
        (
            seed::COACHES,
            &["id", "full_name", "email", "phone", "hired_on"],
        ),
        (
            seed::MEMBERS,
            &[
                "full_name",
                "email",
                "phone",
                "date_of_birth",
                "joined_on",
                "status",
                "home_coach_id",
            ],
        ),
    ];
    for (table, columns) in needs {
        let Some(t) = schema.tables.get(table) else {
            bail!("bench seeds a scratch database with gyms, coaches and members, and the policies declare no table {table}\n  hint: run bench on a database that holds your data: --database-url URL");
        };
        if let Some(c) = columns.iter().find(|c| t.column(c).is_none()) {
            bail!("bench's scratch seed writes {table}.{c}, which the policies do not declare\n  hint: run bench on a database that holds your data: --database-url URL");
        }
    }
    Ok(())
}

/// VACUUM (ANALYZE) until every page of the tables is all-visible (at most 10 passes): the steady
/// state autovacuum keeps a live database in, where a tenant's count can be an index-only scan.
pub async fn settle(client: &Client, schema_name: &str, tables: &[&str]) -> Result<()> {
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    for _ in 0..10 {
        client
            .batch_execute(&sql::vacuum(schema_name, tables))
            .await
            .map_err(pg_error)
            .context("cannot VACUUM the benchmark's tables")?;
        let left: i64 = client
            .query_one(sql::NOT_ALL_VISIBLE, &[&schema_name, &names])
            .await
            .map_err(pg_error)?
            .get(0);
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Create the naive policy's scratch schema: copies of every tenant table but the tenant table
/// itself, filled as the admin role, with the naive policy and context function.
pub async fn create_naive(client: &mut Client, schema: &Schema, scratch: &str) -> Result<()> {
    let tables = data_tables(schema);
    let mut ddl = vec![sql::create_scratch_schema(scratch, schema)];
    ddl.extend(
        tables
            .iter()
            .map(|(t, _)| sql::copy_table(scratch, schema, t)),
    );
    ddl.push(sql::naive_context_function(scratch, schema));
    client
        .batch_execute(&ddl.join(";\n"))
        .await
        .map_err(pg_error)
        .context("cannot create the naive policy's scratch schema")?;
    let tx = client.transaction().await.map_err(pg_error)?;
    pg::tx::set_role(&tx, &schema.tenancy.admin_role)
        .await
        .map_err(pg_error)?;
    for (t, _) in &tables {
        tx.batch_execute(&sql::copy_rows(scratch, schema, t))
            .await
            .map_err(pg_error)
            .with_context(|| format!("cannot copy {t} into the scratch schema"))?;
    }
    tx.commit().await.map_err(pg_error)?;
    let policies: Vec<String> = tables
        .iter()
        .map(|(t, tc)| sql::naive_policy(scratch, schema, t, tc))
        .collect();
    client
        .batch_execute(&policies.join(";\n"))
        .await
        .map_err(pg_error)
        .context("cannot create the naive policies")?;
    let names: Vec<&str> = tables.iter().map(|(t, _)| *t).collect();
    settle(client, scratch, &names).await
}

pub async fn drop_naive(client: &Client, scratch: &str) -> Result<()> {
    client
        .batch_execute(&sql::drop_scratch_schema(scratch))
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot drop the scratch schema {scratch}"))
}
