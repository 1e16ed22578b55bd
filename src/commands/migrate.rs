//! `tenantctl migrate`: apply pending migrations with refinery, one transaction each, under an
//! advisory lock so that concurrent runs apply each migration once.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use refinery::{Migration, Runner, Target};
use serde_json::json;
use tokio_postgres::Client;

use crate::cli::{Format, MigrateArgs};
use crate::settings::Project;
use crate::{output, pg, Outcome};

/// Advisory lock key shared by every `tenantctl migrate` on a database ("tenantctl" in ASCII).
pub const MIGRATE_LOCK_KEY: i64 = 0x7465_6e61_6e74_6374;

/// refinery's history table.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

/// The migration files, as refinery reads them.
pub fn load_migrations(project: &Project) -> Result<Vec<Migration>> {
    let dir = project.migrations_dir();
    if !dir.is_dir() {
        bail!(
            "no migrations directory at {}\n  hint: run `tenantctl generate` to write the first migration",
            dir.display()
        );
    }
    // Our own listing rejects duplicate versions with a clear message before refinery sees them.
    crate::snapshot::migration_files(&dir)?;
    let mut migrations = refinery::load_sql_migrations(&dir)
        .map_err(|e| anyhow!("cannot load the migrations in {}: {e}", dir.display()))?;
    migrations.sort();
    Ok(migrations)
}

/// What the database's history says, per version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Applied,
    Pending,
    /// Applied, but the file's name or content differs from what was applied.
    Divergent,
    /// Applied, but no file has this version.
    Missing,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Divergent => "divergent",
            State::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub version: i32,
    pub name: String,
    pub state: State,
    pub applied_on: Option<String>,
}

/// Pin the session's search_path to the tables' schema (from the snapshot; `public` without one),
/// so that refinery's history table and unqualified names in hand-written migrations never land
/// in a schema that happens to share the connecting role's name.
pub async fn pin_search_path(client: &Client, project: &Project) -> Result<()> {
    let schema = crate::snapshot::load(&project.migrations_dir())?
        .map(|s| s.schema.tenancy.table_schema)
        .unwrap_or_else(|| "public".to_string());
    let path = postgres_protocol::escape::escape_identifier(&schema);
    client
        .execute("SELECT set_config('search_path', $1, false)", &[&path])
        .await
        .context("cannot set search_path")?;
    Ok(())
}

pub async fn applied_migrations(client: &mut Client) -> Result<Vec<Migration>> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&HISTORY_TABLE])
        .await
        .context("cannot read the migration history")?
        .get(0);
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Runner::new(&[])
        .get_applied_migrations_async(client)
        .await
        .map_err(|e| anyhow!("cannot read the migration history: {e}"))
}

/// refinery records when a migration was applied; show it as RFC 3339, to the second.
fn rfc3339(t: &time::OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(*t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Compare the files with the database's history.
pub fn compare(local: &[Migration], applied: &[Migration]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for m in local {
        let a = applied.iter().find(|a| a.version() == m.version());
        let state = match a {
            None => State::Pending,
            Some(a) if a == m => State::Applied,
            Some(_) => State::Divergent,
        };
        entries.push(Entry {
            version: m.version(),
            name: m.name().to_string(),
            state,
            applied_on: a.and_then(|a| a.applied_on()).map(rfc3339),
        });
    }
    for a in applied {
        if !local.iter().any(|m| m.version() == a.version()) {
            entries.push(Entry {
                version: a.version(),
                name: a.name().to_string(),
                state: State::Missing,
                applied_on: a.applied_on().map(rfc3339),
            });
        }
    }
    entries.sort_by_key(|e| e.version);
    entries
}

pub async fn run(
    project: &Project,
    url: &pg::Target,
    args: &MigrateArgs,
    format: Format,
) -> Result<Outcome> {
    if let Some((pooler, direct)) = url.neon_pooler() {
        if !args.allow_pooler {
            bail!(
                "{pooler} is a Neon pooler endpoint (PgBouncer in transaction mode): it cannot hold the advisory lock that keeps two migrate runs from applying the same migration\n  \
                 hint: migrate through the direct host {direct}, or pass --allow-pooler if nothing else can migrate concurrently"
            );
        }
        eprintln!(
            "warning: migrating through the pooler {pooler}: the advisory lock does not hold there"
        );
    }
    let migrations = load_migrations(project)?;
    let mut client = pg::connect(url).await?;
    pin_search_path(&client, project).await?;

    // Session-level lock, held for the whole run; released when we finish or the connection drops.
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATE_LOCK_KEY])
        .await
        .context("cannot take the migration lock")?
        .get(0);
    if !got {
        eprintln!("Another migration is running on this database; waiting for it to finish...");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY])
            .await
            .context("cannot take the migration lock")?;
    }
    client
        .execute(
            "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
            &[&project.config.database.lock_timeout, &project.config.database.statement_timeout],
        )
        .await
        .context("invalid lock_timeout or statement_timeout in tenantctl.toml")?;

    let applied = applied_migrations(&mut client).await?;
    let entries = compare(&migrations, &applied);
    let bad: Vec<String> = entries
        .iter()
        .filter(|e| matches!(e.state, State::Divergent | State::Missing))
        .map(|e| match e.state {
            State::Divergent => format!(
                "  V{}__{}: the file differs from what was applied",
                e.version, e.name
            ),
            _ => format!(
                "  V{}__{}: applied, but the file is gone",
                e.version, e.name
            ),
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "the migration files do not match the database's history; nothing was applied:\n{}\n  hint: migrations are immutable once applied; restore the files from version control and put changes in a new migration (`tenantctl generate`)",
            bad.join("\n")
        );
    }
    let current = applied.iter().map(|m| m.version()).max();
    let pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version() == m.version()))
        .filter(|m| args.target.is_none_or(|t| m.version() <= t))
        .collect();
    if let Some(c) = current {
        if let Some(first) = pending.first() {
            if first.version() < c {
                bail!(
                    "{first} is older than the database's version V{c} but was never applied\n  hint: give it a version above V{c}"
                );
            }
        }
    }

    if args.dry_run {
        match format {
            Format::Json => output::print_json(&json!({
                "dry_run": true,
                "current": current,
                "pending": pending.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            })),
            Format::Table | Format::Junit if pending.is_empty() => {
                eprintln!("Nothing to apply: the database is up to date.")
            }
            Format::Table | Format::Junit => {
                println!("Would apply {} migration(s):", pending.len());
                for m in &pending {
                    println!("  {m}");
                }
            }
        }
        return Ok(Outcome::Clean);
    }

    let bar = output::progress(pending.len() as u64, "migrating");
    let mut done = Vec::new();
    for m in &pending {
        bar.set_message(m.to_string());
        let started = Instant::now();
        let runner = Runner::new(&migrations)
            .set_grouped(false)
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .set_target(Target::Version(m.version()));
        if let Err(e) = runner.run_async(&mut client).await {
            bar.finish_and_clear();
            return Err(migration_error(
                &project.migrations_dir(),
                m,
                &e,
                current.or(done.last().map(|(v, _, _)| *v)),
            ));
        }
        done.push((m.version(), m.to_string(), started.elapsed()));
        bar.inc(1);
        if format == Format::Table {
            bar.suspend(|| eprintln!("Applied {m} ({:.2}s)", started.elapsed().as_secs_f64()));
        }
    }
    bar.finish_and_clear();
    let version = done.last().map(|(v, _, _)| *v).or(current);
    match format {
        Format::Json => output::print_json(&json!({
            "dry_run": false,
            "applied": done.iter().map(|(_, n, t)| json!({"migration": n, "seconds": t.as_secs_f64()})).collect::<Vec<_>>(),
            "version": version,
        })),
        Format::Table | Format::Junit if done.is_empty() => {
            eprintln!("Nothing to apply: the database is up to date.")
        }
        Format::Table | Format::Junit => eprintln!("Database is at V{}.", version.unwrap_or(0)),
    }
    Ok(Outcome::Clean)
}

/// Name the file, Postgres's message and where in the file it points; say where the database stands.
fn migration_error(
    dir: &Path,
    m: &Migration,
    e: &refinery::Error,
    previous: Option<i32>,
) -> anyhow::Error {
    let file = dir.join(format!("{m}.sql"));
    let stays = match previous {
        Some(v) => format!("the database stays at V{v}"),
        None => "the database has no migration applied".to_string(),
    };
    let db_error = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(|pg| pg.as_db_error());
    let Some(dbe) = db_error else {
        return anyhow!("migration {} failed: {e}; {stays}", file.display());
    };
    let mut location = String::new();
    if let Some(tokio_postgres::error::ErrorPosition::Original(pos)) = dbe.position() {
        if let Some(sql) = m.sql() {
            let (line, col) = char_position(sql, *pos as usize);
            location = format!(":{line}:{col}");
        }
    }
    let mut msg = format!(
        "migration {}{location} failed: {} (SQLSTATE {}); {stays}",
        file.display(),
        dbe.message(),
        dbe.code().code()
    );
    if let Some(d) = dbe.detail() {
        msg.push_str(&format!("\n  detail: {d}"));
    }
    if let Some(h) = dbe.hint() {
        msg.push_str(&format!("\n  hint: {h}"));
    }
    anyhow!(msg)
}

/// Line and column of Postgres's 1-based character position.
fn char_position(text: &str, pos: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 1;
    for c in text.chars().take(pos.saturating_sub(1)) {
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line, col)
}

#[cfg(test)]
mod tests {
    #[test]
    fn positions_count_characters() {
        assert_eq!(super::char_position("SELECT 1;\nSELEC 2;", 11), (2, 1));
        assert_eq!(super::char_position("é\nab", 4), (2, 2));
    }
}
