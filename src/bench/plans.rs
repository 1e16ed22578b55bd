//! Plan checks: whether a tenant query on a tenant table CAN use an index led by the tenant
//! column, and evaluates the tenant context once (an InitPlan's parameter, not a function call
//! in a per-row condition). Asked of the planner as the app role in a tenant's context with
//! sequential scans priced out (`EXPLAIN`, never `ANALYZE`), so a small database, which always
//! plans sequential scans, gives the same answer as a large one. Shared by `bench` and meant for
//! `verify` (`perf.*` warnings): see [`check_tables`].

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::model::Schema;
use crate::pg;
use crate::pg::error::pg_error;
use crate::pg::unnamed::{typed, Typed};
use crate::sqlgen::bench as sql;
use crate::sqlgen::bench::{Form, Shape};

/// The query can use an index whose first column is the tenant column, on that column.
pub const TENANT_INDEX: &str = "perf.tenant-index";
/// The tenant condition compares with a value computed once per statement, not a call per row.
pub const CONTEXT_ONCE: &str = "perf.context-once";

/// One check of one table's plan: findings-like (a name, whether it passed, what was seen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanCheck {
    pub name: &'static str,
    /// The table, qualified with its schema.
    pub table: String,
    pub ok: bool,
    pub detail: String,
}

/// Every tenant table of `schema`, as it lives in schema `schema_name` (the model's
/// `tenancy.table_schema` for the real tables): `SELECT * FROM <table>` planned as the app role in
/// a tenant's context. Two checks per table ([`TENANT_INDEX`], [`CONTEXT_ONCE`]), each in its own
/// rolled-back transaction; a failed check is a performance warning, not an isolation error.
pub async fn check_tables(
    client: &mut Client,
    schema: &Schema,
    schema_name: &str,
) -> Result<Vec<PlanCheck>> {
    let mut out = Vec::new();
    for table in schema.tables.keys() {
        out.extend(check_table(client, schema, schema_name, table).await?);
    }
    Ok(out)
}

/// One tenant table's checks: see [`check_tables`].
pub async fn check_table(
    client: &mut Client,
    schema: &Schema,
    schema_name: &str,
    table: &str,
) -> Result<Vec<PlanCheck>> {
    let shape = Shape::Page {
        order: schema.tables[table].tenant_column.clone(),
    };
    let select = sql::query(schema, schema_name, table, &shape, Form::Policy);
    check_statement(client, schema, schema_name, table, &select, &[]).await
}

/// The checks of one statement (in policy form, with its parameters) on `table`; none when the
/// plan does not scan it (an INSERT).
pub async fn check_statement(
    client: &mut Client,
    schema: &Schema,
    schema_name: &str,
    table: &str,
    statement: &str,
    params: &[Typed<'_>],
) -> Result<Vec<PlanCheck>> {
    let tc = &schema.tables[table].tenant_column;
    let indexes: Vec<String> = client
        .query_typed(sql::TENANT_LED_INDEXES, typed![schema_name, table, tc])
        .await
        .map_err(pg_error)
        .context("cannot list the tenant-led indexes")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = explain_as_tenant(client, schema, statement, params).await?;
    let place = format!("{schema_name}.{table}");
    Ok(assess(
        &plan,
        &place,
        table,
        tc,
        &indexes,
        &schema.tenancy.context_function,
    ))
}

/// The JSON plan of `statement` as the app role in a (random) tenant's context, with sequential
/// scans disabled; the transaction is rolled back.
async fn explain_as_tenant(
    client: &mut Client,
    schema: &Schema,
    statement: &str,
    params: &[Typed<'_>],
) -> Result<Value> {
    let t = &schema.tenancy;
    let tx = client.transaction().await.map_err(pg_error)?;
    let tenant = Uuid::new_v4().to_string();
    pg::tx::set_tenant(&tx, &t.app_role, &t.context_setting, &tenant)
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot act as {} in a tenant context", t.app_role))?;
    tx.batch_execute(sql::NO_SEQSCAN).await.map_err(pg_error)?;
    let row = tx
        .query_typed(&sql::explain(statement), params)
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot EXPLAIN {statement}"))?
        .into_iter()
        .next()
        .with_context(|| format!("EXPLAIN {statement} returned no row"))?;
    tx.rollback().await.map_err(pg_error)?;
    match row.try_get::<_, Value>(0) {
        Ok(v) => Ok(v),
        Err(_) => Ok(serde_json::from_str(&row.get::<_, String>(0))?),
    }
}

/// What one scan of the table shows: its node type, the indexes it uses, its index conditions
/// and every other condition.
#[derive(Debug, Default)]
struct Scan {
    node: String,
    indexes: Vec<String>,
    index_conds: Vec<String>,
    other_conds: Vec<String>,
}

/// The checks of a JSON plan (as `EXPLAIN (FORMAT JSON)` prints it) for scans of `table`.
pub fn assess(
    plan: &Value,
    place: &str,
    table: &str,
    tenant_column: &str,
    tenant_indexes: &[String],
    context_function: &str,
) -> Vec<PlanCheck> {
    let mut scans = Vec::new();
    for root in plan.as_array().into_iter().flatten() {
        collect_scans(&root["Plan"], table, &mut scans);
    }
    if scans.is_empty() {
        return Vec::new();
    }
    let mentions = |c: &&String| mentions_column(c, tenant_column);
    let index_ok = scans.iter().all(|s| {
        s.indexes.iter().any(|i| tenant_indexes.contains(i))
            && s.index_conds.iter().any(|c| mentions(&c))
    });
    let tenant_conds: Vec<&String> = scans
        .iter()
        .flat_map(|s| s.index_conds.iter().chain(&s.other_conds))
        .filter(mentions)
        .collect();
    let per_row = tenant_conds.iter().any(|c| {
        c.contains(&format!("{context_function}("))
            || c.contains(&format!("{context_function}\"("))
            || c.contains("current_setting(")
    });
    let scans_text: Vec<String> = scans.iter().map(describe).collect();
    let conds_text = if tenant_conds.is_empty() {
        format!("no condition on {tenant_column}")
    } else {
        tenant_conds
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    vec![
        PlanCheck {
            name: TENANT_INDEX,
            table: place.to_string(),
            ok: index_ok,
            detail: scans_text.join("; "),
        },
        PlanCheck {
            name: CONTEXT_ONCE,
            table: place.to_string(),
            ok: !tenant_conds.is_empty() && !per_row,
            detail: if per_row {
                format!("the context is computed in the condition, possibly per row: {conds_text}")
            } else {
                conds_text
            },
        },
    ]
}

fn describe(s: &Scan) -> String {
    if s.indexes.is_empty() {
        format!("{} (no index)", s.node)
    } else {
        format!(
            "{} using {}: {}",
            s.node,
            s.indexes.join(", "),
            s.index_conds.join(" AND ")
        )
    }
}

/// Whether `cond` names `column` as a whole word.
fn mentions_column(cond: &str, column: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    cond.match_indices(column).any(|(i, _)| {
        let before = cond[..i].chars().next_back();
        let after = cond[i + column.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Every scan node of `table` under `node`; bitmap heap scans gather their bitmap children.
fn collect_scans(node: &Value, table: &str, out: &mut Vec<Scan>) {
    // Scans only: a ModifyTable node names its table too, but reads nothing.
    let is_scan = node["Node Type"]
        .as_str()
        .is_some_and(|t| t.ends_with("Scan"));
    if is_scan && node["Relation Name"].as_str() == Some(table) {
        let mut scan = Scan {
            node: node["Node Type"].as_str().unwrap_or("?").to_string(),
            ..Scan::default()
        };
        gather_index(node, &mut scan);
        for key in ["Recheck Cond", "Filter"] {
            if let Some(c) = node[key].as_str() {
                scan.other_conds.push(c.to_string());
            }
        }
        out.push(scan);
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        collect_scans(child, table, out);
    }
}

/// The index name and condition of an index scan, or of the bitmap index scans below a bitmap
/// heap scan.
fn gather_index(node: &Value, scan: &mut Scan) {
    if let Some(i) = node["Index Name"].as_str() {
        scan.indexes.push(i.to_string());
    }
    if let Some(c) = node["Index Cond"].as_str() {
        scan.index_conds.push(c.to_string());
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        let kind = child["Node Type"].as_str().unwrap_or("");
        if kind.starts_with("Bitmap") {
            gather_index(child, scan);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cond: &str, index: &str) -> Value {
        serde_json::json!([{"Plan": {"Node Type": "Aggregate", "Plans": [
            {"Node Type": "Result", "Parent Relationship": "InitPlan"},
            {"Node Type": "Bitmap Heap Scan", "Relation Name": "members", "Recheck Cond": cond,
             "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": index, "Index Cond": cond}]}
        ]}}])
    }

    fn oks(p: &Value) -> Vec<bool> {
        let idx = ["members_gym_id_status_idx".to_string()];
        assess(
            p,
            "public.members",
            "members",
            "gym_id",
            &idx,
            "current_gym_id",
        )
        .iter()
        .map(|c| c.ok)
        .collect()
    }

    #[test]
    fn generated_naive_and_unindexed_plans() {
        assert_eq!(
            oks(&plan("(gym_id = $0)", "members_gym_id_status_idx")),
            [true, true]
        );
        assert_eq!(
            oks(&plan(
                "(gym_id = (InitPlan 1).col1)",
                "members_gym_id_status_idx"
            )),
            [true, true]
        );
        assert_eq!(
            oks(&plan(
                "(gym_id = s.current_gym_id())",
                "members_gym_id_status_idx"
            )),
            [true, false]
        );
        assert_eq!(
            oks(&plan("(other_gym_id = $0)", "members_status_idx")),
            [false, false]
        );
        let seq = serde_json::json!([{"Plan": {"Node Type": "Seq Scan", "Relation Name": "members",
            "Filter": "(gym_id = (NULLIF(current_setting('x', true), ''))::uuid)"}}]);
        assert_eq!(oks(&seq), [false, false]);
        let insert =
            serde_json::json!([{"Plan": {"Node Type": "ModifyTable", "Relation Name": "members"}}]);
        assert!(oks(&insert).is_empty());
        assert!(assess(
            &serde_json::json!([{"Plan": {"Node Type": "ModifyTable"}}]),
            "p",
            "members",
            "gym_id",
            &[],
            "f"
        )
        .is_empty());
    }
}
