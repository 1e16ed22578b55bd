//! The relations the app role can reach: listing them, and the exposure checks of every one that
//! policies/ does not declare (tables without RLS, views, materialized views, foreign tables).

use crate::pg::unnamed::typed;
use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::{col, columns, policies, query, TenantData};
use crate::model::Schema;
use crate::sqlgen;
use crate::verify::{Finding, Tally};

const RELATIONS: &str = "
SELECT c.oid, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind,
       c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
       pg_catalog.pg_get_userbyid(c.relowner)::text AS owner,
       EXISTS (SELECT FROM pg_catalog.pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = $1 AND a.attnum > 0 AND NOT a.attisdropped) AS has_tc,
       coalesce(c.reloptions, '{}')::text[] AS options,
       EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_class'::regclass
               AND e.objid = c.oid AND e.deptype = 'e') AS in_extension,
       pg_catalog.has_schema_privilege($2, n.oid, 'USAGE')
         AND (pg_catalog.has_table_privilege($2, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
              OR pg_catalog.has_any_column_privilege($2, c.oid, 'SELECT, INSERT, UPDATE')) AS reachable
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY n.nspname, c.relname";

/// Relations a view or materialized view reads, through any depth of views.
const VIEW_READS: &str = "
WITH RECURSIVE deps(rel) AS (
    SELECT d.refobjid FROM pg_catalog.pg_rewrite r
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
         AND d.refclassid = 'pg_catalog.pg_class'::regclass
    WHERE r.ev_class = $1 AND d.refobjid <> r.ev_class
  UNION
    SELECT d.refobjid FROM deps
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = deps.rel
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
         AND d.refclassid = 'pg_catalog.pg_class'::regclass
    WHERE d.refobjid <> r.ev_class
)
SELECT DISTINCT rel FROM deps";

/// Whether a table references a tenant table ($2) by foreign key or inherits from one.
const TABLE_DERIVED: &str = "
SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint c
               WHERE c.conrelid = $1 AND c.contype = 'f' AND c.confrelid = ANY($2))
    OR EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhrelid = $1 AND i.inhparent = ANY($2)) AS derived";

catalog_code! {
    /// `pg_class.relkind`, for the kinds the checks look at.
    pub(super) enum RelKind {
        "r" => Table,
        "p" => PartitionedTable,
        "v" => View,
        "m" => MaterializedView,
        "f" => ForeignTable,
    }
}

impl RelKind {
    /// A plain or partitioned table.
    pub(super) fn is_table(self) -> bool {
        matches!(self, RelKind::Table | RelKind::PartitionedTable)
    }

    /// A table of any kind, foreign tables included: it holds rows of its own.
    pub(super) fn holds_rows(self) -> bool {
        self.is_table() || self == RelKind::ForeignTable
    }

    fn is_view(self) -> bool {
        matches!(self, RelKind::View | RelKind::MaterializedView)
    }
}

typed_row! {
    /// A relation the checks look at (a row of [`RELATIONS`]).
    #[derive(Debug, Clone)]
    pub(super) struct Rel {
        pub oid: u32,
        pub schema: String,
        pub name: String,
        pub kind: RelKind,
        pub rls: bool,
        pub forced: bool,
        pub owner: String,
        pub has_tc: bool,
        pub options: Vec<String>,
        /// Whether the app role can reach it (schema USAGE and a table or column privilege).
        pub reachable: bool,
        /// It belongs to an extension (judged by the extension, never undeclared).
        pub in_extension: bool,
    }
}

impl Rel {
    pub(super) fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub(super) fn object(&self) -> String {
        let what = match self.kind {
            RelKind::View => "view",
            RelKind::MaterializedView => "materialized view",
            RelKind::ForeignTable => "foreign table",
            RelKind::Table | RelKind::PartitionedTable => "table",
        };
        format!("{what} {}", self.display())
    }

    fn security_invoker(&self) -> bool {
        self.option_on("security_invoker")
    }

    /// Whether the boolean reloption `key` is set and true.
    pub(super) fn option_on(&self, key: &str) -> bool {
        self.options.iter().any(|o| {
            o.split_once('=').is_some_and(|(k, v)| {
                k == key && matches!(v.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1")
            })
        })
    }

    /// Declared relations count only in the declared schema, and only as their kind: tenant
    /// tables, their partitions and global tables as tables, views as views.
    pub(super) fn is_declared(&self, schema: &Schema) -> bool {
        if self.schema != schema.tenancy.table_schema {
            return false;
        }
        match self.kind {
            RelKind::Table | RelKind::PartitionedTable => {
                schema.tables.contains_key(&self.name)
                    || schema.globals.contains_key(&self.name)
                    || schema.partition_of(&self.name).is_some()
            }
            RelKind::View => schema.views.contains_key(&self.name),
            _ => false,
        }
    }
}

/// Every relation outside the system schemas, in name order.
pub(super) async fn list(client: &Client, schema: &Schema) -> Result<Vec<Rel>> {
    let t = &schema.tenancy;
    let params = typed![&t.tenant_column, &t.app_role];
    query(
        client,
        RELATIONS,
        params,
        "cannot list relations",
        Rel::from_row,
    )
    .await
}

/// Everything else the app role can reach: the relations policies/ does not declare.
pub(super) async fn check_reachable(
    client: &Client,
    schema: &Schema,
    rels: &[Rel],
    tenant: &TenantData,
    tally: &mut Tally,
) -> Result<()> {
    for rel in rels {
        if rel.is_declared(schema) || !rel.reachable {
            continue;
        }
        let reads = view_reads(client, rel).await?;
        let tenant_data = rel.has_tc || reads.iter().any(|o| tenant.oids.contains(o));
        let derived = tenant_data
            || rel.kind.holds_rows() && table_derived(client, rel, &tenant.list).await?;
        // A security_invoker view, over security_invoker views only, reads with the app role's
        // own rights: row-level security and the app role's grants apply beneath it, and every
        // relation it can reach that way is checked on its own.
        let invoker_only = rel.kind == RelKind::View
            && rel.security_invoker()
            && reads.iter().all(|o| {
                rels.iter()
                    .find(|r| r.oid == *o)
                    .is_none_or(|r| r.kind != RelKind::View || r.security_invoker())
            });
        undeclared(schema, rel, derived, invoker_only, tally);
        exposure(client, schema, rel, tenant_data, tally).await?;
    }
    Ok(())
}

/// The relations a view or materialized view reads (none for a table).
async fn view_reads(client: &Client, rel: &Rel) -> Result<Vec<u32>> {
    if !rel.kind.is_view() {
        return Ok(Vec::new());
    }
    let what = "cannot read view dependencies";
    query(client, VIEW_READS, typed![&rel.oid], what, |r| {
        col(r, "rel")
    })
    .await
}

/// Whether a table references or inherits from a tenant table.
async fn table_derived(client: &Client, rel: &Rel, tenant_oids: &Vec<u32>) -> Result<bool> {
    let row = client
        .query_typed_one(TABLE_DERIVED, typed![&rel.oid, tenant_oids])
        .await
        .context("cannot read table dependencies")?;
    col(&row, "derived")
}

/// The exposure check for the relation's kind, when it holds or reads tenant data.
async fn exposure(
    client: &Client,
    schema: &Schema,
    rel: &Rel,
    tenant_data: bool,
    tally: &mut Tally,
) -> Result<()> {
    match rel.kind {
        RelKind::Table | RelKind::PartitionedTable if rel.has_tc => {
            exposed_table(client, schema, rel, tally).await?
        }
        RelKind::ForeignTable if tenant_data => {
            tally.fail_if("exposure.foreign-table", !rel.rls, rel.object(), || {
                format!(
                    "foreign table {} carries tenant data and the app role can reach it",
                    rel.display()
                )
            })
        }
        RelKind::MaterializedView if tenant_data => tally.fail(Finding::new(
            "exposure.materialized-view",
            rel.object(),
            format!(
                "materialized view {} holds tenant data and the app role can read it; RLS never applies to materialized views",
                rel.display()
            ),
        )),
        RelKind::View if tenant_data => {
            tally.fail_if("exposure.view", !rel.security_invoker(), rel.object(), || {
                format!(
                    "view {} reads tenant data with the rights of its owner {} (no security_invoker)",
                    rel.display(),
                    rel.owner
                )
            })
        }
        _ => {}
    }
    Ok(())
}

/// An undeclared table that carries the tenant column: RLS on and forced, and its policies'
/// shape and tenant index checked as for a declared table.
async fn exposed_table(
    client: &Client,
    schema: &Schema,
    rel: &Rel,
    tally: &mut Tally,
) -> Result<()> {
    let t = &schema.tenancy;
    if !rel.rls {
        tally.fail(Finding::new(
            "exposure.table",
            rel.object(),
            format!(
                "{} carries {} and the app role can reach it, but row-level security is off",
                rel.display(),
                t.tenant_column
            ),
        ));
        return Ok(());
    }
    tally.pass("exposure.table");
    tally.fail_if("rls.not-forced", !rel.forced, rel.object(), || {
        format!("row-level security on {} is not forced", rel.display())
    });
    let live = policies::read(client, rel.oid).await?;
    let memberships = super::roles::app_memberships(client, schema).await?;
    policies::shape(schema, rel, &live, &memberships, tally);
    columns::tenant_index(client, schema, rel, &rel.name, tally).await
}

/// A relation the app role can reach that policies/ does not declare. An extension's own
/// relations keep the privileges it installed them with (the reachability checks judge more).
fn undeclared(schema: &Schema, rel: &Rel, derived: bool, invoker_only: bool, tally: &mut Tally) {
    let t = &schema.tenancy;
    let revoke = sqlgen::fix_revoke_undeclared(&rel.schema, &rel.name, &t.app_role);
    if invoker_only || (rel.in_extension && !derived) {
        tally.pass("exposure.undeclared");
        tally.pass("world.relation");
    } else if derived {
        tally.fail(
            Finding::new(
                "exposure.undeclared",
                rel.object(),
                format!(
                    "{} is not declared in policies/, the app role can reach it, and it carries {} or is derived from tenant tables",
                    rel.object(),
                    t.tenant_column
                ),
            )
            .hint(revoke),
        );
    } else {
        tally.pass("exposure.undeclared");
        tally.fail(
            Finding::new(
                "world.relation",
                rel.object(),
                format!(
                    "{} is not declared in policies/ and the app role can reach it",
                    rel.object()
                ),
            )
            .hint(revoke),
        );
    }
}
