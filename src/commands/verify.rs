//! `tenantctl verify`: load the declaration, run the gate, render the report, map it to an exit code.

use std::io::IsTerminal;

use anyhow::{anyhow, Context, Result};

use crate::output::{self, ReportFormat};
use crate::pg::Target;
use crate::settings::Project;
use crate::verify::{self, render, Severity};
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
}

pub async fn run(project: &Project, target: &Target, settings: &Settings) -> Result<Outcome> {
    let schema = project.schema().map_err(|e| anyhow!("{e}"))?;
    let pooled = settings
        .pooled_url
        .as_ref()
        .or(project.config.verify.pooled_url.as_ref())
        .map(|u| Target::parse(u).context("invalid --pooled-url / [verify] pooled_url"))
        .transpose()?;
    let gate = verify::Settings {
        progress: settings.format == ReportFormat::Table && std::io::stderr().is_terminal(),
        pooled,
        ..settings.gate.clone()
    };
    let fail_on = settings.fail_on;
    let report = verify::run(target, &schema, &gate).await?;
    match settings.format {
        ReportFormat::Json => output::print_json(&render::json(&report, fail_on)),
        ReportFormat::Junit => print!("{}", render::junit(&report, fail_on)),
        ReportFormat::Table => println!("{}", render::table(&report, fail_on)),
    }
    Ok(if report.passed(fail_on) {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}
