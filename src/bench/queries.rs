//! The typical application queries of each tenant table, derived from the policy model: a point
//! lookup by a per-tenant unique key, a page ordered by an indexed column, a count by an indexed
//! column, a join to a referenced table, an insert and an update. A table gets the ones its
//! declaration supports.

use crate::model::{Constraint, Schema, Table};
use crate::sqlgen::bench::Shape;
use crate::tenants::data_tables;

/// One query of the set: its name in the report, its table, and how to build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    pub table: String,
    pub shape: Shape,
}

impl Query {
    /// The key column whose sampled values the query binds, if it binds one.
    pub fn key(&self) -> Option<&str> {
        match &self.shape {
            Shape::Point { key, .. } | Shape::Update { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Every tenant table's queries, in table order.
pub fn query_set(schema: &Schema) -> Vec<Query> {
    let mut out = Vec::new();
    for (name, _) in data_tables(schema) {
        let table = &schema.tables[name];
        let mut add = |label: String, shape: Shape| {
            out.push(Query {
                name: format!("{name}: {label}"),
                table: name.to_string(),
                shape,
            })
        };
        let key = unique_key(table);
        let indexed = indexed_columns(table);
        if let Some((key, key_type)) = &key {
            add(
                format!("point lookup by {key}"),
                Shape::Point {
                    key: key.clone(),
                    key_type: key_type.clone(),
                },
            );
        }
        if let Some(order) = indexed.first() {
            add(
                format!("page by {order}"),
                Shape::Page {
                    order: order.clone(),
                },
            );
        }
        if let Some(column) = indexed.last() {
            add(
                format!("count by {column}"),
                Shape::CountBy {
                    column: column.clone(),
                },
            );
        }
        if let (Some((fk, parent, parent_key)), Some(order)) =
            (reference(schema, table), indexed.first())
        {
            add(
                format!("join {parent}"),
                Shape::Join {
                    fk,
                    parent,
                    parent_key,
                    order: order.clone(),
                },
            );
        }
        if let Some(columns) = insertable(table) {
            add("insert".into(), Shape::Insert { columns });
        }
        if let (Some((key, key_type)), Some(set)) = (&key, updatable(schema, table, &indexed)) {
            add(
                format!("update by {key}"),
                Shape::Update {
                    set,
                    key: key.clone(),
                    key_type: key_type.clone(),
                },
            );
        }
    }
    out
}

/// The columns of `columns` other than the tenant column.
fn without_tenant<'a>(table: &Table, columns: &'a [String]) -> Vec<&'a String> {
    columns
        .iter()
        .filter(|c| **c != table.tenant_column)
        .collect()
}

/// A per-tenant unique key of one column, preferring one that is not the row id (an application
/// looks rows up by email, slug or code more often than by a uuid it already holds).
fn unique_key(table: &Table) -> Option<(String, String)> {
    let mut keys: Vec<&String> = table
        .constraints
        .values()
        .filter_map(|c| match c {
            Constraint::Unique { columns } | Constraint::PrimaryKey { columns }
                if columns.contains(&table.tenant_column) =>
            {
                match without_tenant(table, columns).as_slice() {
                    [one] => Some(*one),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    keys.sort_by_key(|k| (*k == "id", k.as_str()));
    let key = keys.first()?;
    let ty = &table.column(key)?.ty;
    Some((key.to_string(), ty.clone()))
}

/// The second columns of the declared non-unique indexes led by the tenant column, in index name
/// order.
fn indexed_columns(table: &Table) -> Vec<String> {
    table
        .indexes
        .values()
        .filter(|i| !i.unique)
        .filter_map(|i| {
            without_tenant(table, &i.columns)
                .first()
                .map(|c| c.to_string())
        })
        .collect()
}

/// The first foreign key to another tenant table (not to the tenant table itself): (column,
/// referenced table, referenced column).
fn reference(schema: &Schema, table: &Table) -> Option<(String, String, String)> {
    table.constraints.values().find_map(|c| match c {
        Constraint::ForeignKey {
            columns,
            table: parent,
            ref_columns,
            ..
        } if *parent != schema.tenancy.tenant_table => {
            let fk = without_tenant(table, columns);
            let key = without_tenant(table, ref_columns);
            match (fk.as_slice(), key.as_slice()) {
                ([fk], [key]) => Some((fk.to_string(), parent.clone(), key.to_string())),
                _ => None,
            }
        }
        _ => None,
    })
}

/// The columns an insert must set (NOT NULL, no default, not the tenant column), when they are
/// all text: the bench binds one text value to each.
fn insertable(table: &Table) -> Option<Vec<String>> {
    let required: Vec<_> = table
        .columns
        .iter()
        .filter(|c| !c.nullable && c.default.is_none() && c.name != table.tenant_column)
        .collect();
    if required.is_empty() || required.iter().any(|c| c.ty != "text") {
        return None;
    }
    Some(required.iter().map(|c| c.name.clone()).collect())
}

/// A column the app role may update that no index covers (so the update can be a HOT update, as
/// a typical "edit a field" is), preferring a nullable one.
fn updatable(schema: &Schema, table: &Table, indexed: &[String]) -> Option<String> {
    let grant = table.grants.get(&schema.tenancy.app_role)?;
    let mut columns: Vec<_> = table
        .columns
        .iter()
        .filter(|c| grant.update_columns.contains(&c.name) && !indexed.contains(&c.name))
        .filter(|c| {
            !table.constraints.values().any(|k| match k {
                Constraint::Unique { columns } => columns.contains(&c.name),
                _ => false,
            })
        })
        .collect();
    columns.sort_by_key(|c| (!c.nullable, c.name.clone()));
    columns.first().map(|c| c.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_policies_give_every_kind_of_query() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let schema =
            crate::policy::load(&dir, std::path::Path::new("policies"), &Default::default())
                .expect("shipped policies compile");
        let names: Vec<String> = query_set(&schema).into_iter().map(|q| q.name).collect();
        assert_eq!(
            names,
            [
                "coaches: point lookup by email",
                "coaches: page by full_name",
                "coaches: count by full_name",
                "coaches: insert",
                "coaches: update by email",
                "members: point lookup by email",
                "members: page by full_name",
                "members: count by status",
                "members: join coaches",
                "members: insert",
                "members: update by email",
            ]
        );
    }
}
