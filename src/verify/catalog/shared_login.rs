//! What the one application login shares between tenants beyond the policies' reach: prepared
//! transactions (any session of the login may COMMIT or ROLLBACK PREPARED another's,
//! `setting.two-phase-commit`) and pg_stat_statements' statement texts of the same login
//! (`privilege.stat-statements`).

use crate::pg::unnamed::typed;

use anyhow::Result;
use tokio_postgres::Client;

use super::closure::Closure;
use super::{col, query};
use crate::verify::{Finding, Tally};

const PREPARED: &str = "SELECT pg_catalog.current_setting('max_prepared_transactions') AS value";

/// pg_stat_statements' relations and functions ($1: the closure's roles) a role of the closure
/// may read or execute (PUBLIC's by default, but for the reset functions), in a schema it may use.
const STAT_STATEMENTS: &str = "
SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, 0) AS object
FROM pg_catalog.pg_extension e
JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
 AND d.refobjid = e.oid AND d.deptype = 'e'
WHERE e.extname = 'pg_stat_statements'
  AND EXISTS (SELECT FROM pg_catalog.unnest($1::oid[]) r WHERE r <> 0
      AND pg_catalog.has_schema_privilege(r, e.extnamespace, 'USAGE') AND
      CASE d.classid
        WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN pg_catalog.has_table_privilege(r, d.objid, 'SELECT')
        WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN pg_catalog.has_function_privilege(r, d.objid, 'EXECUTE')
        ELSE false END)
ORDER BY 1";

pub(super) async fn check(client: &Client, closure: &Closure, tally: &mut Tally) -> Result<()> {
    tally.pass("setting.two-phase-commit");
    let what = "cannot read max_prepared_transactions";
    let value: Vec<String> = query(client, PREPARED, &[], what, |r| col(r, "value")).await?;
    if let Some(f) = value.first().and_then(|v| two_phase(v)) {
        tally.fail(f);
    }
    tally.pass("privilege.stat-statements");
    let what = "cannot read pg_stat_statements' privileges";
    let oids = closure.grantees();
    let objects: Vec<String> = query(client, STAT_STATEMENTS, typed![&oids], what, |r| {
        col(r, "object")
    })
    .await?;
    for object in objects {
        tally.fail(Finding::new(
            "privilege.stat-statements",
            &object,
            format!("the application's roles may use {object}: it shows every statement of the same login, other tenants' included, and utility statements (DECLARE CURSOR, COPY) with their literals"),
        ));
    }
    Ok(())
}

/// setting.two-phase-commit: prepared transactions are possible (max_prepared_transactions
/// above 0), and any session of a login may commit or roll back another's.
fn two_phase(value: &str) -> Option<Finding> {
    let n: i64 = value.trim().parse().unwrap_or(1);
    (n != 0).then(|| {
        Finding::new(
            "setting.two-phase-commit",
            "setting cluster max_prepared_transactions",
            format!("max_prepared_transactions = {value}: a session of the application's login can list (pg_prepared_xacts) and COMMIT or ROLLBACK PREPARED another tenant's prepared transaction"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::two_phase;

    #[test]
    fn prepared_transactions_are_reported_unless_disabled() {
        assert!(two_phase("0").is_none());
        let f = two_phase("20").expect("20 prepared transactions are reported");
        assert_eq!(f.id, "setting.two-phase-commit");
        assert_eq!(f.object, "setting cluster max_prepared_transactions");
        assert!(two_phase("garbage").is_some(), "unknown is unsafe");
    }
}
