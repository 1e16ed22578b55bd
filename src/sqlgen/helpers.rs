//! The helper objects tenantctl owns in every database: the context function and the trigger
//! function that keeps the tenant id immutable; and the roles, memberships and schema privilege
//! that the migrating role needs, in a form that a non-superuser owner can run on PG 14 to 18.

use super::*;
use crate::ident::{dollar_quote, literal};
use crate::model::Tenancy;

/// Name of the trigger that keeps the tenant id immutable. It sorts last among BEFORE triggers
/// (which fire in name order), so no other trigger can change the tenant id after the check.
pub const IMMUTABILITY_TRIGGER: &str = "zzz_tenantctl_tenant_immutable";

pub fn context_function(t: &Tenancy) -> String {
    format!("{}.{}", q(&t.helper_schema), q(&t.context_function))
}

pub fn trigger_function(t: &Tenancy) -> String {
    format!("{}.{}", q(&t.helper_schema), q("forbid_tenant_change"))
}

/// The context function's body. `verify` compares the live function's source with it: any
/// other body (a COALESCE, a default tenant) may fail open.
pub fn context_function_body(t: &Tenancy) -> String {
    // The cast names pg_catalog: the function is inlined, so its body is parsed with the
    // caller's search_path, where an unqualified `uuid` would find a type of the caller's own
    // first (pg_temp is searched first for types). NULLIF's `=` is the caller's to choose too,
    // and can only make the result NULL (no rows) or the setting itself.
    context_body_casting_to(t, "pg_catalog.uuid")
}

/// The context function's body before helpers revision 2, safe only with its pinned
/// `search_path` (which kept it from being inlined); `verify` accepts it only so.
pub fn context_function_body_v1(t: &Tenancy) -> String {
    context_body_casting_to(t, "uuid")
}

fn context_body_casting_to(t: &Tenancy, ty: &str) -> String {
    format!(
        " SELECT NULLIF(pg_catalog.current_setting({}, true), '')::{ty} ",
        literal(&t.context_setting)
    )
}

/// The immutability trigger function's body (compared by `verify` like the context function's).
pub fn trigger_function_body() -> String {
    format!(
        "\nBEGIN\n    IF to_jsonb(NEW) -> TG_ARGV[0] IS DISTINCT FROM to_jsonb(OLD) -> TG_ARGV[0] THEN\n        RAISE EXCEPTION 'tenant id is immutable: %.% cannot change', TG_TABLE_NAME, TG_ARGV[0]\n            USING ERRCODE = {}, HINT = 'rows never move between tenants: insert a new row for the other tenant instead';\n    END IF;\n    RETURN NEW;\nEND\n",
        literal(TENANT_IMMUTABLE_SQLSTATE)
    )
}

/// A call of the context function: the tenant column's default.
pub fn context_call(t: &Tenancy) -> String {
    format!("{}()", context_function(t))
}

/// The generated tenant isolation policy's USING and WITH CHECK expression. The call sits in a
/// sub-select so that Postgres can evaluate it once per statement (an InitPlan), not per row.
pub fn tenant_isolation_expr(t: &Tenancy, tenant_column: &str) -> String {
    format!("({} = (SELECT {}))", q(tenant_column), context_call(t))
}

/// The server version from which role memberships carry INHERIT and SET options (PG 16).
pub const MEMBERSHIP_OPTIONS_VERSION: i32 = 160_000;

/// A `DO` block: statements that decide at run time, so that the same policies give the same
/// bytes whatever the server.
pub(super) fn do_block(body: &str) -> String {
    format!("DO {};", dollar_quote(&format!("\nBEGIN\n{body}END\n")))
}

/// `role` exists and, if given, `attribute` (a `pg_roles` column) is true for it.
fn role_has(role: &str, attribute: Option<&str>) -> String {
    let and = attribute.map(|a| format!(" AND {a}")).unwrap_or_default();
    format!(
        "EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {}{and})",
        literal(role)
    )
}

/// Create `role` (NOLOGIN) unless it exists, then give it each of `attributes` (login,
/// bypassrls) where it differs: `ALTER ROLE ... BYPASSRLS` is a superuser's on PG 14/15 even when
/// it changes nothing, and PG 16+ wants ADMIN on a role to alter it, so what already holds is
/// never said again.
pub fn ensure_role(role: &str, attributes: Option<(bool, bool)>) -> String {
    let mut body = format!(
        "    IF NOT {} THEN\n        {};\n    END IF;\n",
        role_has(role, None),
        create_role(role, false)
    );
    if let Some((login, bypassrls)) = attributes {
        for (column, want, on, off) in [
            ("rolcanlogin", login, "LOGIN", "NOLOGIN"),
            ("rolbypassrls", bypassrls, "BYPASSRLS", "NOBYPASSRLS"),
        ] {
            let (test, attr) = if want { ("NOT ", on) } else { ("", off) };
            body.push_str(&format!(
                "    IF {test}{} THEN\n        {};\n    END IF;\n",
                role_has(role, Some(column)),
                alter_role(role, attr)
            ));
        }
    }
    do_block(&body)
}

/// The memberships the migrating role needs, each granted only where it lacks it: the owner
/// role's privileges (to hand objects to it and change what it owns), and SET ROLE to the app and
/// admin roles (`verify` and `tenant` act as them) without inheriting theirs where the server can
/// say so (PG 16+). A superuser has them all already, so it gets none.
pub fn migrator_memberships(owner: &str, acting: &[&String]) -> String {
    let owner = [owner.to_string()];
    let owner: Vec<&String> = owner.iter().collect();
    let branch = |pg16: bool| {
        let [owns, sets] = membership_grants(&owner, acting, "CURRENT_USER", pg16);
        let (owns, sets) = if pg16 {
            (
                format!("EXECUTE {}", literal(&owns)),
                format!("EXECUTE {}", literal(&sets)),
            )
        } else {
            (owns, sets)
        };
        let (owner_needs, set): (&[&str], &str) = if pg16 {
            (&["USAGE", "SET"], "SET")
        } else {
            (&["USAGE"], "MEMBER")
        };
        format!(
            "        IF NOT {} THEN\n            {owns};\n        END IF;\n        IF NOT {} THEN\n            {sets};\n        END IF;\n",
            has_roles(&owner, owner_needs),
            has_roles(acting, &[set]),
        )
    };
    // The PG 16 syntax is in EXECUTE strings: PL/pgSQL checks the syntax of its statements when
    // the block is compiled, and PG 14/15 do not know WITH INHERIT / SET.
    do_block(&format!(
        "    IF pg_catalog.current_setting('server_version_num')::int >= {MEMBERSHIP_OPTIONS_VERSION} THEN\n{}    ELSE\n{}    END IF;\n",
        branch(true),
        branch(false)
    ))
}

/// The current user holds each of `privileges` (`pg_has_role`'s) on each of `roles`.
fn has_roles(roles: &[&String], privileges: &[&str]) -> String {
    let tests: Vec<String> = roles
        .iter()
        .flat_map(|r| {
            privileges
                .iter()
                .map(move |p| format!("pg_catalog.pg_has_role({}, '{p}')", literal(r)))
        })
        .collect();
    format!("({})", tests.join(" AND "))
}

/// `GRANT owner TO member ...` and `GRANT acting TO member ...` (`member` is SQL: `CURRENT_USER`
/// or a quoted name), in the PG 16+ form with options when `pg16`.
pub fn membership_grants(
    owner: &[&String],
    acting: &[&String],
    member: &str,
    pg16: bool,
) -> [String; 2] {
    let (owns, sets) = if pg16 {
        (
            " WITH INHERIT TRUE, SET TRUE",
            " WITH INHERIT FALSE, SET TRUE",
        )
    } else {
        ("", "")
    };
    [
        format!("GRANT {} TO {member}{owns}", qlist(owner.iter().copied())),
        format!("GRANT {} TO {member}{sets}", qlist(acting.iter().copied())),
    ]
}

/// CREATE on the tables' schema for the owner role, which `ALTER TABLE ... OWNER TO` demands of
/// the new owner (PG 15+ no longer grants it on `public` to everyone); only where it lacks it.
pub fn owner_schema_create(schema: &str, owner: &str) -> String {
    do_block(&format!(
        "    IF NOT pg_catalog.has_schema_privilege({}, {}, 'CREATE') THEN\n        {};\n    END IF;\n",
        literal(owner),
        literal(schema),
        grant_create_on("SCHEMA", schema, owner)
    ))
}

/// `CREATE ROLE role NOLOGIN [BYPASSRLS]` (no `;`).
pub fn create_role(role: &str, bypassrls: bool) -> String {
    let bypass = if bypassrls { " BYPASSRLS" } else { "" };
    format!("CREATE ROLE {} NOLOGIN{bypass}", q(role))
}

/// `ALTER ROLE role ATTRIBUTE` (no `;`); `attribute` is a keyword such as `BYPASSRLS`.
pub fn alter_role(role: &str, attribute: &str) -> String {
    format!("ALTER ROLE {} {attribute}", q(role))
}

/// `GRANT CREATE ON SCHEMA|DATABASE object TO role` (no `;`).
pub fn grant_create_on(kind: &str, object: &str, role: &str) -> String {
    format!("GRANT CREATE ON {kind} {} TO {}", q(object), q(role))
}

/// `ALTER TABLE schema.table OWNER TO role` (no `;`).
pub fn alter_table_owner(schema: &str, table: &str, role: &str) -> String {
    format!("ALTER TABLE {} OWNER TO {}", rel(schema, table), q(role))
}
