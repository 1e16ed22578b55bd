//! A table's `grants`: privileges per declared role. UPDATE becomes column-level on every column
//! but the tenant column and the primary key; privileges RLS does not cover stay away from the app.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::roles::declared_role;
use super::RoleNames;
use crate::model::{Constraint, Grant, Privilege, Role, Table, Tenancy};
use crate::policy::diagnostics::Sink;
use crate::policy::raw::{RawGrants, RawTable};

/// What grants are checked against.
pub(super) struct Ctx<'a> {
    pub(super) tenancy: &'a Tenancy,
    pub(super) roles: &'a BTreeMap<String, Role>,
    pub(super) role_names: &'a RoleNames<'a>,
}

/// Which privileges other than SELECT an object's grants may carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Writes {
    /// A tenant table: row-level security covers every write.
    Allowed,
    /// A global table: shared by every tenant, so the application may only read it.
    NotForApp,
    /// A view: read-only for everyone.
    Never,
}

pub(super) fn compile(r: &RawTable, table: &mut Table, ctx: &Ctx<'_>, sink: &mut Sink<'_>) {
    let update_columns = updatable_columns(table);
    let writes = if table.global {
        Writes::NotForApp
    } else {
        Writes::Allowed
    };
    table.grants = role_grants(&r.grants, &update_columns, writes, ctx, sink);
}

/// `grants.<role> = [...]`: each role declared, each privilege known and allowed to it.
pub(super) fn role_grants(
    raw: &RawGrants,
    update_columns: &BTreeSet<String>,
    writes: Writes,
    ctx: &Ctx<'_>,
    sink: &mut Sink<'_>,
) -> BTreeMap<String, Grant> {
    let mut grants = BTreeMap::new();
    for (role_key, privs) in raw {
        let message = |role: &str| format!("grant to role {role}, which is not declared");
        let Some(role) = declared_role(sink, role_key, ctx.roles, ctx.role_names, message) else {
            continue;
        };
        let mut grant = Grant::default();
        for p in privs.get_ref() {
            let update = p.get_ref().eq_ignore_ascii_case("update");
            let select = p.get_ref().eq_ignore_ascii_case("select");
            if !select && !writable(p, &role, writes, ctx, sink) {
                continue;
            }
            if update {
                grant.update_columns.extend(update_columns.iter().cloned());
            } else if let Some(privilege) = privilege(p, &role, ctx, sink) {
                grant.privileges.insert(privilege);
            }
        }
        grants.insert(role, grant);
    }
    grants
}

/// Whether `role` may be granted the write privilege `p` on an object with `writes` (else
/// recorded).
fn writable(
    p: &Spanned<String>,
    role: &str,
    writes: Writes,
    ctx: &Ctx<'_>,
    sink: &mut Sink<'_>,
) -> bool {
    let (what, hint) = match writes {
        Writes::Allowed => return true,
        Writes::NotForApp if !app_like(role, ctx) => return true,
        Writes::NotForApp => (
            "a global table is shared by every tenant",
            "grant the application only select; the owner or admin role writes it",
        ),
        Writes::Never => ("a view is read-only", "grant only select on a view"),
    };
    sink.err(
        p.span(),
        format!(
            "{} cannot be granted to {role}: {what}",
            p.get_ref().to_ascii_uppercase()
        ),
        hint,
    );
    false
}

/// The app role, or a login role: what the application acts as.
fn app_like(role: &str, ctx: &Ctx<'_>) -> bool {
    role == ctx.tenancy.app_role || ctx.roles.get(role).is_some_and(|r| r.login)
}

/// Every column but the tenant column and the primary key: rows never move between tenants.
fn updatable_columns(table: &Table) -> BTreeSet<String> {
    let in_pk = |name: &String| {
        table
            .constraints
            .values()
            .any(|k| matches!(k, Constraint::PrimaryKey { columns } if columns.contains(name)))
    };
    table
        .columns
        .iter()
        .filter(|c| c.name != table.tenant_column && !in_pk(&c.name))
        .map(|c| c.name.clone())
        .collect()
}

/// A table privilege other than UPDATE, if known and allowed for the role (else recorded).
fn privilege(
    p: &Spanned<String>,
    role: &str,
    ctx: &Ctx<'_>,
    sink: &mut Sink<'_>,
) -> Option<Privilege> {
    let privilege = match p.get_ref().to_ascii_lowercase().as_str() {
        "select" => Privilege::Select,
        "insert" => Privilege::Insert,
        "delete" => Privilege::Delete,
        "truncate" => Privilege::Truncate,
        "references" => Privilege::References,
        "trigger" => Privilege::Trigger,
        other => {
            sink.err(
                p.span(),
                format!("unknown privilege {other:?}"),
                "use select, insert, update or delete",
            );
            return None;
        }
    };
    let uncovered = matches!(
        privilege,
        Privilege::Truncate | Privilege::References | Privilege::Trigger
    );
    if uncovered && app_like(role, ctx) {
        sink.err(
            p.span(),
            format!(
                "{} cannot be granted to {role}: Row-Level Security does not apply to it",
                privilege.sql()
            ),
            "grant only select, insert, update and delete to the application",
        );
        return None;
    }
    Some(privilege)
}
