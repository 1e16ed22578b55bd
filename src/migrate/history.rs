//! The database's migration history (refinery's table) compared with the migration files.

use anyhow::{anyhow, bail, Context, Result};
use refinery::Migration;
use tokio_postgres::{Client, GenericClient};

use crate::pg::unnamed::relation_exists;
use crate::sqlgen;

/// refinery's history table.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

/// The format of the history this tenantctl writes and reads: its table comment says
/// `tenantctl history format <n>`. 1: refinery's table in the helper schema.
pub const HISTORY_FORMAT: u32 = 1;
const MARKER_PREFIX: &str = "tenantctl history format ";

/// The history table's comment.
const HISTORY_COMMENT: &str =
    "SELECT pg_catalog.obj_description(pg_catalog.to_regclass($1), 'pg_class') AS comment";

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

/// Where the history lives: the helper schema, or the tables' schema where tenantctl versions
/// before it left the table (read there until the next `migrate` moves it).
#[derive(Debug, Clone)]
pub struct Place {
    pub helper_schema: String,
    pub legacy_schema: String,
    /// Whatever was granted to it on a moved history is revoked.
    pub app_role: String,
}

impl Place {
    /// The qualified name refinery creates and writes.
    pub fn relation(&self) -> String {
        sqlgen::history_relation(&self.helper_schema, HISTORY_TABLE)
    }
}

/// The migrations the database has applied; none when it has no history table yet. Read in one
/// transaction of unnamed statements: nothing outlives it, so this works through a transaction
/// pooler.
pub async fn applied_migrations(client: &mut Client, place: &Place) -> Result<Vec<Migration>> {
    read_history(client, place)
        .await
        .context("cannot read the migration history")
}

async fn read_history(client: &mut Client, place: &Place) -> Result<Vec<Migration>> {
    let tx = client.transaction().await?;
    let mut applied = Vec::new();
    let found = located(&tx, place).await?;
    if let Some(schema) = found.first() {
        refuse_newer(&tx, schema).await?;
        let rows = sqlgen::history_rows(schema, HISTORY_TABLE);
        for r in tx.query_typed(&rows, &[]).await? {
            applied.push(history_row(&r)?);
        }
    }
    tx.commit().await?;
    Ok(applied)
}

fn history_row(r: &tokio_postgres::Row) -> Result<Migration> {
    let on: String = r.try_get("applied_on")?;
    let on = time::OffsetDateTime::parse(&on, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow!("unexpected applied_on {on:?}: {e}"))?;
    let checksum: String = r.try_get("checksum")?;
    let checksum = checksum
        .parse::<u64>()
        .map_err(|e| anyhow!("unexpected checksum {checksum:?}: {e}"))?;
    Ok(Migration::applied(
        r.try_get("version")?,
        r.try_get("name")?,
        on,
        checksum,
    ))
}

/// A history written by a newer tenantctl (a format this one does not know) is refused: this
/// tenantctl could misread it, or undo what the newer one did.
async fn refuse_newer(client: &impl GenericClient, schema: &str) -> Result<()> {
    let name = sqlgen::history_relation(schema, HISTORY_TABLE);
    let comment: Option<String> = client
        .query_typed_one(HISTORY_COMMENT, crate::pg::unnamed::typed![name.as_str()])
        .await?
        .get("comment");
    let format = comment
        .as_deref()
        .and_then(|c| c.strip_prefix(MARKER_PREFIX))
        .and_then(|n| n.trim().parse::<u32>().ok());
    match format {
        Some(n) if n > HISTORY_FORMAT => bail!(
            "this database was migrated by a newer tenantctl: its history {name} has format {n}, this tenantctl {} knows formats up to {HISTORY_FORMAT}; nothing was read or applied\n  \
             hint: upgrade tenantctl to the version that migrated it (see the project's CI or lock file), then run the command again",
            env!("CARGO_PKG_VERSION")
        ),
        _ => Ok(()),
    }
}

/// Leave this tenantctl's marker on the history (when there is one in the helper schema).
pub async fn mark(client: &Client, place: &Place) -> Result<()> {
    if !relation_exists(client, &place.relation()).await? {
        return Ok(());
    }
    let marker = format!("{MARKER_PREFIX}{HISTORY_FORMAT}");
    client
        .batch_execute(&sqlgen::mark_history(
            &place.helper_schema,
            HISTORY_TABLE,
            &marker,
        ))
        .await
        .map_err(crate::pg::error::pg_error)
        .context("cannot mark the migration history")
}

/// The schemas holding a history table: the helper schema first, then the legacy one.
async fn located(client: &impl GenericClient, place: &Place) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for schema in [&place.helper_schema, &place.legacy_schema] {
        let name = sqlgen::history_relation(schema, HISTORY_TABLE);
        if !found.contains(schema) && relation_exists(client, &name).await? {
            found.push(schema.clone());
        }
    }
    Ok(found)
}

/// Before refinery runs, under the migration lock: the helper schema exists (when something is
/// to be applied), and a history that an older tenantctl left in the tables' schema is moved
/// there, in one transaction. True when it moved the history.
pub async fn settle(client: &mut Client, place: &Place, pending: bool) -> Result<bool> {
    settle_in_tx(client, place, pending).await.with_context(|| {
        format!(
            "cannot place the migration history in {}; nothing was applied",
            place.relation()
        )
    })
}

async fn settle_in_tx(client: &mut Client, place: &Place, pending: bool) -> Result<bool> {
    let tx = client.transaction().await?;
    let found = located(&tx, place).await?;
    let moved = match found.as_slice() {
        [one, two] => bail!(
            "the migration history exists twice, in {} and in {}; nothing was applied\n  \
             hint: keep the one that lists what this database has applied, drop the other, then run `tenantctl migrate` again",
            sqlgen::history_relation(one, HISTORY_TABLE),
            sqlgen::history_relation(two, HISTORY_TABLE)
        ),
        [one] if *one == place.helper_schema => false,
        [legacy] => {
            tx.batch_execute(&sqlgen::create_history_schema(&place.helper_schema))
                .await?;
            let sql = sqlgen::move_history(
                legacy,
                &place.helper_schema,
                HISTORY_TABLE,
                &place.app_role,
            );
            tx.batch_execute(&sql).await.map_err(crate::pg::error::pg_error)?;
            true
        }
        _ => {
            if pending {
                tx.batch_execute(&sqlgen::create_history_schema(&place.helper_schema))
                    .await?;
            }
            false
        }
    };
    tx.commit().await?;
    Ok(moved)
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
