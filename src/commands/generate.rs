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
    /// A change that widens what a role can see or write is written in CI ($CI set) only with
    /// --allow-widening.
    pub allow_widening: bool,
    /// Allow a column type change that rewrites an existing table.
    pub allow_rewrite: bool,
    /// $CI is set.
    pub ci: bool,
    /// Where to test-apply the new migration before writing it; None: not test-applied
    /// (`--offline`, or no server binaries), with the reason.
    pub test_apply: TestApply,
    pub format: Format,
}

/// Where `generate` test-applies a new migration.
#[derive(Debug, Clone)]
pub enum TestApply {
    /// A scratch database on this server ($TENANTCTL_SCRATCH_URL).
    On(Box<crate::pg::Target>),
    /// A scratch database of the embedded cluster in this directory, started if need be.
    Embedded(std::path::PathBuf),
    /// Not test-applied, and why (printed).
    Skipped(String),
}

/// What the next migration would be.
struct Pending {
    version: u32,
    statements: Vec<Statement>,
    schema: crate::model::Schema,
    /// What changes, for the header, and what widens a role's reach.
    summary: sqlgen::Summary,
    /// Column type changes that rewrite an existing table.
    rewrites: Vec<sqlgen::Rewrite>,
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
    let summary = sqlgen::summarize(snap.as_ref().map(|s| &s.schema), &schema);
    let rewrites = sqlgen::rewrites(snap.as_ref().map(|s| &s.schema), &schema);
    Ok(Pending {
        rewrites,
        version: last + 1,
        statements,
        schema,
        summary,
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
            "summary": p.summary.counts,
            "widening": widening_json(&p.summary),
        })),
        Format::Table if p.statements.is_empty() => {
            eprintln!(
                "No changes: the database schema in migrations/ already matches the policies."
            )
        }
        Format::Table => {
            for (_, text) in files(&p, "planned") {
                print!("{text}");
            }
        }
    }
    Ok(Outcome::Clean)
}

pub async fn generate(project: &Project, settings: &Settings) -> Result<Outcome> {
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
    refuse_widening(&p.summary, settings)?;
    refuse_rewrite(&p.rewrites, settings.allow_rewrite)?;
    let written: Vec<(std::path::PathBuf, String)> = files(&p, &name)
        .into_iter()
        .map(|(stem, text)| (dir.join(format!("{stem}.sql")), text))
        .collect();
    check_applies(project, &settings.test_apply, &written, &p.schema).await?;
    let last = p.version + written.len() as u32 - 1;
    let texts: Vec<&str> = written.iter().map(|(_, t)| t.as_str()).collect();
    // The lint reads the texts while the files and the snapshot are written: on a 200-table
    // policy set each is a third of what `generate` takes, and they need nothing of each other.
    let (saved, linted) = std::thread::scope(|scope| {
        let lint = scope.spawn(|| crate::migrate::lint::lint_files(&texts));
        let saved = write_all(&dir, &written, last, &p.schema);
        (saved, lint.join().expect("the lint thread panicked"))
    });
    saved?;
    let mut report = Vec::new();
    for ((file, _), findings) in written.iter().zip(linted) {
        let shown = super::render::project_path(project, file);
        // Warnings only: what the new migrations lock on tables that already exist.
        for f in &findings {
            eprintln!("warning: {}", super::render::lint_finding(&shown, f));
        }
        report.push((shown, findings));
    }
    match settings.format {
        Format::Json => crate::output::print_json(&json!({
            "written": report[0].0, "version": last, "statements": p.statements.len(),
            "files": report.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            "lint": report.iter().flat_map(|(_, l)| l).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let shown: Vec<&str> = report.iter().map(|(f, _)| f.as_str()).collect();
            eprintln!(
                "Wrote {} ({} statements).",
                shown.join(" and "),
                p.statements.len()
            )
        }
    }
    Ok(Outcome::Clean)
}

/// Write the migrations, then the snapshot that describes them; when the snapshot cannot be
/// written, the migrations are removed again (never one without the other).
fn write_all(
    dir: &std::path::Path,
    written: &[(std::path::PathBuf, String)],
    last: u32,
    schema: &crate::model::Schema,
) -> Result<()> {
    for (file, text) in written {
        snapshot::write_atomic(file, text)?;
    }
    if let Err(e) = snapshot::save(dir, last, schema) {
        for (file, _) in written {
            let _ = std::fs::remove_file(file);
        }
        return Err(e);
    }
    Ok(())
}

/// The migrations the change makes, as (file stem, text), one per `sqlgen::Part` that has
/// statements, in order: the main one; the `VALIDATE CONSTRAINT`s of constraints it adds `NOT
/// VALID` to existing tables (`_validate`); the indexes built or dropped CONCURRENTLY on existing
/// tables, non-transactional (`_index`); the unique indexes that one built, attached as
/// constraints (`_attach`). The first one written carries the change's summary.
fn files(p: &Pending, name: &str) -> Vec<(String, String)> {
    use sqlgen::Part;
    let mut out: Vec<(String, String)> = Vec::new();
    for part in [Part::Main, Part::Validate, Part::Index, Part::Attach] {
        let stmts: Vec<Statement> = p
            .statements
            .iter()
            .filter(|s| s.part == part)
            .cloned()
            .collect();
        if stmts.is_empty() {
            continue;
        }
        let v = p.version + out.len() as u32;
        let (name, mut header) = match part {
            Part::Main => (name.to_string(), Vec::new()),
            Part::Validate => (
                format!("{name}_validate"),
                vec![format!(
                    "-- Validates the constraints V{} added NOT VALID (a transaction of its own: writes go on).",
                    p.version
                )],
            ),
            // The marker among the leading comments: `migrate` runs it outside a transaction.
            Part::Index => (
                format!("{name}_index"),
                vec![format!(
                    "{}\n{}",
                    sqlgen::NO_TRANSACTION_MARKER,
                    sqlgen::no_transaction_header().trim_end()
                )],
            ),
            Part::Attach => (
                format!("{name}_attach"),
                vec![format!(
                    "-- Attaches the unique indexes V{} built CONCURRENTLY as the declared constraints (a brief lock, no scan).",
                    v - 1
                )],
            ),
        };
        if out.is_empty() {
            header.extend(p.summary.header());
        }
        out.push((
            format!("V{v}__{name}"),
            sqlgen::render(v, &name, &header, &stmts),
        ));
    }
    out
}

/// Test-apply the new migration on top of the existing ones in a scratch database (always
/// dropped) before anything is written: a failure is an error naming the unwritten file's
/// `line:column` and, where it can be told, the policy file's.
async fn check_applies(
    project: &Project,
    how: &TestApply,
    written: &[(std::path::PathBuf, String)],
    schema: &crate::model::Schema,
) -> Result<()> {
    let server = match how {
        TestApply::On(server) => (**server).clone(),
        TestApply::Embedded(dir) => {
            let why = "test-applying the new migration in a scratch database of";
            super::embedded_server(dir, why)?
        }
        TestApply::Skipped(why) => {
            eprintln!("note: not test-applied ({why}); `tenantctl migrate --dry-run` checks it");
            return Ok(());
        }
    };
    let dir = project.migrations_dir();
    let mut all = if snapshot::migration_files(&dir)?.is_empty() {
        Vec::new()
    } else {
        crate::migrate::load_migrations(project)?
    };
    for (file, text) in written {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let new = refinery::Migration::unapplied(stem, text)
            .map_err(|e| anyhow::anyhow!("cannot read the new migration: {e}"))?;
        all.push(new);
    }
    let replay: Vec<&refinery::Migration> = all.iter().collect();
    let path = postgres_protocol::escape::escape_identifier(&schema.tenancy.table_schema);
    let after = "; nothing was written";
    let failure = crate::migrate::scratch::in_scratch(&server, "generate", async |c| {
        crate::migrate::scratch::test_apply(c, &dir, &path, &replay, after).await
    })
    .await?;
    let Some(f) = failure else {
        return Ok(());
    };
    // The file that failed is the one the failure names.
    let text = written
        .iter()
        .find(|(file, _)| {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            f.text.contains(name)
        })
        .map_or("", |(_, text)| text.as_str());
    let pointer =
        f.at.and_then(|(line, _)| policy_pointer(project, text, line, &f.message))
            .map_or(String::new(), |p| format!("\n  policy: {p}"));
    bail!(
        "the new migration does not apply on top of the existing ones: {}{pointer}\n  \
         hint: fix the policy file and run `tenantctl generate` again",
        f.text
    )
}

/// Where in the policy files the statement at `line` of the generated `text` comes from: the
/// provenance comment above it names the file and object; a name Postgres quotes in its message
/// (`type "txet" does not exist`) found in that file gives the line and column.
fn policy_pointer(project: &Project, text: &str, line: usize, message: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    let prov = lines
        .windows(2)
        .rev()
        .find(|w| w[0].is_empty() && w[1].starts_with("-- "))
        .map(|w| &w[1][3..])?;
    let (rel, object) = prov.split_once(": ")?;
    let source = std::fs::read_to_string(project.root.join(rel)).ok()?;
    let quoted = message.split('"').skip(1).step_by(2);
    let found = quoted.filter(|q| !q.is_empty()).find_map(|q| {
        source.lines().enumerate().find_map(|(i, l)| {
            l.find(&format!("\"{q}\""))
                .map(|c| (i + 1, l[..c].chars().count() + 2))
        })
    });
    Some(match found {
        Some((l, c)) => format!("{rel}:{l}:{c} ({object})"),
        None => format!("{rel} ({object})"),
    })
}

fn widening_json(summary: &sqlgen::Summary) -> serde_json::Value {
    summary
        .widened
        .iter()
        .map(|(role, objects)| {
            let names: Vec<&str> = objects.iter().map(|(_, o)| o.as_str()).collect();
            (role.clone(), json!(names))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// In CI, a change that widens what a role can see or write needs --allow-widening: a reviewer
/// saw the risk line, and the pipeline says so.
fn refuse_widening(summary: &sqlgen::Summary, settings: &Settings) -> Result<()> {
    if !settings.ci || settings.allow_widening || summary.widened.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = summary
        .widened
        .iter()
        .map(|(role, objects)| {
            let names: Vec<&str> = objects.iter().map(|(_, o)| o.as_str()).collect();
            format!("  {role}: {}", names.join(", "))
        })
        .collect();
    bail!(
        "the change widens what a role can see or write, and $CI is set; nothing was written:\n{}\n  \
         hint: review it with `tenantctl plan`; if it is intended, run again with --allow-widening",
        lines.join("\n")
    )
}

/// A column type change that rewrites a table that already exists holds an ACCESS EXCLUSIVE lock
/// (no reads, no writes) for as long as the rewrite takes: only with --allow-rewrite.
fn refuse_rewrite(rewrites: &[sqlgen::Rewrite], allow: bool) -> Result<()> {
    if allow || rewrites.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = rewrites
        .iter()
        .map(|r| format!("  {} -> {}  ({})", r.from, r.to, r.provenance))
        .collect();
    bail!(
        "the change rewrites a table that already exists, blocking its reads and writes while it \
         runs; nothing was written:\n{}\n  \
         hint: add a new column and backfill it instead; if a rewrite is acceptable (a small \
         table, a maintenance window), run again with --allow-rewrite",
        lines.join("\n")
    )
}
