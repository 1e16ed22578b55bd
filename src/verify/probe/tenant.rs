//! One tenant probed statement by statement: as the admin, the reference counts and rows; as the
//! app role in the tenant's context, the reads and attacks, each isolated by a savepoint. Also
//! the probes that run once: the context probes, the context leak and the admin's totals.

use crate::pg::unnamed::typed;
use anyhow::{Context, Result};
use tokio_postgres::Client;
use uuid::Uuid;

use super::pipeline::{must, probe_result, run_error, Pipeline, Sent};
use super::plan::Plan;
use super::record::{self, Attack};
use super::session::Conn;
use crate::pg::tx::set_role;
use crate::verify::tx::Scope;
use crate::verify::{Finding, Tally};

/// Per table: the app role's visible rows that belong to the tenant.
pub(super) type OwnCounts = Vec<i64>;

/// Probe one tenant. `nested`: inside an outer transaction (synthetic tenants), so use a
/// savepoint instead of a transaction of its own.
pub(super) async fn probe(conn: &Conn, tenant: Uuid, nested: bool) -> Result<(Tally, OwnCounts)> {
    probe_in(conn, tenant, &Scope::RepeatableRead.or_nested(nested)).await
}

/// [`probe`], in `scope`: always undone, even after a failed probe (nothing a probe wrote may
/// survive). As the application's login, the admin's reads come first, from verify's own
/// connection, in a transaction of the same scope (the same snapshot when it was exported).
pub(super) async fn probe_in(
    conn: &Conn,
    tenant: Uuid,
    scope: &Scope,
) -> Result<(Tally, OwnCounts)> {
    let refs = match &conn.admin {
        None => None,
        Some(side) => {
            let client = side.client().await?;
            let done =
                crate::verify::tx::rolled_back(client, scope, admin_refs(conn, client, &tenant))
                    .await
                    .map_err(|e| run_error(&e))
                    .context("cannot begin the admin's transaction")?;
            let refs = done.body?;
            done.rollback
                .map_err(|e| run_error(&e))
                .context("cannot roll back the admin's transaction")?;
            Some(refs)
        }
    };
    let mut tally = Tally::default();
    let (result, undone) = conn
        .rolled_back(scope, probe_tenant(conn, tenant, refs, &mut tally))
        .await?;
    let own = result?;
    undone?;
    Ok((tally, own))
}

typed_row! {
    /// What the admin reads of one table for one tenant (a row of its `admin` statement).
    struct AdminRef {
        /// The tenant's rows.
        own_rows: i64,
        /// Another tenant's row (key as text) and that tenant.
        pk: Option<String>,
        tenant: Option<Uuid>,
        /// One of the tenant's own keys.
        own_pk: Option<String>,
    }
}

/// [`AdminRef`], or nothing when the admin cannot read the table.
#[derive(Default)]
struct Ref {
    count: Option<i64>,
    other_pk: Option<String>,
    other_tenant: Option<Uuid>,
    own_pk: Option<String>,
}

impl From<AdminRef> for Ref {
    fn from(a: AdminRef) -> Ref {
        Ref {
            count: Some(a.own_rows),
            other_pk: a.pk,
            other_tenant: a.tenant,
            own_pk: a.own_pk,
        }
    }
}

typed_row! {
    /// The app role's reads of one table (a row of its `count` statement).
    struct Reads {
        visible: i64,
        other_tenants: i64,
        looked_up: i64,
    }
}

/// Step 1, as the admin (on `client`: this connection, or verify's own): per table the
/// tenant's count, another tenant's row, one of the tenant's rows.
async fn admin_refs(conn: &Conn, client: &Client, tenant: &Uuid) -> Result<Vec<Ref>> {
    let plan = &conn.plan;
    let mut p = Pipeline::new(client);
    p.push(&conn.set_role, vec![&plan.admin]);
    let admin_idx: Vec<Option<usize>> = conn
        .targets
        .iter()
        .map(|s| s.admin.as_ref().map(|s| p.push(s, vec![tenant])))
        .collect();
    let results = p.run().await;
    must(&results[0], &format!("cannot SET ROLE {}", plan.admin))?;
    let mut refs = Vec::new();
    for (i, idx) in admin_idx.iter().enumerate() {
        refs.push(match idx {
            None => Ref::default(),
            Some(j) => {
                let what = format!("the admin cannot read {}", plan.targets[i].name);
                AdminRef::from_row(&must(&results[*j], &what)?[0])?.into()
            }
        });
    }
    Ok(refs)
}

/// Where one table's results are in the app role's pipeline.
struct Slots {
    count: usize,
    update: Option<usize>,
    delete: Option<usize>,
    insert: Option<usize>,
    change: Option<usize>,
}

async fn probe_tenant(
    conn: &Conn,
    tenant: Uuid,
    refs: Option<Vec<Ref>>,
    tally: &mut Tally,
) -> Result<OwnCounts> {
    let plan = &conn.plan;
    let tid = tenant.to_string();
    let refs = match refs {
        Some(refs) => refs,
        None => admin_refs(conn, &conn.client, &tenant).await?,
    };
    // Another tenant's id, for inserts and tenant-id changes: from any table that has one.
    let other_tenant = refs.iter().find_map(|r| r.other_tenant);

    // 2. As the app role with the tenant's context: everything else, in one pipeline.
    let setting = plan.setting.as_str();
    let mut p = Pipeline::new(&conn.client);
    p.push(&conn.as_app_ctx, vec![&plan.app, &setting, &tid]);
    p.push(&conn.savepoint, vec![]);
    let mut idx = Vec::new();
    // Read-only: no write probe (the UPDATE, DELETE and INSERT are not in the plan then).
    let writes = !plan.acting.read_only;
    for (s, r) in conn.targets.iter().zip(&refs) {
        let other_pk = r.other_pk.as_ref();
        idx.push(Slots {
            count: p.isolated(conn, &s.count, vec![&tenant, &r.other_pk]),
            update: match (&s.update, other_pk) {
                (Some(st), Some(pk)) => Some(p.isolated(conn, st, vec![pk])),
                _ => None,
            },
            delete: match (&s.delete, other_pk) {
                (Some(st), Some(pk)) => Some(p.isolated(conn, st, vec![pk])),
                _ => None,
            },
            insert: match (&s.insert, &other_tenant) {
                (Some(st), Some(o)) => Some(p.isolated(conn, st, vec![o])),
                _ => None,
            },
            change: match (&r.own_pk, &other_tenant) {
                (Some(pk), Some(o)) if writes => Some(p.isolated(conn, &s.change, vec![o, pk])),
                _ => None,
            },
        });
    }
    let readable_idx: Vec<usize> = conn
        .readables
        .iter()
        .map(|s| p.isolated(conn, s, vec![&tid]))
        .collect();
    let results = p.run().await;
    must(
        &results[0],
        &format!("cannot act as {} with the tenant context", plan.app),
    )?;

    // 3. What each probe found.
    let mut own_counts = Vec::new();
    for (i, at) in idx.into_iter().enumerate() {
        own_counts.push(record_table(
            tally, plan, i, &refs[i], at, &results, tenant,
        )?);
    }
    for (k, j) in readable_idx.into_iter().enumerate() {
        record::readable(tally, &plan.readables[k], &results[j], tenant)?;
    }
    Ok(own_counts)
}

/// Record one table's probes for one tenant; returns the tenant's own row count.
fn record_table(
    tally: &mut Tally,
    plan: &Plan,
    i: usize,
    r: &Ref,
    at: Slots,
    results: &[Sent],
    tenant: Uuid,
) -> Result<i64> {
    let target = &plan.targets[i];
    let rows = match &results[at.count] {
        Ok(rows) => rows,
        Err(e) => {
            let what = format!("tenant {tenant}'s read of {}", target.name);
            record::failure(
                tally,
                e,
                &format!("table {}", target.name),
                &what,
                Some(tenant),
            )?;
            return Ok(0);
        }
    };
    let read = Reads::from_row(&rows[0])?;
    let reads = (read.visible, read.other_tenants, read.looked_up);
    let own = record::reads(
        tally,
        &target.name,
        tenant,
        reads,
        r.count,
        r.other_pk.is_some(),
    );
    let timed_out = |tally: &mut Tally, j: usize, what: &str| {
        record::timed_out(tally, &results[j], tenant, &target.name, what)
    };
    for (attack, at) in [(Attack::Update, at.update), (Attack::Delete, at.delete)] {
        let Some(j) = at else { continue };
        if timed_out(tally, j, attack.check_id()) {
            continue;
        }
        let hit = match probe_result(&results[j], attack.check_id())? {
            Ok(rows) => !rows.is_empty(),
            // An error means the statement reached the row (a key or trigger objected).
            Err(code) => code != "42501",
        };
        record::attack(tally, attack, hit, tenant, &target.name);
    }
    if let Some(j) = at
        .insert
        .filter(|j| !timed_out(tally, *j, "the INSERT with another tenant's id"))
    {
        let outcome = probe_result(&results[j], "insert")?.map(|_| ());
        record::insert(tally, outcome, tenant, &target.name);
    }
    if let Some(j) = at
        .change
        .filter(|j| !timed_out(tally, *j, "the tenant id change"))
    {
        let moved =
            matches!(probe_result(&results[j], "tenant id change")?, Ok(rows) if !rows.is_empty());
        record::change(tally, moved, tenant, &target.name);
    }
    Ok(own)
}

/// No context, an empty one and a malformed one: 0 rows or an error, never rows.
pub(super) async fn context_probes(conn: &Conn, nested: bool) -> Result<Tally> {
    let mut tally = Tally::default();
    let scope = Scope::Transaction.or_nested(nested);
    for (id, value) in [
        ("probe.no-context", None),
        ("probe.empty-context", Some("")),
        ("probe.garbage-context", Some("not-a-tenant-id")),
    ] {
        let value = value.unwrap_or_default();
        let ((results, idx), undone) = conn
            .rolled_back(&scope, context_pipeline(conn, id, value))
            .await?;
        must(&results[0], &format!("cannot act as {}", conn.plan.app))?;
        for (i, j) in idx.into_iter().enumerate() {
            let name = &conn.plan.targets[i].name;
            if let Err(e) = &results[j] {
                if record::is_timeout(e) {
                    let what = format!("{id}'s read of {name}");
                    record::failure(&mut tally, e, &format!("table {name}"), &what, None)?;
                    continue;
                }
            }
            let seen = match probe_result(&results[j], id)? {
                Ok(rows) => Reads::from_row(&rows[0])?.visible,
                Err(_) => 0,
            };
            let who = match &conn.plan.acting.login {
                Some(login) => format!("the application's login {login}"),
                None => format!("the app role {}", conn.plan.app),
            };
            let finding = record::context_finding(id, (value, &who), seen, name);
            tally.record(id, finding);
        }
        undone?;
    }
    Ok(tally)
}

/// The counts of every table as the app role with the context of check `id` set to `value`,
/// and where each count is in the results.
async fn context_pipeline(conn: &Conn, id: &str, value: &str) -> (Vec<Sent>, Vec<usize>) {
    let plan = &conn.plan;
    let setting = plan.setting.as_str();
    let nil = Uuid::nil();
    let none: Option<String> = None;
    let mut p = Pipeline::new(&conn.client);
    if id == "probe.no-context" {
        p.push(&conn.as_app, vec![&plan.app]);
    } else {
        p.push(&conn.as_app_ctx, vec![&plan.app, &setting, &value]);
    }
    p.push(&conn.savepoint, vec![]);
    let idx: Vec<usize> = conn
        .targets
        .iter()
        .map(|s| p.isolated(conn, &s.count, vec![&nil, &none]))
        .collect();
    (p.run().await, idx)
}

/// A context set with set_config(..., true) must be gone in the next transaction. This
/// transaction is committed, not rolled back: the leak would only show after a COMMIT, and it
/// writes nothing.
pub(super) async fn context_leak(client: &Client, plan: &Plan) -> Result<Tally> {
    let mut tally = Tally::default();
    let t = Uuid::new_v4().to_string();
    client
        .batch_execute("BEGIN")
        .await
        .context("cannot begin")?;
    client
        .execute_typed(
            "SELECT pg_catalog.set_config($1, $2, true)",
            typed![&plan.setting, &t],
        )
        .await
        .context("cannot set the tenant context")?;
    client
        .batch_execute("COMMIT")
        .await
        .context("cannot commit")?;
    let left: Option<String> = client
        .query_typed_one(
            "SELECT pg_catalog.current_setting($1, true)",
            typed![&plan.setting],
        )
        .await
        .context("cannot read the tenant context")?
        .get(0);
    tally.record(
        "probe.context-leak",
        left.filter(|v| !v.is_empty()).map(|v| {
            Finding::new(
                "probe.context-leak",
                format!("setting {}", plan.setting),
                format!(
                    "{} is still {v:?} after the transaction that set it",
                    plan.setting
                ),
            )
        }),
    );
    Ok(tally)
}

/// The admin's total per table, compared with the sum of what each tenant sees of its own.
pub(super) async fn admin_totals(conn: &Conn, sums: &[i64], nested: bool) -> Result<Tally> {
    let plan = &conn.plan;
    let (result, undone) = conn
        .rolled_back(&Scope::Transaction.or_nested(nested), async {
            set_role(&conn.client, &plan.admin).await?;
            let mut totals = Vec::new();
            for t in &plan.targets {
                totals.push(match &t.sql.admin_total {
                    Some(sql) => Some(
                        conn.client
                            .query_typed_one(sql.as_str(), &[])
                            .await?
                            .get::<_, i64>(0),
                    ),
                    None => None,
                });
            }
            Ok::<_, tokio_postgres::Error>(totals)
        })
        .await?;
    undone?;
    let totals = result
        .map_err(|e| run_error(&e))
        .context("cannot count as the admin")?;
    Ok(record::admin_totals(plan, &totals, sums))
}
