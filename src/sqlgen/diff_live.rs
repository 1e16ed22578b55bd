//! Changes to tables that already exist and serve traffic: the column type changes that make
//! Postgres rewrite the whole table (and its indexes) under an ACCESS EXCLUSIVE lock, which
//! `generate` refuses without `--allow-rewrite`.

use std::collections::BTreeSet;

use crate::model::{Constraint, Schema};

/// A column type change of a table both models have, that rewrites the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// `policies/members.toml: column members.age`
    pub provenance: String,
    pub from: String,
    pub to: String,
}

/// The type changes from `old` (None: an empty database) to `new` that rewrite a table.
pub fn rewrites(old: Option<&Schema>, new: &Schema) -> Vec<Rewrite> {
    let Some(old) = old else {
        return Vec::new();
    };
    fn all(s: &Schema) -> impl Iterator<Item = (&String, &crate::model::Table)> {
        s.tables.iter().chain(s.globals.iter())
    }
    let old_tables: std::collections::BTreeMap<_, _> = all(old).collect();
    let mut out = Vec::new();
    for (tname, nt) in all(new) {
        let Some(ot) = old_tables.get(tname) else {
            continue;
        };
        for nc in &nt.columns {
            let Some(oc) = ot.column(&nc.name) else {
                continue;
            };
            if oc.ty != nc.ty && type_change_rewrites(&oc.ty, &nc.ty) {
                out.push(Rewrite {
                    provenance: format!("{}: column {tname}.{}", nt.source, nc.name),
                    from: oc.ty.clone(),
                    to: nc.ty.clone(),
                });
            }
        }
    }
    out
}

/// Whether changing a column's type from `from` to `to` rewrites the table.
pub fn type_change_rewrites(from: &str, to: &str) -> bool {
    !binary_compatible(from, to)
}

/// Whether Postgres changes `from` to `to` without touching the rows: between the unbounded and
/// widened string types (`varchar(n)` to `varchar(m)`, m >= n, `varchar`, `text`), and a
/// `numeric` losing its bounds. Anything else is taken to rewrite.
fn binary_compatible(from: &str, to: &str) -> bool {
    let norm = |t: &str| {
        t.to_ascii_lowercase()
            .replace("character varying", "varchar")
            .replace(' ', "")
    };
    let (from, to) = (norm(from), norm(to));
    let length = |t: &str, base: &str| -> Option<Option<u32>> {
        let rest = t.strip_prefix(base)?;
        if rest.is_empty() {
            return Some(None);
        }
        rest.strip_prefix('(')?
            .strip_suffix(')')?
            .parse()
            .ok()
            .map(Some)
    };
    let string = |t: &str| {
        if t == "text" {
            Some(None)
        } else {
            length(t, "varchar")
        }
    };
    match (string(&from), string(&to)) {
        (Some(_), Some(None)) => return true,
        (Some(Some(n)), Some(Some(m))) => return m >= n,
        _ => {}
    }
    from.starts_with("numeric") && to == "numeric"
}

/// The keys, (table, columns), that a foreign key new or changed from `old` to `new` references
/// (both models with their global tables among the tables). A unique constraint added to an
/// existing table that one of them needs stays in the main migration, beside the foreign key,
/// instead of being built CONCURRENTLY and attached in later migrations.
pub(super) fn referenced_keys(old: &Schema, new: &Schema) -> BTreeSet<(String, Vec<String>)> {
    let mut keys = BTreeSet::new();
    for (tname, nt) in &new.tables {
        let ot = old.tables.get(tname);
        for (cname, c) in &nt.constraints {
            if let Constraint::ForeignKey {
                table, ref_columns, ..
            } = c
            {
                if ot.and_then(|t| t.constraints.get(cname)) != Some(c) {
                    keys.insert((table.clone(), ref_columns.clone()));
                }
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::binary_compatible;

    #[test]
    fn only_widening_string_types_and_unbounding_numeric_keep_the_rows() {
        for (from, to) in [
            ("varchar(20)", "text"),
            ("character varying(20)", "varchar(40)"),
            ("text", "varchar"),
            ("numeric(10,2)", "numeric"),
        ] {
            assert!(binary_compatible(from, to), "{from} -> {to}");
        }
        for (from, to) in [
            ("integer", "bigint"),
            ("date", "timestamptz"),
            ("varchar(40)", "varchar(20)"),
            ("text", "varchar(20)"),
            ("numeric", "numeric(10,2)"),
            ("text", "uuid"),
        ] {
            assert!(!binary_compatible(from, to), "{from} -> {to}");
        }
    }
}
