//! The policy statements of a diff: whether a policy changed, and the CREATE or ALTER POLICY
//! that makes it so.

use super::*;
use crate::model::Policy;

/// Equal apart from provenance (moving a policy to another file changes no SQL).
pub(super) fn same_policy(a: &Policy, b: &Policy) -> bool {
    Policy {
        source: String::new(),
        ..a.clone()
    } == Policy {
        source: String::new(),
        ..b.clone()
    }
}

/// Postgres cannot change a policy's command or kind, nor remove a clause, with ALTER POLICY.
pub(super) fn needs_recreate(old: &Policy, new: &Policy) -> bool {
    old.command != new.command
        || old.permissive != new.permissive
        || (old.using.is_some() && new.using.is_none())
        || (old.with_check.is_some() && new.with_check.is_none())
}

pub(super) fn create_policy(table: &str, name: &str, p: &Policy) -> String {
    let kind = if p.permissive {
        "PERMISSIVE"
    } else {
        "RESTRICTIVE"
    };
    let mut s = format!(
        "CREATE POLICY {} ON {}\n    AS {kind} FOR {}\n    TO {}",
        q(name),
        table,
        p.command.sql(),
        qlist(&p.roles)
    );
    if let Some(u) = &p.using {
        s.push_str(&format!("\n    USING ({u})"));
    }
    if let Some(c) = &p.with_check {
        s.push_str(&format!("\n    WITH CHECK ({c})"));
    }
    s.push(';');
    s
}

pub(super) fn alter_policy(table: &str, name: &str, old: &Policy, new: &Policy) -> String {
    let mut s = format!("ALTER POLICY {} ON {}", q(name), table);
    if old.roles != new.roles {
        s.push_str(&format!("\n    TO {}", qlist(&new.roles)));
    }
    if old.using != new.using {
        if let Some(u) = &new.using {
            s.push_str(&format!("\n    USING ({u})"));
        }
    }
    if old.with_check != new.with_check {
        if let Some(c) = &new.with_check {
            s.push_str(&format!("\n    WITH CHECK ({c})"));
        }
    }
    s.push(';');
    s
}
