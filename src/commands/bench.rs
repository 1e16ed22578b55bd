//! `tenantctl bench`: run the benchmark, print its table or JSON, write the chart.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::bench::stats::Latency;
use crate::bench::{self, plans::PlanCheck, Place, QueryResult, Report};
use crate::output::{self, Format};
use crate::settings::Project;
use crate::Outcome;

#[derive(Debug, Clone)]
pub struct Settings {
    pub run: bench::Settings,
    pub chart: Option<PathBuf>,
    pub format: Format,
}

/// Exit 0 when every plan check of the generated policies passes, 1 when one does not (the
/// figures are informational: no ratio fails the command).
pub async fn run(project: &Project, place: &Place, settings: &Settings) -> Result<Outcome> {
    let schema = project.schema()?;
    if settings.format == Format::Table {
        if let Place::Scratch { size, .. } = place {
            eprintln!(
                "==> Scratch database: {} gyms, {} coaches, {} members (dropped afterwards)",
                size.gyms, size.coaches, size.members
            );
        }
    }
    let report = bench::run(project, &schema, place, &settings.run).await?;
    if let Some(path) = &settings.chart {
        bench::chart::write_svg(&report, path)
            .with_context(|| format!("cannot write the chart {}", path.display()))?;
    }
    match settings.format {
        Format::Json => output::print_json(&to_json(&report)),
        Format::Table => print_table(&report),
    }
    Ok(if report.plans_ok() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn ms(v: f64) -> Value {
    json!((v * 1000.0).round() / 1000.0)
}

fn query_json(q: &QueryResult) -> Value {
    json!({
        "name": q.name,
        "table": q.table,
        "sql": q.sql,
        "policy_ms": ms(q.policy.transaction.median_ms),
        "policy_p95_ms": ms(q.policy.transaction.p95_ms),
        "baseline_ms": ms(q.baseline.transaction.median_ms),
        "baseline_p95_ms": ms(q.baseline.transaction.p95_ms),
        "naive_ms": q.naive.map(|n| ms(n.transaction.median_ms)),
        "naive_p95_ms": q.naive.map(|n| ms(n.transaction.p95_ms)),
        "ratio": q.ratio,
        "naive_ratio": q.naive_ratio,
        "statement": {
            "policy_ms": ms(q.policy.statement.median_ms),
            "baseline_ms": ms(q.baseline.statement.median_ms),
            "naive_ms": q.naive.map(|n| ms(n.statement.median_ms)),
            "ratio": q.statement_ratio,
            "naive_ratio": q.statement_naive_ratio,
        },
        "samples": q.policy.transaction.samples,
        "plan_ok": q.plan_ok,
        "plan_detail": q.plan_detail,
        "naive_plan_ok": q.naive_plan_ok,
    })
}

fn to_json(r: &Report) -> Value {
    json!({
        "database": r.database,
        "server_version": r.server_version,
        "seeded": r.seeded,
        "rounds": r.rounds,
        "iterations": r.iterations,
        "queries": r.queries.iter().map(query_json).collect::<Vec<_>>(),
        "max_ratio": r.queries.iter().map(|q| q.ratio).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
        "plan_checks": r.plan_checks,
        "naive_plan_checks": r.naive_plan_checks,
        "plans_ok": r.plans_ok(),
    })
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "ok",
        Some(false) => "NOT OK",
        None => "-",
    }
}

fn print_table(r: &Report) {
    println!("Database: {} (PostgreSQL {})", r.database, r.server_version);
    if let Some(s) = &r.seeded {
        println!(
            "Seeded: {} gyms, {} coaches, {} members in {:.1} s (set-based, then VACUUM ANALYZE)",
            s.gyms, s.coaches, s.members, s.seconds
        );
    }
    println!(
        "{} rounds x {} runs of each query in each form. Latency in ms (median / p95) of the application's \
         transaction: BEGIN, role and tenant context, the query, ROLLBACK. Last column: the medians' ratios \
         of the query statement alone (generated / hand-written, naive / hand-written).\n",
        r.rounds, r.iterations
    );
    let mut t = output::table(&[
        "query",
        "generated policy",
        "hand-written",
        "ratio",
        "naive policy",
        "naive ratio",
        "statement alone",
        "plan",
    ]);
    let pair = |m: &Latency| format!("{:.3} / {:.3}", m.median_ms, m.p95_ms);
    for q in &r.queries {
        t.add_row(vec![
            q.name.clone(),
            pair(&q.policy.transaction),
            pair(&q.baseline.transaction),
            format!("{:.2}", q.ratio),
            q.naive.map_or("-".into(), |n| pair(&n.transaction)),
            q.naive_ratio.map_or("-".into(), |x| format!("{x:.2}")),
            format!(
                "{:.2} / {}",
                q.statement_ratio,
                q.statement_naive_ratio
                    .map_or("-".into(), |x| format!("{x:.2}"))
            ),
            format!("{} (naive {})", yes_no(q.plan_ok), yes_no(q.naive_plan_ok)),
        ]);
    }
    println!("{t}");
    println!(
        "\nPlan checks (EXPLAIN as the app role in a tenant context, sequential scans disabled):"
    );
    let mut c = output::table(&["table", "check", "", "detail"]);
    for k in r.plan_checks.iter().chain(&r.naive_plan_checks) {
        c.add_row(check_row(k));
    }
    println!("{c}");
    if let (Some(lo), Some(hi)) = (
        r.queries.iter().map(|q| q.ratio).reduce(f64::min),
        r.queries.iter().map(|q| q.ratio).reduce(f64::max),
    ) {
        println!("\nGenerated policy / hand-written, transaction medians: {lo:.2} to {hi:.2}.");
    }
}

fn check_row(k: &PlanCheck) -> Vec<String> {
    vec![
        k.table.clone(),
        k.name.to_string(),
        if k.ok { "ok" } else { "NOT OK" }.to_string(),
        k.detail.clone(),
    ]
}
