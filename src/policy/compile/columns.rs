//! A table's columns, primary key and checks, the tenant column rules, and what every tenant
//! table gets without asking: the tenant key and foreign key, and the generated policies.

use std::collections::BTreeMap;

use toml::Spanned;

use super::checks::{check_type, generated_name_ok};
use super::tables::is_manual;
use super::Declared;
use crate::model::{AdminBypass, Column, Command, Constraint, OnDelete, Policy, Table, Tenancy};
use crate::policy::diagnostics::Sink;
use crate::policy::raw::{RawColumn, RawTable};
use crate::sqlgen::{context_call, tenant_isolation_expr};

/// What the column rules of one table are checked against.
struct Shape<'a> {
    name: &'a str,
    key: &'a Spanned<String>,
    source: &'a str,
    tenancy: &'a Tenancy,
    /// The tenant table itself: its key is the tenant id, it has no tenant column.
    is_root: bool,
    /// `tenant_key` on the tenant table, `tenant_column` on the others, empty on global tables.
    tenant_column: String,
    /// A global reference table: no tenant column, no tenant key or policies.
    global: bool,
}

pub(super) fn compile(d: &Declared<'_>, tenancy: &Tenancy, sink: &mut Sink<'_>) -> Option<Table> {
    let r = d.raw.get_ref();
    let before = sink.count();
    let is_root = d.name == tenancy.tenant_table;
    let global = super::globals::is_global(r);
    let shape = Shape {
        name: &d.name,
        key: d.key,
        source: &d.file.source,
        tenancy,
        is_root,
        tenant_column: if is_root {
            tenancy.tenant_key.clone()
        } else if global {
            String::new()
        } else {
            tenancy.tenant_column.clone()
        },
        global,
    };
    let mut columns: Vec<Column> = Vec::new();
    let mut constraints = BTreeMap::new();
    for c in &r.columns {
        if let Some(col) = column(&shape, c, &columns, &mut constraints, sink) {
            columns.push(col);
        }
    }
    if global {
        super::globals::rules(d, tenancy, &columns, sink);
    } else {
        require_tenant_column(&shape, &columns, sink);
    }
    if let Some(pk) = primary_key(&shape, r, &columns, sink) {
        if let Some(c) = columns.iter_mut().find(|c| c.name == pk) {
            c.nullable = false;
        }
        key_constraints(&shape, &pk, &mut constraints, sink);
    }
    check_isolation(r, sink);
    let policies = if global {
        BTreeMap::new()
    } else {
        tenant_foreign_key(&shape, &mut constraints, sink);
        generated_policies(&shape, r, sink)
    };
    if sink.count() > before {
        return None;
    }
    Some(Table {
        source: d.file.source.clone(),
        tenant_column: shape.tenant_column,
        columns,
        constraints,
        indexes: BTreeMap::new(),
        policies,
        grants: BTreeMap::new(),
        partitioning: None,
        global,
    })
}

/// One declared column, with its check constraint; None (recorded) when it is invalid.
fn column(
    shape: &Shape<'_>,
    c: &Spanned<RawColumn>,
    columns: &[Column],
    constraints: &mut BTreeMap<String, Constraint>,
    sink: &mut Sink<'_>,
) -> Option<Column> {
    let (name, cr) = (shape.name, c.get_ref());
    let col = sink.name(&cr.name, "column")?;
    if columns.iter().any(|x| x.name == col) {
        sink.err(
            cr.name.span(),
            format!("column {col} is declared twice in table {name}"),
            "",
        );
        return None;
    }
    let ty = match check_type(cr.ty.get_ref()) {
        Ok(t) => t,
        Err(e) => {
            sink.err(
                cr.ty.span(),
                format!("column {name}.{col}: {e}"),
                "use a Postgres type such as text, uuid, integer, timestamptz, numeric(10,2)",
            );
            return None;
        }
    };
    let mut default = cr.default.as_ref().and_then(|d| sink.expr(d, "default"));
    if col == shape.tenant_column && !shape.is_root {
        tenant_column_rules(shape, c, &col, &ty, sink);
        default = Some(context_call(shape.tenancy));
    }
    if let Some(check) = &cr.check {
        if let Some(expr) = sink.expr(check, "check") {
            let cname = format!("{name}_{col}_check");
            if generated_name_ok(sink, &cname, c.span()) {
                constraints.insert(cname, Constraint::Check { expr });
            }
        }
    }
    Some(Column {
        name: col,
        ty,
        nullable: cr.nullable,
        default,
    })
}

/// The tenant column holds the tenant id: uuid, not null, its default the tenant context.
fn tenant_column_rules(
    shape: &Shape<'_>,
    c: &Spanned<RawColumn>,
    col: &str,
    ty: &str,
    sink: &mut Sink<'_>,
) {
    let (name, cr) = (shape.name, c.get_ref());
    if ty != "uuid" {
        sink.err(
            cr.ty.span(),
            format!(
                "tenant column {name}.{col} must be uuid (it holds the {} id)",
                shape.tenancy.tenant_table
            ),
            "set type = \"uuid\"",
        );
    }
    if cr.nullable {
        sink.err(
            c.span(),
            format!("tenant column {name}.{col} cannot be nullable"),
            "remove nullable = true: every row belongs to a tenant",
        );
    }
    if let Some(d) = &cr.default {
        sink.err(
            d.span(),
            format!("tenant column {name}.{col} gets its default from the tenant context"),
            "remove the default",
        );
    }
}

fn require_tenant_column(shape: &Shape<'_>, columns: &[Column], sink: &mut Sink<'_>) {
    let (name, tenant_column) = (shape.name, &shape.tenant_column);
    if columns.iter().any(|c| &c.name == tenant_column) {
        return;
    }
    let hint =
        format!("add {{ name = \"{tenant_column}\", type = \"uuid\" }} to the columns of {name}");
    let what = if shape.is_root {
        "tenant key column"
    } else {
        "tenant column"
    };
    sink.err(
        shape.key.span(),
        format!("table {name} has no {what} {tenant_column}"),
        hint,
    );
}

/// The primary key column (`id` unless `primary_key` names another), with its problems recorded.
fn primary_key(
    shape: &Shape<'_>,
    r: &RawTable,
    columns: &[Column],
    sink: &mut Sink<'_>,
) -> Option<String> {
    let name = shape.name;
    let has = |c: &str| columns.iter().any(|x| x.name == c);
    let pk = match &r.primary_key {
        Some(raw) => {
            let v = sink.name(raw, "primary key column")?;
            if !has(&v) {
                sink.err(
                    raw.span(),
                    format!("primary key {v} is not a column of {name}"),
                    "",
                );
            }
            v
        }
        None => {
            if !has("id") {
                sink.err(
                    shape.key.span(),
                    format!("table {name} has no `id` column to be its primary key"),
                    "add an id column, or set primary_key = \"column\"",
                );
            }
            "id".to_string()
        }
    };
    if shape.is_root && pk != shape.tenant_column {
        sink.err(
            shape.key.span(),
            format!(
                "the tenant table's primary key must be its tenant key {}",
                shape.tenant_column
            ),
            "",
        );
    }
    Some(pk)
}

/// The primary key, and on other tables a unique (tenant, key) that references point at.
fn key_constraints(
    shape: &Shape<'_>,
    pk: &str,
    constraints: &mut BTreeMap<String, Constraint>,
    sink: &mut Sink<'_>,
) {
    let name = shape.name;
    constraints.insert(
        format!("{name}_pkey"),
        Constraint::PrimaryKey {
            columns: vec![pk.to_string()],
        },
    );
    if !shape.is_root && !shape.global && pk != shape.tenant_column {
        let cname = format!("{name}_tenant_key");
        if generated_name_ok(sink, &cname, shape.key.span()) {
            constraints.insert(
                cname,
                Constraint::Unique {
                    columns: vec![shape.tenant_column.clone(), pk.to_string()],
                },
            );
        }
    }
}

fn tenant_foreign_key(
    shape: &Shape<'_>,
    constraints: &mut BTreeMap<String, Constraint>,
    sink: &mut Sink<'_>,
) {
    if shape.is_root {
        return;
    }
    let cname = format!("{}_tenant_fkey", shape.name);
    if generated_name_ok(sink, &cname, shape.key.span()) {
        constraints.insert(
            cname,
            Constraint::ForeignKey {
                columns: vec![shape.tenant_column.clone()],
                table: shape.tenancy.tenant_table.clone(),
                ref_columns: vec![shape.tenancy.tenant_key.clone()],
                on_delete: OnDelete::Cascade,
            },
        );
    }
}

fn check_isolation(r: &RawTable, sink: &mut Sink<'_>) {
    if let Some(iso) = &r.isolation {
        if !matches!(iso.get_ref().as_str(), "auto" | "manual") {
            sink.err(
                iso.span(),
                format!("isolation {:?} is not known", iso.get_ref()),
                "use \"auto\" (the default) or \"manual\"",
            );
        }
    }
}

/// The tenant isolation policy (unless isolation is manual) and, with `admin_bypass =
/// "policy"`, the admin's `USING (true)` policy.
fn generated_policies(
    shape: &Shape<'_>,
    r: &RawTable,
    sink: &mut Sink<'_>,
) -> BTreeMap<String, Policy> {
    let (name, tenancy) = (shape.name, shape.tenancy);
    let mut policies = BTreeMap::new();
    let mut add = |sink: &mut Sink<'_>, pname: String, role: &String, expr: String| {
        if generated_name_ok(sink, &pname, shape.key.span()) {
            let policy = Policy {
                source: shape.source.to_string(),
                command: Command::All,
                permissive: true,
                roles: vec![role.clone()],
                using: Some(expr.clone()),
                with_check: Some(expr),
            };
            policies.insert(pname, policy);
        }
    };
    if !is_manual(r) {
        let expr = tenant_isolation_expr(tenancy, &shape.tenant_column);
        add(
            sink,
            format!("{name}_tenant_isolation"),
            &tenancy.app_role,
            expr,
        );
    }
    if tenancy.admin_bypass == AdminBypass::Policy {
        let pname = format!("{name}_platform_admin");
        add(sink, pname, &tenancy.admin_role, "true".into());
    }
    policies
}
