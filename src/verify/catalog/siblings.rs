//! privilege.other-database: verify checks one database, but roles are cluster-wide. Another
//! database of the same cluster (a BI copy made with `CREATE DATABASE ... TEMPLATE`, a staging
//! copy) in which a role of the closure holds privileges or owns objects, and which it may
//! connect to, is data the application reaches that this run never checked.

use anyhow::Result;
use tokio_postgres::Client;

use super::closure::Closure;
use super::query;
use crate::pg::unnamed::typed;
use crate::verify::{Finding, Tally};

/// Other databases ($1: the closure's role oids and PUBLIC's 0) where one of them holds a
/// privilege or owns an object (`pg_shdepend` is shared: it records every database's), that a
/// login of the closure may connect to (a NOLOGIN role reaches nothing by itself).
const SIBLINGS: &str = "
SELECT DISTINCT d.datname::text AS name
FROM pg_catalog.pg_shdepend s JOIN pg_catalog.pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND s.refobjid = ANY($1)
  AND s.deptype IN ('a', 'o') AND d.datname <> pg_catalog.current_database() AND d.datallowconn
  AND EXISTS (SELECT FROM pg_catalog.pg_roles r
              WHERE r.oid = ANY($1) AND r.rolcanlogin
                AND pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT'))
ORDER BY 1";

typed_row! {
    /// A database of the same cluster the closure reaches (a row of [`SIBLINGS`]).
    struct Sibling {
        name: String,
    }
}

pub(super) async fn check(client: &Client, closure: &Closure, tally: &mut Tally) -> Result<()> {
    let grantees = closure.grantees();
    let found = query(
        client,
        SIBLINGS,
        typed![&grantees],
        "cannot read the other databases of the cluster",
        Sibling::from_row,
    )
    .await?;
    tally.pass("privilege.other-database");
    for s in found {
        tally.fail(Finding::new(
            "privilege.other-database",
            format!("database {}", s.name),
            format!(
                "the application's roles can connect to database {} of the same cluster and hold privileges or own objects there: its data is reachable, and this run did not check it",
                s.name
            ),
        ));
    }
    Ok(())
}
