//! `tenantctl verify`: load the declaration, run the gate, render the report, map it to an exit code.

use std::io::IsTerminal;

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::Client;

use crate::model::Schema;
use crate::output::{self, ReportFormat};
use crate::pg::unnamed::relation_exists;
use crate::pg::{self, Target};
use crate::settings::Project;
use crate::verify::{self, render, Finding, Report, Severity, Tally};
use crate::Outcome;

/// The gate to run, what fails it, and how to print the report.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which tenants to probe, and how; its `progress` is decided here, from the format.
    pub gate: verify::Settings,
    /// The lowest severity that fails the gate.
    pub fail_on: Severity,
    pub format: ReportFormat,
    /// `--pooled-url`: the application's login through the pooler (else `[verify] pooled_url`).
    pub pooled_url: Option<String>,
    /// `--app-url` or `TENANTCTL_APP_URL`: the application's own login (else `[verify] app_url`).
    pub app_url: Option<String>,
    /// `--probe-timeout` (else `[verify] probe_timeout`, else the default).
    pub probe_timeout: Option<std::time::Duration>,
}

/// `verify --explain ID`: what the check looks for, how to fix it, how to allow-list it.
pub fn explain(id: &str) -> Result<Outcome> {
    let Some(def) = verify::CHECKS.iter().find(|c| c.id == id) else {
        bail!(
            "no check {id:?}\n  hint: the ids are listed in docs/verify.md (e.g. `tenantctl verify --explain rls.disabled`)"
        );
    };
    println!("{}", render::explain(def));
    Ok(Outcome::Clean)
}

pub async fn run(project: &Project, target: &Target, settings: &Settings) -> Result<Outcome> {
    let schema = project.schema().map_err(|e| anyhow!("{e}"))?;
    let pooled = settings
        .pooled_url
        .as_ref()
        .or(project.config.verify.pooled_url.as_ref())
        .map(|u| Target::parse(u).context("invalid --pooled-url / [verify] pooled_url"))
        .transpose()?;
    let verify_config = &project.config.verify;
    let app = settings
        .app_url
        .as_ref()
        .or(verify_config.app_url.as_ref())
        .map(|u| {
            Target::parse(u).context("invalid --app-url / TENANTCTL_APP_URL / [verify] app_url")
        })
        .transpose()?;
    let probe_timeout = match (settings.probe_timeout, &verify_config.probe_timeout) {
        (Some(t), _) => t,
        (None, Some(t)) => crate::cli::parse_duration(t)
            .map_err(|e| anyhow!("invalid [verify] probe_timeout: {e}"))?,
        (None, None) => verify::DEFAULT_PROBE_TIMEOUT,
    };
    let gate = verify::Settings {
        progress: settings.format == ReportFormat::Table && std::io::stderr().is_terminal(),
        pooled,
        app,
        probe_timeout,
        ..settings.gate.clone()
    };
    let fail_on = settings.fail_on;
    let report = match never_migrated(project, target, &schema).await? {
        Some(report) => report,
        None => verify::run(target, &schema, &gate).await?,
    };
    match settings.format {
        ReportFormat::Json => output::print_json(&render::json(&report, fail_on)),
        ReportFormat::Junit => print!("{}", render::junit(&report, fail_on)),
        ReportFormat::Sarif => {
            let config = project
                .config_path
                .strip_prefix(&project.root)
                .unwrap_or(&project.config_path)
                .display()
                .to_string();
            let sources = verify::sarif::Sources::read(&project.root, &config, &schema);
            output::print_json(&verify::sarif::sarif(&report, fail_on, &schema, &sources))
        }
        ReportFormat::Table => println!("{}", render::table(&report, fail_on)),
    }
    // The static findings are printed above; the probes not running is still "could not run".
    if let Some(e) = &report.probes.error {
        bail!("{e}\n  hint: the static findings above were reported; fix the connection or role the error names and run verify again");
    }
    Ok(if report.passed(fail_on) {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// A database that was never migrated (no migration history and no tenant table) has nothing to
/// verify: one finding, "N migrations pending", instead of every check failing on missing
/// relations. A database built some other way (tables but no history) is verified as usual.
async fn never_migrated(
    project: &Project,
    target: &Target,
    schema: &Schema,
) -> Result<Option<Report>> {
    let started = Instant::now();
    let mut client = pg::connect(target).await?;
    if tenant_table_exists(&client, schema).await? {
        return Ok(None);
    }
    // A role that may not read the history (verify needs no such privilege) gets verify's own
    // report of what is missing, as before.
    let path = crate::migrate::search_path(project)?;
    let Ok(applied) = crate::migrate::applied_migrations(&mut client, Some(&path)).await else {
        return Ok(None);
    };
    if !applied.is_empty() {
        return Ok(None);
    }
    let local = crate::migrate::load_migrations(project)?;
    let pending = crate::migrate::compare(&local, &applied)
        .iter()
        .filter(|e| e.state == crate::migrate::State::Pending)
        .count();
    let id = "drift.unmigrated";
    let mut tally = Tally::default();
    let finding = Finding::new(
        id,
        format!(
            "table {}.{}",
            schema.tenancy.table_schema, schema.tenancy.tenant_table
        ),
        format!(
            "the database was never migrated: {pending} migrations pending: run `tenantctl migrate`"
        ),
    );
    tally.record(id, Some(finding));
    Ok(Some(Report {
        database: target.to_string(),
        tally,
        tenants_probed: 0,
        synthetic_tenants: false,
        elapsed: started.elapsed(),
        probes: Default::default(),
    }))
}

async fn tenant_table_exists(client: &Client, schema: &Schema) -> Result<bool> {
    let rel = crate::sqlgen::tenants::qualified(schema, &schema.tenancy.tenant_table);
    relation_exists(client, &rel)
        .await
        .context("cannot look up the tenant table")
}
