//! Synthetic tenants: with fewer than two tenants there is no other tenant's row to attack, so
//! two are created (a row in every table each) inside a transaction that is rolled back.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use postgres_types::Type;
use uuid::Uuid;

use super::pipeline::Param;
use super::plan::{key_column, Plan};
use super::session::Conn;
use super::{tenant, Outcome};
use crate::model::{Constraint, Schema, Table};
use crate::pg;
use crate::pg::error::describe;
use crate::pg::tx::set_role;
use crate::sqlgen;
use crate::verify::tx::{Scope, LIST_SAVEPOINT};
use crate::verify::{Finding, Tally};

/// One table's synthetic row.
#[derive(Debug)]
pub(super) struct SyntheticTable {
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
    /// An existing row's key in a global reference table: this statement reads one.
    Global(String),
    /// A fresh value of this declared type (unique, for unique columns).
    Fresh(String),
}

/// The declared tables, parents before children (a cycle: in any order, and Postgres says what
/// is wrong).
fn parents_first(schema: &Schema) -> Vec<&String> {
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
            order.append(&mut left);
        }
    }
    order
}

/// Inserts that give two synthetic tenants one row in every table, parents before children.
pub(super) fn plan(schema: &Schema) -> Vec<SyntheticTable> {
    parents_first(schema)
        .into_iter()
        .map(|name| synthetic_table(schema, name, &schema.tables[name]))
        .collect()
}

/// One table's insert: the tenant column, its uuid key, the keys of its parents and a value for
/// every other column that needs one.
fn synthetic_table(schema: &Schema, name: &str, table: &Table) -> SyntheticTable {
    let pk = key_column(table);
    let mut parents: BTreeMap<&String, String> = BTreeMap::new();
    let mut globals: BTreeMap<&String, String> = BTreeMap::new();
    for c in table.constraints.values() {
        if let Constraint::ForeignKey {
            columns,
            table: parent,
            ref_columns,
            ..
        } = c
        {
            if schema.globals.contains_key(parent) {
                for (col, key) in columns.iter().zip(ref_columns) {
                    let sql = sqlgen::any_key(&schema.tenancy.table_schema, parent, key);
                    globals.insert(col, sql);
                }
                continue;
            }
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
        } else if let Some(sql) = globals.get(&c.name) {
            SynValue::Global(sql.clone())
        } else {
            SynValue::Fresh(ty.clone())
        };
        cols.push((c.name.clone(), c.ty.clone()));
        values.push(v);
    }
    SyntheticTable {
        table: name.to_string(),
        sql: sqlgen::synthetic_insert(&schema.tenancy.table_schema, name, &cols),
        values,
        pk_uuid,
    }
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

/// The server's message and SQLSTATE, without detail or hint. Not `pg::error::describe`: this
/// text is part of the probe.admin-sees-all finding's message (and of the error that stops the
/// run when the tenants cannot be created), which stay as they were: a detail would print the
/// failing row.
fn message_and_sqlstate(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => describe(e),
    }
}

/// One existing key of a global reference table, as text (an empty table gives NULL, which the
/// insert then refuses: seeding the reference data is the user's part).
async fn global_key(conn: &Conn, sql: &str) -> Result<String, tokio_postgres::Error> {
    let row = conn.client.query_typed(sql, &[]).await?;
    Ok(row
        .first()
        .and_then(|r| r.get::<_, Option<String>>(0))
        .unwrap_or_default())
}

/// Insert the synthetic tenants' rows as the admin role.
async fn insert_tenants(conn: &Conn) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let plan = &conn.plan;
    set_role(&conn.client, &plan.admin).await?;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let tenant = Uuid::new_v4();
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        for st in &plan.synthetic {
            let own = if st.table == plan.tenant_table {
                tenant
            } else {
                Uuid::new_v4()
            };
            let mut values: Vec<String> = Vec::with_capacity(st.values.len());
            for v in &st.values {
                values.push(match v {
                    SynValue::Tenant => tenant.to_string(),
                    SynValue::OwnKey => own.to_string(),
                    SynValue::Parent(p) => keys.get(p).cloned().unwrap_or_default(),
                    SynValue::Global(sql) => global_key(conn, sql).await?,
                    SynValue::Fresh(ty) => synthetic_value(ty),
                });
            }
            // Each bound as text (the statement casts it), unnamed.
            let params: Vec<(Param, Type)> =
                values.iter().map(|v| (v as Param, Type::TEXT)).collect();
            conn.client.execute_typed(&st.sql, &params).await?;
            if st.pk_uuid {
                keys.insert(st.table.clone(), own.to_string());
            }
        }
        ids.push(tenant);
    }
    Ok(ids)
}

/// Create two synthetic tenants (a row in every table each) inside the caller's transaction:
/// kept (the savepoint released) when they could be created, undone when not.
/// `Ok(None)` when the admin role may not create them (reported as a finding): the admin
/// bypass is broken, which the static checks explain.
pub(super) async fn create(
    conn: &Conn,
    schema: &Schema,
    tally: &mut Tally,
) -> Result<Option<Vec<Uuid>>> {
    conn.simple("SAVEPOINT tc_synthetic").await?;
    match insert_tenants(conn).await {
        Ok(ids) => {
            // Back to the connecting role; the rows stay until the outer rollback.
            set_role(&conn.client, "none")
                .await
                .context("cannot reset the role")?;
            conn.simple("RELEASE SAVEPOINT tc_synthetic").await?;
            Ok(Some(ids))
        }
        Err(e) if e.as_db_error().is_some() => {
            conn.simple("ROLLBACK TO SAVEPOINT tc_synthetic").await?;
            if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                let admin = &schema.tenancy.admin_role;
                tally.fail(Finding::new(
                    "probe.admin-sees-all",
                    format!("role {admin}"),
                    format!(
                        "the admin role {admin} cannot create probe tenants: {}",
                        message_and_sqlstate(&e)
                    ),
                ));
                Ok(None)
            } else {
                bail!(
                    "cannot create synthetic probe tenants: {}\n  hint: seed at least two tenants with a row in each table, then run verify again",
                    message_and_sqlstate(&e)
                )
            }
        }
        Err(e) => Err(anyhow!(describe(&e))).context("cannot create synthetic probe tenants"),
    }
}

/// Fewer than two tenants: create two synthetic ones in one transaction, probe every tenant in
/// it on one connection (nothing uncommitted is visible to another), and roll it all back.
pub(super) async fn run(
    url: &pg::Target,
    plan: Arc<Plan>,
    schema: &Schema,
    named: Option<Vec<Uuid>>,
    mut tally: Tally,
    all: bool,
) -> Result<Outcome> {
    let conn = Conn::new(pg::connect(url).await?, plan.clone(), None).await?;
    let (result, undone) = conn
        .rolled_back(&Scope::RepeatableRead, async {
            let mut tenants: Vec<Uuid> = match &named {
                Some(n) => n.clone(),
                None => list_tenants(&conn).await?,
            };
            let synthetic = create(&conn, schema, &mut tally).await?;
            if named.is_none() {
                tenants.extend(synthetic.unwrap_or_default());
            }
            let mut sums = vec![0i64; plan.targets.len()];
            for t in &tenants {
                let (t, own) = tenant::probe(&conn, *t, true).await?;
                tally.merge(t);
                for (s, o) in sums.iter_mut().zip(own) {
                    *s += o;
                }
            }
            tally.merge(tenant::context_probes(&conn, true).await?);
            if all {
                tally.merge(tenant::admin_totals(&conn, &sums, true).await?);
            }
            anyhow::Ok(tenants.len() as u64)
        })
        .await?;
    let probed = result?;
    undone?;
    Ok(Outcome {
        tally,
        tenants_probed: probed,
        synthetic: true,
    })
}

/// The existing tenants, listed as the admin role (in a savepoint, so the role does not stay).
async fn list_tenants(conn: &Conn) -> Result<Vec<Uuid>> {
    let plan = &conn.plan;
    let (listed, undone) = conn
        .rolled_back(&Scope::Savepoint(LIST_SAVEPOINT), async {
            set_role(&conn.client, &plan.admin).await?;
            conn.client
                .query_typed(plan.tenant_query.as_str(), &[])
                .await
        })
        .await?;
    undone?;
    Ok(listed
        .map_err(|e| anyhow!(describe(&e)))
        .context("cannot list tenants")?
        .iter()
        .map(|r| r.get::<_, Uuid>(0))
        .collect())
}
