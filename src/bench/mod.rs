//! What row-level security costs on a database: typical application queries under the generated
//! policies against the same queries written by hand (explicit tenant filter, RLS bypassed) and
//! under a naive policy, with plan checks. `scratch` holds what a run creates and removes,
//! `queries` the query set, `runs` the timed rounds, `stats` the figures, `plans` the plan checks,
//! `chart` the SVG.

pub mod chart;
pub mod plans;
pub mod queries;
pub mod runs;
pub mod scratch;
pub mod stats;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::Serialize;
use tokio_postgres::Client;

use crate::model::Schema;
use crate::settings::Project;
use crate::sqlgen::bench::{self as sqlgen, Form, Shape};
use crate::{output, pg};
use plans::PlanCheck;

use crate::pg::unnamed::{typed, Typed};
use queries::Query;
use runs::{Part, Variant, INSERTED_TEXT};
pub use scratch::Size;
use stats::Latency;

/// Where to measure.
#[derive(Debug, Clone)]
pub enum Place {
    /// An existing database: only its data is read; the naive schema is dropped afterwards.
    Given(pg::Target),
    /// A scratch database on this server, seeded, then dropped.
    Scratch { server: pg::Target, size: Size },
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Rounds (at least 5) and executions per form and query in each round.
    pub rounds: usize,
    pub iterations: usize,
    /// Also run the naive policy's contrast (copies every tenant table into a scratch schema).
    pub naive: bool,
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub name: String,
    pub table: String,
    /// The query as the application sends it under the generated policies.
    pub sql: String,
    pub policy: Measured,
    pub baseline: Measured,
    pub naive: Option<Measured>,
    /// policy / baseline medians, of the whole transaction.
    pub ratio: f64,
    /// naive / baseline medians, of the whole transaction.
    pub naive_ratio: Option<f64>,
    /// The same two ratios of the query statement alone.
    pub statement_ratio: f64,
    pub statement_naive_ratio: Option<f64>,
    /// The plan checks of this query under the generated policies (None: it scans no table).
    pub plan_ok: Option<bool>,
    pub plan_detail: Option<String>,
    pub naive_plan_ok: Option<bool>,
}

/// One form's latency: the application's whole transaction (BEGIN, role and context, the
/// query, ROLLBACK), and the query statement alone.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measured {
    pub transaction: Latency,
    pub statement: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Seeded {
    pub gyms: u64,
    pub coaches: u64,
    pub members: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub database: String,
    pub server_version: String,
    pub seeded: Option<Seeded>,
    pub rounds: usize,
    pub iterations: usize,
    pub queries: Vec<QueryResult>,
    /// Every tenant table's plan checks under the generated policies.
    pub plan_checks: Vec<PlanCheck>,
    /// The same under the naive policy (copies in the scratch schema).
    pub naive_plan_checks: Vec<PlanCheck>,
}

impl Report {
    /// Whether every plan check of the generated policies passed.
    pub fn plans_ok(&self) -> bool {
        self.plan_checks.iter().all(|c| c.ok)
            && self.queries.iter().all(|q| q.plan_ok != Some(false))
    }
}

/// Run the benchmark; whatever it created is removed afterwards, also after an error or Ctrl-C.
pub async fn run(
    project: &Project,
    schema: &Schema,
    place: &Place,
    settings: &Settings,
) -> Result<Report> {
    let naive = settings
        .naive
        .then(|| scratch::scratch_name("tenantctl_bench_naive"));
    let (url, db_name) = match place {
        Place::Given(url) => (url.clone(), None),
        Place::Scratch { server, .. } => {
            let name = scratch::scratch_name("tenantctl_bench");
            (
                scratch::create_database(project, server, &name).await?,
                Some(name),
            )
        }
    };
    let size = match place {
        Place::Scratch { size, .. } => Some(*size),
        Place::Given(_) => None,
    };
    let work = measure(schema, &url, size, naive.as_deref(), settings);
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Cleanup on a fresh connection: the measuring one may have been cut mid-transaction.
    let cleaned = cleanup(place, &url, db_name.as_deref(), naive.as_deref()).await;
    let report = result?;
    cleaned?;
    Ok(report)
}

async fn cleanup(
    place: &Place,
    url: &pg::Target,
    db: Option<&str>,
    naive: Option<&str>,
) -> Result<()> {
    match (place, db) {
        (Place::Scratch { server, .. }, Some(name)) => scratch::drop_database(server, name).await,
        _ => match naive {
            Some(s) => scratch::drop_naive(&pg::connect(url).await?, s).await,
            None => Ok(()),
        },
    }
}

async fn measure(
    schema: &Schema,
    url: &pg::Target,
    size: Option<Size>,
    naive: Option<&str>,
    settings: &Settings,
) -> Result<Report> {
    let mut client = pg::connect(url).await?;
    let seeded = match size {
        Some(size) => {
            let took = scratch::seed(&mut client, schema, size).await?;
            Some(Seeded {
                gyms: size.gyms,
                coaches: size.coaches,
                members: size.members,
                seconds: (took.as_secs_f64() * 100.0).round() / 100.0,
            })
        }
        None => None,
    };
    if let Some(s) = naive {
        scratch::create_naive(&mut client, schema, s).await?;
    }
    let queries = queries::query_set(schema);
    let samples = runs::sample(&mut client, schema, &queries).await?;
    let mut prepared = Vec::new();
    for q in &queries {
        prepared.push(runs::prepare(&client, schema, q, naive).await?);
    }
    let bar = if settings.progress {
        output::progress((settings.rounds * queries.len()) as u64, "rounds")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let shape = (settings.rounds, settings.iterations);
    let timings = runs::run(&mut client, schema, &prepared, &samples, shape, &bar).await;
    bar.finish_and_clear();
    let timings = timings?;
    let table_schema = schema.tenancy.table_schema.clone();
    let mut results = Vec::new();
    for (q, t) in queries.iter().zip(&timings) {
        let sample = samples.get(&q.table).and_then(|s| s.first());
        results.push(result(&mut client, schema, q, t, sample, naive).await?);
    }
    let plan_checks = plans::check_tables(&mut client, schema, &table_schema).await?;
    let mut naive_plan_checks = Vec::new();
    if let Some(s) = naive {
        for (t, _) in crate::tenants::data_tables(schema) {
            naive_plan_checks.extend(plans::check_table(&mut client, schema, s, t).await?);
        }
    }
    let server_version = client
        .query_one(crate::sqlgen::bench::SERVER_VERSION, &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default();
    Ok(Report {
        database: url.to_string(),
        server_version,
        seeded,
        rounds: settings.rounds,
        iterations: settings.iterations,
        queries: results,
        plan_checks,
        naive_plan_checks,
    })
}

/// One query's figures and plan checks.
async fn result(
    client: &mut Client,
    schema: &Schema,
    q: &Query,
    timings: &BTreeMap<(usize, Part), Vec<Duration>>,
    sample: Option<&runs::Sample>,
    naive: Option<&str>,
) -> Result<QueryResult> {
    let measured = |v: Variant| {
        let of = |part| {
            timings
                .get(&(runs::variant_index(v), part))
                .map(|d| Latency::of(d))
        };
        Some(Measured {
            transaction: of(Part::Transaction)?,
            statement: of(Part::Statement)?,
        })
    };
    let missing = || anyhow!("no timings for {}", q.name);
    let policy = measured(Variant::Policy).ok_or_else(missing)?;
    let baseline = measured(Variant::Baseline).ok_or_else(missing)?;
    let naive_m = measured(Variant::Naive);
    let value = match (&q.shape, sample.and_then(|s| s.key.clone())) {
        (Shape::Insert { .. }, _) => INSERTED_TEXT.to_string(),
        (_, k) => k.unwrap_or_default(),
    };
    let table_schema = &schema.tenancy.table_schema;
    let mine = plan_of(client, schema, table_schema, q, &value).await?;
    let theirs = match naive {
        Some(s) => plan_of(client, schema, s, q, &value).await?,
        None => None,
    };
    let ratio =
        |a: &Measured, part: fn(&Measured) -> &Latency| stats::ratio(part(a), part(&baseline));
    Ok(QueryResult {
        name: q.name.clone(),
        table: q.table.clone(),
        sql: sqlgen::query(schema, table_schema, &q.table, &q.shape, Form::Policy),
        ratio: ratio(&policy, |m| &m.transaction),
        naive_ratio: naive_m.as_ref().map(|n| ratio(n, |m| &m.transaction)),
        statement_ratio: ratio(&policy, |m| &m.statement),
        statement_naive_ratio: naive_m.as_ref().map(|n| ratio(n, |m| &m.statement)),
        policy,
        baseline,
        naive: naive_m,
        plan_ok: mine.as_ref().map(|m| m.0),
        plan_detail: mine.map(|m| m.1),
        naive_plan_ok: theirs.map(|t| t.0),
    })
}

/// The plan checks of query `q` on the tables in `schema_name`: whether all passed, and what they
/// saw; None when the plan scans no table (an INSERT).
async fn plan_of(
    client: &mut Client,
    schema: &Schema,
    schema_name: &str,
    q: &Query,
    value: &String,
) -> Result<Option<(bool, String)>> {
    let text = sqlgen::query(schema, schema_name, &q.table, &q.shape, Form::Policy);
    let params: Vec<Typed> = if q.shape.takes_value() {
        typed![value].to_vec()
    } else {
        vec![]
    };
    let checks =
        plans::check_statement(client, schema, schema_name, &q.table, &text, &params).await?;
    Ok((!checks.is_empty()).then(|| {
        let ok = checks.iter().all(|c| c.ok);
        let detail: Vec<String> = checks
            .iter()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        (ok, detail.join("; "))
    }))
}
