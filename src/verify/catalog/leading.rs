//! world.index-leading: an index on a tenant table must be led by its tenant column. Comparison
//! operators of the common types (text, uuid, numbers, dates) are LEAKPROOF, so under row-level
//! security the planner may run them as an index condition *before* the policy, which is then a
//! Filter above the scan; `EXPLAIN ANALYZE` ("Rows Removed by Filter", open to every role) and
//! `pg_stat_xact_user_tables.idx_tup_fetch` count the other tenants' rows in any range of the
//! leading column, and a prefix search over that count reads their values. An index led by the
//! tenant column takes the policy's own `tenant column = (SELECT <context>())` as its first
//! index condition: another tenant's row is never fetched. Indexes policies/ declares are there
//! on purpose (the generator leads every declared index and unique with the tenant column; the
//! primary key on `id` and the tenant table's own keys are declared as they are).

use anyhow::Result;
use tokio_postgres::Client;

use super::query;
use super::relations::Rel;
use crate::model::{Schema, Table};
use crate::pg::unnamed::typed;
use crate::verify::{Finding, Tally};

/// Every index of a relation of $1, with its leading key column (NULL: an expression). An index
/// attached to a partitioned table's index is judged on that parent index.
const LEADING: &str = "
SELECT i.indrelid AS table, n.nspname::text AS schema, ic.relname::text AS name,
       a.attname::text AS leading, pg_catalog.pg_get_indexdef(i.indexrelid) AS def
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] AND i.indkey[0] <> 0
WHERE i.indrelid = ANY($1)
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)
ORDER BY 1, 3";

typed_row! {
    /// An index and its leading column (a row of [`LEADING`]).
    struct Leading {
        table: u32,
        schema: String,
        name: String,
        leading: Option<String>,
        def: String,
    }
}

/// The tenant column of `rel` and its declaration, if it has one; None for a declared global
/// table (no tenant column: every tenant reads all of it anyway).
fn tenancy_of<'a>(schema: &'a Schema, rel: &Rel) -> Option<(&'a str, Option<&'a Table>)> {
    let declared = rel.is_declared(schema);
    if declared && schema.globals.contains_key(&rel.name) {
        return None;
    }
    let table = declared
        .then(|| schema.tables.get(&rel.name))
        .flatten()
        .or_else(|| {
            declared
                .then(|| schema.partition_of(&rel.name))
                .flatten()
                .map(|(_, t)| t)
        });
    let tc = table.map_or(schema.tenancy.tenant_column.as_str(), |t| {
        t.tenant_column.as_str()
    });
    Some((tc, table))
}

/// world.index-leading over the relations `rels` (the declared tables and the reachable
/// relations carrying the tenant column).
pub(super) async fn check(
    client: &Client,
    schema: &Schema,
    rels: &[&Rel],
    tally: &mut Tally,
) -> Result<()> {
    let oids: Vec<u32> = rels.iter().map(|r| r.oid).collect();
    let what = "cannot read the indexes' leading columns";
    let live = query(client, LEADING, typed![&oids], what, Leading::from_row).await?;
    let mut findings = Vec::new();
    for ix in live {
        let Some(rel) = rels.iter().find(|r| r.oid == ix.table) else {
            continue;
        };
        let Some((tc, table)) = tenancy_of(schema, rel) else {
            continue;
        };
        let on_purpose = table.is_some_and(|t| {
            t.indexes.contains_key(&ix.name) || t.constraints.contains_key(&ix.name)
        });
        if on_purpose || ix.leading.as_deref() == Some(tc) {
            continue;
        }
        let obj = format!("index {}.{}", ix.schema, ix.name);
        let lead = ix.leading.as_deref().unwrap_or("an expression");
        findings.push(Finding::new(
            "world.index-leading",
            &obj,
            format!(
                "{obj} ({}) is led by {lead}, not {tc}: the planner may scan it with a LEAKPROOF comparison before the policy, and EXPLAIN ANALYZE's \"Rows Removed by Filter\" then counts other tenants' rows in any range of {lead}",
                ix.def
            ),
        ));
    }
    super::world::report(tally, "world.index-leading", findings);
    Ok(())
}
