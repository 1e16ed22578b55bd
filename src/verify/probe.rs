//! Dynamic probes: impersonate each tenant as the app role (and the admin role for reference)
//! inside transactions that are always rolled back, pipelined over a small pool of connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use postgres_protocol::escape::escape_identifier as q;
use postgres_types::ToSql;
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::{Client, Row, Statement};
use uuid::Uuid;

use super::{Finding, Settings, Tally, TenantSelection};
use crate::model::{Constraint, Schema};
use crate::pg;

/// What `tenant create` needs: the probes for one tenant, their count and their failures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeSummary {
    pub checks: usize,
    pub failures: Vec<Finding>,
}

/// Run every probe for one tenant (the context probes too) on one connection, inside a single
/// transaction that is rolled back. Two synthetic tenants are created inside it, so there is
/// always another tenant's row to attack, even in a database with one tenant.
pub async fn probe_single_tenant(
    url: &pg::Target,
    schema: &Schema,
    gym_id: Uuid,
) -> Result<ProbeSummary> {
    let client = pg::connect(url).await?;
    super::check_set_role(&client, schema).await?;
    let plan = Arc::new(Plan::build(&client, schema).await?);
    let conn = Conn::new(client, plan.clone()).await?;
    let mut tally = Tally::default();
    conn.simple("BEGIN").await?;
    let result = async {
        let synthetic = create_synthetic(&conn, schema, &mut tally).await?;
        if synthetic.is_none() && tally.findings.is_empty() {
            // Probing stays meaningful as long as other tenants' rows exist; say nothing more.
        }
        let (t, _) = probe_tenant(&conn, gym_id, true).await?;
        tally.merge(t);
        tally.merge(context_probes(&conn, true).await?);
        anyhow::Ok(())
    }
    .await;
    let rollback = conn.simple("ROLLBACK").await;
    result?;
    rollback?;
    Ok(ProbeSummary {
        checks: tally.checks(),
        failures: tally.findings,
    })
}

/// Result of the probe phase of a verify run.
pub(super) struct Outcome {
    pub tally: Tally,
    pub tenants_probed: u64,
    pub synthetic: bool,
}

/// One table (or view, or function) to probe, with the SQL texts built once.
#[derive(Debug)]
struct Target {
    name: String,
    /// The app role's visible rows, those of other tenants, and the looked-up row ($1 tenant, $2 pk text).
    count: String,
    /// The admin's count for the tenant, another tenant's row and tenant, one own row ($1 tenant).
    admin: Option<String>,
    admin_total: Option<String>,
    update: Option<String>,
    delete: Option<String>,
    insert: Option<String>,
    change: String,
    /// Admin-side pieces for the feed and the victims (None: the admin cannot read the table).
    admin_side: Option<AdminSide>,
    /// The tenant column and the table, quoted, for the feed.
    tc: String,
    rel: String,
}

/// What the admin reads of one table once per run.
#[derive(Debug)]
struct AdminSide {
    /// One row of the table: (pk text, tenant).
    first: String,
    /// One row of another tenant than $1: (pk text, tenant).
    other: String,
}

#[derive(Debug)]
struct Readable {
    name: String,
    kind: &'static str,
    sql: String,
}

impl Readable {
    fn check_id(&self) -> &'static str {
        if self.kind == "view" {
            "probe.view"
        } else {
            "probe.function"
        }
    }
}

/// Everything a connection needs to probe, built once from the catalog.
#[derive(Debug)]
struct Plan {
    app: String,
    admin: String,
    setting: String,
    tenant_table: String,
    targets: Vec<Target>,
    readables: Vec<Readable>,
    /// Synthetic-tenant inserts, parents first: (table, column list SQL, column types).
    synthetic: Vec<SyntheticTable>,
    tenant_query: String,
    tenant_count: String,
    tenant_by_slug: Option<String>,
    /// The admin's per-tenant counts (index counts per tenant), streamed with the tenant ids:
    /// every tenant, a sample ($1 limit) or named tenants ($1 uuid[]).
    feed_all: String,
    feed_sample: String,
    feed_named: String,
    /// [`crate::sqlgen::probe_function`] over the targets and readables; None without targets, or
    /// when a probed relation has a column named like one of its variables.
    probe_function: Option<String>,
}

#[derive(Debug)]
struct SyntheticTable {
    table: String,
    sql: String,
    /// How each parameter gets its value.
    values: Vec<SynValue>,
    pk_uuid: bool,
}

#[derive(Debug, Clone)]
enum SynValue {
    Tenant,
    /// This row's own key.
    OwnKey,
    /// The synthetic row's key in that table.
    Parent(String),
    /// A fresh value of this declared type (unique, for unique columns).
    Fresh(String),
}

const TARGETS: &str = "
SELECT pg_catalog.has_table_privilege($1, $3::text::regclass, 'SELECT'),
       pg_catalog.has_table_privilege($1, $3::text::regclass, 'INSERT'),
       pg_catalog.has_table_privilege($1, $3::text::regclass, 'DELETE'),
       pg_catalog.has_table_privilege($2, $3::text::regclass, 'SELECT'),
       (SELECT a.attname::text FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = $3::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname <> ALL ($4) AND pg_catalog.has_column_privilege($1, $3::text::regclass, a.attname, 'UPDATE')
        ORDER BY a.attnum LIMIT 1),
       (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = $3::text::regclass AND a.attname = $5 AND NOT a.attisdropped)";

const READABLES: &str = "
SELECT n.nspname::text, c.relname::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege($1, n.oid, 'USAGE')
  AND pg_catalog.has_table_privilege($1, c.oid, 'SELECT')
  AND EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2 AND NOT a.attisdropped)
ORDER BY 1, 2";

/// Functions the app role can call without arguments that return rows with the tenant column.
const FUNCTIONS: &str = "
SELECT n.nspname::text, p.proname::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind = 'f' AND p.pronargs = 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema', $3)
  AND pg_catalog.has_schema_privilege($1, n.oid, 'USAGE')
  AND pg_catalog.has_function_privilege($1, p.oid, 'EXECUTE')
  AND ($2 = ANY (p.proargnames)
       OR EXISTS (SELECT FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
                  WHERE t.oid = p.prorettype AND a.attname = $2 AND NOT a.attisdropped))
ORDER BY 1, 2";

/// A declared table's key column: the first column of its primary key (`id` without one).
fn key_column(table: &crate::model::Table) -> String {
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
    t: &crate::model::Tenancy,
    rel: &str,
    table: &crate::model::Table,
) -> Result<Option<(String, Row)>> {
    let exists: Option<String> = client
        .query_one("SELECT pg_catalog.to_regclass($1)::text", &[&rel])
        .await
        .context("cannot look up tables")?
        .get(0);
    let has_tc = exists.is_some()
        && client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped)",
                &[&rel, &table.tenant_column],
            )
            .await?
            .get::<_, bool>(0);
    if !has_tc {
        return Ok(None);
    }
    let pk = key_column(table);
    let skip: Vec<String> = vec![table.tenant_column.clone(), pk.clone()];
    let r = client
        .query_one(TARGETS, &[&t.app_role, &t.admin_role, &rel, &skip, &pk])
        .await
        .context("cannot read privileges")?;
    Ok(Some((pk, r)))
}

impl Plan {
    async fn build(client: &Client, schema: &Schema) -> Result<Plan> {
        let t = &schema.tenancy;
        let rel = |name: &str| format!("{}.{}", q(&t.table_schema), q(name));
        let mut targets = Vec::new();
        let mut probe_tables = Vec::new();
        // Every table's catalog facts at once: tokio-postgres pipelines the queries.
        let rels: Vec<String> = schema.tables.keys().map(|name| rel(name)).collect();
        let facts = futures_util::future::try_join_all(
            schema
                .tables
                .values()
                .zip(&rels)
                .map(|(table, r)| table_facts(client, t, r, table)),
        )
        .await?;
        for ((name, table), fact) in schema.tables.iter().zip(facts) {
            let Some((pk, r)) = fact else {
                continue; // reported by drift.table / drift.column
            };
            let (app_select, app_insert, app_delete, admin_select, upd, pk_type): (
                bool,
                bool,
                bool,
                bool,
                Option<String>,
                Option<String>,
            ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            if !app_select {
                continue; // nothing for the app role to see
            }
            probe_tables.push(crate::sqlgen::ProbeTable {
                schema: t.table_schema.clone(),
                table: name.clone(),
                tenant_column: table.tenant_column.clone(),
                key: pk.clone(),
                // The key's own type (format_type quotes what needs quoting), so that a look-up
                // by key uses its index; text when the column is missing (the function then
                // fails, and the tenants are probed statement by statement, which say so).
                key_type: pk_type.unwrap_or_else(|| "text".into()),
                update_column: upd.clone(),
                delete: app_delete,
                insert: app_insert,
            });
            let (r_, tc, pk) = (rel(name), q(&table.tenant_column), q(&pk));
            targets.push(Target {
                admin_side: admin_select.then(|| AdminSide {
                    first: format!("SELECT {pk}::text, {tc} FROM {r_} LIMIT 1"),
                    other: format!("SELECT {pk}::text, {tc} FROM {r_} WHERE {tc} <> $1 LIMIT 1"),
                }),
                tc: tc.clone(),
                rel: r_.clone(),
                name: format!("{}.{name}", t.table_schema),
                count: format!(
                    "SELECT count(*), count(*) FILTER (WHERE {tc} IS DISTINCT FROM $1), count(*) FILTER (WHERE {pk}::text = $2) FROM {r_}"
                ),
                admin: admin_select.then(|| {
                    format!(
                        "SELECT (SELECT count(*) FROM {r_} WHERE {tc} = $1), o.pk, o.tenant, (SELECT {pk}::text FROM {r_} WHERE {tc} = $1 LIMIT 1) \
                         FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT {pk}::text, {tc} FROM {r_} WHERE {tc} <> $1 LIMIT 1) AS o(pk, tenant) ON true"
                    )
                }),
                admin_total: admin_select.then(|| format!("SELECT count(*) FROM {r_}")),
                update: upd.map(|c| {
                    let c = q(&c);
                    format!("UPDATE {r_} SET {c} = {c} WHERE {pk}::text = $1 RETURNING 1")
                }),
                delete: app_delete.then(|| format!("DELETE FROM {r_} WHERE {pk}::text = $1 RETURNING 1")),
                insert: app_insert.then(|| format!("INSERT INTO {r_} ({tc}) VALUES ($1) RETURNING 1")),
                change: format!("UPDATE {r_} SET {tc} = $1 WHERE {pk}::text = $2 RETURNING 1"),
            });
        }
        let tc = q(&t.tenant_column);
        let mut readables = Vec::new();
        let mut probe_readables = Vec::new();
        for r in client
            .query(READABLES, &[&t.app_role, &t.tenant_column])
            .await
            .context("cannot list views")?
        {
            let (n, v): (String, String) = (r.get(0), r.get(1));
            probe_readables.push(crate::sqlgen::ProbeReadable {
                schema: n.clone(),
                name: v.clone(),
                function: false,
                tenant_column: t.tenant_column.clone(),
            });
            readables.push(Readable {
                name: format!("{n}.{v}"),
                kind: "view",
                sql: format!(
                    "SELECT count(*) FILTER (WHERE {tc}::text IS DISTINCT FROM $1) FROM {}.{}",
                    q(&n),
                    q(&v)
                ),
            });
        }
        for r in client
            .query(
                FUNCTIONS,
                &[&t.app_role, &t.tenant_column, &t.helper_schema],
            )
            .await
            .context("cannot list functions")?
        {
            let (n, f): (String, String) = (r.get(0), r.get(1));
            probe_readables.push(crate::sqlgen::ProbeReadable {
                schema: n.clone(),
                name: f.clone(),
                function: true,
                tenant_column: t.tenant_column.clone(),
            });
            readables.push(Readable {
                name: format!("{n}.{f}()"),
                kind: "function",
                sql: format!(
                    "SELECT count(*) FILTER (WHERE {tc}::text IS DISTINCT FROM $1) FROM {}.{}()",
                    q(&n),
                    q(&f)
                ),
            });
        }
        let tt = rel(&t.tenant_table);
        let key = q(&t.tenant_key);
        let has_slug = schema
            .tables
            .get(&t.tenant_table)
            .is_some_and(|tab| tab.column("slug").is_some());
        let fast = FastSql::build(&targets, &tt, &key);
        // A column named like one of the probe function's variables would be ambiguous in its
        // statements (they refuse to run, 42702): probe statement by statement then.
        let mut relations: Vec<String> = targets.iter().map(|t| t.rel.clone()).collect();
        relations.extend(
            probe_readables
                .iter()
                .filter(|r| !r.function)
                .map(|r| format!("{}.{}", q(&r.schema), q(&r.name))),
        );
        let clash: bool = client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute \
                 WHERE attrelid = ANY ($1::text[]::regclass[]) AND NOT attisdropped \
                 AND pg_catalog.starts_with(attname::text, $2))",
                &[&relations, &crate::sqlgen::PROBE_NAME_PREFIX],
            )
            .await
            .context("cannot read the probed relations' columns")?
            .get(0);
        let probe_function = (!targets.is_empty() && !clash).then(|| {
            crate::sqlgen::probe_function(&t.context_setting, &probe_tables, &probe_readables)
        });
        Ok(Plan {
            probe_function,
            feed_all: fast.feed_all,
            feed_sample: fast.feed_sample,
            feed_named: fast.feed_named,
            app: t.app_role.clone(),
            admin: t.admin_role.clone(),
            setting: t.context_setting.clone(),
            tenant_table: t.tenant_table.clone(),
            targets,
            readables,
            synthetic: synthetic_plan(schema),
            tenant_query: format!("SELECT {key} FROM {tt}"),
            tenant_count: format!("SELECT count(*) FROM {tt}"),
            tenant_by_slug: has_slug.then(|| format!("SELECT {key} FROM {tt} WHERE slug = $1")),
        })
    }
}

/// The feed's statements (the admin's per-tenant counts), built once from the targets.
struct FastSql {
    feed_all: String,
    feed_sample: String,
    feed_named: String,
}

impl FastSql {
    fn build(targets: &[Target], tenant_table: &str, key: &str) -> FastSql {
        // Correlated counts (index look-ups per tenant), not one GROUP BY per table: rows
        // stream out as they are counted, so the probes start with the first tenant.
        let correlated: String = targets
            .iter()
            .map(|t| match &t.admin_side {
                Some(_) => format!(", (SELECT count(*) FROM {} WHERE {} = g.k)", t.rel, t.tc),
                None => ", NULL::bigint".to_string(),
            })
            .collect();
        FastSql {
            feed_all: format!("SELECT g.k{correlated} FROM (SELECT {key} AS k FROM {tenant_table}) AS g"),
            feed_sample: format!(
                "SELECT g.k{correlated} FROM (SELECT {key} AS k FROM {tenant_table} ORDER BY random() LIMIT $1) AS g"
            ),
            feed_named: format!(
                "SELECT g.k{correlated} FROM pg_catalog.unnest($1::uuid[]) AS g(k)"
            ),
        }
    }
}

/// Inserts that give two synthetic tenants one row in every table, parents before children.
fn synthetic_plan(schema: &Schema) -> Vec<SyntheticTable> {
    let t = &schema.tenancy;
    let mut order: Vec<&String> = Vec::new();
    let mut left: Vec<&String> = schema.tables.keys().collect();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|name| {
            let table = &schema.tables[*name];
            let ready = table.constraints.values().all(|c| match c {
                Constraint::ForeignKey { table: parent, .. } => {
                    parent == *name
                        || order.contains(&parent)
                        || !schema.tables.contains_key(parent)
                }
                _ => true,
            });
            if ready {
                order.push(name);
            }
            !ready
        });
        if left.len() == before {
            order.append(&mut left); // a cycle: let Postgres say what is wrong
        }
    }
    let mut out = Vec::new();
    for name in order {
        let table = &schema.tables[name];
        let pk = key_column(table);
        let mut parents: std::collections::BTreeMap<&String, String> = Default::default();
        for c in table.constraints.values() {
            if let Constraint::ForeignKey {
                columns,
                table: parent,
                ..
            } = c
            {
                for col in columns.iter().filter(|c| **c != table.tenant_column) {
                    parents.insert(col, parent.clone());
                }
            }
        }
        let mut cols = Vec::new();
        let mut values = Vec::new();
        let mut pk_uuid = false;
        for c in &table.columns {
            let ty = c.ty.to_ascii_lowercase();
            let v = if c.name == table.tenant_column {
                SynValue::Tenant
            } else if c.name == pk {
                pk_uuid = ty == "uuid";
                if pk_uuid {
                    SynValue::OwnKey
                } else {
                    continue;
                }
            } else if let Some(p) = parents.get(&c.name) {
                SynValue::Parent(p.clone())
            } else if c.nullable || c.default.is_some() {
                continue;
            } else {
                SynValue::Fresh(ty.clone())
            };
            cols.push((c.name.clone(), c.ty.clone()));
            values.push(v);
        }
        let sql = format!(
            "INSERT INTO {}.{} ({}) VALUES ({})",
            q(&t.table_schema),
            q(name),
            cols.iter()
                .map(|(c, _)| q(c))
                .collect::<Vec<_>>()
                .join(", "),
            // The declared type comes from the policy files, like every type in the migrations.
            cols.iter()
                .enumerate()
                .map(|(i, (_, ty))| format!("${}::text::{ty}", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.push(SyntheticTable {
            table: name.clone(),
            sql,
            values,
            pk_uuid,
        });
    }
    out
}

/// A value of the declared type, in its text form, for a synthetic row.
fn synthetic_value(ty: &str) -> String {
    let base = ty.split('(').next().unwrap_or(ty).trim();
    if ty.ends_with("[]") {
        "{}".into()
    } else if matches!(
        base,
        "smallint"
            | "integer"
            | "int"
            | "int2"
            | "int4"
            | "int8"
            | "bigint"
            | "numeric"
            | "decimal"
            | "real"
            | "double precision"
            | "float4"
            | "float8"
    ) {
        "1".into()
    } else if matches!(base, "boolean" | "bool") {
        "false".into()
    } else if base == "date" {
        "2000-01-01".into()
    } else if base.starts_with("timestamp") {
        "2000-01-01 00:00:00+00".into()
    } else if base.starts_with("time") {
        "00:00".into()
    } else if base == "interval" {
        "1 hour".into()
    } else if matches!(base, "json" | "jsonb") {
        "{}".into()
    } else if matches!(base, "inet" | "cidr") {
        "127.0.0.1".into()
    } else if base == "uuid" {
        Uuid::new_v4().to_string()
    } else {
        format!("tc-probe-{}", &Uuid::new_v4().simple().to_string()[..8])
    }
}

/// Prepare `sql`, when there is one.
async fn prep_opt(client: &Client, sql: Option<&str>) -> Result<Option<Statement>> {
    match sql {
        None => Ok(None),
        Some(sql) => client
            .prepare(sql)
            .await
            .map(Some)
            .with_context(|| format!("cannot prepare probe: {sql}")),
    }
}

/// One connection with the plan's statements prepared.
struct Conn {
    client: Client,
    plan: Arc<Plan>,
    set_role: Statement,
    set_role_ctx: Statement,
    savepoint: Statement,
    rollback_to: Statement,
    counts: Vec<Statement>,
    admins: Vec<Option<Statement>>,
    updates: Vec<Option<Statement>>,
    deletes: Vec<Option<Statement>>,
    inserts: Vec<Option<Statement>>,
    changes: Vec<Statement>,
    readables: Vec<Statement>,
    /// The call of the session-temporary probe function, when it could be created here: see
    /// [`Conn::probe_function`].
    probe: Option<Statement>,
}

impl Conn {
    async fn new(client: Client, plan: Arc<Plan>) -> Result<Conn> {
        // Every statement at once: tokio-postgres pipelines them, one round trip in all.
        const FIXED: [&str; 4] = [
            "SELECT pg_catalog.set_config('role', $1, true)",
            "SELECT pg_catalog.set_config('role', $1, true), pg_catalog.set_config($2, $3, true)",
            "SAVEPOINT tc_probe",
            "ROLLBACK TO SAVEPOINT tc_probe",
        ];
        let mut texts: Vec<Option<&str>> = FIXED.iter().map(|s| Some(*s)).collect();
        for t in &plan.targets {
            texts.extend([
                Some(t.count.as_str()),
                t.admin.as_deref(),
                t.update.as_deref(),
                t.delete.as_deref(),
                t.insert.as_deref(),
                Some(t.change.as_str()),
            ]);
        }
        texts.extend(plan.readables.iter().map(|r| Some(r.sql.as_str())));
        let prepared =
            futures_util::future::try_join_all(texts.iter().map(|sql| prep_opt(&client, *sql)))
                .await?;
        let mut it = prepared.into_iter();
        let mut next = || it.next().expect("one statement per text");
        let fixed: Vec<Statement> = (0..FIXED.len())
            .map(|_| next().expect("fixed statement"))
            .collect();
        let (mut counts, mut admins, mut updates, mut deletes, mut inserts, mut changes) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for _ in &plan.targets {
            counts.push(next().expect("count statement"));
            admins.push(next());
            updates.push(next());
            deletes.push(next());
            inserts.push(next());
            changes.push(next().expect("change statement"));
        }
        let readables = plan
            .readables
            .iter()
            .map(|_| next().expect("readable statement"))
            .collect();
        let [set_role, set_role_ctx, savepoint, rollback_to]: [Statement; 4] =
            fixed.try_into().expect("four fixed statements");
        Ok(Conn {
            probe: None,
            set_role,
            set_role_ctx,
            savepoint,
            rollback_to,
            counts,
            admins,
            updates,
            deletes,
            inserts,
            changes,
            readables,
            client,
            plan,
        })
    }

    /// Create the probe function in this session's temporary schema, for the fast path to probe
    /// a batch of tenants in one statement. Left unset (each tenant is then probed statement by
    /// statement) when it cannot be created (no TEMP privilege on the database, no PL/pgSQL), the
    /// app role could not call it, or the plan has none.
    async fn probe_function(&mut self) -> Result<()> {
        let Some(create) = &self.plan.probe_function else {
            return Ok(());
        };
        let created = async {
            self.client.batch_execute(create).await?;
            let r = self
                .client
                .query_one(
                    "SELECT pg_catalog.has_function_privilege($1, $2::text::regprocedure, 'EXECUTE') \
                     AND pg_catalog.has_schema_privilege($1, pg_catalog.pg_my_temp_schema(), 'USAGE')",
                    &[&self.plan.app, &crate::sqlgen::PROBE_SIGNATURE],
                )
                .await?;
            Ok::<bool, tokio_postgres::Error>(r.get(0))
        }
        .await;
        let usable = match created {
            Ok(usable) => usable,
            Err(e) if e.as_db_error().is_some() => false,
            Err(e) => {
                return Err(anyhow!(describe(&e))).context("cannot create the probe function")
            }
        };
        if usable {
            let call = format!(
                "SELECT * FROM {}($1, $2, $3, $4)",
                crate::sqlgen::PROBE_FUNCTION
            );
            self.probe = Some(
                self.client
                    .prepare(&call)
                    .await
                    .context("cannot prepare the probe function's call")?,
            );
        }
        Ok(())
    }

    async fn simple(&self, sql: &str) -> Result<()> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| anyhow!(e.to_string()))
            .with_context(|| format!("{sql} failed"))
    }
}

type Param<'a> = &'a (dyn ToSql + Sync);
type QueryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

/// Statements to send back to back on one connection; results come back in the same order.
struct Pipeline<'a> {
    client: &'a Client,
    futures: Vec<QueryFuture<'a>>,
}

impl<'a> Pipeline<'a> {
    fn new(client: &'a Client) -> Self {
        Pipeline {
            client,
            futures: Vec::new(),
        }
    }

    fn push(&mut self, stmt: &'a Statement, params: Vec<Param<'a>>) -> usize {
        let client = self.client;
        self.futures
            .push(Box::pin(async move { client.query(stmt, &params).await }));
        self.futures.len() - 1
    }

    /// A simple-protocol batch (BEGIN, ROLLBACK: no parameters); its result is no rows.
    fn push_simple(&mut self, sql: &'a str) -> usize {
        let client = self.client;
        self.futures.push(Box::pin(async move {
            client.batch_execute(sql).await.map(|_| Vec::new())
        }));
        self.futures.len() - 1
    }

    /// Run a statement, then roll back to the savepoint `tc_probe` (set once after the role and
    /// context, and kept by ROLLBACK TO), so that its error or its write does not touch what follows.
    fn isolated(&mut self, conn: &'a Conn, stmt: &'a Statement, params: Vec<Param<'a>>) -> usize {
        let i = self.push(stmt, params);
        self.push(&conn.rollback_to, vec![]);
        i
    }

    /// tokio-postgres sends a request when its future is first polled: poll them in order, so
    /// that they reach the server in order, then wait for all.
    async fn run(self) -> Vec<Result<Vec<Row>, tokio_postgres::Error>> {
        let mut futures: Vec<Option<QueryFuture<'a>>> =
            self.futures.into_iter().map(Some).collect();
        let mut out: Vec<Option<Result<Vec<Row>, tokio_postgres::Error>>> =
            futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (slot, result) in futures.iter_mut().zip(out.iter_mut()) {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(r) => {
                            *result = Some(r);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        out.into_iter()
            .map(|r| r.expect("every future completed"))
            .collect()
    }
}

/// A statement that must succeed: its error stops the run (a lost connection is never a pass).
fn must(r: &Result<Vec<Row>, tokio_postgres::Error>, what: &str) -> Result<Vec<Row>> {
    match r {
        Ok(rows) => Ok(rows.clone()),
        Err(e) => Err(anyhow!(describe(e))).with_context(|| what.to_string()),
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    }
}

/// A probe's own outcome: rows, or a clean database error. A connection error stops the run.
fn probe_result<'r>(
    r: &'r Result<Vec<Row>, tokio_postgres::Error>,
    what: &str,
) -> Result<std::result::Result<&'r [Row], String>> {
    match r {
        Ok(rows) => Ok(Ok(rows)),
        Err(e)
            if e.as_db_error().is_some()
                && e.code()
                    != Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION) =>
        {
            Ok(Err(e
                .code()
                .map(|c| c.code().to_string())
                .unwrap_or_default()))
        }
        Err(e) => Err(anyhow!(describe(e))).with_context(|| format!("probe failed: {what}")),
    }
}

/// Per table: the app role's visible rows that belong to the tenant.
type OwnCounts = Vec<i64>;

/// Probe one tenant. `nested`: inside an outer transaction (synthetic tenants), so use a
/// savepoint instead of a transaction of its own.
async fn probe_tenant(conn: &Conn, tenant: Uuid, nested: bool) -> Result<(Tally, OwnCounts)> {
    probe_tenant_in(
        conn,
        tenant,
        nested,
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
    )
    .await
}

/// [`probe_tenant`], with `begin` starting the tenant's transaction when not nested.
async fn probe_tenant_in(
    conn: &Conn,
    tenant: Uuid,
    nested: bool,
    begin: &str,
) -> Result<(Tally, OwnCounts)> {
    let plan = &conn.plan;
    let mut tally = Tally::default();
    let (begin, end) = if nested {
        (
            "SAVEPOINT tc_tenant",
            "ROLLBACK TO SAVEPOINT tc_tenant; RELEASE SAVEPOINT tc_tenant",
        )
    } else {
        (begin, "ROLLBACK")
    };
    conn.simple(begin).await?;
    let result = probe_tenant_inner(conn, plan, tenant, &mut tally).await;
    // Always undo, even after a failed probe: nothing a probe wrote may survive.
    let undone = conn.simple(end).await;
    let own = result?;
    undone?;
    Ok((tally, own))
}

async fn probe_tenant_inner(
    conn: &Conn,
    plan: &Plan,
    tenant: Uuid,
    tally: &mut Tally,
) -> Result<OwnCounts> {
    let tid = tenant.to_string();

    // 1. As the admin: the tenant's count, another tenant's row, one of the tenant's rows.
    let mut p = Pipeline::new(&conn.client);
    p.push(&conn.set_role, vec![&plan.admin]);
    let admin_idx: Vec<Option<usize>> = conn
        .admins
        .iter()
        .map(|s| s.as_ref().map(|s| p.push(s, vec![&tenant])))
        .collect();
    let results = p.run().await;
    must(&results[0], &format!("cannot SET ROLE {}", plan.admin))?;
    struct Ref {
        count: Option<i64>,
        other_pk: Option<String>,
        other_tenant: Option<Uuid>,
        own_pk: Option<String>,
    }
    let mut refs = Vec::new();
    for (i, idx) in admin_idx.iter().enumerate() {
        refs.push(match idx {
            None => Ref {
                count: None,
                other_pk: None,
                other_tenant: None,
                own_pk: None,
            },
            Some(j) => {
                let rows = must(
                    &results[*j],
                    &format!("the admin cannot read {}", plan.targets[i].name),
                )?;
                let r = &rows[0];
                Ref {
                    count: Some(r.get(0)),
                    other_pk: r.get(1),
                    other_tenant: r.get(2),
                    own_pk: r.get(3),
                }
            }
        });
    }
    // Another tenant's id, for inserts and tenant-id changes: from any table that has one.
    let other_tenant = refs.iter().find_map(|r| r.other_tenant);

    // 2. As the app role with the tenant's context: everything else, in one pipeline.
    let setting = plan.setting.as_str();
    let mut p = Pipeline::new(&conn.client);
    p.push(&conn.set_role_ctx, vec![&plan.app, &setting, &tid]);
    p.push(&conn.savepoint, vec![]);
    let mut idx = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let count = p.push(&conn.counts[i], vec![&tenant, &r.other_pk]);
        let upd = match (&conn.updates[i], &r.other_pk) {
            (Some(s), Some(pk)) => Some(p.isolated(conn, s, vec![pk])),
            _ => None,
        };
        let del = match (&conn.deletes[i], &r.other_pk) {
            (Some(s), Some(pk)) => Some(p.isolated(conn, s, vec![pk])),
            _ => None,
        };
        let ins = match (&conn.inserts[i], &other_tenant) {
            (Some(s), Some(o)) => Some(p.isolated(conn, s, vec![o])),
            _ => None,
        };
        let chg = match (&r.own_pk, &other_tenant) {
            (Some(pk), Some(o)) => Some(p.isolated(conn, &conn.changes[i], vec![o, pk])),
            _ => None,
        };
        idx.push((count, upd, del, ins, chg));
    }
    let readable_idx: Vec<usize> = conn
        .readables
        .iter()
        .map(|s| p.isolated(conn, s, vec![&tid]))
        .collect();
    let results = p.run().await;
    must(
        &results[0],
        &format!("cannot SET ROLE {} with the tenant context", plan.app),
    )?;

    let mut own_counts = Vec::new();
    for (i, (count, upd, del, ins, chg)) in idx.into_iter().enumerate() {
        let target = &plan.targets[i];
        let obj = format!("table {}", target.name);
        let rows = must(
            &results[count],
            &format!("the app role cannot read {}", target.name),
        )?;
        let reads = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        own_counts.push(record_reads(
            tally,
            &target.name,
            tenant,
            reads,
            refs[i].count,
            refs[i].other_pk.is_some(),
        ));
        for (id, at, verb) in [
            ("probe.cross-update", upd, "updated"),
            ("probe.cross-delete", del, "deleted"),
        ] {
            let Some(j) = at else { continue };
            let hit = match probe_result(&results[j], id)? {
                Ok(rows) => !rows.is_empty(),
                // An error means the statement reached the row (a key or trigger objected).
                Err(code) => code != "42501",
            };
            tally.record(
                id,
                hit.then(|| {
                    Finding::new(
                        id,
                        &obj,
                        format!(
                            "tenant {tenant} {verb} another tenant's row of {}",
                            target.name
                        ),
                    )
                    .tenant(tenant)
                }),
            );
        }
        if let Some(j) = ins {
            record_insert(tally, &results[j], tenant, &obj, &target.name)?;
        }
        if let Some(j) = chg {
            record_change(tally, &results[j], tenant, &obj, &target.name)?;
        }
    }
    for (k, j) in readable_idx.into_iter().enumerate() {
        record_readable(tally, &plan.readables[k], &results[j], tenant)?;
    }
    Ok(own_counts)
}

/// What every tenant's fast probe shares, read by the admin once per run.
struct Shared {
    /// Starts each probe transaction (a batch's, or one tenant's statement by statement):
    /// REPEATABLE READ, in the snapshot the admin's counts were taken in when it could be
    /// exported.
    begin: String,
    /// Per target: up to two rows (key as text, tenant) of different tenants, so that every
    /// tenant has another tenant's row to attack when the table holds one.
    victims: Vec<Vec<(String, Uuid)>>,
}

impl Shared {
    fn victim(&self, target: usize, tenant: Uuid) -> Option<&(String, Uuid)> {
        self.victims[target].iter().find(|(_, t)| *t != tenant)
    }
}

/// One tenant to probe and the admin's count of its rows per target (None: the admin cannot read it).
type Job = (Uuid, Vec<Option<i64>>);

/// Probe a batch of tenants on one connection. The fast path is one round trip: a transaction
/// (REPEATABLE READ, in the admin's exported snapshot) as the app role in which one call of the
/// probe function ([`crate::sqlgen::probe_function`]) probes every tenant of the batch in turn,
/// then ROLLBACK. A tenant whose results are anything but clean reads and refusals (an UPDATE or
/// DELETE that touched a row or failed, an INSERT refused by anything but row-level security, a
/// name clash) is probed again statement by statement in a transaction of its own, which names
/// the table and check; so is the whole batch if the call fails (a statement timeout, which
/// PL/pgSQL blocks do not catch), and every tenant when the function could not be created.
async fn probe_batch(
    conn: &Conn,
    shared: &Shared,
    jobs: &[Job],
) -> Result<Vec<(Tally, OwnCounts)>> {
    let plan = &conn.plan;
    let slowly = |jobs: &[Job]| {
        let tenants: Vec<Uuid> = jobs.iter().map(|j| j.0).collect();
        async move {
            let mut out = Vec::new();
            for tenant in tenants {
                out.push(probe_tenant_in(conn, tenant, false, &shared.begin).await?);
            }
            anyhow::Ok(out)
        }
    };
    let Some(call) = &conn.probe else {
        return slowly(jobs).await;
    };
    let n = plan.targets.len();
    let tenants: Vec<Uuid> = jobs.iter().map(|j| j.0).collect();
    let mut others: Vec<Option<Uuid>> = Vec::new();
    let mut keys: Vec<Option<String>> = Vec::new();
    let mut moves: Vec<bool> = Vec::new();
    for (tenant, admin) in jobs {
        // Another tenant's id, for the INSERT and the tenant-id change: from any table with one.
        others.push((0..n).find_map(|i| shared.victim(i, *tenant).map(|v| v.1)));
        for (i, own_rows) in admin.iter().enumerate() {
            keys.push(shared.victim(i, *tenant).map(|v| v.0.clone()));
            moves.push(matches!(own_rows, Some(c) if *c > 0));
        }
    }
    let mut p = Pipeline::new(&conn.client);
    let begin = p.push_simple(&shared.begin);
    let role = p.push(&conn.set_role, vec![&plan.app]);
    let called = p.push(call, vec![&tenants, &others, &keys, &moves]);
    let end = p.push_simple("ROLLBACK");
    let results = p.run().await;
    // In the order sent, so that the first failure is the one reported (a server shutting
    // down fails the call with its reason, then everything after with "connection closed").
    must(&results[begin], "cannot begin a probe transaction")?;
    must(&results[role], &format!("cannot SET ROLE {}", plan.app))?;
    let rows = match &results[called] {
        Ok(rows) => rows,
        // The call failed but the connection lives (a statement timeout): statement by statement.
        Err(e) if e.as_db_error().is_some() && !conn.client.is_closed() => {
            must(&results[end], "cannot roll back a probe transaction")?;
            return slowly(jobs).await;
        }
        Err(e) => return Err(anyhow!(describe(e))).context("probe failed"),
    };
    must(&results[end], "cannot roll back a probe transaction")?;
    // Exactly one row per tenant and target; a tenant with any other shape is probed again
    // statement by statement (and the whole batch, when the count is off).
    let width = n + plan.readables.len();
    if rows.len() != jobs.len() * width {
        return slowly(jobs).await;
    }
    let mut per_tenant: Vec<Vec<Option<&Row>>> = vec![vec![None; width]; jobs.len()];
    let mut twice = vec![false; jobs.len()];
    for r in rows {
        let (k, target): (i32, i32) = (r.get(0), r.get(1));
        let k = (k as usize).wrapping_sub(1);
        if let Some(slot) = per_tenant
            .get_mut(k)
            .and_then(|t| t.get_mut(target as usize))
        {
            twice[k] |= slot.is_some();
            *slot = Some(r);
        }
    }

    let mut out = Vec::new();
    for (k, ((tenant, admin), got)) in jobs.iter().zip(&per_tenant).enumerate() {
        let tenant = *tenant;
        // Every probe that was to run left its result, and every result is clean; else this
        // tenant is probed again statement by statement.
        let ran = |tables: &[FastResult]| {
            tables
                .iter()
                .zip(&plan.targets)
                .enumerate()
                .all(|(i, (r, t))| {
                    let victim = keys[k * n + i].is_some();
                    let other = others[k].is_some();
                    (!victim || t.update.is_none() || r.updated.is_some())
                        && (!victim || t.delete.is_none() || r.deleted.is_some())
                        && (!other || t.insert.is_none() || r.insert.is_some())
                        && (!other || !moves[k * n + i] || r.change.is_some())
                })
        };
        let fast = got
            .iter()
            .map(|r| r.map(FastResult::of))
            .collect::<Option<Vec<FastResult>>>()
            .filter(|results| {
                let (tables, readables) = results.split_at(n);
                !twice[k]
                    && ran(tables)
                    && tables.iter().all(FastResult::clean)
                    && readables.iter().all(FastResult::clean_read)
            });
        let Some(results) = fast else {
            out.push(probe_tenant_in(conn, tenant, false, &shared.begin).await?);
            continue;
        };
        let (tables, readables) = results.split_at(n);
        let mut tally = Tally::default();
        let mut own_counts = Vec::new();
        for (i, (target, r)) in plan.targets.iter().zip(tables).enumerate() {
            let obj = format!("table {}", target.name);
            let victim = keys[k * n + i].is_some();
            own_counts.push(record_reads(
                &mut tally,
                &target.name,
                tenant,
                (
                    r.visible.unwrap_or(0),
                    r.foreign.unwrap_or(0),
                    r.looked_up.unwrap_or(0),
                ),
                admin[i],
                victim,
            ));
            if victim {
                // Clean: the UPDATE and DELETE of another tenant's row touched no row.
                if target.update.is_some() {
                    tally.pass("probe.cross-update");
                }
                if target.delete.is_some() {
                    tally.pass("probe.cross-delete");
                }
            }
            if let Some(state) = &r.insert {
                let outcome = match state.as_str() {
                    "accepted" => Ok(()),
                    code => Err(code.to_string()),
                };
                record_insert_outcome(&mut tally, outcome, tenant, &obj, &target.name);
            }
            if let Some(state) = &r.change {
                record_change_outcome(&mut tally, state == "moved", tenant, &obj, &target.name);
            }
        }
        for (readable, r) in plan.readables.iter().zip(readables) {
            // A view or function that refused (an error) leaked nothing.
            record_readable_rows(&mut tally, readable, r.foreign.unwrap_or(0), tenant);
        }
        out.push((tally, own_counts));
    }
    Ok(out)
}

/// The SQLSTATE of a name that is both a column and a variable of the probe function.
const AMBIGUOUS: &str = "42702";

/// One row of the probe function: one table (or view, or function) for one tenant.
struct FastResult {
    visible: Option<i64>,
    foreign: Option<i64>,
    looked_up: Option<i64>,
    updated: Option<i64>,
    deleted: Option<i64>,
    attack: Option<String>,
    insert: Option<String>,
    change: Option<String>,
}

impl FastResult {
    fn of(r: &Row) -> FastResult {
        FastResult {
            visible: r.get(2),
            foreign: r.get(3),
            looked_up: r.get(4),
            updated: r.get(5),
            deleted: r.get(6),
            attack: r.get(7),
            insert: r.get(8),
            change: r.get(9),
        }
    }

    /// Whether the fast path's result can be recorded as it is: the reads ran, the UPDATE and
    /// DELETE of another tenant's row touched nothing and did not fail, the INSERT (if probed)
    /// was accepted or refused by row-level security, and no statement met a name it could not
    /// resolve (42702: a column named like one of the function's variables). Anything else is
    /// probed again statement by statement, which says exactly what happened.
    fn clean(&self) -> bool {
        self.visible.is_some()
            && self.foreign.is_some()
            && self.looked_up.is_some()
            && matches!(self.updated, None | Some(0))
            && matches!(self.deleted, None | Some(0))
            && self.attack.is_none()
            && self
                .insert
                .as_deref()
                .is_none_or(|s| s == "accepted" || s == "42501")
            && self.change.as_deref() != Some(AMBIGUOUS)
    }

    /// A view's or function's row: whatever it returned or refused with (a refusal leaks
    /// nothing), unless the statement met a name it could not resolve (42702).
    fn clean_read(&self) -> bool {
        self.insert.as_deref() != Some(AMBIGUOUS)
    }
}

fn record_insert(
    tally: &mut Tally,
    result: &Result<Vec<Row>, tokio_postgres::Error>,
    tenant: Uuid,
    obj: &str,
    name: &str,
) -> Result<()> {
    let outcome = probe_result(result, "insert")?.map(|_| ());
    record_insert_outcome(tally, outcome, tenant, obj, name);
    Ok(())
}

/// An INSERT with another tenant's id: accepted, or the SQLSTATE it failed with.
fn record_insert_outcome(
    tally: &mut Tally,
    outcome: std::result::Result<(), String>,
    tenant: Uuid,
    obj: &str,
    name: &str,
) {
    // Row-level security's WITH CHECK runs before NOT NULL and key checks: anything
    // but its refusal (42501) means the row got past it.
    let bad = match outcome {
        Ok(()) => Some("was accepted".to_string()),
        Err(code) if code == "42501" => None,
        Err(code) => Some(format!(
            "got past row-level security (then failed with SQLSTATE {code})"
        )),
    };
    tally.record(
        "probe.cross-insert",
        bad.map(|b| {
            Finding::new(
                "probe.cross-insert",
                obj,
                format!("tenant {tenant}: an INSERT into {name} with another tenant's id {b}"),
            )
            .tenant(tenant)
        }),
    );
}

fn record_change(
    tally: &mut Tally,
    result: &Result<Vec<Row>, tokio_postgres::Error>,
    tenant: Uuid,
    obj: &str,
    name: &str,
) -> Result<()> {
    let moved = matches!(probe_result(result, "tenant id change")?, Ok(rows) if !rows.is_empty());
    record_change_outcome(tally, moved, tenant, obj, name);
    Ok(())
}

/// A tenant-id change of one of the tenant's rows: whether the row moved (any error: it did not).
fn record_change_outcome(tally: &mut Tally, moved: bool, tenant: Uuid, obj: &str, name: &str) {
    tally.record(
        "probe.tenant-id-change",
        moved.then(|| {
            Finding::new(
                "probe.tenant-id-change",
                obj,
                format!("tenant {tenant} moved one of its rows of {name} to another tenant"),
            )
            .tenant(tenant)
        }),
    );
}

/// Record the read probes of one table for one tenant: foreign rows seen, the count against the
/// admin's (when known), the look-up of another tenant's row (when one was probed). Returns the
/// tenant's own row count.
fn record_reads(
    tally: &mut Tally,
    name: &str,
    tenant: Uuid,
    (visible, foreign, looked_up): (i64, i64, i64),
    admin: Option<i64>,
    looked_up_probed: bool,
) -> i64 {
    let obj = format!("table {name}");
    tally.record(
        "probe.foreign-rows",
        (foreign > 0).then(|| {
            Finding::new(
                "probe.foreign-rows",
                &obj,
                format!("tenant {tenant} sees {foreign} row(s) of other tenants in {name}"),
            )
            .tenant(tenant)
        }),
    );
    if let Some(admin) = admin {
        tally.record(
            "probe.count",
            (visible - foreign != admin).then(|| {
                Finding::new(
                    "probe.count",
                    &obj,
                    format!(
                        "tenant {tenant} sees {} of its row(s) in {name}; the admin counts {admin}",
                        visible - foreign
                    ),
                )
                .tenant(tenant)
            }),
        );
    }
    if looked_up_probed {
        tally.record(
            "probe.cross-lookup",
            (looked_up > 0).then(|| {
                Finding::new(
                    "probe.cross-lookup",
                    &obj,
                    format!("tenant {tenant} found another tenant's row of {name} by its id"),
                )
                .tenant(tenant)
            }),
        );
    }
    visible - foreign
}

fn record_readable(
    tally: &mut Tally,
    r: &Readable,
    result: &Result<Vec<Row>, tokio_postgres::Error>,
    tenant: Uuid,
) -> Result<()> {
    let leaked = match probe_result(result, r.check_id())? {
        Ok(rows) => rows[0].get::<_, i64>(0),
        Err(_) => 0, // refusing is fine
    };
    record_readable_rows(tally, r, leaked, tenant);
    Ok(())
}

/// A view or function the app role can read returned `leaked` rows of other tenants.
fn record_readable_rows(tally: &mut Tally, r: &Readable, leaked: i64, tenant: Uuid) {
    let id = r.check_id();
    tally.record(
        id,
        (leaked > 0).then(|| {
            Finding::new(
                id,
                format!("{} {}", r.kind, r.name),
                format!(
                    "{} {} returned {leaked} row(s) of other tenants to tenant {tenant}",
                    r.kind, r.name
                ),
            )
            .tenant(tenant)
        }),
    );
}

/// No context, an empty one and a malformed one: 0 rows or an error, never rows.
async fn context_probes(conn: &Conn, nested: bool) -> Result<Tally> {
    let plan = &conn.plan;
    let mut tally = Tally::default();
    let (begin, end) = if nested {
        (
            "SAVEPOINT tc_tenant",
            "ROLLBACK TO SAVEPOINT tc_tenant; RELEASE SAVEPOINT tc_tenant",
        )
    } else {
        ("BEGIN", "ROLLBACK")
    };
    for (id, value) in [
        ("probe.no-context", None),
        ("probe.empty-context", Some("")),
        ("probe.garbage-context", Some("not-a-tenant-id")),
    ] {
        conn.simple(begin).await?;
        let setting = plan.setting.as_str();
        let value = value.unwrap_or_default();
        let nil = Uuid::nil();
        let none: Option<String> = None;
        let mut p = Pipeline::new(&conn.client);
        if id == "probe.no-context" {
            p.push(&conn.set_role, vec![&plan.app]);
        } else {
            p.push(&conn.set_role_ctx, vec![&plan.app, &setting, &value]);
        }
        p.push(&conn.savepoint, vec![]);
        let idx: Vec<usize> = conn
            .counts
            .iter()
            .map(|s| p.isolated(conn, s, vec![&nil, &none]))
            .collect();
        let results = p.run().await;
        let undone = conn.simple(end).await;
        must(&results[0], &format!("cannot SET ROLE {}", plan.app))?;
        for (i, j) in idx.into_iter().enumerate() {
            let name = &plan.targets[i].name;
            let seen = match probe_result(&results[j], id)? {
                Ok(rows) => rows[0].get::<_, i64>(0),
                Err(_) => 0,
            };
            tally.record(
                id,
                (seen > 0).then(|| {
                    Finding::new(
                        id,
                        format!("table {name}"),
                        match id {
                            "probe.no-context" => format!(
                                "with no context set, the app role sees {seen} row(s) of {name}"
                            ),
                            _ => format!(
                                "with context {value:?} the app role sees {seen} row(s) of {name}"
                            ),
                        },
                    )
                }),
            );
        }
        undone?;
    }
    Ok(tally)
}

/// A context set with set_config(..., true) must be gone in the next transaction.
async fn context_leak(client: &Client, plan: &Plan) -> Result<Tally> {
    let mut tally = Tally::default();
    let t = Uuid::new_v4().to_string();
    client
        .batch_execute("BEGIN")
        .await
        .context("cannot begin")?;
    client
        .execute(
            "SELECT pg_catalog.set_config($1, $2, true)",
            &[&plan.setting, &t],
        )
        .await
        .context("cannot set the tenant context")?;
    client
        .batch_execute("COMMIT")
        .await
        .context("cannot commit")?;
    let left: Option<String> = client
        .query_one(
            "SELECT pg_catalog.current_setting($1, true)",
            &[&plan.setting],
        )
        .await
        .context("cannot read the tenant context")?
        .get(0);
    tally.record(
        "probe.context-leak",
        left.filter(|v| !v.is_empty()).map(|v| {
            Finding::new(
                "probe.context-leak",
                format!("setting {}", plan.setting),
                format!(
                    "{} is still {v:?} after the transaction that set it",
                    plan.setting
                ),
            )
        }),
    );
    Ok(tally)
}

/// Create two synthetic tenants (a row in every table each) inside the caller's transaction.
/// `Ok(None)` when the admin role may not create them (reported as a finding): the admin
/// bypass is broken, which the static checks explain.
async fn create_synthetic(
    conn: &Conn,
    schema: &Schema,
    tally: &mut Tally,
) -> Result<Option<Vec<Uuid>>> {
    let plan = &conn.plan;
    conn.simple("SAVEPOINT tc_synthetic").await?;
    let result = async {
        conn.client
            .execute(
                "SELECT pg_catalog.set_config('role', $1, true)",
                &[&plan.admin],
            )
            .await?;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let tenant = Uuid::new_v4();
            let mut keys: std::collections::BTreeMap<String, String> = Default::default();
            for st in &plan.synthetic {
                let own = if st.table == plan.tenant_table {
                    tenant
                } else {
                    Uuid::new_v4()
                };
                let values: Vec<String> = st
                    .values
                    .iter()
                    .map(|v| match v {
                        SynValue::Tenant => tenant.to_string(),
                        SynValue::OwnKey => own.to_string(),
                        SynValue::Parent(p) => keys.get(p).cloned().unwrap_or_default(),
                        SynValue::Fresh(ty) => synthetic_value(ty),
                    })
                    .collect();
                let params: Vec<Param> = values.iter().map(|v| v as Param).collect();
                conn.client.execute(&st.sql, &params).await?;
                if st.pk_uuid {
                    keys.insert(st.table.clone(), own.to_string());
                }
            }
            ids.push(tenant);
        }
        Ok::<_, tokio_postgres::Error>(ids)
    }
    .await;
    match result {
        Ok(ids) => {
            // Back to the connecting role; the rows stay until the outer rollback.
            conn.client
                .execute("SELECT pg_catalog.set_config('role', 'none', true)", &[])
                .await
                .context("cannot reset the role")?;
            conn.simple("RELEASE SAVEPOINT tc_synthetic").await?;
            Ok(Some(ids))
        }
        Err(e) if e.as_db_error().is_some() => {
            conn.simple("ROLLBACK TO SAVEPOINT tc_synthetic").await?;
            if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                tally.fail(Finding::new(
                    "probe.admin-sees-all",
                    format!("role {}", schema.tenancy.admin_role),
                    format!(
                        "the admin role {} cannot create probe tenants: {}",
                        schema.tenancy.admin_role,
                        describe(&e)
                    ),
                ));
                Ok(None)
            } else {
                bail!(
                    "cannot create synthetic probe tenants: {}\n  hint: seed at least two tenants with a row in each table, then run verify again",
                    describe(&e)
                )
            }
        }
        Err(e) => Err(anyhow!(describe(&e))).context("cannot create synthetic probe tenants"),
    }
}

/// The admin's total per table, compared with the sum of what each tenant sees of its own.
async fn admin_totals(conn: &Conn, sums: &[i64], nested: bool) -> Result<Tally> {
    let plan = &conn.plan;
    let mut tally = Tally::default();
    let (begin, end) = if nested {
        (
            "SAVEPOINT tc_tenant",
            "ROLLBACK TO SAVEPOINT tc_tenant; RELEASE SAVEPOINT tc_tenant",
        )
    } else {
        ("BEGIN", "ROLLBACK")
    };
    conn.simple(begin).await?;
    let result = async {
        conn.client
            .execute(
                "SELECT pg_catalog.set_config('role', $1, true)",
                &[&plan.admin],
            )
            .await?;
        let mut totals = Vec::new();
        for t in &plan.targets {
            totals.push(match &t.admin_total {
                Some(sql) => Some(
                    conn.client
                        .query_one(sql.as_str(), &[])
                        .await?
                        .get::<_, i64>(0),
                ),
                None => None,
            });
        }
        Ok::<_, tokio_postgres::Error>(totals)
    }
    .await;
    conn.simple(end).await?;
    let totals = result
        .map_err(|e| anyhow!(describe(&e)))
        .context("cannot count as the admin")?;
    for (i, total) in totals.into_iter().enumerate() {
        let name = &plan.targets[i].name;
        let sum = sums[i];
        tally.record(
            "probe.admin-sees-all",
            match total {
                Some(total) if total >= sum => None,
                Some(total) => Some(format!(
                    "the admin sees {total} row(s) of {name}; the tenants see {sum} of their own"
                )),
                None => Some(format!("the admin cannot read {name}")),
            }
            .map(|m| Finding::new("probe.admin-sees-all", format!("table {name}"), m)),
        );
    }
    Ok(tally)
}

pub(super) async fn run(
    url: &pg::Target,
    client: &Client,
    schema: &Schema,
    settings: &Settings,
) -> Result<Outcome> {
    // The probe connections are opened (authentication included) while the plan is built.
    let connecting: Vec<Connecting> = (0..settings.connections.clamp(1, 16))
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { pg::connect(&url).await })
        })
        .collect();
    let plan = Arc::new(Plan::build(client, schema).await?);
    let mut tally = context_leak(client, &plan).await?;

    // How many tenants the admin sees decides between probing real tenants in parallel, and
    // synthetic ones inside one transaction.
    client
        .batch_execute("BEGIN")
        .await
        .context("cannot begin")?;
    let counted = async {
        client
            .execute(
                "SELECT pg_catalog.set_config('role', $1, true)",
                &[&plan.admin],
            )
            .await?;
        client
            .query_one(plan.tenant_count.as_str(), &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    }
    .await;
    client
        .batch_execute("ROLLBACK")
        .await
        .context("cannot roll back")?;
    let total = counted.context("cannot count tenants as the admin")? as u64;

    let named: Option<Vec<Uuid>> = match &settings.tenants {
        TenantSelection::Named(names) => Some(resolve(client, &plan, names).await?),
        _ => None,
    };
    if total < 2 {
        let all = matches!(settings.tenants, TenantSelection::All);
        connecting.iter().for_each(|c| c.abort());
        return run_synthetic(url, plan, schema, named, tally, all).await;
    }
    let expected = match (&settings.tenants, &named) {
        (_, Some(n)) => n.len() as u64,
        (TenantSelection::Sample(n), _) => (*n).min(total),
        _ => total,
    };
    let bar = if settings.progress {
        crate::output::progress(expected, "probing tenants")
    } else {
        indicatif::ProgressBar::hidden()
    };

    // The feed: one REPEATABLE READ transaction as the admin that picks the victims, exports
    // its snapshot for every tenant's transaction, and streams tenant ids with the admin's
    // counts of their rows. It stays open until the workers are done (they import its snapshot).
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .context("cannot begin")?;
    let result = probe_all(client, connecting, &plan, settings, named, expected, &bar).await;
    let undone = client.batch_execute("ROLLBACK").await;
    bar.finish_and_clear();
    let (probe_tally, sums, probed) = result?;
    undone.context("cannot roll back")?;
    tally.merge(probe_tally);
    if matches!(settings.tenants, TenantSelection::All) {
        tally.merge(admin_sees_all(&plan, &sums));
    }
    Ok(Outcome {
        tally,
        tenants_probed: probed,
        synthetic: false,
    })
}

/// A probe connection being opened.
type Connecting = tokio::task::JoinHandle<Result<Client>>;

/// Tenants probed per pipelined batch on one connection.
const BATCH: usize = 64;

/// Sums over the probed tenants, per target: what each saw of its own rows, and the admin's counts.
struct Sums {
    own: Vec<i64>,
    admin: Vec<Option<i64>>,
}

/// The probe phase proper, inside the feed transaction on `client`.
async fn probe_all(
    client: &Client,
    mut connecting: Vec<Connecting>,
    plan: &Arc<Plan>,
    settings: &Settings,
    named: Option<Vec<Uuid>>,
    expected: u64,
    bar: &indicatif::ProgressBar,
) -> Result<(Tally, Sums, u64)> {
    // Unexportable (a standby, a pooler that refuses it): each tenant then reads its own snapshot.
    let snapshot: Option<String> = match client
        .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await
    {
        Ok(r) => Some(r.get(0)),
        Err(e) if e.as_db_error().is_some() => {
            client
                .batch_execute("ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await
                .context("cannot begin")?;
            None
        }
        Err(e) => return Err(anyhow!(describe(&e))).context("cannot export a snapshot"),
    };
    let mut begin = "BEGIN ISOLATION LEVEL REPEATABLE READ".to_string();
    if let Some(id) = &snapshot {
        // A snapshot id is hex digits and dashes; quoted all the same.
        begin.push_str(&format!(
            "; SET TRANSACTION SNAPSHOT {}",
            postgres_protocol::escape::escape_literal(id)
        ));
    }
    let setup = async {
        // A plan over every tenant's subqueries would be JIT-compiled for nothing.
        client.batch_execute("SET LOCAL jit = off").await?;
        client
            .execute(
                "SELECT pg_catalog.set_config('role', $1, true)",
                &[&plan.admin],
            )
            .await?;
        let mut victims = Vec::new();
        for t in &plan.targets {
            let mut v: Vec<(String, Uuid)> = Vec::new();
            if let Some(a) = &t.admin_side {
                if let Some(r) = client.query_opt(a.first.as_str(), &[]).await? {
                    let (pk, tenant): (String, Uuid) = (r.get(0), r.get(1));
                    if let Some(r) = client.query_opt(a.other.as_str(), &[&tenant]).await? {
                        v.push((r.get(0), r.get(1)));
                    }
                    v.push((pk, tenant));
                }
            }
            victims.push(v);
        }
        Ok::<_, tokio_postgres::Error>(victims)
    }
    .await;
    let victims = setup
        .map_err(|e| anyhow!(describe(&e)))
        .context("cannot read reference rows as the admin")?;
    let shared = Arc::new(Shared { begin, victims });

    // Workers: each its own connection and prepared statements, taking tenants from a queue.
    let (tx, rx) = mpsc::channel::<Job>(256);
    let rx = Arc::new(Mutex::new(rx));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = settings
        .connections
        .clamp(1, 16)
        .min(expected.max(1) as usize);
    let n = plan.targets.len();
    let mut handles = Vec::new();
    // Connections beyond the workers' are not needed.
    connecting
        .drain(workers.min(connecting.len())..)
        .for_each(|c| c.abort());
    for (index, connected) in connecting.into_iter().enumerate() {
        let (plan, rx, stop, bar, shared) = (
            plan.clone(),
            rx.clone(),
            stop.clone(),
            bar.clone(),
            shared.clone(),
        );
        handles.push(tokio::spawn(async move {
            let result = async {
                let client = connected
                    .await
                    .map_err(|e| anyhow!("a probe connection failed: {e}"))??;
                let mut conn = Conn::new(client, plan.clone()).await?;
                conn.probe_function().await?;
                let mut tally = Tally::default();
                let mut own = vec![0i64; n];
                let mut probed = 0u64;
                let mut batch = Vec::with_capacity(BATCH);
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    {
                        // Wait for one tenant, then take what is already queued, up to a batch.
                        let mut rx = rx.lock().await;
                        let Some(job) = rx.recv().await else { break };
                        batch.push(job);
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                    }
                    for (t, counts) in probe_batch(&conn, &shared, &batch).await? {
                        tally.merge(t);
                        for (s, o) in own.iter_mut().zip(counts) {
                            *s += o;
                        }
                    }
                    probed += batch.len() as u64;
                    bar.inc(batch.len() as u64);
                    batch.clear();
                }
                // The context probes (once per run) on the first worker's connection, last.
                if index == 0 && !stop.load(Ordering::Relaxed) {
                    tally.merge(context_probes(&conn, false).await?);
                }
                anyhow::Ok((tally, own, probed))
            }
            .await;
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            result
        }));
    }

    // Only the workers hold the queue now: when they all stop, sending fails and the feed ends.
    drop(rx);

    // Stream the tenant ids with the admin's counts: memory stays flat whatever the number of
    // tenants (the aggregation is the server's).
    let mut admin_sums: Vec<Option<i64>> = plan
        .targets
        .iter()
        .map(|t| t.admin_side.as_ref().map(|_| 0))
        .collect();
    let feed = async {
        let limit;
        let ids;
        let rows = match (&settings.tenants, &named) {
            (_, Some(n)) => {
                ids = n.clone();
                client
                    .query_raw(plan.feed_named.as_str(), [&ids as Param])
                    .await?
            }
            (TenantSelection::Sample(n), _) => {
                limit = *n as i64;
                client
                    .query_raw(plan.feed_sample.as_str(), [&limit as Param])
                    .await?
            }
            _ => {
                client
                    .query_raw(plan.feed_all.as_str(), std::iter::empty::<Param>())
                    .await?
            }
        };
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.next().await {
            let row = row?;
            let counts: Vec<Option<i64>> = (0..n).map(|i| row.get(i + 1)).collect();
            for (s, c) in admin_sums.iter_mut().zip(&counts) {
                if let (Some(s), Some(c)) = (s.as_mut(), c) {
                    *s += c;
                }
            }
            if stop.load(Ordering::Relaxed) || tx.send((row.get(0), counts)).await.is_err() {
                break;
            }
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let fed = feed
        .await
        .map_err(|e| anyhow!(describe(&e)))
        .context("cannot list tenants");
    drop(tx);
    let mut tally = Tally::default();
    let mut own = vec![0i64; n];
    let mut probed = 0;
    let mut first_error = None;
    for h in handles {
        match h
            .await
            .map_err(|e| anyhow!("a probe worker failed: {e}"))
            .and_then(|r| r)
        {
            Ok((t, s, k)) => {
                tally.merge(t);
                for (a, b) in own.iter_mut().zip(s) {
                    *a += b;
                }
                probed += k;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    fed?;
    Ok((
        tally,
        Sums {
            own,
            admin: admin_sums,
        },
        probed,
    ))
}

/// The admin sees at least every tenant's own rows: per table, the admin's counts of every
/// tenant's rows (one snapshot with the probes) against the sum of what the tenants saw.
fn admin_sees_all(plan: &Plan, sums: &Sums) -> Tally {
    let mut tally = Tally::default();
    for (i, t) in plan.targets.iter().enumerate() {
        let name = &t.name;
        let sum = sums.own[i];
        tally.record(
            "probe.admin-sees-all",
            match sums.admin[i] {
                Some(total) if total >= sum => None,
                Some(total) => Some(format!(
                    "the admin sees {total} of the tenants' row(s) of {name}; the tenants see {sum} of their own"
                )),
                None => Some(format!("the admin cannot read {name}")),
            }
            .map(|m| Finding::new("probe.admin-sees-all", format!("table {name}"), m)),
        );
    }
    tally
}

/// Fewer than two tenants: create two synthetic ones in one transaction, probe every tenant in
/// it on one connection (nothing uncommitted is visible to another), and roll it all back.
async fn run_synthetic(
    url: &pg::Target,
    plan: Arc<Plan>,
    schema: &Schema,
    named: Option<Vec<Uuid>>,
    mut tally: Tally,
    all: bool,
) -> Result<Outcome> {
    let conn = Conn::new(pg::connect(url).await?, plan.clone()).await?;
    conn.simple("BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    let result = async {
        let mut tenants: Vec<Uuid> = match &named {
            Some(n) => n.clone(),
            None => {
                conn.simple("SAVEPOINT tc_list").await?;
                let listed = async {
                    conn.client
                        .execute(
                            "SELECT pg_catalog.set_config('role', $1, true)",
                            &[&plan.admin],
                        )
                        .await?;
                    conn.client.query(plan.tenant_query.as_str(), &[]).await
                }
                .await;
                conn.simple("ROLLBACK TO SAVEPOINT tc_list; RELEASE SAVEPOINT tc_list")
                    .await?;
                listed
                    .map_err(|e| anyhow!(describe(&e)))
                    .context("cannot list tenants")?
                    .iter()
                    .map(|r| r.get::<_, Uuid>(0))
                    .collect()
            }
        };
        let synthetic = create_synthetic(&conn, schema, &mut tally).await?;
        if named.is_none() {
            tenants.extend(synthetic.unwrap_or_default());
        }
        let mut sums = vec![0i64; plan.targets.len()];
        for t in &tenants {
            let (t, own) = probe_tenant(&conn, *t, true).await?;
            tally.merge(t);
            for (s, o) in sums.iter_mut().zip(own) {
                *s += o;
            }
        }
        tally.merge(context_probes(&conn, true).await?);
        if all {
            tally.merge(admin_totals(&conn, &sums, true).await?);
        }
        anyhow::Ok(tenants.len() as u64)
    }
    .await;
    let undone = conn.simple("ROLLBACK").await;
    let probed = result?;
    undone?;
    Ok(Outcome {
        tally,
        tenants_probed: probed,
        synthetic: true,
    })
}

/// Tenant ids from `--tenant` values: a uuid, or a slug when the tenant table has one.
async fn resolve(client: &Client, plan: &Plan, names: &[String]) -> Result<Vec<Uuid>> {
    let mut out = Vec::new();
    for n in names {
        if let Ok(id) = n.parse::<Uuid>() {
            out.push(id);
            continue;
        }
        let Some(sql) = &plan.tenant_by_slug else {
            bail!(
                "{n:?} is not a tenant id (uuid), and {} has no slug column",
                plan.tenant_table
            );
        };
        client.batch_execute("BEGIN").await?;
        let found = async {
            client
                .execute(
                    "SELECT pg_catalog.set_config('role', $1, true)",
                    &[&plan.admin],
                )
                .await?;
            client.query_opt(sql.as_str(), &[n]).await
        }
        .await;
        client.batch_execute("ROLLBACK").await?;
        match found.context("cannot look up the tenant")? {
            Some(r) => out.push(r.get(0)),
            None => bail!("no tenant with slug {n:?} in {}", plan.tenant_table),
        }
    }
    Ok(out)
}
