//! Role checks: declared roles as declared, and the admin role's bypass. What the roles that can
//! act as the application may do is the closure's (`closure.rs`).

use crate::pg::unnamed::typed;
use std::collections::BTreeMap;

use anyhow::Result;
use tokio_postgres::Client;

use super::query;
use crate::model::{AdminBypass, Schema};
use crate::verify::{Finding, Tally};

const ROLES: &str = "
SELECT rolname::text AS name, rolsuper AS superuser, rolbypassrls AS bypassrls, rolcanlogin AS login
FROM pg_catalog.pg_roles WHERE rolname = ANY($1)";

/// Every role the app role is a member of, directly or through other roles.
const APP_MEMBERSHIPS: &str = "
WITH RECURSIVE up(roleid) AS (
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.member
    WHERE r.rolname = $1
  UNION
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN up ON m.member = up.roleid
)
SELECT r.rolname::text AS name, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls, false AS login
FROM up JOIN pg_catalog.pg_roles r ON r.oid = up.roleid
ORDER BY 1";

typed_row! {
    /// A live role's attributes (a row of [`ROLES`] or [`APP_MEMBERSHIPS`]).
    #[derive(Debug, Clone, Default)]
    pub(super) struct LiveRole {
        pub name: String,
        pub superuser: bool,
        pub bypassrls: bool,
        pub login: bool,
    }
}

pub(super) async fn check(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let live = live_roles(client, schema).await?;
    declared(schema, &live, tally);
    admin_bypassrls(schema, &live, tally);
    Ok(())
}

/// The declared roles and the app, admin and owner roles, as they are.
async fn live_roles(client: &Client, schema: &Schema) -> Result<BTreeMap<String, LiveRole>> {
    let t = &schema.tenancy;
    let mut names: Vec<&String> = schema.roles.keys().collect();
    for r in [&t.app_role, &t.admin_role, &t.owner_role] {
        if !names.contains(&r) {
            names.push(r);
        }
    }
    let roles = query(
        client,
        ROLES,
        typed![&names],
        "cannot read roles",
        LiveRole::from_row,
    )
    .await?;
    Ok(roles.into_iter().map(|r| (r.name.clone(), r)).collect())
}

fn login(yes: bool) -> &'static str {
    if yes {
        "LOGIN"
    } else {
        "NOLOGIN"
    }
}

fn bypassrls(yes: bool) -> &'static str {
    if yes {
        "BYPASSRLS"
    } else {
        "NOBYPASSRLS"
    }
}

/// drift.role: every declared role exists with its LOGIN and BYPASSRLS as declared.
fn declared(schema: &Schema, live: &BTreeMap<String, LiveRole>, tally: &mut Tally) {
    for (name, role) in &schema.roles {
        let obj = format!("role {name}");
        let finding = match live.get(name) {
            None => Some(Finding::new(
                "drift.role",
                &obj,
                format!("role {name} is declared but does not exist"),
            )),
            Some(l) if l.bypassrls != role.bypassrls || l.login != role.login => {
                Some(Finding::new(
                    "drift.role",
                    &obj,
                    format!(
                        "role {name} is {} {}, declared {} {}",
                        login(l.login),
                        bypassrls(l.bypassrls),
                        login(role.login),
                        bypassrls(role.bypassrls),
                    ),
                ))
            }
            Some(_) => None,
        };
        tally.record("drift.role", finding);
    }
}

/// role.admin-bypass with `admin_bypass = "bypassrls"`: the admin role has BYPASSRLS.
fn admin_bypassrls(schema: &Schema, live: &BTreeMap<String, LiveRole>, tally: &mut Tally) {
    let t = &schema.tenancy;
    if t.admin_bypass != AdminBypass::Bypassrls {
        return;
    }
    let has = live
        .get(&t.admin_role)
        .is_some_and(|l| l.bypassrls || l.superuser);
    tally.record(
        "role.admin-bypass",
        (!has).then(|| {
            Finding::new(
                "role.admin-bypass",
                format!("role {}", t.admin_role),
                format!(
                    "{} has no BYPASSRLS (admin_bypass = \"bypassrls\")",
                    t.admin_role
                ),
            )
        }),
    );
}

/// Every role the app role is a member of, directly or transitively.
pub(super) async fn app_memberships(client: &Client, schema: &Schema) -> Result<Vec<LiveRole>> {
    let app = &schema.tenancy.app_role;
    let what = "cannot read role memberships";
    query(
        client,
        APP_MEMBERSHIPS,
        typed![app],
        what,
        LiveRole::from_row,
    )
    .await
}
