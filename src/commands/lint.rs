//! `tenantctl lint`: what each migration locks and for how long, statement by statement, with
//! rule ids following squawk's. The pending migrations of the database by default, or the files
//! given. Exit 1 when it finds something, 0 when clean.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use crate::migrate::{self, lint, State};
use crate::output::Format;
use crate::settings::Project;
use crate::{pg, Outcome};

/// Which files to lint.
#[derive(Debug, Clone)]
pub enum Files {
    /// These files (no database needed).
    Given(Vec<PathBuf>),
    /// The migrations not yet applied to this database.
    Pending(Box<pg::Target>),
}

/// What `lint` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub files: Files,
    pub format: Format,
}

pub async fn run(project: &Project, settings: &Settings) -> Result<Outcome> {
    let files = match &settings.files {
        Files::Given(files) => files.clone(),
        Files::Pending(target) => pending(project, target).await?,
    };
    let mut texts = Vec::new();
    for file in &files {
        let sql = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        texts.push(sql);
    }
    // In order: a check an earlier migration adds is known to the later ones.
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let results: Vec<(String, Vec<lint::Finding>)> = files
        .iter()
        .map(|f| super::render::project_path(project, f))
        .zip(lint::lint_files(&texts))
        .collect();
    let total: usize = results.iter().map(|(_, f)| f.len()).sum();
    match settings.format {
        Format::Json => crate::output::print_json(&json!({
            "files": results.iter().map(|(file, findings)| json!({
                "file": file, "findings": findings,
            })).collect::<Vec<_>>(),
            "findings": total,
        })),
        Format::Table => {
            for (file, findings) in &results {
                for f in findings {
                    println!("{}", super::render::lint_finding(file, f));
                }
            }
            let line = match (total, files.len()) {
                (_, 0) => "No migrations to lint: none pending.".to_string(),
                (0, n) => format!("No lock findings in {n} migration(s)."),
                (t, n) => format!("{t} lock finding(s) in {n} migration(s)."),
            };
            println!("{}", crate::output::wrap(&line));
        }
    }
    Ok(if total > 0 {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// The files of the migrations the database has not applied yet, oldest first.
async fn pending(project: &Project, target: &pg::Target) -> Result<Vec<PathBuf>> {
    let local = migrate::load_migrations(project)?;
    let mut client = pg::connect(target).await?;
    let place = migrate::history_place(project)?;
    let applied = migrate::applied_migrations(&mut client, &place).await?;
    let pending: Vec<(i32, String)> = migrate::compare(&local, &applied)
        .into_iter()
        .filter(|e| e.state == State::Pending)
        .map(|e| (e.version, e.name))
        .collect();
    let files = crate::snapshot::migration_files(&project.migrations_dir())?;
    Ok(files
        .into_iter()
        .filter(|f| {
            pending
                .iter()
                .any(|(v, n)| i64::from(*v) == i64::from(f.version) && *n == f.name)
        })
        .map(|f| f.path)
        .collect())
}
