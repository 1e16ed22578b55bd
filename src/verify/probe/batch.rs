//! A batch of tenants probed in one round trip through the session-temporary probe function
//! ([`crate::sqlgen::probe_function`]); any tenant whose results are not clean is probed again
//! statement by statement.

use anyhow::{Context, Result};
use tokio_postgres::Row;
use uuid::Uuid;

use super::pipeline::{must, run_error, Pipeline};
use super::plan::Plan;
use super::record;
use super::session::Conn;
use super::tenant::{self, OwnCounts};
use crate::verify::tx::Scope;
use crate::verify::Tally;

/// What every tenant's fast probe shares, read by the admin once per run.
pub(super) struct Shared {
    /// Each probe transaction (a batch's, or one tenant's statement by statement): REPEATABLE
    /// READ, in the snapshot the admin's counts were taken in when it could be exported.
    pub scope: Scope,
    /// Per target: up to two rows (key as text, tenant) of different tenants, so that every
    /// tenant has another tenant's row to attack when the table holds one.
    pub victims: Vec<Vec<(String, Uuid)>>,
}

impl Shared {
    fn victim(&self, target: usize, tenant: Uuid) -> Option<&(String, Uuid)> {
        self.victims[target].iter().find(|(_, t)| *t != tenant)
    }
}

/// One tenant to probe and the admin's count of its rows per target (None: the admin cannot read it).
pub(super) type Job = (Uuid, Vec<Option<i64>>);

/// Transaction-local: the batch's CREATE FUNCTION skips the body check it passed once already.
const SKIP_BODY_CHECK: &str = "SET LOCAL check_function_bodies = off; ";

/// The SQLSTATE of a name that is both a column and a variable of the probe function.
const AMBIGUOUS: &str = "42702";

/// One row of the probe function: one table (or view, or function) for one tenant.
struct FastResult {
    visible: Option<i64>,
    foreign: Option<i64>,
    looked_up: Option<i64>,
    updated: Option<i64>,
    deleted: Option<i64>,
    attack: Option<String>,
    insert: Option<String>,
    change: Option<String>,
}

impl FastResult {
    fn from_row(r: &Row) -> FastResult {
        FastResult {
            visible: r.get("tc_probe_visible"),
            foreign: r.get("tc_probe_foreign"),
            looked_up: r.get("tc_probe_looked_up"),
            updated: r.get("tc_probe_updated"),
            deleted: r.get("tc_probe_deleted"),
            attack: r.get("tc_probe_attack"),
            insert: r.get("tc_probe_insert"),
            change: r.get("tc_probe_change"),
        }
    }

    /// Whether the fast path's result can be recorded as it is: the reads ran, the UPDATE and
    /// DELETE of another tenant's row touched nothing and did not fail, the INSERT (if probed)
    /// was accepted or refused by row-level security, and no statement met a name it could not
    /// resolve (42702: a column named like one of the function's variables). Anything else is
    /// probed again statement by statement, which says exactly what happened.
    fn clean(&self) -> bool {
        self.visible.is_some()
            && self.foreign.is_some()
            && self.looked_up.is_some()
            && matches!(self.updated, None | Some(0))
            && matches!(self.deleted, None | Some(0))
            && self.attack.is_none()
            && self
                .insert
                .as_deref()
                .is_none_or(|s| s == "accepted" || s == "42501")
            && self.change.as_deref() != Some(AMBIGUOUS)
    }

    /// A view's or function's row: whatever it returned or refused with (a refusal leaks
    /// nothing), unless the statement met a name it could not resolve (42702).
    fn clean_read(&self) -> bool {
        self.insert.as_deref() != Some(AMBIGUOUS)
    }
}

/// The probe function's arguments for a batch: per tenant another tenant's id, and per tenant
/// and target another tenant's key and whether to move one of the tenant's rows.
struct Args {
    tenants: Vec<Uuid>,
    others: Vec<Option<Uuid>>,
    keys: Vec<Option<String>>,
    moves: Vec<bool>,
}

impl Args {
    /// `writes`: false with `--read-only` (no tenant-id change; the other writes are not in the
    /// plan then).
    fn of(shared: &Shared, n: usize, jobs: &[Job], writes: bool) -> Args {
        let mut args = Args {
            tenants: jobs.iter().map(|j| j.0).collect(),
            others: Vec::new(),
            keys: Vec::new(),
            moves: Vec::new(),
        };
        for (tenant, admin) in jobs {
            // Another tenant's id, for the INSERT and the tenant-id change: from any table with one.
            args.others
                .push((0..n).find_map(|i| shared.victim(i, *tenant).map(|v| v.1)));
            for (i, own_rows) in admin.iter().enumerate() {
                args.keys
                    .push(shared.victim(i, *tenant).map(|v| v.0.clone()));
                args.moves
                    .push(writes && matches!(own_rows, Some(c) if *c > 0));
            }
        }
        args
    }
}

/// Probe `jobs` statement by statement, each tenant in a transaction of its own.
async fn slowly(conn: &Conn, shared: &Shared, jobs: &[Job]) -> Result<Vec<(Tally, OwnCounts)>> {
    let mut out = Vec::new();
    for (tenant, _) in jobs {
        out.push(tenant::probe_in(conn, *tenant, &shared.scope).await?);
    }
    Ok(out)
}

/// Probe a batch of tenants on one connection. The fast path is one round trip: a transaction
/// (REPEATABLE READ, in the admin's exported snapshot) as the app role in which one call of the
/// probe function ([`crate::sqlgen::probe_function`]) probes every tenant of the batch in turn,
/// then ROLLBACK. A tenant whose results are anything but clean reads and refusals (an UPDATE or
/// DELETE that touched a row or failed, an INSERT refused by anything but row-level security, a
/// name clash) is probed again statement by statement in a transaction of its own, which names
/// the table and check; so is the whole batch if the call fails (a statement timeout, which
/// PL/pgSQL blocks do not catch), and every tenant when the function could not be created.
pub(super) async fn probe(
    conn: &Conn,
    shared: &Shared,
    jobs: &[Job],
) -> Result<Vec<(Tally, OwnCounts)>> {
    let plan = &conn.plan;
    let Some(call) = &conn.probe else {
        return slowly(conn, shared, jobs).await;
    };
    let n = plan.targets.len();
    let args = Args::of(shared, n, jobs, !plan.acting.read_only);
    // The batch's transaction, pipelined: its text is the scope's, as for every other probe.
    let (begin_sql, undo_sql) = (shared.scope.begin(), shared.scope.undo());
    // The probe function lives in this transaction only (rolled back with it). Its body was
    // checked when the connection first created it: not again for every batch.
    let create_sql = format!(
        "{SKIP_BODY_CHECK}{}",
        plan.probe_function.as_deref().unwrap_or_default()
    );
    let mut p = Pipeline::new(&conn.client);
    let begin = p.push_simple(&begin_sql);
    let limit = p.push(&conn.timeout, vec![&plan.acting.timeout]);
    let create = p.push_simple(&create_sql);
    let role = p.push(&conn.as_app, vec![&plan.app]);
    let called = p.push(
        call,
        vec![&args.tenants, &args.others, &args.keys, &args.moves],
    );
    let end = p.push_simple(undo_sql);
    let results = p.run().await;
    // In the order sent, so that the first failure is the one reported (a server shutting
    // down fails the call with its reason, then everything after with "connection closed").
    must(&results[begin], "cannot begin a probe transaction")?;
    must(&results[limit], "cannot set the probes' statement timeout")?;
    must(&results[create], "cannot create the probe function")?;
    must(&results[role], &format!("cannot act as {}", plan.app))?;
    let rows = match &results[called] {
        Ok(rows) => rows,
        // The call failed but the connection lives (a statement timeout): statement by statement.
        Err(e) if e.as_db_error().is_some() && !conn.client.is_closed() => {
            must(&results[end], "cannot roll back a probe transaction")?;
            return slowly(conn, shared, jobs).await;
        }
        Err(e) => return Err(run_error(e)).context("probe failed"),
    };
    must(&results[end], "cannot roll back a probe transaction")?;
    // Exactly one row per tenant and target; a tenant with any other shape is probed again
    // statement by statement (and the whole batch, when the count is off).
    let width = n + plan.readables.len();
    if rows.len() != jobs.len() * width {
        return slowly(conn, shared, jobs).await;
    }
    let (per_tenant, twice) = per_tenant(rows, jobs.len(), width);
    let mut out = Vec::new();
    for (k, ((tenant, admin), got)) in jobs.iter().zip(&per_tenant).enumerate() {
        let fast = got
            .iter()
            .map(|r| r.map(FastResult::from_row))
            .collect::<Option<Vec<FastResult>>>()
            .filter(|results| !twice[k] && clean(plan, &args, k, results));
        out.push(match fast {
            Some(results) => record_tenant(plan, &args, k, *tenant, admin, &results),
            None => tenant::probe_in(conn, *tenant, &shared.scope).await?,
        });
    }
    Ok(out)
}

/// The function's rows by tenant and target, and per tenant whether any slot came twice.
fn per_tenant(rows: &[Row], tenants: usize, width: usize) -> (Vec<Vec<Option<&Row>>>, Vec<bool>) {
    let mut per_tenant: Vec<Vec<Option<&Row>>> = vec![vec![None; width]; tenants];
    let mut twice = vec![false; tenants];
    for r in rows {
        let (k, target): (i32, i32) = (r.get("tc_probe_tenant_no"), r.get("tc_probe_target"));
        let k = (k as usize).wrapping_sub(1);
        if let Some(slot) = per_tenant
            .get_mut(k)
            .and_then(|t| t.get_mut(target as usize))
        {
            twice[k] |= slot.is_some();
            *slot = Some(r);
        }
    }
    (per_tenant, twice)
}

/// Every probe that was to run for tenant `k` left its result, and every result is clean; else
/// this tenant is probed again statement by statement.
fn clean(plan: &Plan, args: &Args, k: usize, results: &[FastResult]) -> bool {
    let n = plan.targets.len();
    let (tables, readables) = results.split_at(n);
    let ran = tables
        .iter()
        .zip(&plan.targets)
        .enumerate()
        .all(|(i, (r, t))| {
            let victim = args.keys[k * n + i].is_some();
            let other = args.others[k].is_some();
            (!victim || t.sql.update.is_none() || r.updated.is_some())
                && (!victim || t.sql.delete.is_none() || r.deleted.is_some())
                && (!other || t.sql.insert.is_none() || r.insert.is_some())
                && (!other || !args.moves[k * n + i] || r.change.is_some())
        });
    ran && tables.iter().all(FastResult::clean) && readables.iter().all(FastResult::clean_read)
}

/// Record tenant `k`'s clean results.
fn record_tenant(
    plan: &Plan,
    args: &Args,
    k: usize,
    tenant: Uuid,
    admin: &[Option<i64>],
    results: &[FastResult],
) -> (Tally, OwnCounts) {
    let n = plan.targets.len();
    let (tables, readables) = results.split_at(n);
    let mut tally = Tally::default();
    let mut own_counts = Vec::new();
    for (i, (target, r)) in plan.targets.iter().zip(tables).enumerate() {
        let victim = args.keys[k * n + i].is_some();
        own_counts.push(record::reads(
            &mut tally,
            &target.name,
            tenant,
            (
                r.visible.unwrap_or(0),
                r.foreign.unwrap_or(0),
                r.looked_up.unwrap_or(0),
            ),
            admin[i],
            victim,
        ));
        if victim {
            // Clean: the UPDATE and DELETE of another tenant's row touched no row.
            if target.sql.update.is_some() {
                tally.pass("probe.cross-update");
            }
            if target.sql.delete.is_some() {
                tally.pass("probe.cross-delete");
            }
        }
        if let Some(state) = &r.insert {
            let outcome = match state.as_str() {
                "accepted" => Ok(()),
                code => Err(code.to_string()),
            };
            record::insert(&mut tally, outcome, tenant, &target.name);
        }
        if let Some(state) = &r.change {
            record::change(&mut tally, state == "moved", tenant, &target.name);
        }
    }
    for (readable, r) in plan.readables.iter().zip(readables) {
        // A view or function that refused (an error) leaked nothing.
        record::readable_rows(&mut tally, readable, r.foreign.unwrap_or(0), tenant);
    }
    (tally, own_counts)
}
