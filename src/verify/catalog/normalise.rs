//! Postgres's own rendering of the declaration: scratch copies of the declared tables and
//! policies, created in a transaction that is always rolled back, read back after Postgres
//! normalised every declared expression (so that drift compares like with like).

use crate::pg::unnamed::typed;
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tokio_postgres::{Client, Row};

use super::col;
use super::columns::{ColumnShape, COLUMNS};
use crate::model::{Policy, Schema, Table};
use crate::sqlgen;
use crate::verify::tx::{rolled_back, Scope};

const SCRATCH_OID: &str = "SELECT ('pg_temp.' || $1)::regclass::oid AS oid";
const SCRATCH_CHECKS: &str = "
SELECT c.conname::text AS name, pg_catalog.pg_get_constraintdef(c.oid) AS def FROM pg_catalog.pg_constraint c
WHERE c.conrelid = $1 AND c.contype = 'c'";
const SCRATCH_POLICY: &str = "
SELECT pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual, pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 AND p.polname = $2";

const SCRATCH_VIEW_DEF: &str =
    "SELECT pg_catalog.pg_get_viewdef(('pg_temp.' || $1)::regclass) AS def";

/// A policy's USING and WITH CHECK, as Postgres renders them.
pub(super) type PolicyExprs = (Option<String>, Option<String>);

/// One declared table, normalised by Postgres.
#[derive(Debug, Default)]
pub(super) struct Normalised {
    pub columns: BTreeMap<String, ColumnShape>,
    /// CHECK constraint → its definition.
    pub checks: BTreeMap<String, String>,
    /// policy → (using, with check), or the error that creating it raised.
    pub policies: BTreeMap<String, std::result::Result<PolicyExprs, String>>,
    /// The error that creating the scratch table raised.
    pub error: Option<String>,
}

/// Create scratch copies of the declared tables and policies in a transaction that is rolled
/// back, and read back Postgres's own rendering of every declared expression.
pub(super) async fn normalise(
    client: &Client,
    schema: &Schema,
) -> Result<BTreeMap<String, Normalised>> {
    let done = rolled_back(client, &Scope::Transaction, async {
        let mut out = BTreeMap::new();
        for (i, (name, table)) in schema.tables.iter().enumerate() {
            out.insert(name.clone(), scratch_table(client, i, table).await?);
        }
        anyhow::Ok(out)
    })
    .await
    .context("cannot begin")?;
    let out = done
        .body
        .context("cannot normalise the declared expressions")?;
    done.rollback
        .context("cannot roll back the scratch objects")?;
    Ok(out)
}

/// The `i`th declared table's scratch copy, and its policies on it.
async fn scratch_table(client: &Client, i: usize, table: &Table) -> Result<Normalised> {
    let scratch = format!("tenantctl_verify_{i}");
    let mut n = Normalised::default();
    client.batch_execute("SAVEPOINT tc_scratch").await?;
    // The extended protocol (`execute`, not `batch_execute`) refuses more than one
    // statement: declared expressions can never run anything of their own here.
    match client
        .execute_typed(sqlgen::scratch_table(&scratch, table).as_str(), &[])
        .await
    {
        Err(e) if e.as_db_error().is_some() => {
            n.error = Some(server_message(&e));
            client
                .batch_execute("ROLLBACK TO SAVEPOINT tc_scratch")
                .await?;
            return Ok(n);
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let oid: u32 = col(
        &client
            .query_typed_one(SCRATCH_OID, typed![&scratch])
            .await?,
        "oid",
    )?;
    for r in client.query_typed(COLUMNS, typed![&oid]).await? {
        let c = ColumnShape::from_row(&r)?;
        n.columns.insert(c.name.clone(), c);
    }
    for r in client.query_typed(SCRATCH_CHECKS, typed![&oid]).await? {
        n.checks.insert(col(&r, "name")?, col(&r, "def")?);
    }
    for (pname, p) in &table.policies {
        let exprs = scratch_policy(client, &scratch, oid, pname, p).await?;
        n.policies.insert(pname.clone(), exprs);
    }
    client.batch_execute("RELEASE SAVEPOINT tc_scratch").await?;
    Ok(n)
}

/// One declared policy on the scratch table: its expressions as Postgres renders them, or the
/// error creating it raised.
async fn scratch_policy(
    client: &Client,
    scratch: &str,
    oid: u32,
    pname: &String,
    p: &Policy,
) -> Result<std::result::Result<PolicyExprs, String>> {
    let sql = sqlgen::scratch_policy(scratch, pname, p);
    if let Some(error) = attempt(client, &sql).await? {
        return Ok(Err(error));
    }
    let r = client
        .query_typed_one(SCRATCH_POLICY, typed![&oid, pname])
        .await?;
    client.batch_execute("RELEASE SAVEPOINT tc_attempt").await?;
    Ok(Ok(policy_exprs(&r)?))
}

/// Run one scratch statement under a savepoint: the server's message when the server refused it
/// (rolled back to the savepoint), else None with the savepoint `tc_attempt` still open.
async fn attempt(client: &Client, sql: &str) -> Result<Option<String>> {
    client.batch_execute("SAVEPOINT tc_attempt").await?;
    match client.execute_typed(sql, &[]).await {
        Err(e) if e.as_db_error().is_some() => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT tc_attempt")
                .await?;
            Ok(Some(server_message(&e)))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(None),
    }
}

/// Each declared view's definition as Postgres renders it (from a scratch copy in a rolled-back
/// transaction), or the error creating the copy raised.
pub(super) async fn view_definitions(
    client: &Client,
    schema: &Schema,
) -> Result<BTreeMap<String, std::result::Result<String, String>>> {
    if schema.views.is_empty() {
        return Ok(BTreeMap::new());
    }
    let done = rolled_back(client, &Scope::Transaction, async {
        let mut out = BTreeMap::new();
        for (i, (name, view)) in schema.views.iter().enumerate() {
            let scratch = format!("tenantctl_verify_view_{i}");
            let sql = sqlgen::scratch_view(&scratch, &view.query);
            let def = match attempt(client, &sql).await? {
                Some(error) => Err(error),
                None => {
                    let r = client
                        .query_typed_one(SCRATCH_VIEW_DEF, typed![&scratch])
                        .await?;
                    client.batch_execute("RELEASE SAVEPOINT tc_attempt").await?;
                    Ok(col(&r, "def")?)
                }
            };
            out.insert(name.clone(), def);
        }
        anyhow::Ok(out)
    })
    .await
    .context("cannot begin")?;
    let out = done.body.context("cannot render the declared views")?;
    done.rollback
        .context("cannot roll back the scratch views")?;
    Ok(out)
}

fn policy_exprs(r: &Row) -> Result<PolicyExprs> {
    Ok((col(r, "qual")?, col(r, "with_check")?))
}

/// The server's message alone. Not `pg::error::describe`: this text is part of a drift finding's
/// message, which stays as it was (no SQLSTATE, detail or hint).
fn server_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}
