//! Role checks: declared roles as declared, and the app role neither privileged itself nor
//! reaching privilege through the roles it is a member of or the roles granted it.

use crate::pg::unnamed::typed;
use std::collections::BTreeMap;

use anyhow::Result;
use tokio_postgres::Client;

use super::{col, query};
use crate::model::{AdminBypass, Schema};
use crate::sqlgen;
use crate::verify::{Finding, Tally};

const ROLES: &str = "
SELECT rolname::text AS name, rolsuper AS superuser, rolbypassrls AS bypassrls, rolcanlogin AS login,
       rolcreaterole AS createrole
FROM pg_catalog.pg_roles WHERE rolname = ANY($1)";

/// Every role the app role is a member of, directly or through other roles.
const APP_MEMBERSHIPS: &str = "
WITH RECURSIVE up(roleid) AS (
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.member
    WHERE r.rolname = $1
  UNION
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN up ON m.member = up.roleid
)
SELECT r.rolname::text AS name, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls, false AS login,
       r.rolcreaterole AS createrole
FROM up JOIN pg_catalog.pg_roles r ON r.oid = up.roleid
ORDER BY 1";

/// Predefined roles that reach past row-level security or out to the server's files and programs.
const PREDEFINED: &[&str] = &[
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_read_all_data",
    "pg_write_all_data",
];

/// Every role granted the app role, directly or through other roles (the application's login
/// roles), except the role verify runs as (the migrator) and the owner and admin roles ($2):
/// its attributes and which of $2 it is also a member of.
const APP_GRANTEES: &str = "
WITH RECURSIVE down(member) AS (
    SELECT m.member FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
    WHERE r.rolname = $1
  UNION
    SELECT m.member FROM pg_catalog.pg_auth_members m JOIN down ON m.roleid = down.member
)
SELECT r.rolname::text AS name, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls,
       ARRAY(SELECT o.rolname::text FROM pg_catalog.pg_roles o
             WHERE o.rolname = ANY($2) AND pg_catalog.pg_has_role(r.oid, o.oid, 'MEMBER') ORDER BY 1) AS also
FROM down JOIN pg_catalog.pg_roles r ON r.oid = down.member
WHERE r.rolname <> ALL($2) AND r.rolname <> current_user AND r.rolname <> session_user
ORDER BY 1";

const OWNED: &str = "
SELECT pg_catalog.pg_describe_object(s.classid, s.objid, s.objsubid) AS object
FROM pg_catalog.pg_shdepend s
WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.deptype = 'o'
  AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)
  AND s.dbid IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
ORDER BY 1";

typed_row! {
    /// A live role's attributes (a row of [`ROLES`] or [`APP_MEMBERSHIPS`]).
    #[derive(Debug, Clone, Default)]
    pub(super) struct LiveRole {
        pub name: String,
        pub superuser: bool,
        pub bypassrls: bool,
        pub login: bool,
        pub createrole: bool,
    }
}

typed_row! {
    /// A role granted the app role (a row of [`APP_GRANTEES`]).
    struct Grantee {
        name: String,
        superuser: bool,
        bypassrls: bool,
        /// Which of the owner and admin roles it is also a member of.
        also: Vec<String>,
    }
}

pub(super) async fn check(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let t = &schema.tenancy;
    let live = live_roles(client, schema).await?;
    declared(schema, &live, tally);
    let app = live.get(&t.app_role).cloned().unwrap_or_default();
    app_attributes(schema, &app, tally);
    app_owns(client, schema, tally).await?;
    tally.pass("role.app-membership");
    let memberships = app_memberships(client, schema).await?;
    app_createrole(schema, &app, &memberships, tally);
    app_membership(schema, &memberships, tally);
    app_grantees(client, schema, tally).await?;
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

/// role.app-superuser and role.app-bypassrls.
fn app_attributes(schema: &Schema, app: &LiveRole, tally: &mut Tally) {
    let name = &schema.tenancy.app_role;
    let obj = format!("role {name}");
    tally.record(
        "role.app-superuser",
        app.superuser
            .then(|| Finding::new("role.app-superuser", &obj, format!("{name} is a superuser"))),
    );
    tally.record(
        "role.app-bypassrls",
        app.bypassrls
            .then(|| Finding::new("role.app-bypassrls", &obj, format!("{name} has BYPASSRLS"))),
    );
}

/// role.app-owns: the app role owns nothing.
async fn app_owns(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let app = &schema.tenancy.app_role;
    let what = "cannot read object owners";
    let owned: Vec<String> = query(client, OWNED, typed![app], what, |r| col(r, "object")).await?;
    tally.pass("role.app-owns");
    for o in owned {
        tally.fail(Finding::new(
            "role.app-owns",
            format!("role {app}"),
            format!("{app} owns {o}"),
        ));
    }
    Ok(())
}

/// role.app-createrole: CREATEROLE lets a role grant itself (on Postgres 15) any non-superuser
/// role: the admin role.
fn app_createrole(schema: &Schema, app: &LiveRole, memberships: &[LiveRole], tally: &mut Tally) {
    let t = &schema.tenancy;
    let name = &t.app_role;
    let creators: Vec<&str> = (app.createrole.then_some(name.as_str()).into_iter())
        .chain(
            memberships
                .iter()
                .filter(|m| m.createrole)
                .map(|m| m.name.as_str()),
        )
        .collect();
    tally.pass("role.app-createrole");
    for c in creators {
        let via = if c == name {
            String::new()
        } else {
            format!(", which {name} is a member of")
        };
        tally.fail(
            Finding::new(
                "role.app-createrole",
                format!("role {c}"),
                format!(
                    "{c}{via} has CREATEROLE: {name} can grant itself {} or {}",
                    t.admin_role, t.owner_role
                ),
            )
            .hint(if c == name {
                sqlgen::fix_alter_role(c, "NOCREATEROLE")
            } else {
                sqlgen::fix_member_createrole(c, name)
            }),
        );
    }
}

/// role.app-membership: the app role is no member of a role that bypasses the policies.
fn app_membership(schema: &Schema, memberships: &[LiveRole], tally: &mut Tally) {
    let t = &schema.tenancy;
    let app = &t.app_role;
    for m in memberships {
        let role = &m.name;
        let why = if *role == t.owner_role {
            Some("the owner role (owners bypass RLS unless forced, and can disable it)")
        } else if *role == t.admin_role {
            Some("the admin role")
        } else if m.superuser {
            Some("a superuser role")
        } else if m.bypassrls {
            Some("a BYPASSRLS role")
        } else if PREDEFINED.contains(&role.as_str()) {
            Some("a predefined role that reaches every table or the server's files and programs")
        } else {
            None
        };
        if let Some(why) = why {
            tally.fail(Finding::new(
                "role.app-membership",
                format!("role {app}"),
                format!("{app} is a member of {role}, {why}"),
            ));
        }
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

/// The roles granted the app role (the application's login roles) must not carry more than it:
/// a superuser or BYPASSRLS login, or one that is also admin or owner, skips the policies.
async fn app_grantees(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let t = &schema.tenancy;
    let app = &t.app_role;
    let others = vec![t.owner_role.clone(), t.admin_role.clone()];
    tally.pass("role.app-grantee");
    let what = "cannot read the roles granted the app role";
    for g in query(
        client,
        APP_GRANTEES,
        typed![app, &others],
        what,
        Grantee::from_row,
    )
    .await?
    {
        let mut why = Vec::new();
        let mut fix = Vec::new();
        if g.superuser {
            why.push("is a superuser".to_string());
            fix.push(sqlgen::fix_alter_role(&g.name, "NOSUPERUSER"));
        }
        if g.bypassrls {
            why.push("has BYPASSRLS".to_string());
            fix.push(sqlgen::fix_alter_role(&g.name, "NOBYPASSRLS"));
        }
        if !g.superuser && !g.also.is_empty() {
            why.push(format!("is also a member of {}", g.also.join(" and ")));
            fix.push(sqlgen::fix_revoke_roles(&g.also, &g.name));
        }
        if why.is_empty() {
            continue;
        }
        let role = &g.name;
        tally.fail(
            Finding::new(
                "role.app-grantee",
                format!("role {role}"),
                format!(
                    "{role} is granted {app} and {}: its sessions skip {app}'s policies",
                    why.join(", ")
                ),
            )
            .hint(fix.join("; ")),
        );
    }
    Ok(())
}
