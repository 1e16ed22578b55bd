//! `tenantctl plan` and `tenantctl generate`: compile the policies and diff them against the snapshot.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::output::Format;
use crate::settings::Project;
use crate::snapshot::{self, MigrationFile};
use crate::sqlgen::{self, Statement};
use crate::Outcome;

/// What `plan` was asked to do.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// Plan drops of tables and columns too.
    pub allow_destructive: bool,
    pub format: Format,
}

/// What `generate` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Migration name (default: derived from the change).
    pub name: Option<String>,
    /// Allow DROP TABLE and DROP COLUMN in the generated migration.
    pub allow_destructive: bool,
    pub format: Format,
}

/// What the next migration would be.
struct Pending {
    version: u32,
    statements: Vec<Statement>,
    schema: crate::model::Schema,
}

fn compute(project: &Project, allow_destructive: bool) -> Result<Pending> {
    let schema = project.schema()?;
    let dir = project.migrations_dir();
    let files = snapshot::migration_files(&dir)?;
    let snap = snapshot::load(&dir)?;
    let last = files.last().map_or(0, |f: &MigrationFile| f.version);
    snapshot::check_files(&dir, &files, snap.as_ref())?;
    // Helper objects written by an older tenantctl are re-created (CREATE OR REPLACE).
    let old_helpers = snap.as_ref().is_some_and(|s| s.helpers < snapshot::HELPERS);
    let statements = sqlgen::diff(snap.as_ref().map(|s| &s.schema), &schema, old_helpers);
    let destructive: Vec<&Statement> = statements.iter().filter(|s| s.destructive).collect();
    if !destructive.is_empty() && !allow_destructive {
        let list: Vec<String> = destructive
            .iter()
            .map(|s| format!("  {}  ({})", s.sql, s.provenance))
            .collect();
        bail!(
            "the change drops data:\n{}\n  hint: if that is intended, run again with --allow-destructive",
            list.join("\n")
        );
    }
    Ok(Pending {
        version: last + 1,
        statements,
        schema,
    })
}

pub fn plan(project: &Project, settings: &PlanSettings) -> Result<Outcome> {
    let p = compute(project, settings.allow_destructive)?;
    match settings.format {
        Format::Json => crate::output::print_json(&json!({
            "changed": !p.statements.is_empty(),
            "version": p.version,
            "statements": p.statements.iter().map(|s| json!({
                "object": s.provenance, "sql": s.sql, "destructive": s.destructive,
            })).collect::<Vec<_>>(),
        })),
        Format::Table if p.statements.is_empty() => {
            eprintln!(
                "No changes: the database schema in migrations/ already matches the policies."
            )
        }
        Format::Table => {
            print!("{}", sqlgen::render(p.version, "planned", &p.statements))
        }
    }
    Ok(Outcome::Clean)
}

pub fn generate(project: &Project, settings: &Settings) -> Result<Outcome> {
    let p = compute(project, settings.allow_destructive)?;
    let dir = project.migrations_dir();
    if p.statements.is_empty() {
        match settings.format {
            Format::Json => {
                crate::output::print_json(&json!({"written": null, "version": p.version - 1}))
            }
            Format::Table => eprintln!(
                "No changes: nothing written (the policies match V{}).",
                p.version - 1
            ),
        }
        return Ok(Outcome::Clean);
    }
    let name = match settings.name.as_deref() {
        Some(n) if snapshot::valid_name(n) => n.to_string(),
        Some(n) => bail!("migration name {n:?} is not valid\n  hint: use letters, digits and underscores, e.g. --name add_sessions"),
        None if p.version == 1 => "initial".to_string(),
        None => "policies".to_string(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!("V{}__{name}.sql", p.version));
    let text = sqlgen::render(p.version, &name, &p.statements);
    snapshot::write_atomic(&file, &text)?;
    if let Err(e) = snapshot::save(&dir, p.version, &p.schema) {
        // Never leave a migration without the snapshot that describes it.
        let _ = std::fs::remove_file(&file);
        return Err(e);
    }
    let shown = super::render::project_path(project, &file);
    match settings.format {
        Format::Json => crate::output::print_json(&json!({
            "written": shown, "version": p.version, "statements": p.statements.len(),
        })),
        Format::Table => {
            eprintln!("Wrote {shown} ({} statements).", p.statements.len())
        }
    }
    Ok(Outcome::Clean)
}
