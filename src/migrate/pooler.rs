//! Is this connection behind a transaction pooler? Decided by behaviour, whatever the host is
//! called: a direct connection keeps one backend for its whole life, while a transaction pooler
//! hands each transaction whichever server connection is free.
//!
//! The test: client A runs a transaction and ends it; client B (a second connection to the same
//! URL) opens a transaction and holds it; A runs another. Directly, A sees the same backend pid
//! both times and B a pid of its own. Behind a transaction pooler, B lands on the server
//! connection A just released (the same pid as A's), or A's second transaction lands on another
//! one, or A waits for a server connection while B holds the only one. None of these can happen
//! on a direct connection, so there is no false positive; a few rounds make a pooler that hands
//! connections round-robin show itself too. Every statement is unnamed and outside any session
//! state, so the test leaves nothing behind on a pooled server connection.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use crate::pg;

const BACKEND_PID: &str = "SELECT pg_catalog.pg_backend_pid() AS pid";
/// Where the server itself listens, as the backend sees it (NULL over a Unix socket).
const SERVER_ADDRESS: &str =
    "SELECT pg_catalog.host(pg_catalog.inet_server_addr()) AS host, pg_catalog.inet_server_port() AS port";
const ROUNDS: usize = 3;
/// How long A's transaction may wait while B holds one before that counts as a pooler's queue.
const QUEUED: Duration = Duration::from_secs(2);

/// What gave the pooler away, and the server's own address when the backend can tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooler {
    pub evidence: String,
    /// `host:port` of the server as its backend sees it (the direct address behind the pooler).
    pub server: Option<(String, i32)>,
}

async fn pid(client: &Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client.query_typed_one(BACKEND_PID, &[]).await?.get("pid"))
}

/// One round of the test; the evidence when it shows a pooler.
async fn round(a: &Client, b: &Client) -> Result<Option<String>> {
    let first = pid(a).await?;
    b.batch_execute("BEGIN").await?;
    let held = pid(b).await;
    let second = pid(a);
    tokio::pin!(second);
    let quick = tokio::select! {
        r = &mut second => Some(r),
        _ = tokio::time::sleep(QUEUED) => None,
    };
    // Released before waiting any longer: A may be queued behind B's transaction.
    b.batch_execute("COMMIT").await?;
    let held = held?;
    let (second, queued) = match quick {
        Some(r) => (r?, false),
        None => (second.await?, true),
    };
    Ok(if queued {
        Some("a transaction waited for a server connection while another client held one".into())
    } else if held == first {
        Some(format!(
            "two client connections ran on the same server backend (pid {first})"
        ))
    } else if second != first {
        Some(format!(
            "one client connection's transactions ran on different server backends (pids {first} and {second})"
        ))
    } else {
        None
    })
}

/// Whether `client` (connected to `url`) goes through a transaction pooler.
pub async fn detect(url: &pg::Target, client: &Client) -> Result<Option<Pooler>> {
    let other = pg::connect(url).await?;
    for _ in 0..ROUNDS {
        let found = round(client, &other)
            .await
            .context("cannot tell whether the connection goes through a pooler")?;
        if let Some(evidence) = found {
            let row = client.query_typed_one(SERVER_ADDRESS, &[]).await.ok();
            let server = row.and_then(|r| {
                Some((
                    r.get::<_, Option<String>>("host")?,
                    r.get::<_, Option<i32>>("port")?,
                ))
            });
            return Ok(Some(Pooler { evidence, server }));
        }
    }
    Ok(None)
}

/// The URL to migrate through instead: `url` pointed at the server's own address (password
/// redacted, as everything printed).
pub fn direct_url(url: &pg::Target, server: &(String, i32)) -> String {
    let (host, port) = server;
    let shown = url.to_string();
    match url::Url::parse(&shown) {
        Ok(mut u) if u.has_host() => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            if u.set_host(Some(&host)).is_ok() && u.set_port(Some(*port as u16)).is_ok() {
                return u.to_string();
            }
            shown
        }
        // key=value form: libpq takes the last value of a key.
        _ => format!("{shown} host={host} port={port}"),
    }
}
