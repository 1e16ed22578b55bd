//! `tenantctl verify`: load the declaration, run the gate, render the report, map it to an exit code.

use std::io::IsTerminal;

use anyhow::{anyhow, Result};

use crate::cli::{FailOn, Format, VerifyArgs};
use crate::settings::Project;
use crate::verify::{self, render, Settings, Severity, TenantSelection};
use crate::{output, policy, Outcome};

pub async fn run(
    project: &Project,
    url: &str,
    args: &VerifyArgs,
    format: Format,
) -> Result<Outcome> {
    let schema = policy::load(
        &project.policies_dir(),
        &project.config.paths.policies,
        &project.config.role_names,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let settings = Settings {
        tenants: match (&args.sample, args.tenant.is_empty()) {
            (Some(n), _) => TenantSelection::Sample(*n),
            (None, false) => TenantSelection::Named(args.tenant.clone()),
            (None, true) => TenantSelection::All,
        },
        connections: args.connections,
        static_only: args.static_only,
        progress: format == Format::Table && std::io::stderr().is_terminal(),
    };
    let fail_on = match args.fail_on {
        FailOn::Error => Severity::Error,
        FailOn::Warning => Severity::Warning,
    };
    let report = verify::run(url, &schema, &settings).await?;
    match format {
        Format::Json => output::print_json(&render::json(&report, fail_on)),
        Format::Junit => print!("{}", render::junit(&report, fail_on)),
        Format::Table => println!("{}", render::table(&report, fail_on)),
    }
    Ok(if report.passed(fail_on) {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}
