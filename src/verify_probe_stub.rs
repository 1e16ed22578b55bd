//! TEMPORARY STAND-IN for `crate::verify` (being built on another branch): the one-tenant probe
//! that `tenant create` and `demo` call. It implements a small but real subset of verify's
//! probes; at merge, `probe_single_tenant`, `ProbeSummary` and `Finding` are replaced by the real
//! ones from `crate::verify`, and `run_verify_for_demo` by the real `verify` run.
//!
//! Probes, as the app role, for each tenant table:
//! - in the tenant's context, every visible row carries the tenant's id;
//! - with no context, no row is visible (fail closed);
//! - an insert carrying another (random) tenant id is rejected.

use anyhow::{Context, Result};
use postgres_protocol::escape::escape_identifier;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::config::Project;
use crate::model::Schema;
use crate::tenants::{self, pg_error, qualified};

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub severity: String,
    pub object: String,
    pub tenant: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeSummary {
    pub checks: usize,
    pub failures: Vec<Finding>,
}

impl ProbeSummary {
    fn fail(&mut self, id: &str, table: &str, gym: Uuid, message: String, hint: &str) {
        self.failures.push(Finding {
            id: id.to_string(),
            severity: "error".to_string(),
            object: table.to_string(),
            tenant: Some(gym.to_string()),
            message,
            hint: Some(hint.to_string()),
        });
    }
}

/// Probe one tenant's isolation on every tenant table (the tenant table included).
pub async fn probe_single_tenant(url: &str, schema: &Schema, gym_id: Uuid) -> Result<ProbeSummary> {
    let mut client = crate::db::connect(url).await?;
    let mut summary = ProbeSummary::default();
    for (name, table) in &schema.tables {
        let target = qualified(schema, name);
        let col = escape_identifier(&table.tenant_column);

        // 1. In the tenant's context, only the tenant's rows.
        let tx = client.transaction().await.map_err(pg_error)?;
        tenants::as_tenant(&tx, schema, gym_id).await?;
        let sql = format!("SELECT count(*) FILTER (WHERE {col} IS DISTINCT FROM $1) FROM {target}");
        match tx.query_one(&sql, &[&gym_id]).await {
            Ok(row) => {
                summary.checks += 1;
                let foreign: i64 = row.get(0);
                if foreign > 0 {
                    summary.fail(
                        "probe.foreign_rows_visible",
                        name,
                        gym_id,
                        format!("in this tenant's context the app role sees {foreign} rows of other tenants in {name}"),
                        "enable and force RLS and filter on the tenant column in the policies",
                    );
                }
            }
            // The app role cannot read the table at all: nothing can leak through it.
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
            Err(e) => return Err(pg_error(e).context(format!("probe of {name} failed"))),
        }
        tx.rollback().await.map_err(pg_error)?;

        // 2. No context, no rows.
        let tx = client.transaction().await.map_err(pg_error)?;
        tenants::set_role(&tx, &schema.tenancy.app_role).await?;
        match tx
            .query_one(&format!("SELECT count(*) FROM {target}"), &[])
            .await
        {
            Ok(row) => {
                summary.checks += 1;
                let visible: i64 = row.get(0);
                if visible > 0 {
                    summary.fail(
                        "probe.no_context_not_closed",
                        name,
                        gym_id,
                        format!("with no tenant context the app role sees {visible} rows of {name}"),
                        "policies must compare with the context function only, with no `IS NULL OR` escape",
                    );
                }
            }
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
            Err(e) => return Err(pg_error(e).context(format!("probe of {name} failed"))),
        }
        tx.rollback().await.map_err(pg_error)?;

        // 3. Writing another tenant's id is rejected (by RLS's WITH CHECK, or by having no
        //    INSERT right at all). RLS checks run before NOT NULL and CHECK constraints, so any
        //    other error means the row got past the policies.
        let tx = client.transaction().await.map_err(pg_error)?;
        tenants::as_tenant(&tx, schema, gym_id).await?;
        let other = Uuid::new_v4();
        let sql = format!("INSERT INTO {target} ({col}) VALUES ($1)");
        summary.checks += 1;
        match tx.execute(&sql, &[&other]).await {
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {}
            outcome => {
                let what = match outcome {
                    Ok(_) => "was accepted".to_string(),
                    Err(e) => format!("got past the policies and failed later: {:#}", pg_error(e)),
                };
                summary.fail(
                    "probe.foreign_insert_accepted",
                    name,
                    gym_id,
                    format!("an insert into {name} carrying another tenant's id {what}"),
                    "every policy of the app role needs a WITH CHECK on the tenant column",
                );
            }
        }
        tx.rollback().await.map_err(pg_error)?;
    }
    Ok(summary)
}

/// STAND-IN for the demo's `verify` step: the one-tenant probe for every gym in the database.
pub async fn run_verify_for_demo(url: &str, project: &Project) -> Result<ProbeSummary> {
    let schema = crate::policy::load(project).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut total = ProbeSummary::default();
    for tenant in tenants::list(url, &schema)
        .await
        .context("verify: cannot list the tenants")?
    {
        let s = probe_single_tenant(url, &schema, tenant.id).await?;
        total.checks += s.checks;
        total.failures.extend(s.failures);
    }
    Ok(total)
}
