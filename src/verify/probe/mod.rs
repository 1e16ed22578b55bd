//! Dynamic probes: impersonate each tenant as the app role (and the admin role for reference)
//! inside transactions that are always rolled back, pipelined over a small pool of connections.
//!
//! `plan` reads the catalog once into the statements to run; `session` prepares them on a
//! connection; `tenant` probes one tenant statement by statement, `batch` a batch of tenants
//! through the temporary probe function (created in each batch's transaction); `parallel` feeds tenants to a pool of workers,
//! `synthetic` creates probe tenants when there are fewer than two; `record` turns results into
//! findings.

mod batch;
mod login;
mod parallel;
mod pipeline;
mod plan;
mod record;
mod session;
mod synthetic;
mod tenant;

use crate::pg::unnamed::typed;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;
use uuid::Uuid;

use super::tx::{rolled_back, Scope};
use super::{Finding, ProbeInfo, Settings, Tally, TenantSelection};
use crate::model::Schema;
use crate::pg;
use crate::pg::tx::set_role;
use plan::{Acting, Plan};
use session::Conn;

/// What `tenant create` needs: the probes for one tenant, their count and their failures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeSummary {
    pub checks: usize,
    pub failures: Vec<Finding>,
}

/// Run every probe for one tenant (the context probes too) on one connection, inside a single
/// transaction that is rolled back. Two synthetic tenants are created inside it, so there is
/// always another tenant's row to attack, even in a database with one tenant.
pub async fn probe_single_tenant(
    url: &pg::Target,
    schema: &Schema,
    gym_id: Uuid,
) -> Result<ProbeSummary> {
    if schema.target == crate::model::Backend::Citus {
        return super::citus::probe_single_tenant(url, schema, gym_id).await;
    }
    let client = pg::connect(url).await?;
    super::preflight::check_set_role(&client, schema).await?;
    let acting = Acting {
        login: None,
        read_only: false,
        timeout: SINGLE_TENANT_TIMEOUT.to_string(),
    };
    let plan = Arc::new(Plan::build(&client, schema, acting).await?);
    let conn = Conn::new(client, plan.clone(), None).await?;
    let mut tally = Tally::default();
    let (result, rollback) = conn
        .rolled_back(&Scope::Transaction, async {
            // Probing stays meaningful as long as other tenants' rows exist, whether or not the
            // synthetic tenants could be created (a failure is a finding of its own).
            synthetic::create(&conn, schema, &mut tally).await?;
            let (t, _) = tenant::probe(&conn, gym_id, true).await?;
            tally.merge(t);
            tally.merge(tenant::context_probes(&conn, true).await?);
            anyhow::Ok(())
        })
        .await?;
    result?;
    rollback?;
    Ok(ProbeSummary {
        checks: tally.checks(),
        failures: tally.findings,
    })
}

/// Result of the probe phase of a verify run.
pub(super) struct Outcome {
    pub tally: Tally,
    pub tenants_probed: u64,
    pub synthetic: bool,
}

/// The statement timeout of `tenant create`'s probes.
const SINGLE_TENANT_TIMEOUT: &str = "30000ms";

/// Who the probes act as, and what the report says about it.
async fn acting(
    client: &Client,
    schema: &Schema,
    settings: &Settings,
    total: u64,
    (tally, info): (&mut Tally, &mut ProbeInfo),
) -> Result<Acting> {
    let t = &schema.tenancy;
    let login = match &settings.app {
        Some(app) => Some(login::check(client, app, t, &settings.reach.operators).await?),
        None => None,
    };
    info.read_only = settings.read_only;
    info.statement_timeout_ms = settings.probe_timeout.as_millis() as u64;
    let user: String = client
        .query_typed_one("SELECT current_user::text AS name", &[])
        .await
        .context("cannot read the current user")?
        .get("name");
    let login = match login {
        Some(l) if total >= 2 => {
            info.notes.push(format!(
                "the probes logged in as the application's login {l} (--app-url): its own \
                 settings, memberships and privileges were probed, and the views and functions \
                 they called ran with no more than its rights"
            ));
            Some(l)
        }
        Some(l) => {
            tally.fail(Finding::new(
                "probe.real-login-skipped",
                format!("role {l}"),
                format!(
                    "fewer than two tenants: the probes as the application's login {l} were skipped \
                     (synthetic tenants never leave verify's own rolled-back transaction); \
                     the app role {} was probed by SET ROLE instead",
                    t.app_role
                ),
            ));
            None
        }
        None => {
            info.logins = login::granted_logins(client, t).await?;
            info.notes.push(format!(
                "the probes acted as the app role {app} by SET ROLE from verify's own connection \
                 ({user}), not as the application's login{found}: role-level settings, memberships \
                 and privileges of a login were not probed (give --app-url, [verify] app_url or \
                 TENANTCTL_APP_URL); the views and functions they called ran in verify's session \
                 and could have switched back to {user} with its rights",
                app = t.app_role,
                found = match info.logins.as_slice() {
                    [] => " (no login role is granted it)".to_string(),
                    l => format!(" (logins granted it: {})", l.join(", ")),
                },
            ));
            None
        }
    };
    info.acted_as = Some(login.clone().unwrap_or_else(|| t.app_role.clone()));
    info.real_login = login.is_some();
    if settings.read_only {
        info.notes.push(
            "read-only: no UPDATE, DELETE, INSERT or tenant-id change was tried, so cross-tenant \
             writes (probe.cross-update, probe.cross-delete, probe.cross-insert, \
             probe.tenant-id-change) were not proven impossible; the static checks of grants, \
             WITH CHECK and the immutability trigger ran as usual"
                .to_string(),
        );
    }
    Ok(Acting {
        login,
        read_only: settings.read_only,
        timeout: format!("{}ms", settings.probe_timeout.as_millis()),
    })
}

pub(super) async fn run(
    url: &pg::Target,
    client: &Client,
    schema: &Schema,
    settings: &Settings,
    info: &mut ProbeInfo,
) -> Result<Outcome> {
    // How many tenants the admin sees decides between probing real tenants in parallel, and
    // synthetic ones inside one transaction.
    let total = count_tenants(client, schema).await?;
    let mut tally = Tally::default();
    let acting = acting(client, schema, settings, total, (&mut tally, info)).await?;
    let as_login = acting.login.is_some();
    // The probe connections are opened (authentication included) while the plan is built.
    let probe_url = match (&settings.app, as_login) {
        (Some(app), true) => app,
        _ => url,
    };
    let connecting = parallel::connect(probe_url, settings);
    let plan = Arc::new(Plan::build(client, schema, acting).await?);
    tally.merge(tenant::context_leak(client, &plan).await?);

    let named: Option<Vec<Uuid>> = match &settings.tenants {
        TenantSelection::Named(names) => Some(resolve(client, &plan, names).await?),
        _ => None,
    };
    if total < 2 {
        let all = matches!(settings.tenants, TenantSelection::All);
        connecting.iter().for_each(|c| c.abort());
        if settings.read_only {
            info.notes.push(
                "read-only: fewer than two tenants, and creating synthetic ones writes: \
                 no tenant was probed"
                    .to_string(),
            );
            return Ok(Outcome {
                tally,
                tenants_probed: 0,
                synthetic: false,
            });
        }
        return synthetic::run(url, plan, schema, named, tally, all).await;
    }
    let expected = match (&settings.tenants, &named) {
        (_, Some(n)) => n.len() as u64,
        (TenantSelection::Sample(n), _) => (*n).min(total),
        _ => total,
    };
    let bar = if settings.progress {
        crate::output::progress(expected, "probing tenants")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let probes = parallel::Probes {
        plan: &plan,
        settings,
        named,
        expected,
        bar: &bar,
        admin: as_login.then(|| url.clone()),
    };
    let (probe_tally, sums, probed) = parallel::run(client, connecting, probes).await?;
    tally.merge(probe_tally);
    if matches!(settings.tenants, TenantSelection::All) {
        tally.merge(record::admin_sees_all(&plan, &sums));
    }
    Ok(Outcome {
        tally,
        tenants_probed: probed,
        synthetic: false,
    })
}

/// How many tenants the admin role sees.
async fn count_tenants(client: &Client, schema: &Schema) -> Result<u64> {
    let t = &schema.tenancy;
    let sql = crate::sqlgen::tenant_count(&t.table_schema, &t.tenant_table);
    let done = rolled_back(client, &Scope::Transaction, async {
        set_role(client, &t.admin_role).await?;
        client
            .query_typed_one(sql.as_str(), &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    })
    .await
    .context("cannot begin")?;
    done.rollback.context("cannot roll back")?;
    Ok(done.body.context("cannot count tenants as the admin")? as u64)
}

/// Tenant ids from `--tenant` values: a uuid, or a slug when the tenant table has one.
async fn resolve(client: &Client, plan: &Plan, names: &[String]) -> Result<Vec<Uuid>> {
    let mut out = Vec::new();
    for n in names {
        if let Ok(id) = n.parse::<Uuid>() {
            out.push(id);
            continue;
        }
        let Some(sql) = &plan.tenant_by_slug else {
            bail!(
                "{n:?} is not a tenant id (uuid), and {} has no slug column",
                plan.tenant_table
            );
        };
        let done = rolled_back(client, &Scope::Transaction, async {
            set_role(client, &plan.admin).await?;
            client.query_typed_opt(sql.as_str(), typed![n]).await
        })
        .await?;
        done.rollback?;
        match done.body.context("cannot look up the tenant")? {
            Some(r) => out.push(r.get(0)),
            None => bail!("no tenant with slug {n:?} in {}", plan.tenant_table),
        }
    }
    Ok(out)
}
