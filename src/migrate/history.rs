//! The database's migration history (refinery's table) compared with the migration files.

use anyhow::{anyhow, Context, Result};
use refinery::{Migration, Runner};
use tokio_postgres::Client;

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

/// The migrations the database has applied; none when it has no history table yet.
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
