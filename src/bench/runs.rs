//! The timed runs: every query in each of its forms, interleaved in rounds so that one noisy
//! moment does not decide a ratio. Each execution has the application's transaction shape:
//! `BEGIN`, one `set_config` of the role and the tenant context, the query, `ROLLBACK` (so writes
//! leave the data as found). Only the query is timed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use indicatif::ProgressBar;
use postgres_types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::queries::Query;
use crate::model::Schema;
use crate::pg;
use crate::pg::error::pg_error;
use crate::sqlgen::bench::{self as sql, Form};

/// The value every insert binds to its required text columns (rolled back, so it never stays).
pub const INSERTED_TEXT: &str = "tenantctl-bench@example.invalid";

/// Random rows a run draws its tenants and keys from, per table.
pub const SAMPLE_ROWS: i64 = 64;

/// The three ways a query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The app role under the generated policies.
    Policy,
    /// Hand-written tenant filter, as the admin role (row-level security bypassed).
    Baseline,
    /// The app role under the naive policy, on the scratch schema's copies.
    Naive,
}

pub const VARIANTS: [Variant; 3] = [Variant::Policy, Variant::Baseline, Variant::Naive];

/// A tenant and, for queries that bind one, a key of one of its rows.
#[derive(Debug, Clone)]
pub struct Sample {
    pub tenant: Uuid,
    pub key: Option<String>,
}

/// Random samples of each queried table's rows, read as the admin role.
pub async fn sample(
    client: &mut Client,
    schema: &Schema,
    queries: &[Query],
) -> Result<BTreeMap<String, Vec<Sample>>> {
    let mut out = BTreeMap::new();
    for q in queries {
        if out.contains_key(&q.table) {
            continue;
        }
        let key = queries
            .iter()
            .filter(|o| o.table == q.table)
            .find_map(Query::key);
        let tc = &schema.tables[&q.table].tenant_column;
        let tx = client.transaction().await.map_err(pg_error)?;
        pg::tx::set_role(&tx, &schema.tenancy.admin_role)
            .await
            .map_err(pg_error)?;
        let rows = tx
            .query(
                &sql::sample_keys(schema, &q.table, tc, key),
                &[&SAMPLE_ROWS],
            )
            .await
            .map_err(pg_error)
            .with_context(|| format!("cannot sample the rows of {}", q.table))?;
        tx.rollback().await.map_err(pg_error)?;
        let samples = rows
            .iter()
            .map(|r| {
                let tenant: String = r.get(0);
                Ok(Sample {
                    tenant: tenant.parse()?,
                    key: r.get(1),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.insert(q.table.clone(), samples);
    }
    Ok(out)
}

/// One query's prepared statements, per variant (no naive one without a scratch schema).
pub struct Prepared<'a> {
    pub query: &'a Query,
    statements: Vec<(Variant, Statement)>,
}

pub async fn prepare<'a>(
    client: &Client,
    schema: &Schema,
    query: &'a Query,
    naive: Option<&str>,
) -> Result<Prepared<'a>> {
    let mut statements = Vec::new();
    for v in VARIANTS {
        let (schema_name, form) = match (v, naive) {
            (Variant::Policy, _) => (schema.tenancy.table_schema.as_str(), Form::Policy),
            (Variant::Baseline, _) => (schema.tenancy.table_schema.as_str(), Form::Baseline),
            (Variant::Naive, Some(s)) => (s, Form::Policy),
            (Variant::Naive, None) => continue,
        };
        let text = sql::query(schema, schema_name, &query.table, &query.shape, form);
        let st = client
            .prepare(&text)
            .await
            .map_err(pg_error)
            .with_context(|| format!("cannot prepare {text}"))?;
        statements.push((v, st));
    }
    Ok(Prepared { query, statements })
}

/// What a duration measures: the whole transaction as the application pays it (BEGIN, the
/// context, the query, ROLLBACK: four round trips), or the query statement alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Transaction,
    Statement,
}

/// Durations of each query (in `prepared` order) per variant and part.
pub type Timings = Vec<BTreeMap<(usize, Part), Vec<Duration>>>;

/// `rounds` rounds; in each, every query runs `iterations` times in each variant, the variants
/// interleaved and their order rotating. One untimed warm-up round comes first.
pub async fn run(
    client: &mut Client,
    schema: &Schema,
    prepared: &[Prepared<'_>],
    samples: &BTreeMap<String, Vec<Sample>>,
    (rounds, iterations): (usize, usize),
    bar: &ProgressBar,
) -> Result<Timings> {
    let mut timings: Timings = vec![BTreeMap::new(); prepared.len()];
    // Prepared once, as an application's driver would.
    let context = client.prepare(sql::SET_CONTEXT).await.map_err(pg_error)?;
    for round in 0..=rounds {
        for (qi, p) in prepared.iter().enumerate() {
            let rows = samples
                .get(&p.query.table)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| anyhow!("{} has no rows to benchmark", p.query.table))?;
            let k = p.statements.len();
            let iters = if round == 0 { 1 } else { iterations };
            // Each iteration runs every form back to back, with the same tenant and key, so a
            // noisy moment on the server hits the forms alike. The order goes through every
            // permutation: the second reader of a tenant's pages finds them warm, and each form
            // must be that reader as often as the others.
            let orders = permutations(k);
            for it in 0..iters {
                let n = round * iterations + it;
                let sample = &rows[n % rows.len()];
                for i in &orders[n % orders.len()] {
                    let (variant, st) = &p.statements[*i];
                    let run = Run {
                        context: &context,
                        variant: *variant,
                        statement: st,
                        query: p.query,
                    };
                    let (tx, statement) = once(client, schema, &run, sample).await?;
                    if round > 0 {
                        let v = variant_index(*variant);
                        let m = &mut timings[qi];
                        m.entry((v, Part::Transaction)).or_default().push(tx);
                        m.entry((v, Part::Statement)).or_default().push(statement);
                    }
                }
            }
            if round > 0 {
                bar.inc(1);
            }
        }
    }
    Ok(timings)
}

/// Every order of `0..k`.
fn permutations(k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for rest in permutations(k - 1) {
        for pos in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(pos, k - 1);
            out.push(p);
        }
    }
    out
}

pub fn variant_index(v: Variant) -> usize {
    VARIANTS.iter().position(|x| *x == v).unwrap_or(0)
}

/// One execution's statements.
struct Run<'a> {
    context: &'a Statement,
    variant: Variant,
    statement: &'a Statement,
    query: &'a Query,
}

/// One execution in the application's transaction shape; returns how long the transaction and
/// the query statement took.
async fn once(
    client: &mut Client,
    schema: &Schema,
    run: &Run<'_>,
    sample: &Sample,
) -> Result<(Duration, Duration)> {
    let Run {
        context,
        variant,
        statement,
        query,
    } = *run;
    let t = &schema.tenancy;
    let role = match variant {
        Variant::Baseline => &t.admin_role,
        Variant::Policy | Variant::Naive => &t.app_role,
    };
    let value: &str = match (&query.shape, &sample.key) {
        (sql::Shape::Insert { .. }, _) => INSERTED_TEXT,
        (_, Some(k)) => k,
        (_, None) => "",
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if query.shape.takes_value() {
        params.push(&value);
    }
    if variant == Variant::Baseline {
        params.push(&sample.tenant);
    }
    let began = Instant::now();
    let tx = client.transaction().await.map_err(pg_error)?;
    let tenant = sample.tenant.to_string();
    tx.execute(context, &[role, &t.context_setting, &tenant])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot act as {role} in a tenant context"))?;
    let started = Instant::now();
    tx.query(statement, &params)
        .await
        .map_err(pg_error)
        .with_context(|| format!("{} ({variant:?}) failed", query.name))?;
    let took = started.elapsed();
    tx.rollback().await.map_err(pg_error)?;
    Ok((began.elapsed(), took))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_order_once() {
        let mut p = super::permutations(3);
        p.sort();
        assert_eq!(p.len(), 6);
        p.dedup();
        assert_eq!(p.len(), 6);
        assert_eq!(super::permutations(2).len(), 2);
    }
}
