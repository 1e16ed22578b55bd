//! Static checks: read the catalog (no data) and compare it with the declaration and with the
//! known ways row-level security breaks. Catalog queries are static strings with bind parameters;
//! each query's rows are read by column name into a struct in the file of the checks that use it.

mod closure;
mod columns;
mod config;
mod custom;
mod declared;
mod functions;
mod grants;
mod helper;
mod leading;
mod normalise;
mod platform;
mod policies;
mod pristine;
mod privileges;
mod relations;
mod roles;
mod semantics;
mod shared_login;
mod siblings;
mod tables;
mod triggers;
mod world;

use std::collections::{BTreeSet, HashSet};

use anyhow::Result;
use tokio_postgres::Client;

use super::row::{col, query, query_opt};
use super::{Finding, Reach, Tally};
use crate::model::Schema;
use relations::Rel;

/// `target`: where `client` is connected (verify reads the cluster's other databases with it).
pub async fn check(
    client: &Client,
    target: &crate::pg::Target,
    schema: &Schema,
    reach: &Reach,
) -> Result<Tally> {
    let mut tally = Tally::default();
    roles::check(client, schema, &mut tally).await?;
    let rels = relations::list(client, schema).await?;
    let tenant = TenantData::of(schema, &rels);
    functions::check(client, schema, &tenant.owners(&rels), &mut tally).await?;
    triggers::rules(client, &rels, &tenant, &mut tally).await?;
    let norm = normalise::normalise(client, schema).await?;
    tables::check_declared(client, schema, &rels, &norm, &mut tally).await?;
    declared::check(client, schema, &rels, &norm, &mut tally).await?;
    relations::check_reachable(client, schema, &rels, &tenant, &mut tally).await?;
    world::check(client, schema, (&rels, &tenant), &mut tally).await?;
    helper::check(client, schema, &mut tally).await?;
    reach_checks((client, target), schema, reach, &rels, &tenant, &mut tally).await?;
    Ok(tally)
}

/// The reachability closure and what its roles hold, the pristine comparison outside the
/// declared world, and the settings that change semantics.
async fn reach_checks(
    (client, target): (&Client, &crate::pg::Target),
    schema: &Schema,
    reach: &Reach,
    rels: &[Rel],
    tenant: &TenantData,
    tally: &mut Tally,
) -> Result<()> {
    let platform = platform::Platform::of(client, reach).await?;
    let closure = closure::Closure::read(client, schema, reach).await?;
    closure::check(client, schema, &closure, tally).await?;
    config::default_context(client, schema, &closure.grantees(), tally).await?;
    let declared: Vec<u32> = rels
        .iter()
        .filter(|r| r.is_declared(schema))
        .map(|r| r.oid)
        .collect();
    privileges::check(client, schema, &declared, &closure, tally).await?;
    siblings::check(client, target, &closure, tally).await?;
    pristine::check(client, &closure, &platform, tally).await?;
    semantics::check(client, schema, &closure, &platform, &tenant.list, tally).await?;
    custom::check(client, schema, tally).await?;
    shared_login::check(client, &closure, tally).await
}

/// Which relations hold tenant data: every declared table, and every other table (or foreign
/// table) that carries the tenant column.
struct TenantData {
    oids: HashSet<u32>,
    /// The same, as a query parameter.
    list: Vec<u32>,
}

impl TenantData {
    fn of(schema: &Schema, rels: &[Rel]) -> TenantData {
        let oids = rels
            .iter()
            .filter(|r| r.kind.holds_rows() && (r.is_declared(schema) || r.has_tc))
            .map(|r| r.oid)
            .collect::<HashSet<u32>>();
        let list = oids.iter().copied().collect();
        TenantData { oids, list }
    }

    /// The roles that own a tenant table.
    fn owners<'a>(&self, rels: &'a [Rel]) -> BTreeSet<&'a str> {
        rels.iter()
            .filter(|r| self.oids.contains(&r.oid))
            .map(|r| r.owner.as_str())
            .collect()
    }
}

/// `e`, or `(none)`: a policy expression in a finding.
fn show(e: &Option<String>) -> String {
    e.clone().unwrap_or_else(|| "(none)".into())
}

/// drift.owner for one object: it must be owned by the owner role.
fn owned_by(obj: &str, actual: &str, fix: String, owner: &str, tally: &mut Tally) {
    tally.record(
        "drift.owner",
        (actual != owner).then(|| {
            Finding::new(
                "drift.owner",
                obj,
                format!("{obj} is owned by {actual}, not {owner}"),
            )
            .hint(fix)
        }),
    );
}
