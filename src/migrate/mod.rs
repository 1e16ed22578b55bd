//! Migrations on a database, the steps `migrate`, `status` and `demo` share: reading the files,
//! the database's history, and applying what is pending under the advisory lock.

pub mod adopt;
pub mod adopt_catalog;
pub mod concurrent;
mod history;
pub(crate) mod lint;
pub mod pooler;
pub mod preflight;
mod runner;
pub mod scratch;
mod statements;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use refinery::Migration;
use tokio_postgres::Client;

use crate::settings::Project;

pub use history::{
    applied_migrations, compare, mark, settle, Entry, Place, State, HISTORY_FORMAT, HISTORY_TABLE,
};
pub use runner::{apply, plan, prepare, Applied, Plan, Report, MIGRATE_LOCK_KEY};

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

/// The tables' schema (from the snapshot; `public` without one) as a search_path.
pub fn search_path(project: &Project) -> Result<String> {
    let schema = crate::snapshot::load(&project.migrations_dir())?
        .map(|s| s.schema.tenancy.table_schema)
        .unwrap_or_else(|| "public".to_string());
    Ok(postgres_protocol::escape::escape_identifier(&schema))
}

/// Pin the session's search_path to the tables' schema (from the snapshot; `public` without one),
/// so that refinery's history table and unqualified names in hand-written migrations never land
/// in a schema that happens to share the connecting role's name.
pub async fn pin_search_path(client: &Client, project: &Project) -> Result<()> {
    let path = search_path(project)?;
    client
        .execute("SELECT set_config('search_path', $1, false)", &[&path])
        .await
        .context("cannot set search_path")?;
    Ok(())
}

/// Where the migration history lives for this project: the helper schema and roles of the last
/// generated snapshot (of the policy files before the first `generate`).
pub fn history_place(project: &Project) -> Result<history::Place> {
    let tenancy = match crate::snapshot::load(&project.migrations_dir())? {
        Some(s) => s.schema.tenancy,
        None => project.schema()?.tenancy,
    };
    Ok(history::Place {
        helper_schema: tenancy.helper_schema,
        legacy_schema: tenancy.table_schema,
        app_role: tenancy.app_role,
    })
}

/// Apply every pending migration on a database that only this run migrates (the demo's, a
/// scratch one): the session readied, the history settled in the helper schema, then each
/// migration in its own transaction; `bar` gets the count.
pub async fn apply_pending(
    client: &mut Client,
    project: &Project,
    bar: &ProgressBar,
    announce: bool,
) -> Result<Report> {
    prepare(client, project).await?;
    let place = history_place(project)?;
    let plan = plan(client, load_migrations(project)?, None, &place).await?;
    concurrent::check(&project.migrations_dir(), &plan.pending)?;
    settle(client, &place, !plan.pending.is_empty()).await?;
    bar.set_length(plan.pending.len() as u64);
    let report = apply(client, &project.migrations_dir(), &plan, bar, announce).await?;
    mark(client, &place).await?;
    Ok(report)
}

/// Whether Postgres refused `e` for a missing privilege (SQLSTATE 42501), anywhere in its chain.
pub fn permission_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<tokio_postgres::Error>()
            .and_then(|pg| pg.code())
            == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    })
}
