//! Listing, showing and deleting tenants, as the platform admin.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::gym::{as_admin, check_schema, data_tables, require, validate_slug, Gym};
use crate::model::{Backend, Schema};
use crate::pg;
use crate::pg::error::pg_error;
use crate::pg::unnamed::typed;
use crate::sqlgen::tenants as sql;

#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// Tenant table → this gym's rows in it.
    pub rows: BTreeMap<String, i64>,
    /// On Citus: the node (`host:port`) that holds its shards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Tenant {
    /// From a row of [`sql::tenants_with_counts`].
    fn from_row(schema: &Schema, row: &tokio_postgres::Row) -> Tenant {
        let gym = Gym::from_row(row);
        Tenant {
            id: gym.id,
            slug: gym.slug,
            name: gym.name,
            rows: data_tables(schema)
                .iter()
                .enumerate()
                .map(|(i, (table, _))| {
                    (
                        table.to_string(),
                        row.get::<_, i64>(sql::count_alias(i).as_str()),
                    )
                })
                .collect(),
            node: None,
        }
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
    if schema.target == Backend::Citus {
        return super::citus::tenants(&tx, schema, None).await;
    }
    let sql = sql::tenants_with_counts(schema, &data_tables(schema), false);
    let rows = tx
        .query_typed(&sql, &[])
        .await
        .map_err(pg_error)
        .context("cannot list the tenants (is the database migrated? `tenantctl migrate`)")?;
    Ok(rows.iter().map(|r| Tenant::from_row(schema, r)).collect())
}

/// One tenant's counts, as the platform admin.
async fn counts(tx: &Transaction<'_>, schema: &Schema, gym: &Gym) -> Result<Tenant> {
    if schema.target == Backend::Citus {
        let found = super::citus::tenants(tx, schema, Some(gym.id)).await?;
        return found
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("tenant {} is gone", gym.slug));
    }
    let sql = sql::tenants_with_counts(schema, &data_tables(schema), true);
    let row = tx
        .query_typed_one(&sql, typed![gym.id])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot count tenant {}'s rows", gym.slug))?;
    Ok(Tenant::from_row(schema, &row))
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
    let record: serde_json::Value = tx
        .query_typed_one(&sql::tenant_record(schema), typed![gym.id])
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
    super::citus::before_delete(&tx, schema).await?;
    as_admin(&tx, schema).await?;
    let gym = Gym {
        id: confirmed.id,
        slug: confirmed.slug.clone(),
        name: confirmed.name.clone(),
    };
    let before = counts(&tx, schema, &gym)
        .await
        .map_err(|_| anyhow!("tenant {:?} was deleted meanwhile", gym.slug))?;
    let n = tx
        .execute_typed(&sql::delete_tenant(schema), typed![gym.id])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot delete tenant {}; nothing was deleted", gym.slug))?;
    if n != 1 {
        bail!("tenant {:?} was deleted meanwhile", gym.slug);
    }
    // Anything left means a table does not cascade from the tenant table: refuse to half-delete.
    as_admin(&tx, schema).await?;
    check_cascaded(&tx, schema, gym.id).await?;
    tx.commit()
        .await
        .map_err(pg_error)
        .context("cannot commit the delete")?;
    Ok(before)
}

/// No data table keeps a row of the deleted tenant `id`.
async fn check_cascaded(tx: &Transaction<'_>, schema: &Schema, id: Uuid) -> Result<()> {
    for (table, column) in data_tables(schema) {
        let left: i64 = tx
            .query_typed_one(&sql::count_rows(schema, table, Some(column)), typed![id])
            .await
            .map_err(pg_error)?
            .get(0);
        if left > 0 {
            bail!("{left} rows of {table} would survive the tenant; nothing was deleted\n  hint: its reference to the tenant table must be ON DELETE CASCADE");
        }
    }
    Ok(())
}
