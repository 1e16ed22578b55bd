//! Dynamic probes: impersonate each tenant as the app role (and the admin role for reference)
//! inside transactions that are always rolled back, pipelined over a small pool of connections.
//!
//! `plan` reads the catalog once into the statements to run; `session` prepares them on a
//! connection; `tenant` probes one tenant statement by statement, `batch` a batch of tenants
//! through the temporary probe function (created in each batch's transaction); `parallel` feeds tenants to a pool of workers,
//! `synthetic` creates probe tenants when there are fewer than two; `record` turns results into
//! findings.

mod batch;
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
use super::{Finding, Settings, Tally, TenantSelection};
use crate::model::Schema;
use crate::pg;
use crate::pg::tx::set_role;
use plan::Plan;
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
    let plan = Arc::new(Plan::build(&client, schema).await?);
    let conn = Conn::new(client, plan.clone()).await?;
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

pub(super) async fn run(
    url: &pg::Target,
    client: &Client,
    schema: &Schema,
    settings: &Settings,
) -> Result<Outcome> {
    // The probe connections are opened (authentication included) while the plan is built.
    let connecting = parallel::connect(url, settings);
    let plan = Arc::new(Plan::build(client, schema).await?);
    let mut tally = tenant::context_leak(client, &plan).await?;

    // How many tenants the admin sees decides between probing real tenants in parallel, and
    // synthetic ones inside one transaction.
    let total = count_tenants(client, &plan).await?;
    let named: Option<Vec<Uuid>> = match &settings.tenants {
        TenantSelection::Named(names) => Some(resolve(client, &plan, names).await?),
        _ => None,
    };
    if total < 2 {
        let all = matches!(settings.tenants, TenantSelection::All);
        connecting.iter().for_each(|c| c.abort());
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
async fn count_tenants(client: &Client, plan: &Plan) -> Result<u64> {
    let done = rolled_back(client, &Scope::Transaction, async {
        set_role(client, &plan.admin).await?;
        client
            .query_typed_one(plan.tenant_count.as_str(), &[])
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
