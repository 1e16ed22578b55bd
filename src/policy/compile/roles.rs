//! Roles: the three of `[tenancy]` always exist; files may declare more, or set LOGIN.

use std::collections::BTreeMap;

use toml::Spanned;

use super::RoleNames;
use crate::ident::Ident;
use crate::model::{AdminBypass, Role, Tenancy};
use crate::policy::diagnostics::{PolicyError, Seen, Sink};
use crate::policy::raw::Parsed;

pub(super) fn compile(
    files: &[Parsed],
    tenancy: &Tenancy,
    role_names: &RoleNames<'_>,
    errors: &mut Vec<PolicyError>,
) -> BTreeMap<String, Role> {
    let mut roles = builtin(tenancy);
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for p in files {
        let mut sink = p.sink(errors);
        for (key, raw) in &p.file.roles {
            let Some(name) = declared_name(&mut sink, key, &mut seen, role_names) else {
                continue;
            };
            let login = raw.get_ref().login;
            let builtin = [&tenancy.app_role, &tenancy.admin_role, &tenancy.owner_role];
            if login && builtin.contains(&&name) {
                sink.err(
                    raw.span(),
                    format!("role {name} is one of tenancy's roles and must stay NOLOGIN"),
                    "create a login role for the application and GRANT the app role to it",
                );
                continue;
            }
            let entry = roles.entry(name).or_insert(Role {
                source: p.source.clone(),
                login: false,
                bypassrls: false,
            });
            entry.login = login;
        }
    }
    roles
}

fn builtin(tenancy: &Tenancy) -> BTreeMap<String, Role> {
    let admin_bypasses = tenancy.admin_bypass == AdminBypass::Bypassrls;
    [
        (&tenancy.owner_role, false),
        (&tenancy.app_role, false),
        (&tenancy.admin_role, admin_bypasses),
    ]
    .into_iter()
    .map(|(name, bypassrls)| {
        let role = Role {
            source: tenancy.source.clone(),
            login: false,
            bypassrls,
        };
        (name.clone(), role)
    })
    .collect()
}

/// The physical name of a `[roles.<name>]` key, if valid and declared for the first time.
fn declared_name(
    sink: &mut Sink<'_>,
    key: &Spanned<String>,
    seen: &mut BTreeMap<String, Seen>,
    role_names: &RoleNames<'_>,
) -> Option<String> {
    let name = role_names.physical(&sink.name(key, "role")?);
    if let Err(e) = Ident::new(&name) {
        sink.err(
            key.span(),
            format!("role name mapped in tenantctl.toml is invalid: {e}"),
            "",
        );
        return None;
    }
    let what = format!("role {name}");
    sink.first_declaration(
        seen,
        name.clone(),
        key.span(),
        &what,
        "declare each role once",
    )
    .then_some(name)
}

/// A role that a grant or a policy names: its physical name, if valid and declared (else
/// recorded, with `message` given the physical name).
pub(super) fn declared_role(
    sink: &mut Sink<'_>,
    key: &Spanned<String>,
    roles: &BTreeMap<String, Role>,
    role_names: &RoleNames<'_>,
    message: impl FnOnce(&str) -> String,
) -> Option<String> {
    let name = role_names.physical(&sink.name(key, "role")?);
    if roles.contains_key(&name) {
        return Some(name);
    }
    sink.err(
        key.span(),
        message(&name),
        "declare it under [roles.<name>] or use one of tenancy's roles",
    );
    None
}
