//! `tenantctl status`: applied, pending, divergent and missing migrations.

use anyhow::Result;
use serde_json::json;

use crate::migrate::{self, Entry, State};
use crate::output::Format;
use crate::settings::Project;
use crate::{output, pg, Outcome};

/// What `status` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Pending migrations are a finding too (a CI gate).
    pub check: bool,
    pub format: Format,
}

pub async fn run(project: &Project, url: &pg::Target, settings: &Settings) -> Result<Outcome> {
    let local = migrate::load_migrations(project)?;
    let mut client = pg::connect(url).await?;
    // The search_path for this read only: status works through a transaction pooler.
    let path = migrate::search_path(project)?;
    let applied = migrate::applied_migrations(&mut client, Some(&path)).await?;
    let entries = migrate::compare(&local, &applied);
    let current = applied.iter().map(|m| m.version()).max();
    let counts = Counts::of(&entries);
    match settings.format {
        Format::Json => output::print_json(&json!({
            "database": url.to_string(),
            "current": current,
            "migrations": entries.iter().map(|e| json!({
                "version": e.version, "name": e.name, "state": e.state.as_str(), "applied_on": e.applied_on,
            })).collect::<Vec<_>>(),
            "summary": {"applied": counts.applied, "pending": counts.pending, "divergent": counts.divergent, "missing": counts.missing},
        })),
        Format::Table => {
            println!("{}", table(&entries));
            println!(
                "{}: at V{}; {} applied, {} pending, {} divergent, {} missing",
                url,
                current.unwrap_or(0),
                counts.applied,
                counts.pending,
                counts.divergent,
                counts.missing
            );
        }
    }
    // Divergent or missing migrations are drift, always a finding; pending ones only under --check.
    let problem = counts.divergent + counts.missing > 0 || (settings.check && counts.pending > 0);
    Ok(if problem {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// Migrations per state.
struct Counts {
    applied: usize,
    pending: usize,
    divergent: usize,
    missing: usize,
}

impl Counts {
    fn of(entries: &[Entry]) -> Counts {
        let count = |s: State| entries.iter().filter(|e| e.state == s).count();
        Counts {
            applied: count(State::Applied),
            pending: count(State::Pending),
            divergent: count(State::Divergent),
            missing: count(State::Missing),
        }
    }
}

fn table(entries: &[Entry]) -> comfy_table::Table {
    let mut t = output::table(&["version", "name", "state", "applied on"]);
    for e in entries {
        t.add_row(vec![
            format!("V{}", e.version),
            e.name.clone(),
            e.state.as_str().to_string(),
            e.applied_on.clone().unwrap_or_default(),
        ]);
    }
    t
}
