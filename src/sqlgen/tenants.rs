//! The statements of the tenant commands, the seeder, the demo's scenarios and its database:
//! names quoted, every runtime value a bind parameter.

use super::{q, rel};
use crate::model::Schema;

/// Columns the tenant table must have for the tenant commands (besides its key).
pub const SLUG_COLUMN: &str = "slug";
pub const NAME_COLUMN: &str = "name";

/// Dates are sent as day offsets from this fixed day, so a seed gives the same rows on any day.
pub const EPOCH_SQL: &str = "DATE '2000-01-01'";

/// `"schema"."table"`, in the tables' schema.
pub fn qualified(schema: &Schema, table: &str) -> String {
    rel(&schema.tenancy.table_schema, table)
}

/// The tenant's key, slug and name (as `id`, `slug`, `name`) by slug ($1).
pub fn find_tenant(schema: &Schema) -> String {
    let t = &schema.tenancy;
    format!(
        "SELECT {key} AS id, {slug} AS slug, {name} AS name FROM {table} WHERE {slug} = $1",
        key = q(&t.tenant_key),
        slug = q(SLUG_COLUMN),
        name = q(NAME_COLUMN),
        table = qualified(schema, &t.tenant_table),
    )
}

/// Insert a tenant (slug $1, name $2), returning its key.
pub fn insert_tenant(schema: &Schema) -> String {
    let t = &schema.tenancy;
    format!(
        "INSERT INTO {} ({}, {}) VALUES ($1, $2) RETURNING {}",
        qualified(schema, &t.tenant_table),
        q(SLUG_COLUMN),
        q(NAME_COLUMN),
        q(&t.tenant_key),
    )
}

/// Every tenant (or, with `by_key`, the one whose key is $1) with its key, slug and name (as `id`,
/// `slug`, `name`) and its row count in each of `data_tables` (table, tenant column) as `rows_<i>`,
/// sorted by slug.
pub fn tenants_with_counts(schema: &Schema, data_tables: &[(&str, &str)], by_key: bool) -> String {
    let t = &schema.tenancy;
    let key = q(&t.tenant_key);
    let mut cols = vec![
        format!("g.{key} AS id"),
        format!("g.{} AS slug", q(SLUG_COLUMN)),
        format!("g.{} AS name", q(NAME_COLUMN)),
    ];
    for (i, (table, column)) in data_tables.iter().enumerate() {
        cols.push(format!(
            "(SELECT count(*) FROM {} x WHERE x.{} = g.{key}) AS {}",
            qualified(schema, table),
            q(column),
            count_alias(i)
        ));
    }
    let filter = if by_key {
        format!("WHERE g.{key} = $1")
    } else {
        String::new()
    };
    format!(
        "SELECT {} FROM {} g {filter} ORDER BY g.{}",
        cols.join(", "),
        qualified(schema, &t.tenant_table),
        q(SLUG_COLUMN)
    )
}

/// The column of [`tenants_with_counts`] that holds the count of its `i`th data table.
pub fn count_alias(i: usize) -> String {
    format!("rows_{i}")
}

/// The tenant's whole row (key $1) as JSON.
pub fn tenant_record(schema: &Schema) -> String {
    format!(
        "SELECT to_jsonb(g) FROM {} g WHERE g.{} = $1",
        qualified(schema, &schema.tenancy.tenant_table),
        q(&schema.tenancy.tenant_key)
    )
}

/// Delete the tenant whose key is $1.
pub fn delete_tenant(schema: &Schema) -> String {
    format!(
        "DELETE FROM {} WHERE {} = $1",
        qualified(schema, &schema.tenancy.tenant_table),
        q(&schema.tenancy.tenant_key)
    )
}

/// `count(*)` of `table`: all the rows the session sees, or with `column`, those where it is $1.
pub fn count_rows(schema: &Schema, table: &str, column: Option<&str>) -> String {
    match column {
        Some(c) => format!(
            "SELECT count(*) FROM {} WHERE {} = $1",
            qualified(schema, table),
            q(c)
        ),
        None => format!("SELECT count(*) FROM {}", qualified(schema, table)),
    }
}

/// The count query as shown to a reader: the table unqualified, the tenant given by its slug.
pub fn shown_count(table: &str, filter: Option<(&str, &str)>) -> String {
    match filter {
        Some((column, slug)) => {
            format!("SELECT count(*) FROM {table} WHERE {column} = <{slug}>")
        }
        None => format!("SELECT count(*) FROM {table}"),
    }
}

/// A member row carrying the tenant id $1, as made by a tenant trying to write into another.
pub fn insert_foreign_member(schema: &Schema, table: &str, tenant_column: &str) -> String {
    format!(
        "INSERT INTO {} ({}, {}, {}) VALUES ($1, 'Mallory', 'mallory@example.com')",
        qualified(schema, table),
        q(tenant_column),
        q("full_name"),
        q("email")
    )
}

/// [`insert_foreign_member`] as shown to a reader.
pub fn shown_foreign_member(table: &str, tenant_column: &str, slug: &str) -> String {
    format!(
        "INSERT INTO {table} ({}, ...) VALUES (<{slug}>, ...)",
        q(tenant_column)
    )
}

/// How a seeded column's value is made from its array element (`u.cN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedValue {
    /// The element as it is.
    Plain,
    /// A day offset from [`EPOCH_SQL`].
    Day,
    /// A comma-separated list, as a text array.
    List,
}

/// One seeded column: its name, the array type it is sent as, how its value is made.
#[derive(Debug, Clone, Copy)]
pub struct SeedColumn {
    pub name: &'static str,
    pub array_type: &'static str,
    pub value: SeedValue,
}

pub(super) fn seed_value(value: SeedValue, element: &str) -> String {
    match value {
        SeedValue::Plain => element.to_string(),
        SeedValue::Day => format!("{EPOCH_SQL} + {element}"),
        SeedValue::List => format!("string_to_array({element}, ',')"),
    }
}

/// The seeder's INSERT into `table`: the tenant id is one parameter ($1), every other column an
/// array ($2, ...), unnested into rows.
pub fn seed_insert(schema: &Schema, table: &str, cols: &[&SeedColumn]) -> String {
    let mut names = vec![q(&schema.tenancy.tenant_column)];
    let mut exprs = vec!["$1::uuid".to_string()];
    let mut arrays = Vec::new();
    let mut aliases = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let alias = format!("c{i}");
        names.push(q(c.name));
        exprs.push(seed_value(c.value, &format!("u.{alias}")));
        arrays.push(format!("${}::{}", i + 2, c.array_type));
        aliases.push(alias);
    }
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
        qualified(schema, table),
        names.join(", "),
        exprs.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    )
}

/// Drop a database, ending its sessions. One statement: DROP DATABASE refuses a transaction.
pub fn drop_database(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", q(name))
}

pub fn create_database(name: &str) -> String {
    format!("CREATE DATABASE {}", q(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped schema, with names that break anything that splices them unquoted.
    fn hostile() -> Schema {
        let config = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tenantctl.toml"));
        let project = crate::settings::Project::load(config).unwrap();
        let mut schema = project.schema().unwrap();
        schema.tenancy.table_schema = "app\"; DROP TABLE x; --".into();
        schema.tenancy.tenant_table = "gy'ms".into();
        schema.tenancy.tenant_key = "i\"d".into();
        schema
    }

    #[test]
    fn tenant_statements_quote_every_name() {
        let schema = hostile();
        let table = r#""app""; DROP TABLE x; --"."gy'ms""#;
        assert_eq!(
            find_tenant(&schema),
            format!(
                r#"SELECT "i""d" AS id, "slug" AS slug, "name" AS name FROM {table} WHERE "slug" = $1"#
            )
        );
        assert_eq!(
            insert_tenant(&schema),
            format!(r#"INSERT INTO {table} ("slug", "name") VALUES ($1, $2) RETURNING "i""d""#)
        );
        assert_eq!(
            delete_tenant(&schema),
            format!(r#"DELETE FROM {table} WHERE "i""d" = $1"#)
        );
        assert_eq!(
            drop_database("x\"y"),
            r#"DROP DATABASE IF EXISTS "x""y" WITH (FORCE)"#
        );
    }

    #[test]
    fn counts_are_named_and_filtered_by_a_parameter() {
        let schema = hostile();
        let sql = tenants_with_counts(&schema, &[("mem\"bers", "gym_id")], true);
        assert!(sql.starts_with(r#"SELECT g."i""d" AS id, g."slug" AS slug, g."name" AS name, (SELECT count(*) FROM "app""; DROP TABLE x; --"."mem""bers" x WHERE x."gym_id" = g."i""d") AS rows_0 FROM "#), "{sql}");
        assert!(
            sql.ends_with(r#" g WHERE g."i""d" = $1 ORDER BY g."slug""#),
            "{sql}"
        );
        // Listing all tenants keeps the statement's old text, filter slot empty.
        let all = tenants_with_counts(&schema, &[], false);
        assert!(all.ends_with(r#""gy'ms" g  ORDER BY g."slug""#), "{all}");
    }
}
