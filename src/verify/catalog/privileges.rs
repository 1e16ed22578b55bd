//! Every privilege the closure holds (granted to one of its roles or to PUBLIC) on any relation,
//! column, sequence, function, schema, large object, type, language, foreign server or wrapper,
//! the database or a tablespace, catalogs included, compared with what the policy files declare
//! and what a fresh cluster has (`pg_init_privs` for what initdb and extensions installed, the
//! built-in defaults, `acldefault`, for the rest). A missing schema USAGE makes nothing
//! unreachable: views, functions and triggers reach past it. Also LEAKPROOF functions the closure
//! can run: the planner evaluates them before the policies' conditions.

use crate::pg::unnamed::typed;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::closure::Closure;
use super::query;
use crate::model::Schema;
use crate::verify::{Finding, Tally};

/// Each object with an ACL of its own: the catalog, the object, its owner, the `acldefault`
/// type letter and how findings name it. A security_invoker view adds no reach of its own (its
/// reader's privileges on what it reads are checked as such).
macro_rules! objects {
    () => {
        "
SELECT 'pg_class'::regclass AS classid, c.oid AS objid, 0 AS subid, c.relacl AS acl, c.relowner AS owner,
       CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END AS deftype,
       CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                      WHEN 'S' THEN 'sequence' ELSE 'table' END || ' ' || n.nspname || '.' || c.relname AS object
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relacl IS NOT NULL AND c.oid <> ALL($2) AND NOT (c.relkind = 'v' AND coalesce(c.reloptions, '{}')::text[]
      && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=yes', 'security_invoker=1'])
UNION ALL
SELECT 'pg_class'::regclass, c.oid, a.attnum, a.attacl, c.relowner, 'c',
       'column ' || n.nspname || '.' || c.relname || '.' || a.attname
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attacl IS NOT NULL AND NOT a.attisdropped AND c.oid <> ALL($2) AND NOT (c.relkind = 'v' AND coalesce(c.reloptions, '{}')::text[]
      && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=yes', 'security_invoker=1'])
UNION ALL
SELECT 'pg_proc'::regclass, p.oid, 0, p.proacl, p.proowner, 'f',
       'function ' || n.nspname || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')'
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.proacl IS NOT NULL
UNION ALL
SELECT 'pg_namespace'::regclass, n.oid, 0, n.nspacl, n.nspowner, 'n', 'schema ' || n.nspname
FROM pg_catalog.pg_namespace n WHERE n.nspacl IS NOT NULL
UNION ALL
SELECT 'pg_largeobject'::regclass, l.oid, 0, l.lomacl, l.lomowner, 'L', 'large object ' || l.oid
FROM pg_catalog.pg_largeobject_metadata l WHERE l.lomacl IS NOT NULL
UNION ALL
SELECT 'pg_type'::regclass, t.oid, 0, t.typacl, t.typowner, 'T', 'type ' || n.nspname || '.' || t.typname
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.typacl IS NOT NULL
UNION ALL
SELECT 'pg_language'::regclass, l.oid, 0, l.lanacl, l.lanowner, 'l', 'language ' || l.lanname
FROM pg_catalog.pg_language l WHERE l.lanacl IS NOT NULL
UNION ALL
SELECT 'pg_foreign_server'::regclass, s.oid, 0, s.srvacl, s.srvowner, 'S', 'foreign server ' || s.srvname
FROM pg_catalog.pg_foreign_server s WHERE s.srvacl IS NOT NULL
UNION ALL
SELECT 'pg_foreign_data_wrapper'::regclass, w.oid, 0, w.fdwacl, w.fdwowner, 'F', 'foreign data wrapper ' || w.fdwname
FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.fdwacl IS NOT NULL
UNION ALL
SELECT 'pg_database'::regclass, d.oid, 0, d.datacl, d.datdba, 'd', 'database ' || d.datname
FROM pg_catalog.pg_database d WHERE d.datacl IS NOT NULL AND d.datname = pg_catalog.current_database()
UNION ALL
SELECT 'pg_tablespace'::regclass, t.oid, 0, t.spcacl, t.spcowner, 't', 'tablespace ' || t.spcname
FROM pg_catalog.pg_tablespace t WHERE t.spcacl IS NOT NULL"
    };
}

/// The kinds of object (`o.classid`) whose `pg_init_privs` entries are a fresh cluster's: the
/// ones initdb's and extensions' own scripts grant on (relations, functions, types, schemas).
/// `ALTER EXTENSION ... ADD` records any object's ACL of the moment there, so an entry for a
/// foreign server, wrapper, language, large object, database or tablespace is no baseline: those
/// are judged against the built-in default (`acldefault`).
macro_rules! init_privs_trusted {
    () => {
        "o.classid IN ('pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_proc'::pg_catalog.regclass,
                       'pg_catalog.pg_type'::pg_catalog.regclass, 'pg_catalog.pg_namespace'::pg_catalog.regclass)"
    };
}

/// The objects of schema `$nsp` (every one records a dependency on its schema, extensions
/// aside) that belong to no extension: neither a member, nor made by one for a member (an array
/// type, a row type, an index, an owned sequence: an internal or auto dependency on a member).
macro_rules! not_an_extensions {
    ($nsp:literal) => {
        concat!(
            "SELECT FROM pg_catalog.pg_depend m
  WHERE m.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND m.refobjid = ", $nsp, "
    AND m.classid <> 'pg_catalog.pg_extension'::pg_catalog.regclass
    AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = m.classid AND e.objid = m.objid AND e.deptype = 'e')
    AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    JOIN pg_catalog.pg_depend e ON e.classid = d.refclassid AND e.objid = d.refobjid AND e.deptype = 'e'
                    WHERE d.classid = m.classid AND d.objid = m.objid AND d.deptype IN ('i', 'a'))"
        )
    };
}

/// The privileges ($1: the closure's roles and PUBLIC, 0) that neither `pg_init_privs` (where
/// the object has an entry: initdb's and extensions' objects, of the kinds above) nor the
/// built-in default has.
/// initdb grants information_schema to PUBLIC without recording it in `pg_init_privs`: PUBLIC's
/// SELECT and USAGE on an initdb object (oid below 16384) without an entry there are pristine.
/// Before PostgreSQL 15, `public` gives PUBLIC CREATE by default.
const UNDECLARED: &str = concat!(
    "WITH objs AS (",
    objects!(),
    ")
SELECT o.object, a.privilege_type AS privilege,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee
FROM objs o, pg_catalog.aclexplode(o.acl) a
WHERE a.grantee = ANY($1) AND a.grantee <> o.owner
  AND NOT EXISTS (
    SELECT FROM pg_catalog.pg_init_privs ip, pg_catalog.aclexplode(ip.initprivs) i
    WHERE ip.objoid = o.objid AND ip.classoid = o.classid AND ip.objsubid = o.subid AND ",
    init_privs_trusted!(),
    "
      AND i.grantee = a.grantee AND i.privilege_type = a.privilege_type)
  AND (EXISTS (SELECT FROM pg_catalog.pg_init_privs ip
               WHERE ip.objoid = o.objid AND ip.classoid = o.classid AND ip.objsubid = o.subid AND ",
    init_privs_trusted!(),
    ")
       OR NOT EXISTS (SELECT FROM pg_catalog.aclexplode(pg_catalog.acldefault(o.deftype::\"char\", o.owner)) d
                      WHERE d.grantee = a.grantee AND d.privilege_type = a.privilege_type))
  AND NOT (o.objid < 16384 AND a.grantee = 0 AND a.privilege_type IN ('SELECT', 'USAGE')
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_init_privs ip
                           WHERE ip.objoid = o.objid AND ip.classoid = o.classid AND ip.objsubid = o.subid))
  AND NOT (o.classid = 'pg_catalog.pg_database'::pg_catalog.regclass
           AND a.privilege_type IN ('CONNECT', 'TEMPORARY'))
  -- a schema's privilege that PUBLIC holds in a fresh cluster, granted to a role instead
  -- (REVOKE ... FROM PUBLIC; GRANT ... TO app, a hardening step), gives that role nothing new
  -- (not so for functions: one revoked from PUBLIC and granted to a login is a new reach)
  AND NOT (o.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
           AND EXISTS (SELECT FROM pg_catalog.pg_init_privs ip, pg_catalog.aclexplode(ip.initprivs) i
                       WHERE ip.objoid = o.objid AND ip.classoid = o.classid AND ip.objsubid = o.subid
                         AND i.grantee = 0 AND i.privilege_type = a.privilege_type))
  -- USAGE on a schema that holds only extensions' objects (an `extensions` schema for pgcrypto
  -- and citext) and on which no role of the closure, nor PUBLIC, may CREATE: it reaches only
  -- what the extensions' own privileges say, which are judged object by object
  AND NOT (o.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND a.privilege_type = 'USAGE'
           AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(o.acl) c
                           WHERE c.grantee = ANY($1) AND c.privilege_type = 'CREATE')
           AND NOT EXISTS (",
    not_an_extensions!("o.objid"),
    "))
  AND NOT (o.object = 'schema public' AND a.grantee = 0 AND a.privilege_type IN ('USAGE', 'CREATE')
           AND pg_catalog.current_setting('server_version_num')::int < 150000)
ORDER BY 1, 3, 2"
);

/// Parameter privileges (PostgreSQL 15+: `GRANT SET ON PARAMETER`) of a role of the closure or
/// PUBLIC ($1): a fresh cluster has none, and one like `session_replication_role` switches every
/// trigger off, the foreign keys' and the tenant-id immutability trigger with them.
const PARAMETERS: &str = "
SELECT 'parameter ' || p.parname AS object, a.privilege_type AS privilege,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee
FROM pg_catalog.pg_parameter_acl p, pg_catalog.aclexplode(p.paracl) a
WHERE a.grantee = ANY($1)
ORDER BY 1, 3, 2";

/// LEAKPROOF functions outside pg_catalog that a role of the closure can execute.
const LEAKPROOF: &str = "
SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS object
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proleakproof AND n.nspname <> 'pg_catalog'
  AND EXISTS (SELECT FROM unnest($1::oid[]) r WHERE r <> 0 AND pg_catalog.has_function_privilege(r, p.oid, 'EXECUTE'))
ORDER BY 1";

typed_row! {
    /// A privilege the closure holds beyond the pristine ones (a row of [`UNDECLARED`]).
    struct Held {
        object: String,
        privilege: String,
        grantee: String,
    }
}

typed_row! {
    /// A LEAKPROOF function (a row of [`LEAKPROOF`]).
    struct Leakproof {
        object: String,
    }
}

pub(super) async fn check(
    client: &Client,
    schema: &Schema,
    declared_tables: &[u32],
    closure: &Closure,
    tally: &mut Tally,
) -> Result<()> {
    let grantees = closure.grantees();
    // The query's estimated cost (an aclexplode per object, nested) crosses jit_above_cost on a
    // database of a few hundred relations, and JIT spent 80 ms compiling what runs in 20: read
    // in a transaction of its own with jit off (transaction-local, as through a pooler).
    client
        .batch_execute("BEGIN READ ONLY; SET LOCAL jit = off")
        .await
        .context("cannot start a read-only transaction for the privilege checks")?;
    let held = held_privileges(client, &grantees, declared_tables).await;
    let end = if held.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await?;
    let held = held?;
    tally.pass("privilege.undeclared");
    for h in held.iter().filter(|h| !declared(schema, h)) {
        let obj = format!("privilege {} on {} to {}", h.privilege, h.object, h.grantee);
        tally.fail(Finding::new(
            "privilege.undeclared",
            obj,
            format!(
                "{} holds {} on {}, which neither policies/ nor a fresh cluster grants",
                h.grantee, h.privilege, h.object
            ),
        ));
    }
    leakproof(client, &grantees, tally).await
}

/// Every privilege the closure's roles and PUBLIC hold beyond a fresh cluster (parameters too,
/// where the server has them).
async fn held_privileges(
    client: &Client,
    grantees: &[u32],
    declared_tables: &[u32],
) -> Result<Vec<Held>> {
    let what = "cannot read the privileges of the roles that can act as the application";
    let mut held = query(
        client,
        UNDECLARED,
        typed![&grantees, &declared_tables],
        what,
        Held::from_row,
    )
    .await?;
    if crate::pg::unnamed::relation_exists(client, "pg_catalog.pg_parameter_acl").await? {
        held.extend(query(client, PARAMETERS, typed![&grantees], what, Held::from_row).await?);
    }
    Ok(held)
}

/// What the generated SQL grants outside the declared tables (drift.grant judges those): the
/// helper schema's USAGE to the app and admin roles, and a declared extension's schema USAGE to
/// the roles its `usage` names.
fn declared(schema: &Schema, h: &Held) -> bool {
    let t = &schema.tenancy;
    if h.privilege != "USAGE" {
        return false;
    }
    let helper = h.object == format!("schema {}", t.helper_schema)
        && (h.grantee == t.app_role || h.grantee == t.admin_role);
    helper
        || schema
            .extensions
            .values()
            .any(|e| h.object == format!("schema {}", e.schema) && e.usage.contains(&h.grantee))
}

/// privilege.leakproof: a LEAKPROOF function runs before the policy's condition, on every row.
async fn leakproof(client: &Client, grantees: &[u32], tally: &mut Tally) -> Result<()> {
    let what = "cannot read LEAKPROOF functions";
    let fns = query(
        client,
        LEAKPROOF,
        typed![grantees],
        what,
        Leakproof::from_row,
    )
    .await?;
    tally.pass("privilege.leakproof");
    for f in fns {
        tally.fail(Finding::new(
            "privilege.leakproof",
            &f.object,
            format!(
                "{} is LEAKPROOF and the application can run it: the planner may call it on other tenants' rows before the policy filters them",
                f.object
            ),
        ));
    }
    Ok(())
}
