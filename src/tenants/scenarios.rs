//! The release note's isolation scenarios, run live: the same member query as gym A, as gym B,
//! with the application's WHERE forgotten, as the platform admin, with no context, and an
//! insert carrying another gym's id. Each says what it saw and whether isolation held.

use anyhow::{bail, Result};
use postgres_protocol::escape::escape_identifier;
use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::model::Schema;
use crate::pg;
use crate::tenants::seed;
use crate::tenants::{self, pg_error, qualified, Tenant};

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
    let target = qualified(schema, table);
    let col = escape_identifier(&t.tenant_column);
    let shown_col = &t.tenant_column;
    let count_a = a.rows.get(table).copied().unwrap_or(0);
    let count_b = b.rows.get(table).copied().unwrap_or(0);
    let mut client = pg::connect(url).await?;
    let app = &schema.tenancy.app_role;
    let admin = &schema.tenancy.admin_role;

    // (scenario, who, shown query, filter gym, expected count)
    let cases: Vec<(String, Who, String, Option<&Tenant>, i64)> = vec![
        (
            format!("{} queries its members", a.name),
            Who::Tenant(a),
            format!(
                "SELECT count(*) FROM {table} WHERE {shown_col} = <{}>",
                a.slug
            ),
            Some(a),
            count_a,
        ),
        (
            format!("{} queries its members", b.name),
            Who::Tenant(b),
            format!(
                "SELECT count(*) FROM {table} WHERE {shown_col} = <{}>",
                b.slug
            ),
            Some(b),
            count_b,
        ),
        (
            format!("{} asks for {}'s members", a.name, b.name),
            Who::Tenant(a),
            format!(
                "SELECT count(*) FROM {table} WHERE {shown_col} = <{}>",
                b.slug
            ),
            Some(b),
            0,
        ),
        (
            "The application forgets WHERE gym_id = ?".to_string(),
            Who::Tenant(a),
            format!("SELECT count(*) FROM {table}"),
            None,
            count_a,
        ),
        (
            "No tenant context set".to_string(),
            Who::NoContext,
            format!("SELECT count(*) FROM {table}"),
            None,
            0,
        ),
        (
            "The platform admin queries all members".to_string(),
            Who::Admin,
            format!("SELECT count(*) FROM {table}"),
            None,
            all_members,
        ),
    ];
    let mut out = Vec::new();
    for (scenario, who, shown, filter, expected) in cases {
        let tx = client.transaction().await.map_err(pg_error)?;
        let acting_as = match who {
            Who::Tenant(g) => {
                tenants::as_tenant(&tx, schema, g.id).await?;
                format!("{app} in {}'s context", g.slug)
            }
            Who::NoContext => {
                tenants::set_role(&tx, app).await?;
                format!("{app}, no context")
            }
            Who::Admin => {
                tenants::set_role(&tx, admin).await?;
                admin.to_string()
            }
        };
        let seen: i64 = match filter {
            Some(g) => tx
                .query_one(
                    &format!("SELECT count(*) FROM {target} WHERE {col} = $1"),
                    &[&g.id],
                )
                .await
                .map_err(pg_error)?
                .get(0),
            None => tx
                .query_one(&format!("SELECT count(*) FROM {target}"), &[])
                .await
                .map_err(pg_error)?
                .get(0),
        };
        tx.rollback().await.map_err(pg_error)?;
        out.push(Scenario {
            scenario,
            acting_as,
            query: shown,
            rows_seen: Some(seen),
            expected: format!("{expected} rows"),
            outcome: format!("{seen} rows"),
            holds: seen == expected,
        });
    }

    // An insert carrying gym B's id, made in gym A's context, must be rejected by WITH CHECK.
    let tx = client.transaction().await.map_err(pg_error)?;
    tenants::as_tenant(&tx, schema, a.id).await?;
    let insert = format!(
        "INSERT INTO {target} ({col}, {}, {}) VALUES ($1, 'Mallory', 'mallory@example.com')",
        escape_identifier("full_name"),
        escape_identifier("email")
    );
    let result = tx.execute(&insert, &[&b.id]).await;
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
    out.push(Scenario {
        scenario: format!("{} inserts a member carrying {}'s id", a.name, b.name),
        acting_as: format!("{app} in {}'s context", a.slug),
        query: format!(
            "INSERT INTO {table} ({col}, ...) VALUES (<{}>, ...)",
            b.slug
        ),
        rows_seen: None,
        expected: "rejected".to_string(),
        outcome,
        holds,
    });
    Ok(out)
}
