//! Outside the declared world the database must look as a fresh cluster of its version plus its
//! extensions: no object added to the system schemas after initdb, no event trigger, no default
//! privileges that would hand the application's roles future objects. What a managed platform
//! adds by itself (Neon: `platform.rs`) is recognised.

use crate::pg::unnamed::typed;

use anyhow::Result;
use tokio_postgres::Client;

use super::closure::Closure;
use super::{platform::Platform, query};
use crate::verify::{Finding, Tally};

/// Objects in pg_catalog or information_schema created after initdb (oid >= 16384, the first
/// normal object id) that no extension installed.
const CATALOG_OBJECTS: &str = "
SELECT kind || ' ' || n.nspname || '.' || name AS object
FROM (
    SELECT 'pg_class'::regclass AS classid, c.oid, c.relnamespace AS nsp, c.relname::text AS name,
           CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                          WHEN 'i' THEN 'index' WHEN 'f' THEN 'foreign table' ELSE 'table' END AS kind
    FROM pg_catalog.pg_class c
  UNION ALL
    SELECT 'pg_proc'::regclass, p.oid, p.pronamespace,
           p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')', 'function'
    FROM pg_catalog.pg_proc p
  UNION ALL
    SELECT 'pg_type'::regclass, t.oid, t.typnamespace, t.typname::text, 'type'
    FROM pg_catalog.pg_type t WHERE t.typrelid = 0
  UNION ALL
    SELECT 'pg_operator'::regclass, o.oid, o.oprnamespace, o.oprname::text, 'operator'
    FROM pg_catalog.pg_operator o
) x JOIN pg_catalog.pg_namespace n ON n.oid = x.nsp
WHERE n.nspname IN ('pg_catalog', 'information_schema') AND x.oid >= 16384
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = x.classid AND d.objid = x.oid AND d.deptype = 'e')
  -- the indexes (through their constraints), TOAST tables and owned sequences of an
  -- extension's own tables (Citus's in pg_catalog) belong to it too
  AND NOT EXISTS (
    WITH RECURSIVE up(classid, objid, depth) AS (
        SELECT x.classid, x.oid, 0
      UNION ALL
        SELECT d.refclassid, d.refobjid, up.depth + 1
        FROM up JOIN pg_catalog.pg_depend d ON d.classid = up.classid AND d.objid = up.objid
        WHERE d.deptype IN ('a', 'i') AND up.depth < 3)
    SELECT FROM up JOIN pg_catalog.pg_depend e ON e.classid = up.classid AND e.objid = up.objid
    WHERE e.deptype = 'e')
ORDER BY 1";

/// Every event trigger: whether it is enabled, the extension it belongs to (if any) and the
/// function it runs (schema-qualified, with the extension that function belongs to).
const EVENT_TRIGGERS: &str = "
SELECT e.evtname::text AS name, pg_catalog.pg_get_userbyid(e.evtowner)::text AS owner,
       e.evtenabled <> 'D' AS enabled,
       (SELECT x.extname::text FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid
        WHERE d.classid = 'pg_catalog.pg_event_trigger'::regclass AND d.objid = e.oid AND d.deptype = 'e') AS extension,
       n.nspname || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS function,
       (SELECT x.extname::text FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid
        WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') AS function_extension
FROM pg_catalog.pg_event_trigger e
JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
ORDER BY 1";

/// Event triggers that extensions' own install scripts create, with the function each runs:
/// (extension, event trigger, function). Citus drops a distributed table's shards and metadata
/// on `sql_drop` (citus--8.0-1.sql; no later script drops it).
const EXTENSION_EVENT_TRIGGERS: &[(&str, &str, &str)] = &[(
    "citus",
    "citus_cascade_to_partition",
    "pg_catalog.citus_drop_trigger()",
)];

/// Casts created after initdb (oid >= 16384) that no extension installed. pg_cast is not
/// per-schema: a cast changes what every `::type` does, in policies and defaults as they are
/// re-planned and in the inlined context function's `::uuid` (its text unchanged).
const CASTS: &str = "
SELECT 'cast (' || pg_catalog.format_type(c.castsource, NULL) || ' AS ' || pg_catalog.format_type(c.casttarget, NULL) || ')' AS object,
       coalesce(c.castfunc::pg_catalog.regprocedure::text, CASE c.castmethod WHEN 'b' THEN 'binary coercion' ELSE 'I/O conversion' END) AS how
FROM pg_catalog.pg_cast c
WHERE c.oid >= 16384
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_cast'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1";

/// Default privileges that grant a role of the closure, or PUBLIC ($1), more than the built-in
/// default for that kind of object.
const DEFAULT_PRIVILEGES: &str = "
SELECT pg_catalog.pg_get_userbyid(d.defaclrole)::text AS role, coalesce(n.nspname::text, '(all schemas)') AS schema,
       CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                            WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE 'large objects' END AS kind,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee,
       a.privilege_type AS privilege
FROM pg_catalog.pg_default_acl d LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace,
     pg_catalog.aclexplode(d.defaclacl) a
WHERE a.grantee = ANY($1)
  AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(pg_catalog.acldefault(
                    CASE d.defaclobjtype WHEN 'S' THEN 's' WHEN 'T' THEN 'T' WHEN 'n' THEN 'n' WHEN 'f' THEN 'f'
                                         WHEN 'L' THEN 'L' ELSE 'r' END::\"char\", d.defaclrole)) x
                  WHERE x.grantee = a.grantee AND x.privilege_type = a.privilege_type)
ORDER BY 1, 2, 3, 4, 5";

typed_row! {
    /// An object added to a system schema (a row of [`CATALOG_OBJECTS`]).
    struct Added {
        object: String,
    }
}

typed_row! {
    /// An event trigger (a row of [`EVENT_TRIGGERS`]).
    struct EventTrigger {
        name: String,
        owner: String,
        enabled: bool,
        extension: Option<String>,
        function: String,
        function_extension: Option<String>,
    }
}

typed_row! {
    /// A cast no extension installed (a row of [`CASTS`]).
    struct Cast {
        object: String,
        how: String,
    }
}

typed_row! {
    /// A default privilege for the closure (a row of [`DEFAULT_PRIVILEGES`]).
    struct DefaultPrivilege {
        role: String,
        schema: String,
        kind: String,
        grantee: String,
        privilege: String,
    }
}

pub(super) async fn check(
    client: &Client,
    closure: &Closure,
    platform: &Platform,
    tally: &mut Tally,
) -> Result<()> {
    let what = "cannot read the system schemas";
    let added = query(client, CATALOG_OBJECTS, &[], what, Added::from_row).await?;
    tally.pass("pristine.catalog-object");
    for a in added {
        tally.fail(Finding::new(
            "pristine.catalog-object",
            &a.object,
            format!("{} was added to a system schema after initdb, by no extension: it is found before any other object of its name and runs for everyone", a.object),
        ));
    }
    event_triggers(client, platform, tally).await?;
    casts(client, tally).await?;
    default_privileges(client, closure, tally).await
}

impl EventTrigger {
    /// An event trigger an extension's own install script creates (its function too).
    fn installed_by_its_extension(&self) -> bool {
        let ext = self.extension.as_deref();
        ext.is_some()
            && self.function_extension.as_deref() == ext
            && EXTENSION_EVENT_TRIGGERS.iter().any(|(x, name, function)| {
                ext == Some(*x) && self.name == *name && self.function == *function
            })
    }
}

/// pristine.event-trigger (no extension's) and pristine.extension-event-trigger (an enabled one
/// an extension holds, but not one its install script creates: `ALTER EXTENSION ... ADD EVENT
/// TRIGGER` makes any event trigger an extension's): an event trigger runs its function on the
/// DDL of every role, the application's `CREATE TEMP TABLE` included.
async fn event_triggers(client: &Client, platform: &Platform, tally: &mut Tally) -> Result<()> {
    let what = "cannot read event triggers";
    let evts = query(client, EVENT_TRIGGERS, &[], what, EventTrigger::from_row).await?;
    tally.pass("pristine.event-trigger");
    tally.pass("pristine.extension-event-trigger");
    for e in evts.iter().filter(|e| !platform.event_trigger(&e.name)) {
        let runs = format!(
            "runs {} on the DDL of every role, the application's included (CREATE TEMP TABLE too)",
            e.function
        );
        let finding = match &e.extension {
            None => Finding::new(
                "pristine.event-trigger",
                format!("event trigger {}", e.name),
                format!("event trigger {} (owned by {}) {runs}", e.name, e.owner),
            ),
            Some(x) if e.enabled && !e.installed_by_its_extension() => Finding::new(
                "pristine.extension-event-trigger",
                format!("event trigger {}", e.name),
                format!(
                    "event trigger {} (owned by {}) belongs to extension {x}, whose install script does not create it (ALTER EXTENSION ... ADD), and {runs}",
                    e.name, e.owner
                ),
            ),
            Some(_) => continue,
        };
        tally.fail(finding);
    }
    Ok(())
}

/// pristine.cast: a cast no extension installed. Any cast, not only those of the context
/// function's and the tenant column's types: every policy, default and check re-planned after
/// it calls it, and a team rarely needs one (an extension's, citext's, passes).
async fn casts(client: &Client, tally: &mut Tally) -> Result<()> {
    let live = query(client, CASTS, &[], "cannot read casts", Cast::from_row).await?;
    tally.pass("pristine.cast");
    for c in live {
        tally.fail(Finding::new(
            "pristine.cast",
            &c.object,
            format!(
                "{} ({}) was created after initdb by no extension: pg_cast is not per-schema, so every `::` of those types calls it, the inlined context function's `::uuid` included",
                c.object, c.how
            ),
        ));
    }
    Ok(())
}

/// pristine.default-privileges: future objects would be granted to the application.
async fn default_privileges(client: &Client, closure: &Closure, tally: &mut Tally) -> Result<()> {
    let what = "cannot read default privileges";
    let grantees = closure.grantees();
    let rows = query(
        client,
        DEFAULT_PRIVILEGES,
        typed![&grantees],
        what,
        DefaultPrivilege::from_row,
    )
    .await?;
    tally.pass("pristine.default-privileges");
    for d in rows {
        tally.fail(Finding::new(
            "pristine.default-privileges",
            format!("default privileges {} {}", d.role, d.schema),
            format!(
                "{} on {} that {} creates in {} are granted to {} by default privileges",
                d.privilege, d.kind, d.role, d.schema, d.grantee
            ),
        ));
    }
    Ok(())
}
