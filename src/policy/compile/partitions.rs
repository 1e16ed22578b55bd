//! Partitioned tenant tables: `partition_by` on the tenant column or the primary key column, and
//! the declared partitions. Postgres wants every key of a partitioned table to include the
//! partition column; each partition gets the table's RLS, policies and grants when generated.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Declared;
use crate::model::{Constraint, PartitionBound, PartitionMethod, Partitioning, Table, Tenancy};
use crate::policy::diagnostics::{Seen, Sink};
use crate::policy::raw::{RawPartition, RawPartitionBy};

/// Names the partitions take, beside the declared tables.
pub(super) struct Names<'a> {
    pub(super) tables: &'a BTreeMap<String, Seen>,
    pub(super) partitions: BTreeMap<String, Seen>,
}

pub(super) fn compile(
    d: &Declared<'_>,
    table: &mut Table,
    tenancy: &Tenancy,
    names: &mut Names<'_>,
    sink: &mut Sink<'_>,
) {
    let r = d.raw.get_ref();
    let Some(pb) = &r.partition_by else {
        if let Some(p) = r.partitions.first() {
            sink.err(
                p.span(),
                format!("table {} has partitions but no partition_by", d.name),
                "add partition_by = { method = \"hash\", column = \"<tenant column>\" }",
            );
        }
        return;
    };
    if table.global {
        return; // reported by the global table's rules
    }
    if d.name == tenancy.tenant_table {
        let hint = "partition the tables that carry the tenant column";
        sink.err(pb.span(), "the tenant table cannot be partitioned", hint);
        return;
    }
    let Some((method, column)) = partition_by(&d.name, pb, table, sink) else {
        return;
    };
    if !include_key(&d.name, table, &column, pb.span(), sink) {
        return;
    }
    if r.partitions.is_empty() {
        let hint = "declare partitions = [{ name = \"...\", ... }]: rows need a partition to go to";
        sink.err(
            pb.span(),
            format!("table {} has no partitions", d.name),
            hint,
        );
    }
    let mut partitions = BTreeMap::new();
    for p in &r.partitions {
        if let Some(name) = partition_name(p, names, sink) {
            if let Some(b) = bound(method, p.get_ref(), p.span(), sink) {
                partitions.insert(name, b);
            }
        }
    }
    table.partitioning = Some(Partitioning {
        method,
        column,
        partitions,
    });
}

/// The method and the column, which must be the tenant column or the primary key column.
fn partition_by(
    name: &str,
    pb: &Spanned<RawPartitionBy>,
    table: &Table,
    sink: &mut Sink<'_>,
) -> Option<(PartitionMethod, String)> {
    let raw = pb.get_ref();
    let method = match raw.method.get_ref().to_ascii_lowercase().as_str() {
        "list" => PartitionMethod::List,
        "hash" => PartitionMethod::Hash,
        "range" => PartitionMethod::Range,
        other => {
            let hint = "use \"list\", \"hash\" or \"range\"";
            sink.err(
                raw.method.span(),
                format!("partition method {other:?} is not known"),
                hint,
            );
            return None;
        }
    };
    let column = sink.name(&raw.column, "partition column")?;
    let pk = primary_key(name, table);
    if column != table.tenant_column && Some(&column) != pk.last() {
        sink.err(
            raw.column.span(),
            format!(
                "table {name} can be partitioned by {} or its primary key, not {column}",
                table.tenant_column
            ),
            "Postgres needs the partition column in every key: partition by the tenant column",
        );
        return None;
    }
    Some((method, column))
}

fn primary_key(name: &str, table: &Table) -> Vec<String> {
    match table.constraints.get(&format!("{name}_pkey")) {
        Some(Constraint::PrimaryKey { columns }) => columns.clone(),
        _ => Vec::new(),
    }
}

/// The primary key leads with the partition column (it replaces the tenant key, which is then
/// the same), and every other unique key must already hold it (else recorded: adding it would
/// make the key unique per partition only).
fn include_key(
    name: &str,
    table: &mut Table,
    column: &str,
    span: std::ops::Range<usize>,
    sink: &mut Sink<'_>,
) -> bool {
    let pk = primary_key(name, table);
    if !pk.iter().any(|c| c == column) {
        let columns = std::iter::once(column.to_string()).chain(pk).collect();
        table.constraints.remove(&format!("{name}_tenant_key"));
        table
            .constraints
            .insert(format!("{name}_pkey"), Constraint::PrimaryKey { columns });
    }
    let mut ok = true;
    let uniques = table.constraints.iter().filter_map(|(n, c)| match c {
        Constraint::Unique { columns } => Some((n, columns)),
        _ => None,
    });
    let indexes = table.indexes.iter().filter(|(_, i)| i.unique);
    let keys = uniques.chain(indexes.map(|(n, i)| (n, &i.columns)));
    for (key, columns) in keys {
        if !columns.iter().any(|c| c == column) {
            sink.err(
                span.clone(),
                format!("unique key {key} of partitioned table {name} does not include the partition column {column}"),
                "partition by the tenant column (every unique is scoped by it), or drop the unique",
            );
            ok = false;
        }
    }
    ok
}

/// A valid partition name, declared once and not the name of a table.
fn partition_name(
    p: &Spanned<RawPartition>,
    names: &mut Names<'_>,
    sink: &mut Sink<'_>,
) -> Option<String> {
    let raw = &p.get_ref().name;
    let name = sink.name(raw, "partition")?;
    if names.tables.contains_key(&name) {
        let hint = "give the partition a name of its own";
        sink.err(
            raw.span(),
            format!("partition {name} has the name of a declared table"),
            hint,
        );
        return None;
    }
    let what = format!("partition {name}");
    let hint = "partition names are unique across the policy files";
    sink.first_declaration(&mut names.partitions, name.clone(), raw.span(), &what, hint)
        .then_some(name)
}

/// `FOR VALUES ...` as the method allows: hash takes modulus and remainder, list takes values,
/// range takes from and to; list and range may instead be the default partition.
fn bound(
    method: PartitionMethod,
    p: &RawPartition,
    span: std::ops::Range<usize>,
    sink: &mut Sink<'_>,
) -> Option<PartitionBound> {
    let hash = p.modulus.is_some() || p.remainder.is_some();
    let (list, range) = (p.values.is_some(), p.from.is_some() || p.to.is_some());
    let given = [hash, list, range, p.default]
        .iter()
        .filter(|g| **g)
        .count();
    let fits = match method {
        PartitionMethod::Hash => hash && given == 1,
        PartitionMethod::List => (list || p.default) && given == 1,
        PartitionMethod::Range => (range || p.default) && given == 1,
    };
    if !fits {
        let hint = match method {
            PartitionMethod::Hash => "a hash partition has modulus and remainder",
            PartitionMethod::List => "a list partition has values = [...], or default = true",
            PartitionMethod::Range => {
                "a range partition has from = [...] and to = [...], or default = true"
            }
        };
        sink.err(
            span,
            "this partition's bound does not fit the partition method",
            hint,
        );
        return None;
    }
    if p.default {
        return Some(PartitionBound::Default);
    }
    let exprs = |v: &Option<Vec<Spanned<String>>>, sink: &mut Sink<'_>| -> Option<Vec<String>> {
        let v = v.as_ref()?;
        let out: Vec<String> = v
            .iter()
            .filter_map(|e| sink.expr(e, "partition bound"))
            .collect();
        (out.len() == v.len() && !out.is_empty()).then_some(out)
    };
    let b = match method {
        PartitionMethod::Hash => match (p.modulus, p.remainder) {
            (Some(m), Some(r)) if r < m => Some(PartitionBound::Hash {
                modulus: m,
                remainder: r,
            }),
            _ => None,
        },
        PartitionMethod::List => {
            exprs(&p.values, sink).map(|values| PartitionBound::List { values })
        }
        PartitionMethod::Range => match (exprs(&p.from, sink), exprs(&p.to, sink)) {
            (Some(from), Some(to)) if from.len() == to.len() => {
                Some(PartitionBound::Range { from, to })
            }
            _ => None,
        },
    };
    if b.is_none() {
        let hint = "modulus > remainder >= 0; values, from and to non-empty, from and to as long";
        sink.err(span, "this partition's bound is incomplete", hint);
    }
    b
}
