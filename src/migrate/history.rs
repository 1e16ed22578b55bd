//! The database's migration history (refinery's table) compared with the migration files.

use anyhow::{anyhow, Context, Result};
use refinery::Migration;
use tokio_postgres::Client;

use crate::pg::unnamed::typed;

/// refinery's history table.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

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

/// refinery's history rows, as refinery reads them (every value as text but the version).
const HISTORY_ROWS: &str = "SELECT version, name::text AS name, applied_on::text AS applied_on, \
     checksum::text AS checksum FROM refinery_schema_history ORDER BY version";

/// The migrations the database has applied; none when it has no history table yet. Read in one
/// transaction of unnamed statements, with `search_path` (when given) set for that transaction
/// only: nothing outlives it, so this works through a transaction pooler.
pub async fn applied_migrations(
    client: &mut Client,
    search_path: Option<&str>,
) -> Result<Vec<Migration>> {
    read_history(client, search_path)
        .await
        .context("cannot read the migration history")
}

async fn read_history(client: &mut Client, search_path: Option<&str>) -> Result<Vec<Migration>> {
    let tx = client.transaction().await?;
    if let Some(path) = search_path {
        tx.execute_typed(
            "SELECT pg_catalog.set_config('search_path', $1, true)",
            typed![path],
        )
        .await?;
    }
    let mut applied = Vec::new();
    if crate::pg::unnamed::relation_exists(&tx, HISTORY_TABLE).await? {
        for r in tx.query_typed(HISTORY_ROWS, &[]).await? {
            let on: String = r.try_get("applied_on")?;
            let on =
                time::OffsetDateTime::parse(&on, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| anyhow!("unexpected applied_on {on:?}: {e}"))?;
            let checksum: String = r.try_get("checksum")?;
            let checksum = checksum
                .parse::<u64>()
                .map_err(|e| anyhow!("unexpected checksum {checksum:?}: {e}"))?;
            applied.push(Migration::applied(
                r.try_get("version")?,
                r.try_get("name")?,
                on,
                checksum,
            ));
        }
    }
    tx.commit().await?;
    Ok(applied)
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
