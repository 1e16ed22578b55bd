//! verify on Citus (`[target] kind = "citus"`, docs/citus.md): static checks over the
//! coordinator's metadata (every tenant table distributed by the tenant column and co-located,
//! the tenant table a reference table; every shard placement with row-level security forced and
//! the coordinator's policies) and probes through the coordinator as the application does it
//! there (the app role with `SET LOCAL` context, each probe in a transaction rolled back).
//!
//! The plain target's static checks run against the model as Citus holds it (see [`catalog`]);
//! its probes switch roles inside one transaction, which Citus refuses once a placement was
//! written by another role, so they do not run here.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;
use uuid::Uuid;

use super::tx::{rolled_back, Scope};
use super::{ProbeInfo, ProbeSummary, Report, Settings, Tally};
use crate::model::Schema;
use crate::pg;
use crate::pg::tx::{set_role, set_tenant_citus};
use crate::sqlgen::citus as sql;

/// Each declared table's Citus type, distribution column and co-location group ($1 the tables'
/// schema, $2 their names); NULLs for a table Citus does not know (a local table).
const DISTRIBUTION_SQL: &str = "SELECT t.name, ct.citus_table_type::text AS kind, \
     ct.distribution_column::text AS column, ct.colocation_id::int4 AS colocation \
     FROM unnest($2::text[]) AS t(name) \
     LEFT JOIN citus_tables ct ON ct.table_name = pg_catalog.to_regclass(\
     pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident(t.name)) ORDER BY t.name";

/// Per shard placement of table $1: RLS enabled and forced, and the number of policies.
const PLACEMENTS_SQL: &str = "SELECT nodename || ':' || nodeport AS node, shardid, success, result \
     FROM run_command_on_placements($1::text::regclass, $2::text) ORDER BY shardid, nodename, nodeport";
const PLACEMENT_COMMAND: &str = "SELECT (SELECT relrowsecurity AND relforcerowsecurity \
     FROM pg_catalog.pg_class WHERE oid = '%1$s'::regclass)::text || ':' || \
     (SELECT count(*) FROM pg_catalog.pg_policy WHERE polrelid = '%1$s'::regclass)";
const COORDINATOR_POLICIES_SQL: &str =
    "SELECT count(*)::int8 FROM pg_catalog.pg_policy WHERE polrelid = $1::text::regclass";

/// The whole gate on Citus.
pub(super) async fn run(url: &pg::Target, schema: &Schema, settings: &Settings) -> Result<Report> {
    if settings.pooled.is_some() || settings.app.is_some() {
        bail!("the pooler leak probe (--pooled-url) and the probes as the application's login (--app-url) do not run on the Citus target yet\n  hint: drop them for this project (docs/citus.md)");
    }
    let started = Instant::now();
    let client = pg::connect(url).await?;
    let mut tally = distribution(&client, schema).await?;
    tally.merge(catalog(&client, url, schema, &settings.reach).await?);
    tally.merge(placements(&client, schema).await?);
    let gyms = if settings.static_only {
        Vec::new()
    } else {
        tenants(&client, schema).await?
    };
    for gym in &gyms {
        tally.merge(probe(&client, schema, *gym, !settings.read_only).await?);
    }
    if !settings.static_only {
        tally.merge(no_context(&client, schema).await?);
    }
    tally.allow(&schema.allow, !settings.static_only);
    let probes = ProbeInfo {
        acted_as: Some(schema.tenancy.app_role.clone()),
        read_only: settings.read_only,
        notes: vec!["Citus target: the Citus probes (docs/citus.md)".into()],
        ..Default::default()
    };
    Ok(Report {
        database: url.to_string(),
        tally,
        tenants_probed: gyms.len() as u64,
        synthetic_tenants: false,
        elapsed: started.elapsed(),
        probes,
    })
}

/// The plain target's static checks against the model as Citus holds it (keys led by the tenant
/// column, LOGIN roles, policies without the subquery), without the findings that Citus makes
/// moot: the immutability trigger on distributed tables (Citus refuses a change of the
/// distribution column itself) and the per-row context call (Citus refuses the subquery that
/// avoids it). The extension's own views in `public` are the extension's, which verify exempts.
async fn catalog(
    client: &Client,
    url: &pg::Target,
    schema: &Schema,
    reach: &super::Reach,
) -> Result<Tally> {
    let mut tally = super::catalog::check(client, url, &sql::adapt(schema), reach).await?;
    let t = &schema.tenancy;
    let tenant_table_trigger = format!("on {}.{}", t.table_schema, t.tenant_table);
    tally.findings.retain(|f| match f.id {
        "drift.trigger" => f.object.ends_with(&tenant_table_trigger),
        "policy.context-per-row" => false,
        _ => true,
    });
    Ok(tally)
}

/// `tenant create`'s probes of one tenant on Citus.
pub async fn probe_single_tenant(
    url: &pg::Target,
    schema: &Schema,
    gym: Uuid,
) -> Result<ProbeSummary> {
    let client = pg::connect(url).await?;
    let mut tally = probe(&client, schema, gym, true).await?;
    tally.merge(no_context(&client, schema).await?);
    Ok(ProbeSummary {
        checks: tally.checks(),
        failures: tally.findings,
    })
}

/// The tables that are not the tenant table, with their tenant column.
fn data_tables(schema: &Schema) -> impl Iterator<Item = (&String, &String)> {
    let t = &schema.tenancy;
    schema
        .tables
        .iter()
        .filter(move |(n, _)| **n != t.tenant_table)
        .map(|(n, table)| (n, &table.tenant_column))
}

fn object(schema: &Schema, table: &str) -> String {
    format!("table {}.{table}", schema.tenancy.table_schema)
}

async fn distribution(client: &Client, schema: &Schema) -> Result<Tally> {
    let t = &schema.tenancy;
    let names: Vec<&String> = schema.tables.keys().collect();
    let rows = client
        .query(DISTRIBUTION_SQL, &[&t.table_schema, &names])
        .await
        .context("cannot read citus_tables (is the citus extension created?)")?;
    let mut tally = Tally::default();
    let mut groups = std::collections::BTreeSet::new();
    for row in &rows {
        let name: String = row.get("name");
        let kind: Option<String> = row.get("kind");
        let column: Option<String> = row.get("column");
        let table = &schema.tables[&name];
        let obj = object(schema, &name);
        let local = kind.is_none();
        tally.fail_if("citus.local-table", local, &obj, || {
            format!("{name} is a local table on the coordinator: its rows are neither distributed nor on the workers")
        });
        if local {
            continue;
        }
        let is_tenant_table = name == t.tenant_table;
        let wrong = if is_tenant_table {
            kind.as_deref() != Some("reference") && column.as_deref() != Some(t.tenant_key.as_str())
        } else {
            kind.as_deref() != Some("distributed")
                || column.as_deref() != Some(table.tenant_column.as_str())
        };
        tally.fail_if("citus.distribution-column", wrong, &obj, || {
            format!(
                "{name} is a {} table distributed by {}, not by {}",
                kind.as_deref().unwrap_or("?"),
                column.as_deref().unwrap_or("nothing"),
                table.tenant_column
            )
        });
        if !is_tenant_table {
            groups.insert(row.get::<_, Option<i32>>("colocation"));
        }
    }
    tally.fail_if("citus.colocation", groups.len() > 1, "tenant tables", || {
        format!("the distributed tenant tables are in {} co-location groups, not one: a tenant's rows of two tables may sit on different nodes", groups.len())
    });
    Ok(tally)
}

async fn placements(client: &Client, schema: &Schema) -> Result<Tally> {
    let mut tally = Tally::default();
    for name in schema.tables.keys() {
        let r = format!("{}.{name}", schema.tenancy.table_schema);
        let qualified = crate::sqlgen::rel(&schema.tenancy.table_schema, name);
        let want: i64 = client
            .query_one(COORDINATOR_POLICIES_SQL, &[&qualified])
            .await
            .with_context(|| format!("cannot read the policies of {r}"))?
            .get(0);
        // A local table has no placements: citus.local-table says so.
        let rows = client
            .query(PLACEMENTS_SQL, &[&qualified, &PLACEMENT_COMMAND])
            .await
            .with_context(|| format!("cannot read the shard placements of {r}"))?;
        for row in rows {
            let (node, shard): (String, i64) = (row.get("node"), row.get("shardid"));
            let result: String = row.get("result");
            let ok = row.get::<_, bool>("success") && result == format!("true:{want}");
            tally.fail_if("citus.shard-policy", !ok, format!("table {r}"), || {
                format!("shard {shard} on {node} does not carry the coordinator's row-level security (forced RLS and {want} policies): {result}")
            });
        }
    }
    Ok(tally)
}

/// Every tenant's id, as the admin.
async fn tenants(client: &Client, schema: &Schema) -> Result<Vec<Uuid>> {
    let sql = sql::tenant_ids(schema);
    let done = rolled_back(client, &Scope::Transaction, async {
        set_role(client, &schema.tenancy.admin_role).await?;
        client.query(&sql, &[]).await
    })
    .await?;
    done.rollback?;
    Ok(done.body?.iter().map(|r| r.get(0)).collect())
}

/// As the app role in `gym`'s context: every row it sees of each table is its own, it sees all
/// of its own (the context reached the workers), and a row for another tenant is refused.
async fn probe(client: &Client, schema: &Schema, gym: Uuid, write: bool) -> Result<Tally> {
    let t = &schema.tenancy;
    let mut tally = Tally::default();
    let id = gym.to_string();
    let as_tenant = || set_tenant_citus(client, &t.app_role, &t.context_setting, &id);
    for (table, column) in data_tables(schema) {
        let counts = sql::probe_counts(schema, table, column);
        let seen = rolled_back(client, &Scope::Transaction, async {
            as_tenant().await?;
            client.query_one(&counts, &[&gym]).await
        })
        .await?;
        seen.rollback?;
        let seen = seen
            .body
            .with_context(|| format!("the app role cannot read {table}"))?;
        let expected = admin_count(client, schema, &counts, gym).await?;
        let (own, foreign): (i64, i64) = (seen.get("own"), seen.get("foreign"));
        let obj = object(schema, table);
        tally.fail_if("citus.probe-foreign-rows", foreign > 0, &obj, || {
            format!("in tenant {gym}'s context the app role reads {foreign} rows of other tenants")
        });
        tally.fail_if("citus.probe-own-rows", own != expected, &obj, || {
            format!("in tenant {gym}'s context the app role reads {own} of its {expected} rows: the context does not reach the workers")
        });
        if !write {
            continue;
        }
        let other = Uuid::new_v4();
        let insert = sql::probe_insert(schema, table, column);
        let wrote = rolled_back(client, &Scope::Transaction, async {
            as_tenant().await?;
            client.execute(&insert, &[&other]).await
        })
        .await?;
        wrote.rollback?;
        let refused = matches!(&wrote.body, Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
        tally.fail_if("citus.probe-foreign-insert", !refused, &obj, || {
            format!("in tenant {gym}'s context, inserting a row for tenant {other} was not refused by row-level security: {:?}", wrote.body.as_ref().map_err(pg::error::describe))
        });
    }
    Ok(tally)
}

/// The admin's count of `gym`'s rows by the same query (the admin bypasses RLS).
async fn admin_count(client: &Client, schema: &Schema, counts: &str, gym: Uuid) -> Result<i64> {
    let done = rolled_back(client, &Scope::Transaction, async {
        set_role(client, &schema.tenancy.admin_role).await?;
        client.query_one(counts, &[&gym]).await
    })
    .await?;
    done.rollback?;
    Ok(done.body?.get("own"))
}

/// As the app role without a context: no rows of any table.
async fn no_context(client: &Client, schema: &Schema) -> Result<Tally> {
    let mut tally = Tally::default();
    for (table, column) in data_tables(schema) {
        let counts = sql::probe_counts(schema, table, column);
        let seen = rolled_back(client, &Scope::Transaction, async {
            set_role(client, &schema.tenancy.app_role).await?;
            client.query_one(&counts, &[&Uuid::nil()]).await
        })
        .await?;
        seen.rollback?;
        let seen = seen
            .body
            .with_context(|| format!("the app role cannot read {table}"))?;
        let n: i64 = seen.get::<_, i64>("own") + seen.get::<_, i64>("foreign");
        tally.fail_if(
            "citus.probe-no-context",
            n > 0,
            object(schema, table),
            || format!("without a tenant context the app role reads {n} rows"),
        );
    }
    Ok(tally)
}
