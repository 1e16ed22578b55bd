//! world.helper-schema: the helper schema holds what tenantctl generates (the context function,
//! the immutability trigger function, refinery's history) and nothing else. The app and admin
//! roles have USAGE on it, so whatever else lands there is within their reach by name; and a
//! role named like it (the embedded cluster's superuser is `tenantctl`) finds it first on its
//! `"$user"` search_path, so an unqualified CREATE puts objects there by accident.

use anyhow::Result;
use tokio_postgres::Client;

use super::query;
use crate::model::Schema;
use crate::pg::unnamed::typed;
use crate::verify::{Finding, Tally};

/// Objects in the helper schema ($1), with their names as findings show them ($2: the context
/// function's name): relations, functions, types, operators and extensions, except what
/// tenantctl generates and what belongs to an extension declared to live there ($3).
const UNDECLARED: &str = "
WITH h AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
SELECT x.object FROM (
    SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                          WHEN 'i' THEN 'index' WHEN 'f' THEN 'foreign table' ELSE 'table' END
           || ' ' || $1 || '.' || c.relname AS object, 'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid
    FROM pg_catalog.pg_class c, h
    WHERE c.relnamespace = h.oid
      AND c.relname NOT IN ('refinery_schema_history', 'refinery_schema_history_pkey')
  UNION ALL
    SELECT 'function ' || $1 || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')',
           'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid
    FROM pg_catalog.pg_proc p, h
    WHERE p.pronamespace = h.oid AND p.proname NOT IN ($2, 'forbid_tenant_change')
  UNION ALL
    SELECT 'type ' || $1 || '.' || t.typname, 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid
    FROM pg_catalog.pg_type t, h
    WHERE t.typnamespace = h.oid AND t.typrelid = 0 AND t.typcategory <> 'A'
  UNION ALL
    SELECT 'operator ' || $1 || '.' || o.oprname, 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid
    FROM pg_catalog.pg_operator o, h WHERE o.oprnamespace = h.oid
  UNION ALL
    SELECT 'extension ' || e.extname, 'pg_catalog.pg_extension'::pg_catalog.regclass, e.oid
    FROM pg_catalog.pg_extension e, h WHERE e.extnamespace = h.oid AND NOT e.extname = ANY($3)
) x
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                  WHERE d.classid = x.classid AND d.objid = x.oid AND d.deptype = 'e'
                    AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass)
   OR x.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass
ORDER BY 1";

typed_row! {
    /// An object in the helper schema that tenantctl does not generate (a row of [`UNDECLARED`]).
    struct Stray {
        object: String,
    }
}

pub(super) async fn check(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let t = &schema.tenancy;
    let declared: Vec<String> = schema
        .extensions
        .iter()
        .filter(|(_, e)| e.schema == t.helper_schema)
        .map(|(name, _)| name.clone())
        .collect();
    let strays = query(
        client,
        UNDECLARED,
        typed![&t.helper_schema, &t.context_function, &declared],
        "cannot list the helper schema's objects",
        Stray::from_row,
    )
    .await?;
    tally.pass("world.helper-schema");
    for s in strays {
        tally.fail(Finding::new(
            "world.helper-schema",
            s.object.clone(),
            format!(
                "{} is in the helper schema {}, which holds only what tenantctl generates: the app and admin roles have USAGE on it",
                s.object, t.helper_schema
            ),
        ));
    }
    Ok(())
}
