//! Tables: each declared once across all files; compiled in two passes, columns and keys first
//! (references need their parents' keys), then relations and grants.

use std::collections::BTreeMap;

use super::{columns, grants, partitions, relations, Declared, DeclaredTables, RoleNames};
use crate::model::{Constraint, Role, Table, Tenancy};
use crate::policy::diagnostics::PolicyError;
use crate::policy::raw::{Parsed, RawTable};

/// Every `[tables.<name>]` with a valid name, reporting second declarations.
pub(super) fn declare<'a>(
    files: &'a [Parsed],
    errors: &mut Vec<PolicyError>,
) -> DeclaredTables<'a> {
    let mut declared = DeclaredTables {
        tables: Vec::new(),
        seen: BTreeMap::new(),
    };
    for p in files {
        let mut sink = p.sink(errors);
        for (key, raw) in &p.file.tables {
            let Some(name) = sink.name(key, "table") else {
                continue;
            };
            let what = format!("table {name}");
            let hint = "declare each table once";
            if sink.first_declaration(&mut declared.seen, name.clone(), key.span(), &what, hint) {
                declared.tables.push(Declared {
                    file: p,
                    key,
                    raw,
                    name,
                });
            }
        }
    }
    declared
}

/// The tenant table must be among the declared tables; reported at `tenant_table`.
pub(super) fn tenant_table_declared(
    files: &[Parsed],
    tenancy: &Tenancy,
    declared: &DeclaredTables<'_>,
    errors: &mut Vec<PolicyError>,
) -> bool {
    if declared.seen.contains_key(&tenancy.tenant_table) {
        return true;
    }
    let (raw, p) = files
        .iter()
        .find_map(|p| p.file.tenancy.as_ref().map(|t| (t, p)))
        .expect("tenancy came from a file");
    p.sink(errors).err(
        raw.get_ref().tenant_table.span(),
        format!("the tenant table {} is not declared", tenancy.tenant_table),
        format!(
            "declare [tables.{}] with an `id uuid` primary key",
            tenancy.tenant_table
        ),
    );
    false
}

/// The tables that compiled, with their columns, keys, relations and grants.
pub(super) fn compile(
    declared: &DeclaredTables<'_>,
    tenancy: &Tenancy,
    roles: &BTreeMap<String, Role>,
    role_names: &RoleNames<'_>,
    errors: &mut Vec<PolicyError>,
) -> BTreeMap<String, Table> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let mut pk_of: BTreeMap<String, (String, String)> = BTreeMap::new();
    for d in &declared.tables {
        let mut sink = d.file.sink(errors);
        let Some(t) = columns::compile(d, tenancy, &mut sink) else {
            continue;
        };
        let pk = match t.constraints.get(&format!("{}_pkey", d.name)) {
            Some(Constraint::PrimaryKey { columns }) => columns[columns.len() - 1].clone(),
            _ => continue,
        };
        let ty = t.column(&pk).map(|c| c.ty.clone()).unwrap_or_default();
        pk_of.insert(d.name.clone(), (pk, ty));
        tables.insert(d.name.clone(), t);
    }
    let globals = tables
        .iter()
        .filter(|(_, t)| t.global)
        .map(|(n, _)| n.clone())
        .collect();
    let ctx = relations::RelationCtx {
        tenancy,
        pk_of: &pk_of,
        declared: &declared.seen,
        globals: &globals,
    };
    let mut names = partitions::Names {
        tables: &declared.seen,
        partitions: BTreeMap::new(),
    };
    let grant_ctx = grants::Ctx {
        tenancy,
        roles,
        role_names,
    };
    for d in &declared.tables {
        let mut sink = d.file.sink(errors);
        if let Some(table) = tables.get_mut(&d.name) {
            relations::compile(&d.name, d.raw.get_ref(), table, &ctx, &mut sink);
            partitions::compile(d, table, tenancy, &mut names, &mut sink);
            grants::compile(d.raw.get_ref(), table, &grant_ctx, &mut sink);
        }
    }
    tables
}

/// Manual isolation needs at least one policy for the app role.
pub(super) fn check_manual_isolation(
    declared: &DeclaredTables<'_>,
    tables: &BTreeMap<String, Table>,
    tenancy: &Tenancy,
    errors: &mut Vec<PolicyError>,
) {
    for d in &declared.tables {
        let Some(table) = tables.get(&d.name) else {
            continue;
        };
        let covered = table
            .policies
            .values()
            .any(|pol| pol.roles.contains(&tenancy.app_role));
        if is_manual(d.raw.get_ref()) && !covered {
            d.file.sink(errors).err(
                d.key.span(),
                format!("table {} has isolation = \"manual\" but no policy for the app role {}", d.name, tenancy.app_role),
                "declare [[policies]] for this table, or remove isolation = \"manual\" to get the tenant isolation policy",
            );
        }
    }
}

/// `isolation = "manual"`: the table gets no generated tenant isolation policy.
pub(super) fn is_manual(raw: &RawTable) -> bool {
    raw.isolation
        .as_ref()
        .is_some_and(|i| i.get_ref() == "manual")
}
