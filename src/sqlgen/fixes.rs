//! SQL text that `verify` suggests as the fix of a finding, or as the grant it needs: names
//! quoted, so that a fix for a hostile name can be pasted as it is.

use super::{q, qlist, rel};

/// Revoke an undeclared relation from the app role and PUBLIC (or declare it).
pub fn fix_revoke_undeclared(schema: &str, name: &str, app: &str) -> String {
    let app = q(app);
    format!(
        "REVOKE ALL ON {} FROM {app}, PUBLIC (and from the roles {app} is a member of), or declare it in policies/",
        rel(schema, name)
    )
}

/// Drop a rule from a tenant table.
pub fn fix_drop_rule(rule: &str, schema: &str, table: &str) -> String {
    format!("DROP RULE {} ON {}", q(rule), rel(schema, table))
}

/// Drop a trigger from a tenant table.
pub fn fix_drop_trigger(trigger: &str, schema: &str, table: &str) -> String {
    format!("DROP TRIGGER {} ON {}", q(trigger), rel(schema, table))
}

/// Give a table back to the owner role.
pub fn fix_table_owner(schema: &str, table: &str, owner: &str) -> String {
    format!("ALTER TABLE {} OWNER TO {}", rel(schema, table), q(owner))
}

/// Give a schema back to the owner role.
pub fn fix_schema_owner(schema: &str, owner: &str) -> String {
    format!("ALTER SCHEMA {} OWNER TO {}", q(schema), q(owner))
}

/// Give a function without arguments back to the owner role.
pub fn fix_function_owner(schema: &str, function: &str, owner: &str) -> String {
    format!(
        "ALTER FUNCTION {}() OWNER TO {}",
        rel(schema, function),
        q(owner)
    )
}

/// Take an attribute (`NOSUPERUSER`, `NOBYPASSRLS`, `NOCREATEROLE`) from a role.
pub fn fix_alter_role(role: &str, attribute: &str) -> String {
    format!("ALTER ROLE {} {attribute}", q(role))
}

/// Revoke membership in `roles` from `member`.
pub fn fix_revoke_roles(roles: &[String], member: &str) -> String {
    format!("REVOKE {} FROM {}", qlist(roles), q(member))
}

/// Take CREATEROLE from `role`, which the app role is a member of (or the membership).
pub fn fix_member_createrole(role: &str, app: &str) -> String {
    format!(
        "{}, or {}",
        fix_alter_role(role, "NOCREATEROLE"),
        fix_revoke_roles(&[role.to_string()], app)
    )
}

/// The grant that lets `user` SET ROLE to `roles` (Postgres `version`: on 16 and later, without
/// inheriting their rights).
pub fn grant_set_role(roles: &[String], user: &str, version: i32) -> String {
    let (roles, user) = (qlist(roles), q(user));
    if version >= 160000 {
        format!("GRANT {roles} TO {user} WITH INHERIT FALSE, SET TRUE;")
    } else {
        format!("GRANT {roles} TO {user};")
    }
}
