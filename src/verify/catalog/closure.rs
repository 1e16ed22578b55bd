//! The reachability closure: every login role that can act as the application (a member of the
//! app role, directly or through other roles, with INHERIT or SET) except the operator roles, and
//! every role those logins and the app role can become. Each role in it is checked for what
//! skips or escapes the policies: attributes, memberships, ownership.

use crate::pg::unnamed::typed;

use anyhow::Result;
use tokio_postgres::Client;

use super::{col, query};
use crate::model::Schema;
use crate::sqlgen;
use crate::verify::{Finding, Reach, Tally};

/// Memberships that give privileges or SET ROLE (PostgreSQL 16+ `inherit_option`/`set_option`;
/// before 16 every membership does both: `to_jsonb` reads the options where they exist). The
/// logins below the app role (minus the operators, $2) and the app role itself are the starting
/// points; `reach` is every role they can become, with the logins that can become it.
const CLOSURE: &str = "
WITH RECURSIVE edges AS (
    SELECT m.member, m.roleid FROM pg_catalog.pg_auth_members m
    WHERE coalesce((pg_catalog.to_jsonb(m) ->> 'inherit_option')::bool, true)
       OR coalesce((pg_catalog.to_jsonb(m) ->> 'set_option')::bool, true)
), app AS (
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1
), below(oid) AS (
    SELECT e.member FROM edges e JOIN app ON e.roleid = app.oid
  UNION
    SELECT e.member FROM edges e JOIN below b ON e.roleid = b.oid
), starts AS (
    SELECT oid FROM app
  UNION
    SELECT r.oid FROM pg_catalog.pg_roles r JOIN below b ON b.oid = r.oid
    WHERE r.rolcanlogin AND r.rolname <> ALL($2)
), reach(oid, start) AS (
    SELECT oid, oid FROM starts
  UNION
    SELECT e.roleid, r.start FROM edges e JOIN reach r ON e.member = r.oid
)
SELECT r.oid, r.rolname::text AS name, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls,
       r.rolreplication AS replication, r.rolcreaterole AS createrole, r.rolcreatedb AS createdb,
       r.oid = (SELECT oid FROM app) AS is_app,
       bool_or(reach.start = (SELECT oid FROM app)) AS from_app,
       r.rolcanlogin AND r.oid IN (SELECT oid FROM starts) AS is_login,
       array_agg(DISTINCT s.rolname::text ORDER BY s.rolname::text)
         FILTER (WHERE s.oid <> (SELECT oid FROM app)) AS via
FROM reach JOIN pg_catalog.pg_roles r ON r.oid = reach.oid JOIN pg_catalog.pg_roles s ON s.oid = reach.start
GROUP BY r.oid, r.rolname, r.rolsuper, r.rolbypassrls, r.rolreplication, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin
ORDER BY r.rolname";

/// The operator roles: the declared ones and the role this session runs as.
const OPERATORS: &str = "
SELECT ARRAY(SELECT DISTINCT x FROM unnest($1::text[] || ARRAY[current_user::text, session_user::text]) x ORDER BY 1) AS names";

/// What each role of the closure owns (in this database, or cluster-wide).
const OWNED: &str = "
SELECT pg_catalog.pg_get_userbyid(s.refobjid)::text AS role,
       pg_catalog.pg_describe_object(s.classid, s.objid, s.objsubid) AS object
FROM pg_catalog.pg_shdepend s
WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.deptype = 'o'
  AND s.refobjid = ANY($1)
  AND s.dbid IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
ORDER BY 1, 2";

typed_row! {
    /// A role in the closure (a row of [`CLOSURE`]).
    #[derive(Debug, Clone)]
    pub(super) struct Member {
        pub oid: u32,
        pub name: String,
        superuser: bool,
        bypassrls: bool,
        replication: bool,
        createrole: bool,
        createdb: bool,
        /// The app role itself.
        pub is_app: bool,
        /// The app role can become it (it is the app role or one the app role is a member of).
        from_app: bool,
        /// A login that can act as the application.
        is_login: bool,
        /// The logins (other than the app role) that can become it.
        via: Option<Vec<String>>,
    }
}

typed_row! {
    /// An object a role of the closure owns (a row of [`OWNED`]).
    struct Owned {
        role: String,
        object: String,
    }
}

/// The closure, as the checks of reach, privileges and settings share it.
pub(super) struct Closure {
    pub members: Vec<Member>,
    pub operators: Vec<String>,
}

impl Closure {
    pub(super) async fn read(client: &Client, schema: &Schema, reach: &Reach) -> Result<Closure> {
        let what = "cannot read the operator roles";
        let operators: Vec<Vec<String>> =
            query(client, OPERATORS, typed![&reach.operators], what, |r| {
                col(r, "names")
            })
            .await?;
        let operators = operators.into_iter().flatten().collect::<Vec<_>>();
        let app = &schema.tenancy.app_role;
        let what = "cannot read the roles that can act as the application";
        let members = query(
            client,
            CLOSURE,
            typed![app, &operators],
            what,
            Member::from_row,
        )
        .await?;
        Ok(Closure { members, operators })
    }

    /// The roles' oids, and PUBLIC's (0): whose privileges the closure holds.
    pub(super) fn grantees(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.members.iter().map(|m| m.oid).collect();
        v.push(0);
        v
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }
}

impl Member {
    /// "the app role", or "X (which L can become)".
    fn reached(&self, app: &str) -> String {
        let via = self.via.clone().unwrap_or_default();
        match (self.is_app, self.from_app, self.is_login) {
            (true, _, _) => app.to_string(),
            (_, true, _) => format!("{}, which {app} is a member of", self.name),
            (_, _, true) => format!("{}, a login granted {app}", self.name),
            _ => format!("{}, which {} can become", self.name, via.join(", ")),
        }
    }

    /// The object a finding about this role names: the app role for what it reaches, else the
    /// logins that reach it (as role.app-grantee always did).
    fn objects(&self, app: &str) -> Vec<String> {
        if self.from_app {
            return vec![format!("role {app}")];
        }
        let via = self.via.clone().unwrap_or_default();
        via.iter().map(|l| format!("role {l}")).collect()
    }
}

/// Predefined roles that cannot break isolation: none reads settings (`pg_read_all_settings`
/// reads superuser-only ones such as `primary_conninfo`, a password in it), other sessions'
/// statistics or query texts (`pg_read_all_stats`, `pg_monitor`) or data. Every other `pg_*`
/// role can (or is unknown).
const HARMLESS_PREDEFINED: &[&str] = &[
    "pg_stat_scan_tables",
    "pg_checkpoint",
    "pg_use_reserved_connections",
    "pg_signal_autovacuum_worker",
];

pub(super) async fn check(
    client: &Client,
    schema: &Schema,
    closure: &Closure,
    tally: &mut Tally,
) -> Result<()> {
    for id in [
        "role.app-superuser",
        "role.app-bypassrls",
        "role.app-createrole",
        "role.app-membership",
        "role.app-grantee",
        "role.closure-attribute",
        "role.closure-createdb",
        "role.closure-membership",
    ] {
        tally.pass(id);
    }
    for m in &closure.members {
        attributes(schema, m, tally);
        membership(schema, m, &closure.operators, tally);
    }
    owns(client, schema, closure, tally).await
}

/// SUPERUSER, BYPASSRLS, CREATEROLE, REPLICATION, CREATEDB anywhere in the closure, under the id
/// that always named it (the app role's own, what it is a member of, the logins granted it).
fn attributes(schema: &Schema, m: &Member, tally: &mut Tally) {
    let app = &schema.tenancy.app_role;
    let attrs = [
        (m.superuser, "SUPERUSER", "NOSUPERUSER"),
        (m.bypassrls, "BYPASSRLS", "NOBYPASSRLS"),
        (m.createrole, "CREATEROLE", "NOCREATEROLE"),
        (m.replication, "REPLICATION", "NOREPLICATION"),
        (m.createdb, "CREATEDB", "NOCREATEDB"),
    ];
    for (has, attr, undo) in attrs.into_iter().filter(|a| a.0) {
        let id = match (attr, m.is_app, m.from_app, m.is_login) {
            ("CREATEDB", ..) => "role.closure-createdb",
            ("SUPERUSER", true, ..) => "role.app-superuser",
            ("BYPASSRLS", true, ..) => "role.app-bypassrls",
            ("CREATEROLE", _, true, _) => "role.app-createrole",
            ("SUPERUSER" | "BYPASSRLS", false, true, _) => "role.app-membership",
            ("SUPERUSER" | "BYPASSRLS", false, false, true) => "role.app-grantee",
            _ => "role.closure-attribute",
        };
        debug_assert!(has);
        for obj in m.objects(app) {
            tally.fail(
                Finding::new(
                    id,
                    obj,
                    format!(
                        "{} has {attr}: a session of the application can use it",
                        m.reached(app)
                    ),
                )
                .hint(sqlgen::fix_alter_role(&m.name, undo)),
            );
        }
    }
}

/// The owner, admin and operator roles and the predefined roles that reach past the policies
/// must not be in the closure.
fn membership(schema: &Schema, m: &Member, operators: &[String], tally: &mut Tally) {
    let t = &schema.tenancy;
    let name = m.name.as_str();
    let (id, why) = if name == t.owner_role || name == t.admin_role {
        let id = if m.from_app {
            "role.app-membership"
        } else {
            "role.app-grantee"
        };
        (id, "the owner or admin role")
    } else if operators.iter().any(|o| o == name) {
        ("role.closure-membership", "an operator role")
    } else if name.starts_with("pg_") && !HARMLESS_PREDEFINED.contains(&name) {
        let id = if m.from_app {
            "role.app-membership"
        } else {
            "role.closure-membership"
        };
        (
            id,
            "a predefined role that reaches past the policies, the server's files or other sessions (or is unknown)",
        )
    } else {
        return;
    };
    let app = &t.app_role;
    for obj in m.objects(app) {
        let who = obj.trim_start_matches("role ").to_string();
        tally.fail(Finding::new(
            id,
            &obj,
            format!("{who} can become {name}, {why}"),
        ));
    }
}

/// role.app-owns / role.closure-owns: no role in the closure owns anything (an owner can
/// switch row-level security off, drop policies, grant itself anything on the object).
async fn owns(
    client: &Client,
    schema: &Schema,
    closure: &Closure,
    tally: &mut Tally,
) -> Result<()> {
    let app = &schema.tenancy.app_role;
    let oids: Vec<u32> = closure.members.iter().map(|m| m.oid).collect();
    let what = "cannot read object owners";
    let owned = query(client, OWNED, typed![&oids], what, Owned::from_row).await?;
    tally.pass("role.app-owns");
    tally.pass("role.closure-owns");
    for o in owned {
        let id = if o.role == *app {
            "role.app-owns"
        } else {
            "role.closure-owns"
        };
        tally.fail(Finding::new(
            id,
            format!("role {}", o.role),
            format!("{} owns {}", o.role, o.object),
        ));
    }
    Ok(())
}
