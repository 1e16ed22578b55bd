//! The other databases of the cluster. verify checks one database, but roles are cluster-wide:
//! every other database a login of the closure can connect to (CONNECT, PUBLIC's by default) is
//! data the application reaches that this run did not check. Each must be shown to expose
//! nothing: where the closure's roles hold privileges or own objects (`pg_shdepend` is shared:
//! it records every database's) it is `privilege.other-database`; PUBLIC's grants leave no row
//! there, so verify connects to each such database (its own credentials, same server) and reads
//! what PUBLIC, or a role of the closure, may use in it (`privilege.other-database-public`); a
//! database it cannot read is `privilege.other-database-uninspected`. Templates are read too:
//! `datallowconn` is what lets a login in (`template1` allows connections, `template0` does not),
//! and a snapshot kept as a template is still data.

use anyhow::Result;
use tokio_postgres::Client;

use super::closure::Closure;
use super::query;
use crate::pg::unnamed::typed;
use crate::pg::Target;
use crate::verify::{Finding, Tally};

/// Other databases ($1: the closure's role oids and PUBLIC's 0) that a login of the closure may
/// connect to (a NOLOGIN role reaches nothing by itself; `has_database_privilege` counts
/// PUBLIC's CONNECT), and whether one of the closure holds a privilege or owns an object there.
const SIBLINGS: &str = "
SELECT d.datname::text AS name,
       EXISTS (SELECT FROM pg_catalog.pg_shdepend s
               WHERE s.dbid = d.oid AND s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                 AND s.refobjid = ANY($1) AND s.deptype IN ('a', 'o')) AS holds
FROM pg_catalog.pg_database d
WHERE d.datname <> pg_catalog.current_database() AND d.datallowconn
  AND EXISTS (SELECT FROM pg_catalog.pg_roles r
              WHERE r.oid = ANY($1) AND r.rolcanlogin
                AND pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT'))
ORDER BY 1";

/// Run in the other database: what the closure or PUBLIC ($1) may use outside the system
/// schemas: a privilege on a relation or column, a SECURITY DEFINER function it may execute
/// (explicitly or by the default EXECUTE to PUBLIC: it reads as its owner; an invoker function
/// reaches nothing its caller cannot), a large object, a foreign server (its user mappings log
/// in elsewhere), beyond what `pg_init_privs` records for relations and functions; and anything
/// one of the closure owns.
const EXPOSED: &str = "
WITH objs AS (
    SELECT 'relation ' || n.nspname || '.' || c.relname AS object, c.relacl AS acl, c.relowner AS owner,
           'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid AS objid, 0 AS subid
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  UNION ALL
    SELECT 'column ' || n.nspname || '.' || c.relname || '.' || a.attname, a.attacl, c.relowner,
           'pg_catalog.pg_class'::pg_catalog.regclass, c.oid, a.attnum
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE a.attacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
    SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')',
           CASE WHEN p.prosecdef THEN coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner)) END, p.proowner,
           'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 0
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
    SELECT 'large object ' || l.oid, l.lomacl, l.lomowner, 'pg_catalog.pg_largeobject'::pg_catalog.regclass, l.oid, 0
    FROM pg_catalog.pg_largeobject_metadata l
  UNION ALL
    SELECT 'foreign server ' || s.srvname, s.srvacl, s.srvowner, 'pg_catalog.pg_foreign_server'::pg_catalog.regclass, s.oid, 0
    FROM pg_catalog.pg_foreign_server s
)
SELECT o.object, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END
       || ' holds ' || a.privilege_type AS what
FROM objs o, pg_catalog.aclexplode(o.acl) a
WHERE a.grantee = ANY($1) AND a.grantee <> o.owner
  -- an extension's own grant on its relations and functions, as pg_init_privs records it: the
  -- fresh-cluster baseline of this database too (Citus's metadata views are PUBLIC's to read,
  -- and Citus is commonly installed in `postgres` as well)
  AND NOT (o.classid IN ('pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_proc'::pg_catalog.regclass)
           AND EXISTS (SELECT FROM pg_catalog.pg_init_privs ip, pg_catalog.aclexplode(ip.initprivs) i
                       WHERE ip.objoid = o.objid AND ip.classoid = o.classid AND ip.objsubid = o.subid
                         AND i.grantee = a.grantee AND i.privilege_type = a.privilege_type))
UNION ALL
SELECT o.object, pg_catalog.pg_get_userbyid(o.owner)::text || ' owns it'
FROM objs o WHERE o.owner = ANY($1)
ORDER BY 1, 2
LIMIT 20";

typed_row! {
    /// A database of the same cluster the closure reaches (a row of [`SIBLINGS`]).
    struct Sibling {
        name: String,
        holds: bool,
    }
}

typed_row! {
    /// What the closure or PUBLIC may use in another database (a row of [`EXPOSED`]).
    struct Exposed {
        object: String,
        what: String,
    }
}

pub(super) async fn check(
    client: &Client,
    target: &Target,
    closure: &Closure,
    tally: &mut Tally,
) -> Result<()> {
    let grantees = closure.grantees();
    let found = query(
        client,
        SIBLINGS,
        typed![&grantees],
        "cannot read the other databases of the cluster",
        Sibling::from_row,
    )
    .await?;
    for id in [
        "privilege.other-database",
        "privilege.other-database-public",
        "privilege.other-database-uninspected",
    ] {
        tally.pass(id);
    }
    for s in found {
        let finding = if s.holds {
            Some(held(&s.name))
        } else {
            inspect(client, target, &s.name, &grantees).await?
        };
        if let Some(f) = finding {
            tally.fail(f);
        }
    }
    Ok(())
}

fn held(name: &str) -> Finding {
    Finding::new(
        "privilege.other-database",
        format!("database {name}"),
        format!(
            "the application's roles can connect to database {name} of the same cluster and hold privileges or own objects there: its data is reachable, and this run did not check it"
        ),
    )
}

/// Connect to the other database `name` and read what it exposes; None when it exposes nothing
/// (or was dropped meanwhile: gone is not reachable).
async fn inspect(
    client: &Client,
    target: &Target,
    name: &str,
    grantees: &[u32],
) -> Result<Option<Finding>> {
    let object = format!("database {name}");
    let read = async {
        let other = crate::pg::connect(&target.with_dbname(name)?).await?;
        let what = "cannot read what the database exposes";
        query(&other, EXPOSED, typed![grantees], what, Exposed::from_row).await
    };
    match read.await {
        Ok(exposed) if exposed.is_empty() => Ok(None),
        Ok(exposed) => {
            let list: Vec<String> = exposed
                .iter()
                .map(|e| format!("{} ({})", e.object, e.what))
                .collect();
            Ok(Some(Finding::new(
                "privilege.other-database-public",
                object,
                format!(
                    "the application's logins can connect to database {name} of the same cluster (CONNECT, PUBLIC's by default), where PUBLIC or their roles may use: {}: this run did not check that data",
                    list.join(", ")
                ),
            )))
        }
        Err(_) if !still_there(client, name).await? => Ok(None),
        Err(e) => Ok(Some(Finding::new(
            "privilege.other-database-uninspected",
            object,
            format!(
                "the application's logins can connect to database {name} of the same cluster, and verify could not read it: {}",
                crate::pg::redact_text(&format!("{e:#}"))
            ),
        ))),
    }
}

/// Whether database `name` still exists (another session may drop it while verify runs).
async fn still_there(client: &Client, name: &str) -> Result<bool> {
    let sql = "SELECT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = $1) AS there";
    let rows = query(
        client,
        sql,
        typed![&name],
        "cannot read the databases",
        |r| crate::verify::row::col::<bool>(r, "there"),
    )
    .await?;
    Ok(rows.first().copied().unwrap_or(false))
}
