//! Tenants on a live database: create (and seed as the tenant), list, show, delete, and run one
//! SQL statement as a tenant or as the platform admin.
//!
//! Every session here impersonates a role the way the application does: inside a transaction,
//! `set_config('role', ..., true)` and `set_config(<context setting>, ..., true)`, so nothing
//! outlives the transaction (safe behind a transaction pooler too).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use postgres_protocol::escape::escape_identifier;
use serde::Serialize;
use tokio_postgres::{GenericClient, SimpleQueryMessage, Transaction};
use uuid::Uuid;

use crate::model::Schema;
use crate::pg;
pub mod scenarios;
pub mod seed;

/// Columns the tenant table must have for the tenant commands (besides its key).
pub const SLUG_COLUMN: &str = "slug";
pub const NAME_COLUMN: &str = "name";

pub use crate::pg::error::pg_error;

/// Slugs: lowercase letters, digits and `-`, 3 to 63 characters, not starting or ending with
/// `-` (the same rule as the shipped `gyms_slug_check`, so a bad slug fails before the database).
pub fn validate_slug(slug: &str) -> Result<()> {
    let chars_ok = slug
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let len = slug.chars().count();
    if !chars_ok || !(3..=63).contains(&len) || slug.starts_with('-') || slug.ends_with('-') {
        bail!(
            "invalid slug {slug:?}: a slug is 3 to 63 lowercase letters, digits and '-', and does not start or end with '-'\n  \
             hint: e.g. `iron-temple` or `gym-42`"
        );
    }
    Ok(())
}

/// `"schema"."table"`.
pub fn qualified(schema: &Schema, table: &str) -> String {
    format!(
        "{}.{}",
        escape_identifier(&schema.tenancy.table_schema),
        escape_identifier(table)
    )
}

/// The tenant tables other than the tenant table itself, with their tenant column, sorted.
pub fn data_tables(schema: &Schema) -> Vec<(&str, &str)> {
    schema
        .tables
        .iter()
        .filter(|(name, _)| **name != schema.tenancy.tenant_table)
        .map(|(name, t)| (name.as_str(), t.tenant_column.as_str()))
        .collect()
}

/// Fail early, with a hint, when the tenant table lacks what these commands need.
pub fn check_schema(schema: &Schema) -> Result<()> {
    let t = &schema.tenancy;
    let Some(table) = schema.tables.get(&t.tenant_table) else {
        bail!("the policies declare no tenant table {}", t.tenant_table);
    };
    for col in [SLUG_COLUMN, NAME_COLUMN] {
        if table.column(col).is_none() {
            bail!(
                "the tenant table {} has no column {col}\n  hint: tenant commands identify gyms by `slug` and show their `name`; declare both in policies/",
                t.tenant_table
            );
        }
    }
    Ok(())
}

/// Act as `role` until the transaction ends.
pub async fn set_role(tx: &Transaction<'_>, role: &str) -> Result<()> {
    pg::tx::set_role(tx, role)
        .await
        .map_err(pg_error)
        .with_context(|| {
            format!("cannot act as role {role} (the connecting user must be a member of it)")
        })
}

/// Act as the app role in `gym`'s context until the transaction ends, as the application does.
pub async fn as_tenant(tx: &Transaction<'_>, schema: &Schema, gym: Uuid) -> Result<()> {
    let t = &schema.tenancy;
    pg::tx::set_tenant(tx, &t.app_role, &t.context_setting, &gym.to_string())
        .await
        .map_err(pg_error)
        .with_context(|| {
            format!(
                "cannot act as role {} in the tenant context (the connecting user must be a member of it)",
                t.app_role
            )
        })
}

pub async fn as_admin(tx: &Transaction<'_>, schema: &Schema) -> Result<()> {
    set_role(tx, &schema.tenancy.admin_role).await
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gym {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

/// The gym with this slug, as whoever the session acts as.
pub async fn find(client: &impl GenericClient, schema: &Schema, slug: &str) -> Result<Option<Gym>> {
    let t = &schema.tenancy;
    let sql = format!(
        "SELECT {key}, {slug}, {name} FROM {table} WHERE {slug} = $1",
        key = escape_identifier(&t.tenant_key),
        slug = escape_identifier(SLUG_COLUMN),
        name = escape_identifier(NAME_COLUMN),
        table = qualified(schema, &t.tenant_table),
    );
    let row = client
        .query_opt(&sql, &[&slug])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot look up tenant {slug}"))?;
    Ok(row.map(|r| Gym {
        id: r.get(0),
        slug: r.get(1),
        name: r.get(2),
    }))
}

/// Like `find`, but an unknown slug is an error that says how to list the tenants.
pub async fn require(client: &impl GenericClient, schema: &Schema, slug: &str) -> Result<Gym> {
    validate_slug(slug)?;
    find(client, schema, slug).await?.ok_or_else(|| {
        anyhow!("no tenant with slug {slug:?}\n  hint: `tenantctl tenant list` shows the tenants")
    })
}

// ---------------------------------------------------------------------------------------------
// create

#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub slug: String,
    pub name: String,
    pub counts: seed::Counts,
    pub seed: u64,
    pub if_not_exists: bool,
}

#[derive(Debug)]
pub enum Created {
    New {
        gym: Gym,
        report: seed::Report,
    },
    /// `--if-not-exists` and the slug was taken: nothing was written.
    Existing(Gym),
}

/// The application_name of a create's session, so an operator (or a test) can find it.
pub fn create_application_name(slug: &str) -> String {
    format!("tenantctl tenant create {slug}")
}

/// Insert the gym as the platform admin, then seed it as the tenant, in ONE transaction: a
/// create that fails at any point (bad data, a killed backend) leaves no gym behind.
pub async fn create(
    url: &pg::Target,
    schema: &Schema,
    spec: &CreateSpec,
    bar: &ProgressBar,
) -> Result<Created> {
    validate_slug(&spec.slug)?;
    check_schema(schema)?;
    if spec.name.trim().is_empty() {
        bail!("the gym's name cannot be empty");
    }
    let mut client = pg::connect(url).await?;
    client
        .execute(
            "SELECT set_config('application_name', $1, false)",
            &[&create_application_name(&spec.slug)],
        )
        .await
        .map_err(pg_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    as_admin(&tx, schema).await?;
    if let Some(gym) = find(&tx, schema, &spec.slug).await? {
        if spec.if_not_exists {
            return Ok(Created::Existing(gym));
        }
        bail!(exists_message(&gym));
    }
    let t = &schema.tenancy;
    let sql = format!(
        "INSERT INTO {} ({}, {}) VALUES ($1, $2) RETURNING {}",
        qualified(schema, &t.tenant_table),
        escape_identifier(SLUG_COLUMN),
        escape_identifier(NAME_COLUMN),
        escape_identifier(&t.tenant_key),
    );
    let id: Uuid = match tx.query_one(&sql, &[&spec.slug, &spec.name]).await {
        Ok(row) => row.get(0),
        // Another create took the slug between our look-up and the insert.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            bail!(
                "tenant {:?} already exists\n  hint: pick another slug, or pass --if-not-exists",
                spec.slug
            )
        }
        Err(e) => return Err(pg_error(e).context(format!("cannot create tenant {}", spec.slug))),
    };
    as_tenant(&tx, schema, id).await?;
    let report = seed::seed(&tx, schema, id, spec.counts, spec.seed, bar)
        .await
        .with_context(|| format!("seeding tenant {} failed; nothing was created", spec.slug))?;
    tx.commit()
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot commit tenant {}; nothing was created", spec.slug))?;
    Ok(Created::New {
        gym: Gym {
            id,
            slug: spec.slug.clone(),
            name: spec.name.clone(),
        },
        report,
    })
}

fn exists_message(gym: &Gym) -> String {
    format!(
        "tenant {:?} already exists (id {})\n  hint: pick another slug, pass --if-not-exists to accept the existing one, or `tenantctl tenant delete {}` first",
        gym.slug, gym.id, gym.slug
    )
}

// ---------------------------------------------------------------------------------------------
// list, show, delete

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// Tenant table → this gym's rows in it.
    pub rows: BTreeMap<String, i64>,
}

/// `SELECT key, slug, name, (SELECT count(*) ...) ... FROM gyms [WHERE ...]`.
fn tenants_sql(schema: &Schema, filter: &str) -> String {
    let t = &schema.tenancy;
    let key = escape_identifier(&t.tenant_key);
    let mut cols = vec![
        format!("g.{key}"),
        format!("g.{}", escape_identifier(SLUG_COLUMN)),
        format!("g.{}", escape_identifier(NAME_COLUMN)),
    ];
    for (table, column) in data_tables(schema) {
        cols.push(format!(
            "(SELECT count(*) FROM {} x WHERE x.{} = g.{key})",
            qualified(schema, table),
            escape_identifier(column)
        ));
    }
    format!(
        "SELECT {} FROM {} g {filter} ORDER BY g.{}",
        cols.join(", "),
        qualified(schema, &t.tenant_table),
        escape_identifier(SLUG_COLUMN)
    )
}

fn tenant_from_row(schema: &Schema, row: &tokio_postgres::Row) -> Tenant {
    Tenant {
        id: row.get(0),
        slug: row.get(1),
        name: row.get(2),
        rows: data_tables(schema)
            .iter()
            .enumerate()
            .map(|(i, (table, _))| (table.to_string(), row.get::<_, i64>(3 + i)))
            .collect(),
    }
}

/// A read-only transaction acting as the platform admin.
async fn admin_read<'c>(
    client: &'c mut tokio_postgres::Client,
    schema: &Schema,
) -> Result<Transaction<'c>> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)?;
    as_admin(&tx, schema).await?;
    Ok(tx)
}

/// Every tenant with its row counts, sorted by slug (as the platform admin).
pub async fn list(url: &pg::Target, schema: &Schema) -> Result<Vec<Tenant>> {
    check_schema(schema)?;
    let mut client = pg::connect(url).await?;
    let tx = admin_read(&mut client, schema).await?;
    let rows = tx
        .query(&tenants_sql(schema, ""), &[])
        .await
        .map_err(pg_error)
        .context("cannot list the tenants (is the database migrated? `tenantctl migrate`)")?;
    Ok(rows.iter().map(|r| tenant_from_row(schema, r)).collect())
}

/// One tenant's counts, as the platform admin.
async fn counts(tx: &Transaction<'_>, schema: &Schema, gym: &Gym) -> Result<Tenant> {
    let sql = tenants_sql(
        schema,
        &format!(
            "WHERE g.{} = $1",
            escape_identifier(&schema.tenancy.tenant_key)
        ),
    );
    let row = tx
        .query_one(&sql, &[&gym.id])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot count tenant {}'s rows", gym.slug))?;
    Ok(tenant_from_row(schema, &row))
}

/// A tenant: its counts and its whole row in the tenant table (as JSON, every column).
pub async fn show(
    url: &pg::Target,
    schema: &Schema,
    slug: &str,
) -> Result<(Tenant, serde_json::Value)> {
    check_schema(schema)?;
    validate_slug(slug)?;
    let mut client = pg::connect(url).await?;
    let tx = admin_read(&mut client, schema).await?;
    let gym = require(&tx, schema, slug).await?;
    let tenant = counts(&tx, schema, &gym).await?;
    let sql = format!(
        "SELECT to_jsonb(g) FROM {} g WHERE g.{} = $1",
        qualified(schema, &schema.tenancy.tenant_table),
        escape_identifier(&schema.tenancy.tenant_key)
    );
    let record: serde_json::Value = tx
        .query_one(&sql, &[&gym.id])
        .await
        .map_err(pg_error)?
        .get(0);
    Ok((tenant, record))
}

/// What `delete` would remove, for the confirmation prompt.
pub async fn preview_delete(url: &pg::Target, schema: &Schema, slug: &str) -> Result<Tenant> {
    Ok(show(url, schema, slug).await?.0)
}

/// Delete the gym `id` (and, through ON DELETE CASCADE, every row of it) in one transaction, as
/// the platform admin. Returns what was deleted. The id, not the slug, is what was confirmed.
pub async fn delete(url: &pg::Target, schema: &Schema, confirmed: &Tenant) -> Result<Tenant> {
    check_schema(schema)?;
    let mut client = pg::connect(url).await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    as_admin(&tx, schema).await?;
    let gym = Gym {
        id: confirmed.id,
        slug: confirmed.slug.clone(),
        name: confirmed.name.clone(),
    };
    let before = counts(&tx, schema, &gym)
        .await
        .map_err(|_| anyhow!("tenant {:?} was deleted meanwhile", gym.slug))?;
    let sql = format!(
        "DELETE FROM {} WHERE {} = $1",
        qualified(schema, &schema.tenancy.tenant_table),
        escape_identifier(&schema.tenancy.tenant_key)
    );
    let n = tx
        .execute(&sql, &[&gym.id])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot delete tenant {}; nothing was deleted", gym.slug))?;
    if n != 1 {
        bail!("tenant {:?} was deleted meanwhile", gym.slug);
    }
    // Anything left means a table does not cascade from the tenant table: refuse to half-delete.
    as_admin(&tx, schema).await?;
    for (table, column) in data_tables(schema) {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {} = $1",
            qualified(schema, table),
            escape_identifier(column)
        );
        let left: i64 = tx
            .query_one(&sql, &[&gym.id])
            .await
            .map_err(pg_error)?
            .get(0);
        if left > 0 {
            bail!("{left} rows of {table} would survive the tenant; nothing was deleted\n  hint: its reference to the tenant table must be ON DELETE CASCADE");
        }
    }
    tx.commit()
        .await
        .map_err(pg_error)
        .context("cannot commit the delete")?;
    Ok(before)
}

// ---------------------------------------------------------------------------------------------
// exec

#[derive(Debug, Clone)]
pub enum ExecAs {
    Tenant(String),
    Admin,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    /// The role the statement ran as.
    pub role: String,
    pub tenant: Option<Gym>,
    pub columns: Vec<String>,
    /// Every value in its text form; NULL is null.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows returned or affected, as the server reported.
    pub row_count: u64,
    /// Whether the transaction was committed (only with --write).
    pub committed: bool,
}

/// Run ONE statement as the tenant (app role, the tenant's context) or as the platform admin,
/// inside a transaction. Without `write` the transaction is READ ONLY and always rolled back.
///
/// Not a sandbox against the operator, who holds the URL (a function of theirs that switches the
/// context is not seen); but a statement that calls set_config or names the context setting is
/// refused before it runs, and one that leaves the role or the context (SET ROLE, RESET ROLE,
/// COMMIT) is detected after it, so for ordinary statements what is shown is what the tenant sees.
pub async fn exec(
    url: &pg::Target,
    schema: &Schema,
    who: &ExecAs,
    sql: &str,
    write: bool,
) -> Result<ExecResult> {
    check_schema(schema)?;
    let mut client = pg::connect(url).await?;
    let tx = client
        .build_transaction()
        .read_only(!write)
        .start()
        .await
        .map_err(pg_error)?;
    as_admin(&tx, schema).await?;
    let (role, tenant) = match who {
        ExecAs::Tenant(slug) => {
            let gym = require(&tx, schema, slug).await?;
            as_tenant(&tx, schema, gym.id).await?;
            (schema.tenancy.app_role.clone(), Some(gym))
        }
        ExecAs::Admin => (schema.tenancy.admin_role.clone(), None),
    };
    let context = tenant
        .as_ref()
        .map(|g| g.id.to_string())
        .unwrap_or_default();

    // A statement that calls set_config (or names the context setting) could switch the tenant
    // mid-statement and switch it back, so its rows would be shown under the wrong gym. Refuse
    // it outright; the check after the statement cannot see a context that was restored.
    let lower = sql.to_ascii_lowercase();
    let setting = schema.tenancy.context_setting.to_ascii_lowercase();
    if lower.contains("set_config") || lower.contains(&setting) {
        bail!(
            "exec refuses statements that call set_config or name {setting}: they could change the tenant mid-statement\n  \
             hint: exec sets the context itself; pick the tenant with --tenant"
        );
    }
    // The extended protocol refuses several statements in one string: one statement, one role.
    tx.prepare(sql).await.map_err(|e| {
        let multi = e
            .as_db_error()
            .is_some_and(|d| d.message().contains("multiple commands"));
        let err = pg_error(e);
        if multi {
            err.context("exec runs exactly one SQL statement")
        } else {
            err.context("the statement was refused")
        }
    })?;
    // The simple protocol returns every value as text, whatever its type.
    let messages = tx.simple_query(sql).await.map_err(|e| {
        let read_only =
            e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION);
        let err = pg_error(e);
        if read_only {
            err.context("the statement writes, and exec is read-only unless --write is given")
        } else {
            err.context("the statement failed; nothing was changed")
        }
    })?;
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    let mut row_count = 0;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if columns.is_empty() {
                    columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(n) => row_count = n,
            _ => {}
        }
    }
    let check = tx
        .query_one(
            "SELECT current_user::text, coalesce(current_setting($1, true), '')",
            &[&schema.tenancy.context_setting],
        )
        .await
        .map_err(pg_error)?;
    let (now_role, now_context): (String, String) = (check.get(0), check.get(1));
    if now_role != role || (tenant.is_some() && now_context != context) {
        // Dropping `tx` rolls back whatever is still open.
        bail!(
            "the statement left {role}{} (now {now_role}); refused and rolled back\n  hint: exec shows what the tenant sees; do not change the role, the context or the transaction in it",
            tenant.as_ref().map(|g| format!(" in {}'s context", g.slug)).unwrap_or_default()
        );
    }
    if write {
        tx.commit()
            .await
            .map_err(pg_error)
            .context("cannot commit")?;
    } else {
        tx.rollback().await.map_err(pg_error)?;
    }
    Ok(ExecResult {
        role,
        tenant,
        columns,
        rows,
        row_count,
        committed: write,
    })
}

#[cfg(test)]
mod tests {
    use super::validate_slug;

    #[test]
    fn slugs() {
        for ok in ["abc", "iron-temple", "gym-42", "a1b", &"a".repeat(63)] {
            assert!(validate_slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a_b",
            "ab c",
            "gym;drop",
            "ünï",
            &"a".repeat(64),
            "",
        ] {
            assert!(validate_slug(bad).is_err(), "{bad}");
        }
    }
}
