//! Parsed policy files to the model, one concern a step: tenancy, roles, tables (columns, then
//! relations and grants), policies. Every step records all its problems and goes on, so that one
//! run reports everything it can.

use std::collections::BTreeMap;

use toml::Spanned;

use super::diagnostics::{PolicyError, Seen};
use super::raw::{Parsed, RawTable};
use crate::model::Schema;

mod checks;
mod columns;
mod extensions;
mod globals;
mod grants;
mod partitions;
mod policies;
mod relations;
mod roles;
mod tables;
mod tenancy;
mod views;

/// The `[role_names]` of tenantctl.toml: the physical name of each role the policies declare.
pub(crate) struct RoleNames<'a>(pub(crate) &'a BTreeMap<String, String>);

impl RoleNames<'_> {
    fn physical(&self, name: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

/// A table declared (once) in a policy file, before it is compiled.
struct Declared<'a> {
    file: &'a Parsed,
    key: &'a Spanned<String>,
    raw: &'a Spanned<RawTable>,
    name: String,
}

/// Every table declared across the files, and where each was first declared.
struct DeclaredTables<'a> {
    tables: Vec<Declared<'a>>,
    seen: BTreeMap<String, Seen>,
}

pub(crate) fn compile(
    files: &[Parsed],
    role_names: &RoleNames<'_>,
    errors: &mut Vec<PolicyError>,
) -> Option<Schema> {
    let tenancy = tenancy::compile(files, role_names, errors)?;
    let roles = roles::compile(files, &tenancy, role_names, errors);
    let declared = tables::declare(files, errors);
    if !tables::tenant_table_declared(files, &tenancy, &declared, errors) {
        return None;
    }
    let mut tables = tables::compile(&declared, &tenancy, &roles, role_names, errors);
    policies::compile(files, &mut tables, &declared, &roles, role_names, errors);
    tables::check_manual_isolation(&declared, &tables, &tenancy, errors);
    let grant_ctx = grants::Ctx {
        tenancy: &tenancy,
        roles: &roles,
        role_names,
    };
    let views = views::compile(files, &declared, &tables, &grant_ctx, errors);
    let extensions = extensions::compile(files, &roles, role_names, errors);
    let allow = super::allow::compile(files, errors);
    if !errors.is_empty() {
        return None;
    }
    let (globals, tables) = tables.into_iter().partition(|(_, t)| t.global);
    Some(Schema {
        tenancy,
        roles,
        tables,
        globals,
        views,
        extensions,
        allow,
        target: Default::default(),
    })
}

#[cfg(test)]
mod tests;
