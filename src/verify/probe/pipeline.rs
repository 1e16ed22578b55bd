//! Statements sent back to back on one connection (one round trip for many probes), and how a
//! probe's result is read: must succeed, or a clean database error that is the probe's outcome.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use anyhow::{anyhow, Context, Result};
use postgres_types::ToSql;
use tokio_postgres::{Client, Row};

use super::session::{Conn, Statement};
use crate::pg::error::describe;

pub(super) type Param<'a> = &'a (dyn ToSql + Sync);
type QueryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;
/// One statement's result in a pipeline.
pub(super) type Sent = Result<Vec<Row>, tokio_postgres::Error>;

/// Statements to send back to back on one connection; results come back in the same order.
pub(super) struct Pipeline<'a> {
    client: &'a Client,
    futures: Vec<QueryFuture<'a>>,
}

impl<'a> Pipeline<'a> {
    pub(super) fn new(client: &'a Client) -> Self {
        Pipeline {
            client,
            futures: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, stmt: &'a Statement, params: Vec<Param<'a>>) -> usize {
        let client = self.client;
        // Unnamed, with the types learnt once: nothing is left on the server connection.
        self.futures.push(Box::pin(async move {
            let typed: Vec<_> = params.into_iter().zip(stmt.types.iter().cloned()).collect();
            client.query_typed(&stmt.sql, &typed).await
        }));
        self.futures.len() - 1
    }

    /// A simple-protocol batch (BEGIN, ROLLBACK: no parameters); its result is no rows.
    pub(super) fn push_simple(&mut self, sql: &'a str) -> usize {
        let client = self.client;
        self.futures.push(Box::pin(async move {
            client.batch_execute(sql).await.map(|_| Vec::new())
        }));
        self.futures.len() - 1
    }

    /// Run a statement, then roll back to the savepoint `tc_probe` (set once after the role and
    /// context, and kept by ROLLBACK TO), so that its error or its write does not touch what follows.
    pub(super) fn isolated(
        &mut self,
        conn: &'a Conn,
        stmt: &'a Statement,
        params: Vec<Param<'a>>,
    ) -> usize {
        let i = self.push(stmt, params);
        self.push(&conn.rollback_to, vec![]);
        i
    }

    /// tokio-postgres sends a request when its future is first polled: poll them in order, so
    /// that they reach the server in order, then wait for all.
    pub(super) async fn run(self) -> Vec<Sent> {
        let mut futures: Vec<Option<QueryFuture<'a>>> =
            self.futures.into_iter().map(Some).collect();
        let mut out: Vec<Option<Sent>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (slot, result) in futures.iter_mut().zip(out.iter_mut()) {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(r) => {
                            *result = Some(r);
                            *slot = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        out.into_iter()
            .map(|r| r.expect("every future completed"))
            .collect()
    }
}

/// A database error as the run's error (redacted), for `map_err`.
pub(super) fn run_error(e: &tokio_postgres::Error) -> anyhow::Error {
    anyhow!(describe(e))
}

/// A statement that must succeed: its error stops the run (a lost connection is never a pass).
pub(super) fn must(r: &Sent, what: &str) -> Result<Vec<Row>> {
    match r {
        Ok(rows) => Ok(rows.clone()),
        Err(e) => Err(run_error(e)).with_context(|| what.to_string()),
    }
}

/// A probe's own outcome: rows, or a clean database error (its SQLSTATE). A connection error
/// stops the run.
pub(super) fn probe_result<'r>(
    r: &'r Sent,
    what: &str,
) -> Result<std::result::Result<&'r [Row], String>> {
    match r {
        Ok(rows) => Ok(Ok(rows)),
        Err(e)
            if e.as_db_error().is_some()
                && e.code()
                    != Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION) =>
        {
            Ok(Err(e
                .code()
                .map(|c| c.code().to_string())
                .unwrap_or_default()))
        }
        Err(e) => Err(run_error(e)).with_context(|| format!("probe failed: {what}")),
    }
}
