//! `tenantctl new NAME`: an empty hand-written migration beside the generated ones, for what the
//! policy files cannot say (a backfill, a data fix). `generate` and `plan` leave it alone.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::output::Format;
use crate::settings::Project;
use crate::snapshot;
use crate::Outcome;

/// What `new` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The migration's name: `V<n>__<name>.sql`.
    pub name: String,
    /// Write a non-transactional migration (indexes built or dropped CONCURRENTLY).
    pub no_transaction: bool,
    pub format: Format,
}

/// The header of a hand-written migration: it says who owns it, and how it runs. A
/// non-transactional one starts with the marker.
fn header(version: u32, name: &str, no_transaction: bool) -> String {
    let owner = format!(
        "-- V{version}__{name}.sql: hand-written (created by `tenantctl new`).\n\
         -- tenantctl never generates or rewrites this file; once applied it must not change.\n"
    );
    if no_transaction {
        return format!(
            "{owner}{}\n{}-- e.g. CREATE INDEX CONCURRENTLY IF NOT EXISTS members_phone_idx ON members (gym_id, phone);\n\n",
            crate::sqlgen::NO_TRANSACTION_MARKER,
            crate::sqlgen::no_transaction_header()
        );
    }
    format!(
        "{owner}\
         -- It runs in one transaction, as the migrating role. Tenant tables FORCE row-level\n\
         -- security: write rows as the admin role or tenant by tenant (README: hand-written\n\
         -- migrations).\n\n"
    )
}

pub fn run(project: &Project, settings: &Settings) -> Result<Outcome> {
    let name = settings.name.as_str();
    if !snapshot::valid_name(name) {
        bail!("migration name {name:?} is not valid\n  hint: use letters, digits and underscores, e.g. `tenantctl new backfill_phones`");
    }
    let dir = project.migrations_dir();
    let files = snapshot::migration_files(&dir)?;
    let version = files.last().map_or(0, |f| f.version) + 1;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!("V{version}__{name}.sql"));
    snapshot::write_atomic(&file, &header(version, name, settings.no_transaction))?;
    let shown = super::render::project_path(project, &file);
    match settings.format {
        Format::Json => crate::output::print_json(&json!({"written": shown, "version": version})),
        Format::Table => {
            eprintln!("Wrote {shown} (hand-written: add its SQL, then `tenantctl migrate`).")
        }
    }
    Ok(Outcome::Clean)
}
