//! The pooler leak probe (`verify --pooled-url`): the application's own login, through the
//! transaction pooler, runs many short transactions from several clients at once, each in one
//! tenant's context (set transaction-locally, as the application must) or in none, so that
//! tenants' transactions interleave over fewer server connections. A transaction that sees
//! another tenant's rows, or one without a context that sees any row or finds a context set,
//! means something outlives a transaction on a server connection (a session-level `SET`, an
//! `ALTER ROLE ... SET`) or the login escapes row-level security (BYPASSRLS): `probe.pooler-leak`.

use anyhow::{anyhow, Context, Result};
use tokio_postgres::Client;
use uuid::Uuid;

use super::tx::{rolled_back, Scope};
use super::{Finding, Tally};
use crate::model::Schema;
use crate::pg;
use crate::pg::tx::set_role;
use crate::pg::unnamed::typed;
use crate::sqlgen;

/// Concurrent clients, and transactions each: enough to put every tenant's transactions on every
/// server connection of a small pool many times over (a session-level context shows in most
/// of them), quick enough for a gate.
const CLIENTS: usize = 8;
const TRANSACTIONS: usize = 40;
/// Tenants whose contexts the transactions take (plus "no context").
const TENANTS: i64 = 8;

/// What one transaction saw: its context, the rows outside it, the context it found set.
struct Seen {
    context: Option<Uuid>,
    foreign: i64,
    found: String,
}

impl Seen {
    /// It saw another tenant's rows, or (without a context) any row or a context someone left.
    fn leaked(&self) -> bool {
        self.foreign > 0 || (self.context.is_none() && !self.found.is_empty())
    }
}

pub(super) async fn run(pooled: &pg::Target, admin: &Client, schema: &Schema) -> Result<Tally> {
    let mut contexts: Vec<Option<Uuid>> = tenants(admin, schema)
        .await?
        .into_iter()
        .map(Some)
        .collect();
    contexts.push(None);
    let sql = std::sync::Arc::new(sqlgen::pooled_foreign_rows(schema));
    let setting = schema.tenancy.context_setting.clone();
    let clients = (0..CLIENTS).map(|c| {
        let (pooled, sql, setting, contexts) = (
            pooled.clone(),
            sql.clone(),
            setting.clone(),
            contexts.clone(),
        );
        tokio::spawn(async move {
            let client = pg::connect(&pooled).await?;
            let mut seen = Vec::new();
            for k in 0..TRANSACTIONS {
                let context = contexts[(c + k) % contexts.len()];
                seen.push(transaction(&client, &sql, &setting, context).await?);
            }
            anyhow::Ok(seen)
        })
    });
    let mut tally = Tally::default();
    let mut leaks: Vec<Seen> = Vec::new();
    for handle in futures_util::future::join_all(clients).await {
        let seen = handle.map_err(|e| anyhow!("a pooled probe client failed: {e}"))??;
        for s in seen {
            if s.leaked() {
                leaks.push(s);
            } else {
                tally.pass("probe.pooler-leak");
            }
        }
    }
    if !leaks.is_empty() {
        tally.fail(finding(pooled, &leaks, CLIENTS * TRANSACTIONS));
    }
    Ok(tally)
}

/// Up to [`TENANTS`] tenant ids, read as the admin on the gate's own connection.
async fn tenants(admin: &Client, schema: &Schema) -> Result<Vec<Uuid>> {
    let sql = sqlgen::pooled_tenant_ids(schema);
    let done = rolled_back(admin, &Scope::Transaction, async {
        set_role(admin, &schema.tenancy.admin_role).await?;
        admin.query_typed(&sql, typed![TENANTS]).await
    })
    .await
    .context("cannot begin")?;
    done.rollback.context("cannot roll back")?;
    let rows = done.body.context("cannot list tenants as the admin")?;
    Ok(rows.iter().map(|r| r.get("id")).collect())
}

/// One transaction, always rolled back: BEGIN, the context set transaction-locally (when there
/// is one), the read, ROLLBACK; sent back to back, one round trip.
async fn transaction(
    client: &Client,
    sql: &str,
    setting: &str,
    context: Option<Uuid>,
) -> Result<Seen> {
    let value = context.map(|c| c.to_string()).unwrap_or_default();
    let set = async {
        if context.is_some() {
            client
                .execute_typed(
                    "SELECT pg_catalog.set_config($1, $2, true)",
                    typed![setting, value],
                )
                .await?;
        }
        Ok(())
    };
    let (_, _, rows, _) = futures_util::future::try_join4(
        client.batch_execute("BEGIN"),
        set,
        client.query_typed(sql, typed![context, setting]),
        client.batch_execute("ROLLBACK"),
    )
    .await
    .context("a transaction through the pooler failed")?;
    let row = rows
        .first()
        .ok_or_else(|| anyhow!("the probe read returned no row"))?;
    Ok(Seen {
        context,
        foreign: row.get("foreign_rows"),
        found: row.get("context"),
    })
}

fn finding(pooled: &pg::Target, leaks: &[Seen], total: usize) -> Finding {
    let with = leaks.iter().filter(|s| s.context.is_some()).count();
    let without = leaks.len() - with;
    let first = &leaks[0];
    let example = match first.context {
        Some(c) => format!(
            "in tenant {c}'s context it saw {} row(s) of other tenants",
            first.foreign
        ),
        None if first.found.is_empty() => {
            format!("without a context it saw {} row(s)", first.foreign)
        }
        None => format!(
            "without a context it found the context set to {:?} and saw {} row(s)",
            first.found, first.foreign
        ),
    };
    Finding::new(
        "probe.pooler-leak",
        format!("pooler {}", pooled.describe()),
        format!(
            "{} of {total} transactions through the pooler leaked ({with} with a tenant context, {without} without); e.g. {example}",
            leaks.len()
        ),
    )
}
