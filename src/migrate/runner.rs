//! Applying migrations with refinery: one transaction each, under a session-level advisory lock
//! so that concurrent runs apply each migration once, with the project's timeouts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use refinery::{Migration, Runner, Target};
use tokio_postgres::Client;

use super::{applied_migrations, compare, pin_search_path, Place, State};
use crate::settings::Project;

/// Advisory lock key shared by every `tenantctl migrate` on a database ("tenantctl" in ASCII).
pub const MIGRATE_LOCK_KEY: i64 = 0x7465_6e61_6e74_6374;

/// Ready the session for migrating: pin the search_path, take the migration lock (waiting for
/// another run to finish), then set the project's lock and statement timeouts.
pub async fn prepare(client: &Client, project: &Project) -> Result<()> {
    pin_search_path(client, project).await?;
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
    Ok(())
}

/// What a run would apply.
pub struct Plan {
    /// Every migration file, in version order.
    pub migrations: Vec<Migration>,
    /// The database's newest applied version.
    pub current: Option<i32>,
    /// The files to apply, in order.
    pub pending: Vec<Migration>,
    /// refinery's history table, qualified (in the helper schema).
    pub history: String,
}

/// Check the files against the history and list what to apply, up to `target` if given. Refuses
/// when applied migrations were changed or removed, a new file is older than the database, or
/// the target is below the database's version (there are no down migrations).
pub async fn plan(
    client: &mut Client,
    migrations: Vec<Migration>,
    target: Option<i32>,
    place: &Place,
) -> Result<Plan> {
    let applied = applied_migrations(client, place).await?;
    check_history(&migrations, &applied)?;
    let current = applied.iter().map(|m| m.version()).max();
    if let (Some(t), Some(c)) = (target, current) {
        if t < c {
            bail!(
                "--target {t} is below the database's version V{c}: migrations only go forward (there are no down migrations), so nothing was applied and nothing rolled back\n  \
                 hint: to undo a change, write a new forward migration: revert the policy and run `tenantctl generate`, or add a hand-written V<n>__<name>.sql; then `tenantctl migrate`"
            );
        }
    }
    let pending: Vec<Migration> = migrations
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version() == m.version()))
        .filter(|m| target.is_none_or(|t| m.version() <= t))
        .cloned()
        .collect();
    if let (Some(c), Some(first)) = (current, pending.first()) {
        if first.version() < c {
            bail!(
                "{first} is older than the database's version V{c} but was never applied\n  hint: give it a version above V{c}"
            );
        }
    }
    Ok(Plan {
        migrations,
        current,
        pending,
        history: place.relation(),
    })
}

/// Migrations are immutable once applied: a changed or removed one stops the run before it starts.
/// A history ahead of every file was written from newer migration files (a newer checkout, or a
/// newer tenantctl's generated migrations): said as such.
fn check_history(migrations: &[Migration], applied: &[Migration]) -> Result<()> {
    let newest_file = migrations.iter().map(|m| m.version()).max().unwrap_or(0);
    let ahead: Vec<String> = applied
        .iter()
        .filter(|a| a.version() > newest_file)
        .map(|a| a.to_string())
        .collect();
    if !ahead.is_empty() {
        bail!(
            "the database is ahead of these migration files: it has applied {} but the newest file here is V{newest_file}; it was migrated from newer files (a newer checkout, or a newer tenantctl); nothing was applied\n  \
             hint: update this checkout (and tenantctl) to the one that migrated the database, then run the command again",
            ahead.join(", ")
        );
    }
    let bad: Vec<String> = compare(migrations, applied)
        .iter()
        .filter_map(|e| match e.state {
            State::Divergent => Some(format!(
                "  V{}__{}: the file differs from what was applied",
                e.version, e.name
            )),
            State::Missing => Some(format!(
                "  V{}__{}: applied, but the file is gone",
                e.version, e.name
            )),
            State::Applied | State::Pending => None,
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "the migration files do not match the database's history; nothing was applied:\n{}\n  hint: migrations are immutable once applied; restore the files from version control and put changes in a new migration (`tenantctl generate`)",
            bad.join("\n")
        );
    }
    Ok(())
}

/// One migration a run applied.
pub struct Applied {
    pub version: i32,
    /// `V<n>__<name>`.
    pub migration: String,
    pub elapsed: Duration,
}

/// What a run did.
pub struct Report {
    pub applied: Vec<Applied>,
    /// The database's version afterwards.
    pub version: Option<i32>,
}

/// Apply the plan's pending migrations one by one (each in its own transaction), advancing `bar`;
/// with `announce`, a line on stderr for each. A failure names the file, and where in it Postgres
/// points.
pub async fn apply(
    client: &mut Client,
    dir: &Path,
    plan: &Plan,
    bar: &ProgressBar,
    announce: bool,
) -> Result<Report> {
    let mut done: Vec<Applied> = Vec::new();
    for m in &plan.pending {
        bar.set_message(m.to_string());
        let started = Instant::now();
        let previous = done.last().map(|a| a.version).or(plan.current);
        let marked = super::concurrent::is_marked(m);
        if marked {
            // Outside any transaction, statement by statement; recorded below only if all ran.
            let file = dir.join(format!("{m}.sql"));
            let sql = m.sql().unwrap_or_default();
            super::concurrent::run(client, &file, sql, &stays(previous)).await?;
        }
        // A marked migration is recorded without being run again: refinery's fake target writes
        // the row refinery itself would (its checksum), so status and divergence checks hold.
        let target = if marked {
            Target::FakeVersion(m.version())
        } else {
            Target::Version(m.version())
        };
        let mut runner = Runner::new(&plan.migrations)
            .set_grouped(false)
            .set_abort_divergent(true)
            .set_abort_missing(true)
            .set_target(target);
        runner.set_migration_table_name(&plan.history);
        if let Err(e) = runner.run_async(client).await {
            return Err(migration_error(client, dir, m, &e, previous).await);
        }
        let elapsed = started.elapsed();
        done.push(Applied {
            version: m.version(),
            migration: m.to_string(),
            elapsed,
        });
        bar.inc(1);
        if announce {
            bar.suspend(|| eprintln!("Applied {m} ({:.2}s)", elapsed.as_secs_f64()));
        }
    }
    Ok(Report {
        version: done.last().map(|a| a.version).or(plan.current),
        applied: done,
    })
}

/// Name the file, Postgres's message and where in the file it points; say where the database
/// stands.
async fn migration_error(
    client: &mut Client,
    dir: &Path,
    m: &Migration,
    e: &refinery::Error,
    previous: Option<i32>,
) -> anyhow::Error {
    let file = dir.join(format!("{m}.sql"));
    let stays = stays(previous);
    let pg = std::error::Error::source(e).and_then(|s| s.downcast_ref::<tokio_postgres::Error>());
    match pg {
        Some(pg) if pg.as_db_error().is_some() => {
            let sql = m.sql().unwrap_or_default();
            anyhow!(describe_failure(client, &file, sql, pg, &stays).await)
        }
        _ => anyhow!("migration {} failed: {e}{stays}", file.display()),
    }
}

/// `; the database stays at V<n>`: where a failed run leaves the database.
fn stays(previous: Option<i32>) -> String {
    match previous {
        Some(v) => format!("; the database stays at V{v}"),
        None => "; the database has no migration applied".to_string(),
    }
}

/// `migration FILE:LINE:COLUMN failed: MESSAGE (SQLSTATE)` + `after`, then Postgres's detail and
/// hint.
pub(super) async fn describe_failure(
    client: &mut impl tokio_postgres::GenericClient,
    file: &Path,
    sql: &str,
    e: &tokio_postgres::Error,
    after: &str,
) -> String {
    let at = locate(client, sql, e).await;
    failure_text(file, at, e, after)
}

/// Where in `sql` Postgres points, or, when it gives no position in the file, where the statement
/// that fails starts (found by re-running the statements in a rolled-back transaction).
pub(super) async fn locate(
    client: &mut impl tokio_postgres::GenericClient,
    sql: &str,
    e: &tokio_postgres::Error,
) -> Option<(usize, usize)> {
    match e.as_db_error()?.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(pos)) => {
            Some(char_position(sql, *pos as usize))
        }
        _ => super::statements::locate_failure(client, sql).await,
    }
}

pub(super) fn failure_text(
    file: &Path,
    at: Option<(usize, usize)>,
    e: &tokio_postgres::Error,
    after: &str,
) -> String {
    let Some(dbe) = e.as_db_error() else {
        return format!("migration {} failed: {e}{after}", file.display());
    };
    let location = at.map_or(String::new(), |(line, col)| format!(":{line}:{col}"));
    let mut msg = format!(
        "migration {}{location} failed: {} (SQLSTATE {}){after}",
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
    msg
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
