//! Probing real tenants in parallel: one REPEATABLE READ transaction as the admin (the feed)
//! picks the victims, exports its snapshot and streams tenant ids with the admin's counts to a
//! pool of workers, each on its own connection, probing batches of tenants.

use crate::pg::unnamed::typed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use futures_util::StreamExt;
use postgres_types::Type;
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use super::batch::{self, Job, Shared};
use super::pipeline::{run_error, Param};
use super::plan::Plan;
use super::session::Conn;
use super::tenant;
use crate::pg;
use crate::pg::tx::set_role;
use crate::verify::tx::{rolled_back, Scope, RESTART_REPEATABLE_READ};
use crate::verify::{Settings, Tally, TenantSelection};

/// A probe connection being opened.
pub(super) type Connecting = tokio::task::JoinHandle<Result<Client>>;

/// Tenants probed per pipelined batch on one connection.
const BATCH: usize = 64;

/// Sums over the probed tenants, per target: what each saw of its own rows, and the admin's counts.
pub(super) struct Sums {
    pub own: Vec<i64>,
    pub admin: Vec<Option<i64>>,
}

/// What a worker returns: its findings, per target the tenants' own rows, how many it probed.
type WorkerResult = (Tally, Vec<i64>, u64);

/// What to probe and how to show progress.
pub(super) struct Probes<'a> {
    pub plan: &'a Arc<Plan>,
    pub settings: &'a Settings,
    pub named: Option<Vec<Uuid>>,
    pub expected: u64,
    pub bar: &'a indicatif::ProgressBar,
    /// verify's own URL when the workers log in as the application (the admin's reads of a
    /// tenant probed statement by statement run there).
    pub admin: Option<pg::Target>,
}

/// Open the probe connections to `url` (verify's own, or the application's login), in the
/// background.
pub(super) fn connect(url: &pg::Target, settings: &Settings) -> Vec<Connecting> {
    (0..settings.connections.clamp(1, 16))
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { pg::connect(&url).await })
        })
        .collect()
}

/// The probe phase, inside the feed transaction on `client` (always rolled back; it stays open
/// until the workers are done, as they import its snapshot).
pub(super) async fn run(
    client: &Client,
    connecting: Vec<Connecting>,
    probes: Probes<'_>,
) -> Result<(Tally, Sums, u64)> {
    let done = rolled_back(
        client,
        &Scope::RepeatableRead,
        probe_all(client, connecting, &probes),
    )
    .await
    .context("cannot begin")?;
    probes.bar.finish_and_clear();
    let out = done.body?;
    done.rollback.context("cannot roll back")?;
    Ok(out)
}

async fn probe_all(
    client: &Client,
    mut connecting: Vec<Connecting>,
    probes: &Probes<'_>,
) -> Result<(Tally, Sums, u64)> {
    let plan = probes.plan;
    let scope = export_snapshot(client).await?;
    let victims = victims(client, plan)
        .await
        .map_err(|e| run_error(&e))
        .context("cannot read reference rows as the admin")?;
    let shared = Arc::new(Shared { scope, victims });

    // Workers: each its own connection and prepared statements, taking tenants from a queue.
    let (tx, rx) = mpsc::channel::<Job>(256);
    let rx = Arc::new(Mutex::new(rx));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = probes
        .settings
        .connections
        .clamp(1, 16)
        .min(probes.expected.max(1) as usize);
    // Connections beyond the workers' are not needed.
    connecting
        .drain(workers.min(connecting.len())..)
        .for_each(|c| c.abort());
    let handles: Vec<_> = connecting
        .into_iter()
        .enumerate()
        .map(|(index, connected)| {
            let worker = Worker {
                index,
                plan: plan.clone(),
                rx: rx.clone(),
                stop: stop.clone(),
                bar: probes.bar.clone(),
                shared: shared.clone(),
                admin: probes.admin.clone(),
            };
            tokio::spawn(worker.run(connected))
        })
        .collect();
    // Only the workers hold the queue now: when they all stop, sending fails and the feed ends.
    drop(rx);

    let (fed, admin) = feed(client, probes, tx, &stop).await;
    let (tally, own, probed) = join(handles, plan.targets.len()).await?;
    fed?;
    Ok((tally, Sums { own, admin }, probed))
}

/// Export the feed transaction's snapshot for every tenant's transaction. Unexportable (a
/// standby, a pooler that refuses it): each tenant then reads its own snapshot.
async fn export_snapshot(client: &Client) -> Result<Scope> {
    match client
        .query_typed_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await
    {
        Ok(r) => Ok(Scope::Snapshot(r.get(0))),
        Err(e) if e.as_db_error().is_some() => {
            client
                .batch_execute(RESTART_REPEATABLE_READ)
                .await
                .context("cannot begin")?;
            Ok(Scope::RepeatableRead)
        }
        Err(e) => Err(run_error(&e)).context("cannot export a snapshot"),
    }
}

/// As the admin, per target up to two rows of different tenants (see [`Shared::victims`]).
async fn victims(
    client: &Client,
    plan: &Plan,
) -> Result<Vec<Vec<(String, Uuid)>>, tokio_postgres::Error> {
    // A plan over every tenant's subqueries would be JIT-compiled for nothing.
    client.batch_execute("SET LOCAL jit = off").await?;
    set_role(client, &plan.admin).await?;
    let mut victims = Vec::new();
    for t in &plan.targets {
        let mut v: Vec<(String, Uuid)> = Vec::new();
        if let (Some(first), Some(other)) = (&t.sql.admin_first, &t.sql.admin_other) {
            if let Some(r) = client.query_typed_opt(first.as_str(), &[]).await? {
                let (pk, tenant): (String, Uuid) = (r.get("pk"), r.get("tenant"));
                if let Some(r) = client
                    .query_typed_opt(other.as_str(), typed![&tenant])
                    .await?
                {
                    v.push((r.get("pk"), r.get("tenant")));
                }
                v.push((pk, tenant));
            }
        }
        victims.push(v);
    }
    Ok(victims)
}

/// One probe worker: its connection, and the queue it takes tenants from.
struct Worker {
    index: usize,
    plan: Arc<Plan>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    stop: Arc<AtomicBool>,
    bar: indicatif::ProgressBar,
    shared: Arc<Shared>,
    admin: Option<pg::Target>,
}

impl Worker {
    /// Probe batches until the queue is empty or another worker failed; a failure stops all.
    async fn run(self, connected: Connecting) -> Result<WorkerResult> {
        let stop = self.stop.clone();
        let result = self.probe(connected).await;
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        result
    }

    async fn probe(self, connected: Connecting) -> Result<WorkerResult> {
        let client = connected
            .await
            .map_err(|e| anyhow!("a probe connection failed: {e}"))??;
        let mut conn = Conn::new(client, self.plan.clone(), self.admin.clone()).await?;
        conn.probe_function().await?;
        let mut tally = Tally::default();
        let mut own = vec![0i64; self.plan.targets.len()];
        let mut probed = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while !self.stop.load(Ordering::Relaxed) && self.next_batch(&mut batch).await {
            for (t, counts) in batch::probe(&conn, &self.shared, &batch).await? {
                tally.merge(t);
                for (s, o) in own.iter_mut().zip(counts) {
                    *s += o;
                }
            }
            probed += batch.len() as u64;
            self.bar.inc(batch.len() as u64);
            batch.clear();
        }
        // The context probes (once per run) on the first worker's connection, last.
        if self.index == 0 && !self.stop.load(Ordering::Relaxed) {
            tally.merge(tenant::context_probes(&conn, false).await?);
        }
        Ok((tally, own, probed))
    }

    /// Wait for one tenant, then take what is already queued, up to a batch. False when the
    /// queue is closed and empty.
    async fn next_batch(&self, batch: &mut Vec<Job>) -> bool {
        let mut rx = self.rx.lock().await;
        let Some(job) = rx.recv().await else {
            return false;
        };
        batch.push(job);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        true
    }
}

/// A row of the feed: the tenant id, then the admin's count per target (its width is the
/// plan's, so its columns are read by position).
fn job(row: &Row, targets: usize) -> Job {
    (row.get(0), (0..targets).map(|i| row.get(i + 1)).collect())
}

/// Stream the tenant ids with the admin's counts to the workers: memory stays flat whatever the
/// number of tenants (the aggregation is the server's). Returns the admin's sums per target.
async fn feed(
    client: &Client,
    probes: &Probes<'_>,
    tx: mpsc::Sender<Job>,
    stop: &AtomicBool,
) -> (Result<()>, Vec<Option<i64>>) {
    let plan = probes.plan;
    let n = plan.targets.len();
    let mut admin_sums: Vec<Option<i64>> = plan
        .targets
        .iter()
        .map(|t| t.admin_reads().then_some(0))
        .collect();
    let fed = async {
        let limit;
        let ids;
        let rows = match (&probes.settings.tenants, &probes.named) {
            (_, Some(n)) => {
                ids = n.clone();
                client
                    .query_typed_raw(
                        plan.feed.named.as_str(),
                        [(&ids as Param, Type::UUID_ARRAY)],
                    )
                    .await?
            }
            (TenantSelection::Sample(n), _) => {
                limit = *n as i64;
                client
                    .query_typed_raw(plan.feed.sample.as_str(), [(&limit as Param, Type::INT8)])
                    .await?
            }
            _ => {
                client
                    .query_typed_raw(plan.feed.all.as_str(), std::iter::empty::<(Param, Type)>())
                    .await?
            }
        };
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.next().await {
            let (tenant, counts) = job(&row?, n);
            for (s, c) in admin_sums.iter_mut().zip(&counts) {
                if let (Some(s), Some(c)) = (s.as_mut(), c) {
                    *s += c;
                }
            }
            if stop.load(Ordering::Relaxed) || tx.send((tenant, counts)).await.is_err() {
                break;
            }
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await
    .map_err(|e| run_error(&e))
    .context("cannot list tenants");
    drop(tx);
    (fed, admin_sums)
}

/// Wait for every worker; the first failure is the run's.
async fn join(
    handles: Vec<tokio::task::JoinHandle<Result<WorkerResult>>>,
    targets: usize,
) -> Result<WorkerResult> {
    let mut tally = Tally::default();
    let mut own = vec![0i64; targets];
    let mut probed = 0;
    let mut first_error = None;
    for h in handles {
        match h
            .await
            .map_err(|e| anyhow!("a probe worker failed: {e}"))
            .and_then(|r| r)
        {
            Ok((t, s, k)) => {
                tally.merge(t);
                for (a, b) in own.iter_mut().zip(s) {
                    *a += b;
                }
                probed += k;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((tally, own, probed)),
    }
}
