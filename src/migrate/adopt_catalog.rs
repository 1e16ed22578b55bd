//! The schema `adopt` compares: one set of catalog queries, run the same way on the live database
//! and on the scratch database the migrations are replayed in. Each row is an object (`key`) and
//! how it is defined (`value`), with names rather than OIDs, so that two databases compare.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tokio_postgres::GenericClient;

/// A relation of the compared schemas: `kind schema.name`. refinery's history is not compared.
const RELATIONS: &str = "
SELECT pg_catalog.format('%s %I.%I', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
         WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'table' END, n.nspname, c.relname) AS key,
       pg_catalog.format('owner %s, row security %s, forced %s, grants %s',
         pg_catalog.pg_get_userbyid(c.relowner),
         CASE WHEN c.relrowsecurity THEN 'on' ELSE 'off' END,
         CASE WHEN c.relforcerowsecurity THEN 'on' ELSE 'off' END,
         COALESCE((SELECT pg_catalog.string_agg(pg_catalog.format('%s:%s%s',
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                    a.privilege_type, CASE WHEN a.is_grantable THEN '+grant' ELSE '' END), ' '
                    ORDER BY 1)
                   FROM pg_catalog.aclexplode(c.relacl) a), 'default')) AS value
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND c.relname <> 'refinery_schema_history'";

/// A column: its type, nullability, default, identity, generation and column grants.
const COLUMNS: &str = "
SELECT pg_catalog.format('column %I.%I.%I', n.nspname, c.relname, a.attname) AS key,
       pg_catalog.format('%s%s%s%s%s%s', pg_catalog.format_type(a.atttypid, a.atttypmod),
         CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
         COALESCE(' default ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''),
         CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END,
         CASE WHEN a.attgenerated <> '' THEN ' generated ' || a.attgenerated::text ELSE '' END,
         COALESCE(' grants ' || (SELECT pg_catalog.string_agg(pg_catalog.format('%s:%s',
                    CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(g.grantee) END,
                    g.privilege_type), ' ' ORDER BY 1)
                   FROM pg_catalog.aclexplode(a.attacl) g), '')) AS value
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'refinery_schema_history'";

/// A table's constraint, as Postgres prints it.
const CONSTRAINTS: &str = "
SELECT pg_catalog.format('constraint %I on %I.%I', k.conname, n.nspname, c.relname) AS key,
       pg_catalog.pg_get_constraintdef(k.oid) AS value
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1) AND c.relname <> 'refinery_schema_history'";

/// An index, as Postgres prints it.
const INDEXES: &str = "
SELECT pg_catalog.format('index %I.%I', n.nspname, i.relname) AS key,
       pg_catalog.pg_get_indexdef(x.indexrelid) AS value
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = ANY($1) AND c.relname <> 'refinery_schema_history'";

/// A row-level security policy: permissive or restrictive, command, roles and expressions.
const POLICIES: &str = "
SELECT pg_catalog.format('policy %I on %I.%I', p.polname, n.nspname, c.relname) AS key,
       pg_catalog.format('%s for %s to %s using (%s) with check (%s)',
         CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END, p.polcmd::text,
         (SELECT pg_catalog.string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r) END,
                 ', ' ORDER BY 1) FROM pg_catalog.unnest(p.polroles) r),
         COALESCE(pg_catalog.pg_get_expr(p.polqual, p.polrelid), ''),
         COALESCE(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')) AS value
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1)";

/// A trigger (not the ones Postgres makes for constraints), as Postgres prints it.
const TRIGGERS: &str = "
SELECT pg_catalog.format('trigger %I on %I.%I', t.tgname, n.nspname, c.relname) AS key,
       pg_catalog.pg_get_triggerdef(t.oid) || CASE t.tgenabled WHEN 'D' THEN ' (disabled)' ELSE '' END AS value
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1) AND NOT t.tgisinternal";

/// A function or procedure (not an extension's): owner, grants and its whole definition.
const FUNCTIONS: &str = "
SELECT pg_catalog.format('function %I.%I(%s)', n.nspname, p.proname,
         pg_catalog.pg_get_function_identity_arguments(p.oid)) AS key,
       pg_catalog.format('owner %s, grants %s: %s', pg_catalog.pg_get_userbyid(p.proowner),
         COALESCE((SELECT pg_catalog.string_agg(pg_catalog.format('%s:%s',
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                    a.privilege_type), ' ' ORDER BY 1)
                   FROM pg_catalog.aclexplode(p.proacl) a), 'default'),
         pg_catalog.pg_get_functiondef(p.oid)) AS value
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY($1) AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e
                  WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid
                    AND e.deptype = 'e')";

/// A schema tenantctl creates (the helper schema): its owner and grants. The tables' schema
/// (`public`, which every database has) is compared through its objects only.
const SCHEMAS: &str = "
SELECT pg_catalog.format('schema %I', n.nspname) AS key,
       pg_catalog.format('owner %s, grants %s', pg_catalog.pg_get_userbyid(n.nspowner),
         COALESCE((SELECT pg_catalog.string_agg(pg_catalog.format('%s:%s',
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                    a.privilege_type), ' ' ORDER BY 1)
                   FROM pg_catalog.aclexplode(n.nspacl) a), 'default')) AS value
FROM pg_catalog.pg_namespace n
WHERE n.nspname = ANY($1) AND n.nspname <> 'public'";

/// Every query of the comparison.
const QUERIES: [&str; 8] = [
    RELATIONS,
    COLUMNS,
    CONSTRAINTS,
    INDEXES,
    POLICIES,
    TRIGGERS,
    FUNCTIONS,
    SCHEMAS,
];

/// The schema of a database, object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog(pub BTreeMap<String, String>);

/// Read the objects of `schemas`, with the session's search_path (which decides how Postgres
/// prints names in expressions: the same on both sides).
pub async fn read(client: &impl GenericClient, schemas: &[String]) -> Result<Catalog> {
    let mut objects = BTreeMap::new();
    for query in QUERIES {
        let rows = client
            .query(query, &[&schemas])
            .await
            .map_err(crate::pg::error::pg_error)
            .context("cannot read the database's catalog")?;
        for row in rows {
            objects.insert(row.try_get("key")?, row.try_get("value")?);
        }
    }
    Ok(Catalog(objects))
}

/// How the database differs from what the migrations build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// In the database, not built by the migrations.
    Extra { object: String, database: String },
    /// Built by the migrations, not in the database.
    Missing { object: String, expected: String },
    /// In both, defined differently.
    Changed {
        object: String,
        database: String,
        expected: String,
    },
}

impl Difference {
    pub fn object(&self) -> &str {
        match self {
            Difference::Extra { object, .. }
            | Difference::Missing { object, .. }
            | Difference::Changed { object, .. } => object,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Difference::Extra { .. } => "extra",
            Difference::Missing { .. } => "missing",
            Difference::Changed { .. } => "changed",
        }
    }
}

/// What differs between the database and what the migrations build, in object order.
pub fn differences(database: &Catalog, expected: &Catalog) -> Vec<Difference> {
    let mut out = Vec::new();
    for (object, value) in &database.0 {
        match expected.0.get(object) {
            None => out.push(Difference::Extra {
                object: object.clone(),
                database: value.clone(),
            }),
            Some(e) if e != value => out.push(Difference::Changed {
                object: object.clone(),
                database: value.clone(),
                expected: e.clone(),
            }),
            Some(_) => {}
        }
    }
    for (object, value) in &expected.0 {
        if !database.0.contains_key(object) {
            out.push(Difference::Missing {
                object: object.clone(),
                expected: value.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.object().cmp(b.object()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(pairs: &[(&str, &str)]) -> Catalog {
        Catalog(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn differences_name_extra_missing_and_changed_objects() {
        let database = catalog(&[("column t.a", "text"), ("column t.b", "int"), ("x", "1")]);
        let expected = catalog(&[
            ("column t.a", "text not null"),
            ("column t.c", "int"),
            ("x", "1"),
        ]);
        let kinds: Vec<(&str, &str)> = differences(&database, &expected)
            .iter()
            .map(|d| (d.kind(), d.object()))
            .map(|(k, o)| {
                (
                    k,
                    if o == "column t.a" {
                        "a"
                    } else if o == "column t.b" {
                        "b"
                    } else {
                        "c"
                    },
                )
            })
            .collect();
        assert_eq!(kinds, [("changed", "a"), ("extra", "b"), ("missing", "c")]);
        assert!(differences(&database, &database).is_empty());
    }
}
