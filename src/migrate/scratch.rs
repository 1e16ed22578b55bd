//! Test-applying migrations where nothing is at stake: a scratch database created for the run and
//! always dropped, the migrations replayed there in one transaction that is rolled back (role
//! changes are cluster-wide: rolled back too), never in the user's database.

use std::path::Path;

use anyhow::{Context, Result};
use refinery::Migration;
use tokio_postgres::{Client, Transaction};

use crate::pg::{self, error::pg_error};
use crate::sqlgen::tenants as tsql;

/// A database created on a server for one run.
pub struct Scratch {
    server: pg::Target,
    pub name: String,
    pub url: pg::Target,
}

/// Whether the connected role may create a database on this server (a scratch one there).
pub async fn can_create_database(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT rolsuper OR rolcreatedb FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .context("cannot read the connecting role's attributes")?;
    Ok(row.get(0))
}

/// The scratch database's name for `purpose`: unique to this process.
pub fn name(purpose: &str) -> String {
    format!("tenantctl_{purpose}_{}", std::process::id())
}

impl Scratch {
    /// Create the scratch database for `purpose` on `server`'s cluster.
    pub async fn create(server: &pg::Target, purpose: &str) -> Result<Scratch> {
        let name = name(purpose);
        let admin = pg::connect(server).await?;
        admin
            .batch_execute(&tsql::create_database(&name))
            .await
            .map_err(pg_error)
            .with_context(|| format!("cannot create the scratch database {name}"))?;
        let url = server.with_dbname(&name)?;
        Ok(Scratch {
            server: server.clone(),
            name,
            url,
        })
    }

    /// Drop it (whatever the run did in it).
    pub async fn drop(self) -> Result<()> {
        let admin = pg::connect(&self.server).await?;
        admin
            .batch_execute(&tsql::drop_database(&self.name))
            .await
            .map_err(pg_error)
            .with_context(|| format!("cannot drop the scratch database {}", self.name))
    }
}

/// Run `work` on a fresh scratch database of `server`, then drop it, whether `work` failed or not.
pub async fn in_scratch<T>(
    server: &pg::Target,
    purpose: &str,
    work: impl AsyncFnOnce(&mut Client) -> Result<T>,
) -> Result<T> {
    let scratch = Scratch::create(server, purpose).await?;
    let result = match pg::connect(&scratch.url).await {
        Ok(mut client) => work(&mut client).await,
        Err(e) => Err(e),
    };
    let dropped = scratch.drop().await;
    let value = result?;
    dropped?;
    Ok(value)
}

/// A migration that failed to apply in the scratch database.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `migration FILE:LINE:COLUMN failed: ...`, with Postgres's detail and hint.
    pub text: String,
    /// Where in the file (line, column).
    pub at: Option<(usize, usize)>,
    /// Postgres's message alone.
    pub message: String,
}

/// Apply `migrations` in order in one transaction that is rolled back at the end, each in its
/// own savepoint; the first failure names the file, `line:column` and Postgres's message, then
/// `after`. `Ok(None)` when every migration applies.
pub async fn test_apply(
    client: &mut Client,
    dir: &Path,
    search_path: &str,
    migrations: &[&Migration],
    after: &str,
) -> Result<Option<Failure>> {
    replay(client, dir, search_path, migrations, after, async |_, _| {
        Ok(())
    })
    .await
}

/// [`test_apply`], calling `each` after every migration that applied (and once before the first,
/// with `None`), inside the transaction: to read what the migrations built so far.
pub async fn replay(
    client: &mut Client,
    dir: &Path,
    search_path: &str,
    migrations: &[&Migration],
    after: &str,
    mut each: impl AsyncFnMut(&Transaction<'_>, Option<&Migration>) -> Result<()>,
) -> Result<Option<Failure>> {
    let mut tx = client.transaction().await?;
    tx.execute(
        "SELECT set_config('search_path', $1, true)",
        &[&search_path],
    )
    .await?;
    each(&tx, None).await?;
    for m in migrations {
        // A non-transactional migration replays without CONCURRENTLY: the same index results.
        let sql = &super::concurrent::in_transaction(dir, m)?;
        let step = tx.transaction().await?;
        match step.batch_execute(sql).await {
            Ok(()) => step.commit().await?,
            Err(e) => {
                step.rollback().await?;
                let file = dir.join(format!("{m}.sql"));
                let at = super::runner::locate(&mut tx, sql, &e).await;
                return Ok(Some(Failure {
                    text: super::runner::failure_text(&file, at, &e, after),
                    at,
                    message: e
                        .as_db_error()
                        .map_or(e.to_string(), |d| d.message().to_string()),
                }));
            }
        }
        each(&tx, Some(m)).await?;
    }
    tx.rollback().await?;
    Ok(None)
}
