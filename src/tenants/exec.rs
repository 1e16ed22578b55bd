//! `exec`'s core: one statement as a tenant or as the platform admin, inside a transaction, with
//! every value returned in its text form.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio_postgres::{SimpleQueryMessage, Transaction};

use super::gym::{as_admin, as_tenant, check_schema, require, Gym};
use crate::model::Schema;
use crate::pg;
use crate::pg::error::pg_error;
use crate::pg::unnamed::typed;

#[derive(Debug, Clone)]
pub enum ExecAs {
    Tenant(String),
    Admin,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    /// The role the statement ran as.
    pub role: String,
    pub tenant: Option<Gym>,
    pub columns: Vec<String>,
    /// Every value in its text form; NULL is null.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows returned or affected, as the server reported.
    pub row_count: u64,
    /// Whether the transaction was committed (only with --write).
    pub committed: bool,
}

/// Run ONE statement as the tenant (app role, the tenant's context) or as the platform admin,
/// inside a transaction. Without `write` the transaction is READ ONLY and always rolled back.
///
/// Not a sandbox against the operator, who holds the URL (a function of theirs that switches the
/// context is not seen); but a statement that calls set_config or names the context setting is
/// refused before it runs, and one that leaves the role or the context (SET ROLE, RESET ROLE,
/// COMMIT) is detected after it, so for ordinary statements what is shown is what the tenant sees.
pub async fn exec(
    url: &pg::Target,
    schema: &Schema,
    who: &ExecAs,
    sql: &str,
    write: bool,
) -> Result<ExecResult> {
    check_schema(schema)?;
    let mut client = pg::connect(url).await?;
    let tx = client
        .build_transaction()
        .read_only(!write)
        .start()
        .await
        .map_err(pg_error)?;
    as_admin(&tx, schema).await?;
    let (role, tenant) = match who {
        ExecAs::Tenant(slug) => {
            let gym = require(&tx, schema, slug).await?;
            as_tenant(&tx, schema, gym.id).await?;
            (schema.tenancy.app_role.clone(), Some(gym))
        }
        ExecAs::Admin => (schema.tenancy.admin_role.clone(), None),
    };
    refuse_context_switch(schema, sql)?;
    check_one_statement(&tx, sql).await?;
    let mut result = run_simple(&tx, sql).await?;
    check_still_acting(&tx, schema, &role, tenant.as_ref()).await?;
    if write {
        tx.commit()
            .await
            .map_err(pg_error)
            .context("cannot commit")?;
    } else {
        tx.rollback().await.map_err(pg_error)?;
    }
    result.role = role;
    result.tenant = tenant;
    result.committed = write;
    Ok(result)
}

/// A statement that calls set_config (or names the context setting) could switch the tenant
/// mid-statement and switch it back, so its rows would be shown under the wrong gym. Refuse it
/// outright; the check after the statement cannot see a context that was restored.
fn refuse_context_switch(schema: &Schema, sql: &str) -> Result<()> {
    let lower = sql.to_ascii_lowercase();
    let setting = schema.tenancy.context_setting.to_ascii_lowercase();
    if lower.contains("set_config") || lower.contains(&setting) {
        bail!(
            "exec refuses statements that call set_config or name {setting}: they could change the tenant mid-statement\n  \
             hint: exec sets the context itself; pick the tenant with --tenant"
        );
    }
    Ok(())
}

/// The extended protocol refuses several statements in one string: one statement, one role.
async fn check_one_statement(tx: &Transaction<'_>, sql: &str) -> Result<()> {
    let multi = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .is_some_and(|d| d.message().contains("multiple commands"))
    };
    tx.prepare(sql).await.map_err(|e| {
        explain(
            e,
            multi,
            "exec runs exactly one SQL statement",
            "Postgres rejected the statement before running it",
        )
    })?;
    Ok(())
}

/// Postgres's error under `known` when `is_known` recognises it, else under `other`.
fn explain(
    e: tokio_postgres::Error,
    is_known: impl Fn(&tokio_postgres::Error) -> bool,
    known: &'static str,
    other: &'static str,
) -> anyhow::Error {
    let context = if is_known(&e) { known } else { other };
    pg_error(e).context(context)
}

/// Run the statement with the simple protocol, which returns every value as text, whatever its
/// type. The role, tenant and commit fields are left for the caller.
async fn run_simple(tx: &Transaction<'_>, sql: &str) -> Result<ExecResult> {
    let read_only = |e: &tokio_postgres::Error| {
        e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    };
    let messages = tx.simple_query(sql).await.map_err(|e| {
        explain(
            e,
            read_only,
            "the statement writes, and exec is read-only unless --write is given",
            "the statement failed; nothing was changed",
        )
    })?;
    let mut result = ExecResult {
        role: String::new(),
        tenant: None,
        columns: Vec::new(),
        rows: Vec::new(),
        row_count: 0,
        committed: false,
    };
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                result.columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if result.columns.is_empty() {
                    result.columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                let row = (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect();
                result.rows.push(row);
            }
            SimpleQueryMessage::CommandComplete(n) => result.row_count = n,
            _ => {}
        }
    }
    Ok(result)
}

/// The statement must leave the session as it found it: the same role, the same tenant context.
async fn check_still_acting(
    tx: &Transaction<'_>,
    schema: &Schema,
    role: &str,
    tenant: Option<&Gym>,
) -> Result<()> {
    let check = tx
        .query_typed_one(
            "SELECT current_user::text AS role, coalesce(current_setting($1, true), '') AS context",
            typed![schema.tenancy.context_setting],
        )
        .await
        .map_err(pg_error)?;
    let (now_role, now_context): (String, String) = (check.get("role"), check.get("context"));
    let context = tenant.map(|g| g.id.to_string()).unwrap_or_default();
    if now_role != role || (tenant.is_some() && now_context != context) {
        // Dropping the transaction rolls back whatever is still open.
        bail!(
            "the statement left {role}{} (now {now_role}); refused and rolled back\n  hint: exec shows what the tenant sees; do not change the role, the context or the transaction in it",
            tenant.map(|g| format!(" in {}'s context", g.slug)).unwrap_or_default()
        );
    }
    Ok(())
}
