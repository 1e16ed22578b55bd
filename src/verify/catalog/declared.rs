//! The declared objects beyond tenant tables: global tables (exist, owned by the owner role,
//! never writable by the app), views (exist, owned by the owner role, security_invoker and
//! security_barrier, defined as declared), partitions (attached to their table, each with the
//! table's RLS, policies and grants) and extensions (installed in their schema).

use std::collections::BTreeMap;

use crate::pg::unnamed::typed;
use anyhow::Result;
use tokio_postgres::Client;

use super::normalise::Normalised;
use super::relations::{Rel, RelKind};
use super::tables::{owner_owns, row_level_security, Declared};
use super::{col, grants, normalise, policies, query, roles, triggers};
use crate::model::Schema;
use crate::sqlgen;
use crate::verify::{Finding, Tally};

const GLOBAL_WRITE: &str = "
SELECT pg_catalog.has_table_privilege($1, $2::oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
    OR pg_catalog.has_any_column_privilege($1, $2::oid, 'INSERT, UPDATE, REFERENCES') AS can";

const VIEW_DEF: &str = "SELECT pg_catalog.pg_get_viewdef($1::oid) AS def";

const ATTACHED: &str = "
SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits WHERE inhrelid = $1 AND inhparent = $2) AS attached";

const EXTENSIONS: &str = "
SELECT e.extname::text AS name, n.nspname::text AS schema
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace";

typed_row! {
    /// An installed extension (a row of [`EXTENSIONS`]).
    struct LiveExtension {
        name: String,
        schema: String,
    }
}

/// The declared relation `name` of one of `kinds`, or a drift finding with `id` that it is missing.
fn find<'r>(
    rels: &'r [Rel],
    schema: &Schema,
    name: &str,
    kinds: &[RelKind],
    (id, what, source): (&'static str, &str, &str),
    tally: &mut Tally,
) -> Option<&'r Rel> {
    let found = rels
        .iter()
        .find(|r| r.name == name && kinds.contains(&r.kind) && r.is_declared(schema));
    let obj = format!("{what} {}.{name}", schema.tenancy.table_schema);
    tally.fail_if(id, found.is_none(), &obj, || {
        format!("{obj} is declared in {source} but does not exist")
    });
    found
}

pub(super) async fn check(
    client: &Client,
    schema: &Schema,
    rels: &[Rel],
    norm: &BTreeMap<String, Normalised>,
    tally: &mut Tally,
) -> Result<()> {
    globals(client, schema, rels, tally).await?;
    views(client, schema, rels, tally).await?;
    partitions(client, schema, rels, norm, tally).await?;
    extensions(client, schema, tally).await
}

/// Global tables: drift.table, drift.owner, grant.global-write.
async fn globals(client: &Client, schema: &Schema, rels: &[Rel], tally: &mut Tally) -> Result<()> {
    let t = &schema.tenancy;
    for (name, table) in &schema.globals {
        let spec = ("drift.table", "table", table.source.as_str());
        let Some(rel) = find(rels, schema, name, &[RelKind::Table], spec, tally) else {
            continue;
        };
        owner_owns(rel, schema, tally);
        let row = client
            .query_typed_one(GLOBAL_WRITE, typed![&t.app_role, &rel.oid])
            .await?;
        let can: bool = col(&row, "can")?;
        let finding = can.then(|| {
            Finding::new(
                "grant.global-write",
                rel.object(),
                format!(
                    "{} (directly, through a role it is a member of, or PUBLIC) may write global table {}: a write there changes what every tenant sees",
                    t.app_role,
                    rel.display()
                ),
            )
            .hint(sqlgen::fix_global_write(&rel.schema, &rel.name, &t.app_role))
        });
        tally.record("grant.global-write", finding);
    }
    Ok(())
}

/// Views: drift.view (missing, definition), drift.view-invoker, drift.owner.
async fn views(client: &Client, schema: &Schema, rels: &[Rel], tally: &mut Tally) -> Result<()> {
    let declared = normalise::view_definitions(client, schema).await?;
    for (name, view) in &schema.views {
        let spec = ("drift.view", "view", view.source.as_str());
        let Some(rel) = find(rels, schema, name, &[RelKind::View], spec, tally) else {
            continue;
        };
        owner_owns(rel, schema, tally);
        let safe = rel.option_on("security_invoker") && rel.option_on("security_barrier");
        let finding = (!safe).then(|| {
            Finding::new(
                "drift.view-invoker",
                rel.object(),
                format!(
                    "declared view {} is not security_invoker and security_barrier (options: {}): it reads with its owner {}'s rights",
                    rel.display(),
                    rel.options.join(", "),
                    rel.owner
                ),
            )
            .hint(sqlgen::fix_view_options(&rel.schema, &rel.name))
        });
        tally.record("drift.view-invoker", finding);
        let live: String = col(
            &client.query_typed_one(VIEW_DEF, typed![&rel.oid]).await?,
            "def",
        )?;
        let differs = match declared.get(name) {
            Some(Ok(def)) => (def != &live).then(|| {
                format!("its definition is\n{live}\nbut the declared query renders as\n{def}")
            }),
            Some(Err(e)) => Some(format!("its declared query cannot be created here: {e}")),
            None => None,
        };
        tally.fail_if("drift.view", differs.is_some(), rel.object(), || {
            format!("view {}: {}", rel.display(), differs.unwrap_or_default())
        });
    }
    Ok(())
}

/// Partitions: drift.partition (missing or detached), then what every partition carries as its
/// table does: owner, RLS enabled and forced, the table's policies and grants, the trigger.
async fn partitions(
    client: &Client,
    schema: &Schema,
    rels: &[Rel],
    norm: &BTreeMap<String, Normalised>,
    tally: &mut Tally,
) -> Result<()> {
    for (tname, table) in &schema.tables {
        let Some(p) = &table.partitioning else {
            continue;
        };
        let parent = rels
            .iter()
            .find(|r| &r.name == tname && r.is_declared(schema));
        for part in p.partitions.keys() {
            let spec = ("drift.partition", "partition", table.source.as_str());
            let Some(rel) = find(rels, schema, part, &[RelKind::Table], spec, tally) else {
                continue;
            };
            let attached = match parent {
                Some(parent) => {
                    let row = client
                        .query_typed_one(ATTACHED, typed![&rel.oid, &parent.oid])
                        .await?;
                    col::<bool>(&row, "attached")?
                }
                None => false,
            };
            tally.fail_if("drift.partition", !attached, rel.object(), || {
                format!(
                    "{} is declared as a partition of {tname} but is not attached to it",
                    rel.display()
                )
            });
            let cx = Declared {
                client,
                schema,
                table,
                rel,
                norm: norm.get(tname),
            };
            partition(&cx, tally).await?;
        }
    }
    Ok(())
}

/// One declared partition: checked as its table is, except for what Postgres clones onto it
/// under other names (keys, indexes) and what it shares with the table (columns).
async fn partition(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let rel = cx.rel;
    owner_owns(rel, cx.schema, tally);
    row_level_security(rel, tally);
    grants::check(cx, tally).await?;
    triggers::immutability(cx, tally).await?;
    let live = policies::read(cx.client, rel.oid).await?;
    policies::drift(cx.schema, cx.table, rel, &live, cx.norm, tally);
    let memberships = roles::app_memberships(cx.client, cx.schema).await?;
    policies::shape(cx.schema, rel, &live, &memberships, tally);
    Ok(())
}

/// drift.extension: each declared extension installed, in its declared schema.
async fn extensions(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    if schema.extensions.is_empty() {
        return Ok(());
    }
    let what = "cannot list extensions";
    let live = query(client, EXTENSIONS, typed![], what, LiveExtension::from_row).await?;
    for (name, e) in &schema.extensions {
        let found = live.iter().find(|l| &l.name == name);
        let problem = match found {
            None => Some("is not installed".to_string()),
            Some(l) if l.schema != e.schema => {
                Some(format!("is in schema {}, not {}", l.schema, e.schema))
            }
            Some(_) => None,
        };
        tally.fail_if(
            "drift.extension",
            problem.is_some(),
            format!("extension {name}"),
            || {
                format!(
                    "extension {name}, declared in {}, {}",
                    e.source,
                    problem.unwrap_or_default()
                )
            },
        );
    }
    Ok(())
}
