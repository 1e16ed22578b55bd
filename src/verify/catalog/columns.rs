//! Drift of a declared table's structure: columns, keys, CHECK and foreign-key constraints and
//! indexes against the declaration, and perf.tenant-index for every tenant table.

use crate::pg::unnamed::typed;
use std::collections::BTreeMap;

use anyhow::Result;
use tokio_postgres::Client;

use super::normalise::Normalised;
use super::query;
use super::relations::Rel;
use super::tables::Declared;
use crate::model::{Constraint, OnDelete, Schema};
use crate::verify::{Finding, Tally};

pub(super) const COLUMNS: &str = "
SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type, a.attnotnull AS not_null,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped";

const CONSTRAINTS: &str = "
SELECT c.conname::text AS name, c.contype::text AS kind, pg_catalog.pg_get_constraintdef(c.oid) AS def,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS columns,
       coalesce(fc.relname::text, '') AS ref_table, coalesce(fn.nspname::text, '') AS ref_schema,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS ref_columns,
       c.confdeltype::text AS on_delete
FROM pg_catalog.pg_constraint c
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = c.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
WHERE c.conrelid = $1";

const INDEXES: &str = "
SELECT ic.relname::text AS name, i.indisunique AS unique,
       ARRAY(SELECT coalesce(a.attname::text, '(expression)') FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) AS columns,
       i.indexprs IS NOT NULL OR i.indpred IS NOT NULL AS partial
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = $1";

typed_row! {
    /// A column's type, NOT NULL and default as Postgres renders them (a row of [`COLUMNS`]).
    #[derive(Debug)]
    pub(super) struct ColumnShape {
        pub name: String,
        data_type: String,
        not_null: bool,
        default: Option<String>,
    }
}

impl ColumnShape {
    fn same(&self, other: &ColumnShape) -> bool {
        (&self.data_type, self.not_null, &self.default)
            == (&other.data_type, other.not_null, &other.default)
    }
}

impl std::fmt::Display for ColumnShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.data_type,
            if self.not_null { "NOT NULL" } else { "NULL" }
        )?;
        if let Some(d) = &self.default {
            write!(f, " DEFAULT {d}")?;
        }
        Ok(())
    }
}

catalog_code! {
    /// `pg_constraint.contype`, for the kinds tenantctl declares.
    enum ConKind {
        "p" => PrimaryKey,
        "u" => Unique,
        "c" => Check,
        "f" => ForeignKey,
        _ => Other,
    }
}

catalog_code! {
    /// `pg_constraint.confdeltype`, for the actions tenantctl declares.
    enum FkAction {
        "a" => NoAction,
        "r" => Restrict,
        "c" => Cascade,
        _ => Other,
    }
}

impl FkAction {
    fn is(self, declared: OnDelete) -> bool {
        matches!(
            (self, declared),
            (FkAction::NoAction, OnDelete::NoAction)
                | (FkAction::Restrict, OnDelete::Restrict)
                | (FkAction::Cascade, OnDelete::Cascade)
        )
    }
}

typed_row! {
    /// A constraint as it is (a row of [`CONSTRAINTS`]).
    struct LiveConstraint {
        name: String,
        kind: ConKind,
        def: String,
        columns: Vec<String>,
        ref_table: String,
        ref_schema: String,
        ref_columns: Vec<String>,
        on_delete: FkAction,
    }
}

typed_row! {
    /// An index as it is (a row of [`INDEXES`]).
    struct LiveIndex {
        name: String,
        unique: bool,
        columns: Vec<String>,
        /// On an expression, or partial.
        partial: bool,
    }
}

/// drift.column: every declared column exists as Postgres renders the declaration.
pub(super) async fn columns(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let (client, table, rel, norm) = (cx.client, cx.table, cx.rel, cx.norm);
    let disp = rel.display();
    let what = "cannot read columns";
    let live: BTreeMap<String, ColumnShape> = query(
        client,
        COLUMNS,
        typed![&rel.oid],
        what,
        ColumnShape::from_row,
    )
    .await?
    .into_iter()
    .map(|c| (c.name.clone(), c))
    .collect();
    if let Some(e) = norm.and_then(|n| n.error.as_ref()) {
        tally.fail(Finding::new(
            "drift.column",
            rel.object(),
            format!("the declared columns of {disp} cannot be compared: Postgres rejects them here: {e}"),
        ));
    }
    for c in &table.columns {
        let finding = match (live.get(&c.name), norm.and_then(|n| n.columns.get(&c.name))) {
            (None, _) => Some(format!(
                "column {disp}.{} is declared but does not exist",
                c.name
            )),
            (Some(l), Some(d)) if !l.same(d) => {
                Some(format!("column {disp}.{} is {l}, declared {d}", c.name))
            }
            _ => None,
        };
        tally.record(
            "drift.column",
            finding.map(|m| Finding::new("drift.column", format!("column {disp}.{}", c.name), m)),
        );
    }
    Ok(())
}

/// drift.constraint: every declared key, CHECK and foreign key exists as declared.
pub(super) async fn constraints(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let (client, schema, table, rel, norm) = (cx.client, cx.schema, cx.table, cx.rel, cx.norm);
    let disp = rel.display();
    let what = "cannot read constraints";
    let live: BTreeMap<String, LiveConstraint> = query(
        client,
        CONSTRAINTS,
        typed![&rel.oid],
        what,
        LiveConstraint::from_row,
    )
    .await?
    .into_iter()
    .map(|c| (c.name.clone(), c))
    .collect();
    for (cname, c) in &table.constraints {
        let problem = match live.get(cname) {
            None => Some("is missing".to_string()),
            Some(l) => constraint_problem(schema, cname, c, l, norm),
        };
        tally.record(
            "drift.constraint",
            problem.map(|p| {
                Finding::new(
                    "drift.constraint",
                    format!("constraint {disp}.{cname}"),
                    format!("constraint {cname} on {disp} {p}"),
                )
            }),
        );
    }
    Ok(())
}

/// How a live constraint differs from its declaration, if it does.
fn constraint_problem(
    schema: &Schema,
    cname: &str,
    c: &Constraint,
    l: &LiveConstraint,
    norm: Option<&Normalised>,
) -> Option<String> {
    match c {
        Constraint::PrimaryKey { columns } | Constraint::Unique { columns } => {
            let want = if matches!(c, Constraint::PrimaryKey { .. }) {
                ConKind::PrimaryKey
            } else {
                ConKind::Unique
            };
            (l.kind != want || &l.columns != columns).then(|| format!("is {}", l.def))
        }
        Constraint::Check { .. } => {
            let decl = norm.and_then(|n| n.checks.get(cname));
            (l.kind != ConKind::Check || decl.is_some_and(|d| d != &l.def)).then(|| {
                format!(
                    "is {}, declared {}",
                    l.def,
                    decl.map_or("?", |s| s.as_str())
                )
            })
        }
        Constraint::ForeignKey {
            columns,
            table: rt,
            ref_columns,
            on_delete,
        } => (l.kind != ConKind::ForeignKey
            || &l.columns != columns
            || &l.ref_table != rt
            || l.ref_schema != schema.tenancy.table_schema
            || &l.ref_columns != ref_columns
            || !l.on_delete.is(*on_delete))
        .then(|| format!("is {}", l.def)),
    }
}

/// drift.index: every declared index exists on the declared columns, not partial.
pub(super) async fn indexes(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let (client, table, rel) = (cx.client, cx.table, cx.rel);
    let disp = rel.display();
    let live = read_indexes(client, rel).await?;
    for (iname, ix) in &table.indexes {
        // The last of that name, as the catalog lists them.
        let problem = match live.iter().rfind(|l| &l.name == iname) {
            None => Some("is missing".to_string()),
            Some(l) => (l.unique != ix.unique || l.columns != ix.columns || l.partial).then(|| {
                format!(
                    "is on ({}){}",
                    l.columns.join(", "),
                    if l.unique { " UNIQUE" } else { "" }
                )
            }),
        };
        tally.record(
            "drift.index",
            problem.map(|p| {
                Finding::new(
                    "drift.index",
                    format!("index {}.{iname}", rel.schema),
                    format!("index {iname} on {disp} {p}"),
                )
            }),
        );
    }
    Ok(())
}

async fn read_indexes(client: &Client, rel: &Rel) -> Result<Vec<LiveIndex>> {
    let what = "cannot read indexes";
    query(client, INDEXES, typed![&rel.oid], what, LiveIndex::from_row).await
}

/// perf.tenant-index: some index (not partial, not on an expression) is led by the tenant
/// column (`tc` for a declared table, the tenancy's tenant column for any other).
pub(super) async fn tenant_index(
    client: &Client,
    schema: &Schema,
    rel: &Rel,
    tc: &str,
    tally: &mut Tally,
) -> Result<()> {
    let tc = if schema.tables.contains_key(&rel.name) && rel.schema == schema.tenancy.table_schema {
        tc
    } else {
        schema.tenancy.tenant_column.as_str()
    };
    let led = read_indexes(client, rel)
        .await?
        .iter()
        .any(|l| l.columns.first().map(String::as_str) == Some(tc) && !l.partial);
    tally.record(
        "perf.tenant-index",
        (!led).then(|| {
            Finding::new(
                "perf.tenant-index",
                rel.object(),
                format!("no index on {} is led by {tc}", rel.display()),
            )
        }),
    );
    Ok(())
}
