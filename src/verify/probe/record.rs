//! Probe results as findings: one function per check, shared by the statement-by-statement and
//! the batched probes so that both say the same thing.

use anyhow::{Context, Result};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::pipeline::{probe_result, run_error, Sent};
use super::plan::{Plan, Readable};
use crate::verify::{Finding, Tally};

fn table(name: &str) -> String {
    format!("table {name}")
}

/// Record the read probes of one table for one tenant: foreign rows seen, the count against the
/// admin's (when known), the look-up of another tenant's row (when one was probed). Returns the
/// tenant's own row count.
pub(super) fn reads(
    tally: &mut Tally,
    name: &str,
    tenant: Uuid,
    (visible, foreign, looked_up): (i64, i64, i64),
    admin: Option<i64>,
    looked_up_probed: bool,
) -> i64 {
    let obj = table(name);
    tally.record(
        "probe.foreign-rows",
        (foreign > 0).then(|| {
            Finding::new(
                "probe.foreign-rows",
                &obj,
                format!("tenant {tenant} sees {foreign} row(s) of other tenants in {name}"),
            )
            .tenant(tenant)
        }),
    );
    if let Some(admin) = admin {
        tally.record(
            "probe.count",
            (visible - foreign != admin).then(|| {
                Finding::new(
                    "probe.count",
                    &obj,
                    format!(
                        "tenant {tenant} sees {} of its row(s) in {name}; the admin counts {admin}",
                        visible - foreign
                    ),
                )
                .tenant(tenant)
            }),
        );
    }
    if looked_up_probed {
        tally.record(
            "probe.cross-lookup",
            (looked_up > 0).then(|| {
                Finding::new(
                    "probe.cross-lookup",
                    &obj,
                    format!("tenant {tenant} found another tenant's row of {name} by its id"),
                )
                .tenant(tenant)
            }),
        );
    }
    visible - foreign
}

/// A write to another tenant's row, by key.
#[derive(Debug, Clone, Copy)]
pub(super) enum Attack {
    Update,
    Delete,
}

impl Attack {
    pub(super) fn check_id(self) -> &'static str {
        match self {
            Attack::Update => "probe.cross-update",
            Attack::Delete => "probe.cross-delete",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Attack::Update => "updated",
            Attack::Delete => "deleted",
        }
    }
}

/// An UPDATE or DELETE of another tenant's row: whether it reached the row.
pub(super) fn attack(tally: &mut Tally, attack: Attack, hit: bool, tenant: Uuid, name: &str) {
    let id = attack.check_id();
    tally.record(
        id,
        hit.then(|| {
            Finding::new(
                id,
                table(name),
                format!(
                    "tenant {tenant} {} another tenant's row of {name}",
                    attack.verb()
                ),
            )
            .tenant(tenant)
        }),
    );
}

/// An INSERT with another tenant's id: accepted, or the SQLSTATE it failed with.
pub(super) fn insert(
    tally: &mut Tally,
    outcome: std::result::Result<(), String>,
    tenant: Uuid,
    name: &str,
) {
    // Row-level security's WITH CHECK runs before NOT NULL and key checks: anything
    // but its refusal (42501) means the row got past it.
    let bad = match outcome {
        Ok(()) => Some("was accepted".to_string()),
        Err(code) if code == "42501" => None,
        Err(code) => Some(format!(
            "got past row-level security (then failed with SQLSTATE {code})"
        )),
    };
    tally.record(
        "probe.cross-insert",
        bad.map(|b| {
            Finding::new(
                "probe.cross-insert",
                table(name),
                format!("tenant {tenant}: an INSERT into {name} with another tenant's id {b}"),
            )
            .tenant(tenant)
        }),
    );
}

/// A tenant-id change of one of the tenant's rows: whether the row moved (any error: it did not).
pub(super) fn change(tally: &mut Tally, moved: bool, tenant: Uuid, name: &str) {
    tally.record(
        "probe.tenant-id-change",
        moved.then(|| {
            Finding::new(
                "probe.tenant-id-change",
                table(name),
                format!("tenant {tenant} moved one of its rows of {name} to another tenant"),
            )
            .tenant(tenant)
        }),
    );
}

/// A view's or function's probe: the rows of other tenants it returned (refusing is fine).
pub(super) fn readable(tally: &mut Tally, r: &Readable, result: &Sent, tenant: Uuid) -> Result<()> {
    if timed_out(
        tally,
        result,
        tenant,
        &r.name,
        &format!("the read of {} {}", r.kind, r.name),
    ) {
        return Ok(());
    }
    let leaked = match probe_result(result, r.check_id())? {
        Ok(rows) => rows[0].get::<_, i64>(0),
        Err(_) => 0,
    };
    readable_rows(tally, r, leaked, tenant);
    Ok(())
}

/// A view or function the app role can read returned `leaked` rows of other tenants.
pub(super) fn readable_rows(tally: &mut Tally, r: &Readable, leaked: i64, tenant: Uuid) {
    let id = r.check_id();
    tally.record(
        id,
        (leaked > 0).then(|| {
            Finding::new(
                id,
                format!("{} {}", r.kind, r.name),
                format!(
                    "{} {} returned {leaked} row(s) of other tenants to tenant {tenant}",
                    r.kind, r.name
                ),
            )
            .tenant(tenant)
        }),
    );
}

/// A context probe (check `id`, the context set to `value`) saw `seen` rows of table `name`,
/// acting as `who` (the app role, or the application's login).
pub(super) fn context_finding(
    id: &'static str,
    (value, who): (&str, &str),
    seen: i64,
    name: &str,
) -> Option<Finding> {
    (seen > 0).then(|| {
        Finding::new(
            id,
            table(name),
            match id {
                "probe.no-context" => {
                    format!("with no context set, {who} sees {seen} row(s) of {name}")
                }
                _ => format!("with context {value:?} {who} sees {seen} row(s) of {name}"),
            },
        )
    })
}

/// probe.admin-sees-all per table: the admin's count (None: it cannot read the table) is at
/// least the sum of what the tenants saw of their own. `rows` says what the admin counted.
fn admin_sees(plan: &Plan, totals: &[Option<i64>], sums: &[i64], rows: &str) -> Tally {
    let mut tally = Tally::default();
    for (i, t) in plan.targets.iter().enumerate() {
        let name = &t.name;
        let sum = sums[i];
        tally.record(
            "probe.admin-sees-all",
            match totals[i] {
                Some(total) if total >= sum => None,
                Some(total) => Some(format!(
                    "the admin sees {total} {rows} of {name}; the tenants see {sum} of their own"
                )),
                None => Some(format!("the admin cannot read {name}")),
            }
            .map(|m| Finding::new("probe.admin-sees-all", table(name), m)),
        );
    }
    tally
}

/// The admin's total of every row per table (synthetic tenants: every tenant was probed).
pub(super) fn admin_totals(plan: &Plan, totals: &[Option<i64>], sums: &[i64]) -> Tally {
    admin_sees(plan, totals, sums, "row(s)")
}

/// The admin's counts of every probed tenant's rows (one snapshot with the probes) against the
/// sum of what the tenants saw.
pub(super) fn admin_sees_all(plan: &Plan, sums: &super::parallel::Sums) -> Tally {
    admin_sees(plan, &sums.admin, &sums.own, "of the tenants' row(s)")
}

/// Whether a probe statement failed by the statement timeout (or a cancel).
pub(super) fn is_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::QUERY_CANCELED)
}

/// A probe statement the database refused with an error of its own making (a policy, function
/// or trigger raising, infinite recursion in a policy, a missing object) or the statement
/// timeout: a finding on `object` (`what` failed), as the probe proved nothing. A lost
/// connection, or a statement of an already failed transaction, is the run's error instead.
pub(super) fn failure(
    tally: &mut Tally,
    e: &tokio_postgres::Error,
    object: &str,
    what: &str,
    tenant: Option<Uuid>,
) -> Result<()> {
    let Some(db) = e
        .as_db_error()
        .filter(|d| *d.code() != SqlState::IN_FAILED_SQL_TRANSACTION)
    else {
        return Err(run_error(e)).with_context(|| format!("probe failed: {what}"));
    };
    let (id, message) = if is_timeout(e) {
        (
            "probe.timeout",
            format!("{what} was cancelled by the probes' statement timeout: it proved nothing"),
        )
    } else {
        (
            "probe.error",
            format!(
                "{what} failed: {} (SQLSTATE {}): the database's own objects refuse the probe",
                db.message(),
                db.code().code()
            ),
        )
    };
    let finding = Finding::new(id, object, message);
    tally.fail(match tenant {
        Some(t) => finding.tenant(t),
        None => finding,
    });
    Ok(())
}

/// A write probe's statement that timed out is recorded as such (`probe.timeout`), not as the
/// attack's outcome; true when it did.
pub(super) fn timed_out(
    tally: &mut Tally,
    result: &Sent,
    tenant: Uuid,
    name: &str,
    what: &str,
) -> bool {
    let Err(e) = result else { return false };
    if !is_timeout(e) {
        return false;
    }
    tally.fail(
        Finding::new(
            "probe.timeout",
            table(name),
            format!(
                "tenant {tenant}: {what} on {name} was cancelled by the probes' statement timeout: it proved nothing"
            ),
        )
        .tenant(tenant),
    );
    true
}
