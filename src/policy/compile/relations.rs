//! A table's uniques, references and indexes, each scoped by the tenant column so that no key
//! or reference crosses tenants.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

use super::checks::generated_name_ok;
use crate::ident::Ident;
use crate::model::{Constraint, Index, OnDelete, Table, Tenancy};
use crate::policy::diagnostics::{Seen, Sink};
use crate::policy::raw::{RawReference, RawTable};

/// What references are checked against.
pub(super) struct RelationCtx<'a> {
    pub(super) tenancy: &'a Tenancy,
    /// Table → (primary key column, its type), for tables that compiled.
    pub(super) pk_of: &'a BTreeMap<String, (String, String)>,
    /// Every declared table, compiled or not (a broken parent is reported once, at the parent).
    pub(super) declared: &'a BTreeMap<String, Seen>,
    /// The global tables among them: referenced by a plain foreign key.
    pub(super) globals: &'a BTreeSet<String>,
}

pub(super) fn compile(
    name: &str,
    r: &RawTable,
    table: &mut Table,
    ctx: &RelationCtx<'_>,
    sink: &mut Sink<'_>,
) {
    // Global tables are shared: their keys are not scoped by a tenant.
    let is_root = name == ctx.tenancy.tenant_table || table.global;
    for u in &r.unique {
        if u.get_ref().is_empty() {
            sink.err(u.span(), "unique needs at least one column", "");
            continue;
        }
        let Some(cols) = known_columns(name, table, u.get_ref(), "unique", u.span(), sink) else {
            continue;
        };
        let cols = scoped(table, is_root, cols);
        let cname = format!("{name}_{}_key", cols.join("_"));
        if generated_name_ok(sink, &cname, u.span()) {
            table
                .constraints
                .insert(cname, Constraint::Unique { columns: cols });
        }
    }
    for rf in &r.references {
        if let Some((cname, fk)) = reference(name, table, rf, ctx, sink) {
            if generated_name_ok(sink, &cname, rf.span()) {
                table.constraints.insert(cname, fk);
            }
        }
    }
    for ix in &r.indexes {
        let raw = ix.get_ref();
        if raw.columns.get_ref().is_empty() {
            sink.err(ix.span(), "an index needs at least one column", "");
            continue;
        }
        let span = raw.columns.span();
        let Some(cols) = known_columns(name, table, raw.columns.get_ref(), "index", span, sink)
        else {
            continue;
        };
        let cols = scoped(table, is_root, cols);
        let iname = format!("{name}_{}_idx", cols.join("_"));
        if generated_name_ok(sink, &iname, ix.span()) {
            let index = Index {
                columns: cols,
                unique: raw.unique,
            };
            table.indexes.insert(iname, index);
        }
    }
}

/// The columns of a unique or an index; None when any is not a column of the table (recorded).
fn known_columns(
    name: &str,
    table: &Table,
    raw: &[String],
    what: &str,
    span: Range<usize>,
    sink: &mut Sink<'_>,
) -> Option<Vec<String>> {
    let mut cols = Vec::new();
    for c in raw {
        match Ident::plain(c) {
            Ok(_) if table.column(c).is_some() => cols.push(c.clone()),
            Ok(_) => sink.err(
                span.clone(),
                format!("{what}: {c} is not a column of {name}"),
                "",
            ),
            Err(e) => sink.err(span.clone(), format!("{what}: {e}"), ""),
        }
    }
    (cols.len() == raw.len()).then_some(cols)
}

/// Led by the tenant column (except on the tenant table), so that uniqueness and lookups stay
/// within a tenant.
fn scoped(table: &Table, is_root: bool, cols: Vec<String>) -> Vec<String> {
    let tc = &table.tenant_column;
    if is_root || cols.first() == Some(tc) {
        cols
    } else {
        std::iter::once(tc.clone()).chain(cols).collect()
    }
}

/// A reference to another tenant table, as a foreign key on (tenant column, column) to the
/// parent's (tenant column, primary key): a row can only point at a row of its own tenant.
fn reference(
    name: &str,
    table: &Table,
    rf: &Spanned<RawReference>,
    ctx: &RelationCtx<'_>,
    sink: &mut Sink<'_>,
) -> Option<(String, Constraint)> {
    let (rr, tenancy) = (rf.get_ref(), ctx.tenancy);
    let col = sink.name(&rr.column, "column")?;
    let parent = sink.name(&rr.table, "table")?;
    if table.column(&col).is_none() {
        sink.err(
            rr.column.span(),
            format!("references: {col} is not a column of {name}"),
            "",
        );
        return None;
    }
    if ctx.globals.contains(&parent) {
        return global_reference(name, table, &col, &parent, ctx, rr, sink);
    }
    if table.global {
        sink.err(
            rr.table.span(),
            format!("global table {name} cannot reference tenant table {parent}"),
            "a row shared by every tenant cannot point at one tenant's row",
        );
        return None;
    }
    if parent == tenancy.tenant_table {
        sink.err(
            rr.table.span(),
            format!(
                "{name} references the tenant table {parent} already, through {}",
                tenancy.tenant_column
            ),
            format!(
                "remove this reference; use the {} column",
                tenancy.tenant_column
            ),
        );
        return None;
    }
    if name == tenancy.tenant_table {
        sink.err(
            rf.span(),
            "the tenant table cannot reference tenant tables",
            "",
        );
        return None;
    }
    let key = parent_key(name, &col, &parent, rr, ctx, sink)?;
    same_type(name, table, &col, &parent, key, rr, sink)?;
    let ppk = &key.0;
    let on_delete = on_delete(rr, sink)?;
    let fk = Constraint::ForeignKey {
        columns: vec![table.tenant_column.clone(), col.clone()],
        table: parent,
        ref_columns: vec![tenancy.tenant_column.clone(), ppk.clone()],
        on_delete,
    };
    Some((format!("{name}_{col}_fkey"), fk))
}

/// A reference to a global table: a plain foreign key on the column alone (a global row is
/// every tenant's), to the parent's primary key.
fn global_reference(
    name: &str,
    table: &Table,
    col: &str,
    parent: &str,
    ctx: &RelationCtx<'_>,
    rr: &RawReference,
    sink: &mut Sink<'_>,
) -> Option<(String, Constraint)> {
    let key = parent_key(name, col, parent, rr, ctx, sink)?;
    same_type(name, table, col, parent, key, rr, sink)?;
    let ppk = &key.0;
    let fk = Constraint::ForeignKey {
        columns: vec![col.to_string()],
        table: parent.to_string(),
        ref_columns: vec![ppk.clone()],
        on_delete: on_delete(rr, sink)?,
    };
    Some((format!("{name}_{col}_fkey"), fk))
}

/// The referencing column has the type of the referenced key (else recorded).
fn same_type(
    name: &str,
    table: &Table,
    col: &str,
    parent: &str,
    (ppk, pty): &(String, String),
    rr: &RawReference,
    sink: &mut Sink<'_>,
) -> Option<()> {
    let cty = table.column(col).map(|c| c.ty.clone()).unwrap_or_default();
    if &cty != pty {
        sink.err(
            rr.column.span(),
            format!("{name}.{col} is {cty} but {parent}.{ppk} is {pty}"),
            "give both columns the same type",
        );
        return None;
    }
    Some(())
}

/// The referenced table's primary key and its type; None when the parent is unknown (recorded)
/// or did not compile (reported at the parent already).
fn parent_key<'c>(
    name: &str,
    col: &str,
    parent: &str,
    rr: &RawReference,
    ctx: &RelationCtx<'c>,
    sink: &mut Sink<'_>,
) -> Option<&'c (String, String)> {
    if let Some(key) = ctx.pk_of.get(parent) {
        return Some(key);
    }
    if !ctx.declared.contains_key(parent) {
        sink.err(
            rr.table.span(),
            format!("{name}.{col} references table {parent}, which no policy file declares"),
            format!("declare [tables.{parent}], or fix the table name"),
        );
    }
    None
}

fn on_delete(rr: &RawReference, sink: &mut Sink<'_>) -> Option<OnDelete> {
    match rr
        .on_delete
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("no action", _)) => Some(OnDelete::NoAction),
        Some(("restrict", _)) => Some(OnDelete::Restrict),
        Some(("cascade", _)) => Some(OnDelete::Cascade),
        Some((other, span)) => {
            sink.err(span, format!("on_delete {other:?} is not supported"), "use \"no action\", \"restrict\" or \"cascade\" (SET NULL would null the tenant column too)");
            None
        }
    }
}
