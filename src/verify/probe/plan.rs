//! The probe plan: what to probe and with which statements, read once from the catalog and the
//! declaration and shared by every probe connection.

use crate::pg::unnamed::typed;
use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::synthetic::{self, SyntheticTable};
use crate::model::{Constraint, Schema, Table, Tenancy};
use crate::sqlgen::{self, ProbeFeed, ProbeReadable, ProbeTable, TableProbes};

/// One declared table to probe, with the SQL texts built once.
#[derive(Debug)]
pub(super) struct Target {
    /// `schema.table`, for findings.
    pub name: String,
    pub sql: TableProbes,
}

impl Target {
    /// Whether the admin role can read the table (its counts and reference rows exist).
    pub(super) fn admin_reads(&self) -> bool {
        self.sql.admin.is_some()
    }
}

/// A view, or a function without arguments, that the app role can read.
#[derive(Debug)]
pub(super) struct Readable {
    pub name: String,
    pub kind: &'static str,
    pub sql: String,
}

impl Readable {
    pub(super) fn check_id(&self) -> &'static str {
        if self.kind == "view" {
            "probe.view"
        } else {
            "probe.function"
        }
    }
}

/// How the probes act as the application.
#[derive(Debug, Clone)]
pub(super) struct Acting {
    /// The application's login the probe connections log in as (`--app-url`): its privileges
    /// are probed and the probes never switch role. None: `SET ROLE` to the app role.
    pub login: Option<String>,
    /// No write probes (no row locks, no triggers fired on live rows).
    pub read_only: bool,
    /// `statement_timeout` of every probe transaction (bound, e.g. `30000ms`).
    pub timeout: String,
}

/// Everything a connection needs to probe, built once from the catalog.
#[derive(Debug)]
pub(super) struct Plan {
    /// The role whose privileges are probed: the app role, or the application's login.
    pub app: String,
    pub acting: Acting,
    pub admin: String,
    pub setting: String,
    pub tenant_table: String,
    pub targets: Vec<Target>,
    pub readables: Vec<Readable>,
    /// Synthetic-tenant inserts, parents first.
    pub synthetic: Vec<SyntheticTable>,
    pub tenant_query: String,
    pub tenant_by_slug: Option<String>,
    /// The admin's per-tenant counts (index counts per tenant), streamed with the tenant ids.
    pub feed: ProbeFeed,
    /// [`crate::sqlgen::probe_function`] over the targets and readables; None without targets, or
    /// when a probed relation has a column named like one of its variables.
    pub probe_function: Option<String>,
}

/// What the app and admin roles may do with one table (`$3` the table, `$4` columns to skip,
/// `$5` its key column).
const TARGETS: &str = "
SELECT pg_catalog.has_table_privilege($1, $3::text::regclass, 'SELECT') AS app_select,
       pg_catalog.has_table_privilege($1, $3::text::regclass, 'INSERT') AS app_insert,
       pg_catalog.has_table_privilege($1, $3::text::regclass, 'DELETE') AS app_delete,
       pg_catalog.has_table_privilege($2, $3::text::regclass, 'SELECT') AS admin_select,
       (SELECT a.attname::text FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = $3::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname <> ALL ($4) AND pg_catalog.has_column_privilege($1, $3::text::regclass, a.attname, 'UPDATE')
        ORDER BY a.attnum LIMIT 1) AS update_column,
       (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = $3::text::regclass AND a.attname = $5 AND NOT a.attisdropped) AS key_type";

const READABLES: &str = "
SELECT n.nspname::text AS schema, c.relname::text AS name
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege($1, n.oid, 'USAGE')
  AND pg_catalog.has_table_privilege($1, c.oid, 'SELECT')
  AND EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped)
ORDER BY 1, 2";

/// Functions the app role can call without arguments that return rows with the tenant column.
const FUNCTIONS: &str = "
SELECT n.nspname::text AS schema, p.proname::text AS name
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind = 'f' AND p.pronargs = 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema', $3)
  AND pg_catalog.has_schema_privilege($1, n.oid, 'USAGE')
  AND pg_catalog.has_function_privilege($1, p.oid, 'EXECUTE')
  AND ($2 = ANY (p.proargnames)
       OR EXISTS (SELECT FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
                  WHERE t.oid = p.prorettype AND a.attname = $2 AND NOT a.attisdropped))
ORDER BY 1, 2";

const HAS_TENANT_COLUMN: &str = "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped) AS has_tc";

/// Whether a probed relation ($1) has a column whose name starts with $2.
const NAME_CLASH: &str = "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute \
                 WHERE attrelid = ANY ($1::text[]::regclass[]) AND NOT attisdropped \
                 AND pg_catalog.starts_with(attname::text, $2)) AS clash";

typed_row! {
    /// What the app and admin roles may do with one table (a row of [`TARGETS`]).
    struct Facts {
        app_select: bool,
        app_insert: bool,
        app_delete: bool,
        admin_select: bool,
        /// A column the app role may update (not the tenant column or the key).
        update_column: Option<String>,
        key_type: Option<String>,
    }
}

typed_row! {
    /// A view or function the app role can read (a row of [`READABLES`] or [`FUNCTIONS`]).
    struct Named {
        schema: String,
        name: String,
    }
}

/// A declared table's key column: the first column of its primary key (`id` without one).
pub(super) fn key_column(table: &Table) -> String {
    table
        .constraints
        .values()
        .find_map(|c| match c {
            Constraint::PrimaryKey { columns } => columns.first().cloned(),
            _ => None,
        })
        .unwrap_or_else(|| "id".to_string())
}

/// A declared table's key column and its row of [`TARGETS`]; None when the table or its tenant
/// column is missing (reported by `drift.table` and `drift.column`).
async fn table_facts(
    client: &Client,
    (t, app): (&Tenancy, &str),
    rel: &str,
    table: &Table,
) -> Result<Option<(String, Facts)>> {
    let exists = crate::pg::unnamed::relation_exists(client, rel)
        .await
        .context("cannot look up tables")?;
    let has_tc = exists
        && client
            .query_typed_one(HAS_TENANT_COLUMN, typed![&rel, &table.tenant_column])
            .await?
            .get::<_, bool>("has_tc");
    if !has_tc {
        return Ok(None);
    }
    let pk = key_column(table);
    let skip: Vec<String> = vec![table.tenant_column.clone(), pk.clone()];
    let r = client
        .query_typed_one(TARGETS, typed![&app, &t.admin_role, &rel, &skip, &pk])
        .await
        .context("cannot read privileges")?;
    Ok(Some((pk, Facts::from_row(&r)?)))
}

impl Plan {
    pub(super) async fn build(client: &Client, schema: &Schema, acting: Acting) -> Result<Plan> {
        let t = &schema.tenancy;
        let app = acting.login.clone().unwrap_or_else(|| t.app_role.clone());
        let (targets, probe_tables) = targets(client, schema, &app, acting.read_only).await?;
        let (readables, probe_readables) = readables(client, t, &app).await?;
        let has_slug = schema
            .tables
            .get(&t.tenant_table)
            .is_some_and(|tab| tab.column("slug").is_some());
        let counted: Vec<Option<&ProbeTable>> = targets
            .iter()
            .zip(&probe_tables)
            .map(|(target, p)| target.admin_reads().then_some(p))
            .collect();
        let feed = sqlgen::probe_feed(&counted, &t.table_schema, &t.tenant_table, &t.tenant_key);
        // A column named like one of the probe function's variables would be ambiguous in its
        // statements (they refuse to run, 42702): probe statement by statement then.
        let clash = name_clash(client, &probe_tables, &probe_readables).await?;
        let probe_function = (!targets.is_empty() && !clash)
            .then(|| sqlgen::probe_function(&t.context_setting, &probe_tables, &probe_readables));
        let (ts, tt, key) = (&t.table_schema, &t.tenant_table, &t.tenant_key);
        Ok(Plan {
            probe_function,
            feed,
            app,
            acting,
            admin: t.admin_role.clone(),
            setting: t.context_setting.clone(),
            tenant_table: t.tenant_table.clone(),
            targets,
            readables,
            synthetic: synthetic::plan(schema),
            tenant_query: sqlgen::tenant_ids(ts, tt, key),
            tenant_by_slug: has_slug.then(|| sqlgen::tenant_by_slug(ts, tt, key)),
        })
    }
}

/// The declared tables `app` can read, as targets and as the probe function's tables;
/// `read_only`: without the write probes.
async fn targets(
    client: &Client,
    schema: &Schema,
    app: &str,
    read_only: bool,
) -> Result<(Vec<Target>, Vec<ProbeTable>)> {
    let t = &schema.tenancy;
    // Every table's catalog facts at once: tokio-postgres pipelines the queries.
    let rels: Vec<String> = schema
        .tables
        .keys()
        .map(|name| sqlgen::rel(&t.table_schema, name))
        .collect();
    let facts = futures_util::future::try_join_all(
        schema
            .tables
            .values()
            .zip(&rels)
            .map(|(table, r)| table_facts(client, (t, app), r, table)),
    )
    .await?;
    let mut targets = Vec::new();
    let mut probe_tables = Vec::new();
    for ((name, table), fact) in schema.tables.iter().zip(facts) {
        let Some((pk, f)) = fact else {
            continue; // reported by drift.table / drift.column
        };
        if !f.app_select {
            continue; // nothing for the app role to see
        }
        let probe = ProbeTable {
            schema: t.table_schema.clone(),
            table: name.clone(),
            tenant_column: table.tenant_column.clone(),
            key: pk,
            // The key's own type (format_type quotes what needs quoting), so that a look-up
            // by key uses its index; text when the column is missing (the function then
            // fails, and the tenants are probed statement by statement, which say so).
            key_type: f.key_type.unwrap_or_else(|| "text".into()),
            update_column: f.update_column.filter(|_| !read_only),
            delete: f.app_delete && !read_only,
            insert: f.app_insert && !read_only,
        };
        targets.push(Target {
            name: format!("{}.{name}", t.table_schema),
            sql: sqlgen::table_probes(&probe, f.admin_select),
        });
        probe_tables.push(probe);
    }
    Ok((targets, probe_tables))
}

/// The views and functions `app` can read that return the tenant column.
async fn readables(
    client: &Client,
    t: &Tenancy,
    app: &str,
) -> Result<(Vec<Readable>, Vec<ProbeReadable>)> {
    let views = client
        .query_typed(READABLES, typed![&app, &t.tenant_column])
        .await
        .context("cannot list views")?;
    let functions = client
        .query_typed(FUNCTIONS, typed![&app, &t.tenant_column, &t.helper_schema])
        .await
        .context("cannot list functions")?;
    let mut readables = Vec::new();
    let mut probes = Vec::new();
    for (rows, function) in [(views, false), (functions, true)] {
        for r in &rows {
            let n = Named::from_row(r)?;
            let probe = ProbeReadable {
                schema: n.schema,
                name: n.name,
                function,
                tenant_column: t.tenant_column.clone(),
            };
            readables.push(Readable {
                name: if function {
                    format!("{}.{}()", probe.schema, probe.name)
                } else {
                    format!("{}.{}", probe.schema, probe.name)
                },
                kind: if function { "function" } else { "view" },
                sql: sqlgen::readable_probe(&probe),
            });
            probes.push(probe);
        }
    }
    Ok((readables, probes))
}

/// Whether a probed table or view has a column named like one of the probe function's variables.
async fn name_clash(
    client: &Client,
    tables: &[ProbeTable],
    readables: &[ProbeReadable],
) -> Result<bool> {
    let mut relations: Vec<String> = tables
        .iter()
        .map(|t| sqlgen::rel(&t.schema, &t.table))
        .collect();
    relations.extend(
        readables
            .iter()
            .filter(|r| !r.function)
            .map(|r| sqlgen::rel(&r.schema, &r.name)),
    );
    Ok(client
        .query_typed_one(NAME_CLASH, typed![&relations, &sqlgen::PROBE_NAME_PREFIX])
        .await
        .context("cannot read the probed relations' columns")?
        .get("clash"))
}
