//! The release note's isolation scenarios, run live: the same member query as gym A, as gym B,
//! with the application's WHERE forgotten, as the platform admin, with no context, and an
//! insert carrying another gym's id. Each says what it saw and whether isolation held.

use anyhow::{bail, Result};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::gym::{as_tenant, set_role};
use super::manage::Tenant;
use super::seed;
use crate::model::Schema;
use crate::pg;
use crate::pg::error::pg_error;
use crate::pg::unnamed::typed;
use crate::sqlgen::tenants as sql;

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub scenario: String,
    /// Role, and the tenant whose context is set (if any).
    pub acting_as: String,
    pub query: String,
    /// Rows the query saw; None for the insert.
    pub rows_seen: Option<i64>,
    pub expected: String,
    pub outcome: String,
    pub holds: bool,
}

enum Who<'a> {
    Tenant(&'a Tenant),
    NoContext,
    Admin,
}

/// One count scenario: who asks, for which gym's rows (None: every row the session sees), and
/// how many rows isolation allows.
struct Case<'a> {
    scenario: String,
    who: Who<'a>,
    filter: Option<&'a Tenant>,
    expected: i64,
}

/// The count scenarios on the members table, with gyms `a` and `b`.
fn cases<'a>(a: &'a Tenant, b: &'a Tenant, all_members: i64) -> Vec<Case<'a>> {
    let count = |t: &Tenant| t.rows.get(seed::MEMBERS).copied().unwrap_or(0);
    let case = |scenario: String, who, filter, expected| Case {
        scenario,
        who,
        filter,
        expected,
    };
    vec![
        case(
            format!("{} queries its members", a.name),
            Who::Tenant(a),
            Some(a),
            count(a),
        ),
        case(
            format!("{} queries its members", b.name),
            Who::Tenant(b),
            Some(b),
            count(b),
        ),
        case(
            format!("{} asks for {}'s members", a.name, b.name),
            Who::Tenant(a),
            Some(b),
            0,
        ),
        case(
            "The application forgets WHERE gym_id = ?".to_string(),
            Who::Tenant(a),
            None,
            count(a),
        ),
        case("No tenant context set".to_string(), Who::NoContext, None, 0),
        case(
            "The platform admin queries all members".to_string(),
            Who::Admin,
            None,
            all_members,
        ),
    ]
}

/// Run the scenarios on `members`, with gyms `a` and `b` (their counts taken as the admin).
pub async fn run(
    url: &pg::Target,
    schema: &Schema,
    a: &Tenant,
    b: &Tenant,
    all_members: i64,
) -> Result<Vec<Scenario>> {
    let table = seed::MEMBERS;
    let Some(t) = schema.tables.get(table) else {
        bail!("the scenarios need a {table} table");
    };
    let column = t.tenant_column.as_str();
    let mut client = pg::connect(url).await?;
    let mut out = Vec::new();
    for case in cases(a, b, all_members) {
        out.push(count_as(&mut client, schema, column, case).await?);
    }
    out.push(foreign_insert(&mut client, schema, column, a, b).await?);
    Ok(out)
}

/// Count members as the case's role, in a transaction rolled back afterwards.
async fn count_as(
    client: &mut Client,
    schema: &Schema,
    column: &str,
    case: Case<'_>,
) -> Result<Scenario> {
    let table = seed::MEMBERS;
    let app = &schema.tenancy.app_role;
    let admin = &schema.tenancy.admin_role;
    let tx = client.transaction().await.map_err(pg_error)?;
    let acting_as = match case.who {
        Who::Tenant(g) => {
            as_tenant(&tx, schema, g.id).await?;
            format!("{app} in {}'s context", g.slug)
        }
        Who::NoContext => {
            set_role(&tx, app).await?;
            format!("{app}, no context")
        }
        Who::Admin => {
            set_role(&tx, admin).await?;
            admin.to_string()
        }
    };
    let seen: i64 = match case.filter {
        Some(g) => tx
            .query_typed_one(&sql::count_rows(schema, table, Some(column)), typed![g.id])
            .await
            .map_err(pg_error)?
            .get(0),
        None => tx
            .query_typed_one(&sql::count_rows(schema, table, None), &[])
            .await
            .map_err(pg_error)?
            .get(0),
    };
    tx.rollback().await.map_err(pg_error)?;
    let shown_filter = case.filter.map(|g| (column, g.slug.as_str()));
    Ok(Scenario {
        scenario: case.scenario,
        acting_as,
        query: sql::shown_count(table, shown_filter),
        rows_seen: Some(seen),
        expected: format!("{} rows", case.expected),
        outcome: format!("{seen} rows"),
        holds: seen == case.expected,
    })
}

/// An insert carrying gym B's id, made in gym A's context, must be rejected by WITH CHECK.
async fn foreign_insert(
    client: &mut Client,
    schema: &Schema,
    column: &str,
    a: &Tenant,
    b: &Tenant,
) -> Result<Scenario> {
    let table = seed::MEMBERS;
    let tx = client.transaction().await.map_err(pg_error)?;
    as_tenant(&tx, schema, a.id).await?;
    let insert = sql::insert_foreign_member(schema, table, column);
    let result = tx.execute_typed(&insert, typed![b.id]).await;
    tx.rollback().await.map_err(pg_error)?;
    let (outcome, holds) = match result {
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => (
            format!(
                "rejected: {}",
                e.as_db_error()
                    .map_or(String::new(), |d| d.message().to_string())
            ),
            true,
        ),
        Err(e) => (format!("failed otherwise: {:#}", pg_error(e)), false),
        Ok(_) => ("ACCEPTED".to_string(), false),
    };
    Ok(Scenario {
        scenario: format!("{} inserts a member carrying {}'s id", a.name, b.name),
        acting_as: format!("{} in {}'s context", schema.tenancy.app_role, a.slug),
        query: sql::shown_foreign_member(table, column, &b.slug),
        rows_seen: None,
        expected: "rejected".to_string(),
        outcome,
        holds,
    })
}
