//! Tenants on the Citus target: which node holds each, and a large tenant moved to shards of its
//! own (docs/citus.md).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::gym::{as_admin, data_tables, find, Gym};
use super::manage::Tenant;
use crate::model::{Backend, Schema};
use crate::pg;
use crate::pg::error::pg_error;
use crate::sqlgen::{citus as sql, rel};

/// A distributed tenant table to locate a tenant by (all are co-located): the first.
fn anchor(schema: &Schema) -> Result<String> {
    if schema.target != Backend::Citus {
        bail!("this needs the Citus target\n  hint: set [target] kind = \"citus\" in tenantctl.toml (docs/citus.md)");
    }
    match data_tables(schema).first() {
        Some((table, _)) => Ok(rel(&schema.tenancy.table_schema, table)),
        None => bail!("the policies declare no tenant table besides the tenant table"),
    }
}

/// The node (`host:port`) that holds `gym`'s shards.
pub async fn node(client: &impl GenericClient, schema: &Schema, gym: Uuid) -> Result<String> {
    let anchor = anchor(schema)?;
    let row = client
        .query_one(sql::TENANT_NODE_SQL, &[&anchor, &gym])
        .await
        .map_err(pg_error)
        .context("cannot find the tenant's node in the Citus metadata")?;
    Ok(row.get(0))
}

/// The tenants (or the one with key `only`), with their row counts and node, sorted by slug.
pub async fn tenants(
    tx: &impl GenericClient,
    schema: &Schema,
    only: Option<Uuid>,
) -> Result<Vec<Tenant>> {
    let context = "cannot list the tenants (is the database migrated? `tenantctl migrate`)";
    let rows = match only {
        Some(id) => tx.query(&sql::tenants(schema, true), &[&id]).await,
        None => tx.query(&sql::tenants(schema, false), &[]).await,
    }
    .map_err(pg_error)
    .context(context)?;
    let mut counts: BTreeMap<(Uuid, &str), i64> = BTreeMap::new();
    let tables = data_tables(schema);
    for (table, column) in &tables {
        let sql = sql::counts_by_tenant(schema, table, column);
        for row in tx
            .query(&sql, &[])
            .await
            .map_err(pg_error)
            .context(context)?
        {
            counts.insert((row.get("tenant"), table), row.get("n"));
        }
    }
    let mut list = Vec::new();
    for row in &rows {
        let gym = Gym::from_row(row);
        let rows = tables
            .iter()
            .map(|(t, _)| {
                (
                    t.to_string(),
                    counts.get(&(gym.id, *t)).copied().unwrap_or(0),
                )
            })
            .collect();
        let node = Some(node(tx, schema, gym.id).await?);
        list.push(Tenant {
            id: gym.id,
            slug: gym.slug,
            name: gym.name,
            rows,
            node,
        });
    }
    Ok(list)
}

/// Before deleting a gym on Citus (its rows go by ON DELETE CASCADE from the reference table):
/// the transaction's writes over one connection per node, as Citus requires.
pub async fn before_delete(tx: &impl GenericClient, schema: &Schema) -> Result<()> {
    if schema.target == Backend::Citus {
        tx.batch_execute(sql::SEQUENTIAL).await.map_err(pg_error)?;
    }
    Ok(())
}

/// What `tenant isolate` did.
#[derive(Debug, Clone, Serialize)]
pub struct Isolated {
    #[serde(flatten)]
    pub gym: Gym,
    /// The new shard of the first distributed tenant table.
    pub shard: i64,
    pub node: String,
}

/// Move `slug`'s rows of every distributed tenant table to shards of their own, on the node
/// that held them (Citus's rebalancer or `citus_move_shard_placement` can move them on).
/// Runs as the connecting role, which must own the tables.
pub async fn isolate(url: &pg::Target, schema: &Schema, slug: &str) -> Result<Isolated> {
    let anchor = anchor(schema)?;
    let mut client = pg::connect(url).await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    as_admin(&tx, schema).await?;
    let found = find(&tx, schema, slug).await?;
    tx.rollback().await.map_err(pg_error)?;
    let Some(gym) = found else {
        bail!("no tenant {slug:?}\n  hint: `tenantctl tenant list` shows the tenants");
    };
    let row = client
        .query_one(sql::ISOLATE_TENANT_SQL, &[&anchor, &gym.id])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot isolate tenant {slug}"))?;
    let node = node(&client, schema, gym.id).await?;
    Ok(Isolated {
        gym,
        shard: row.get(0),
        node,
    })
}
