//! config.default-context: no database default, no default of a role that can act as the
//! application (the closure), and no session start value sets the tenant context (a missing
//! context must fail closed).

use crate::pg::unnamed::typed;
use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::{col, query};
use crate::model::Schema;
use crate::verify::{Finding, Tally};

const DEFAULT_CONTEXT: &str = "
SELECT coalesce(d.datname::text, '(every database)') AS database, coalesce(r.rolname::text, '(every role)') AS role
FROM pg_catalog.pg_db_role_setting s
LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
WHERE (s.setdatabase = 0 OR d.datname = pg_catalog.current_database())
  AND (s.setrole = 0 OR s.setrole = ANY($2))
  AND EXISTS (SELECT FROM unnest(s.setconfig) c WHERE lower(c) LIKE lower($1) || '=%')";

const CURRENT_CONTEXT: &str = "SELECT pg_catalog.current_setting($1, true) AS value";

typed_row! {
    /// A database or role default of the context setting (a row of [`DEFAULT_CONTEXT`]).
    struct Default {
        database: String,
        role: String,
    }
}

pub(super) async fn default_context(
    client: &Client,
    schema: &Schema,
    closure: &[u32],
    tally: &mut Tally,
) -> Result<()> {
    let setting = &schema.tenancy.context_setting;
    tally.pass("config.default-context");
    let what = "cannot read database and role settings";
    for d in query(
        client,
        DEFAULT_CONTEXT,
        typed![setting, &closure],
        what,
        Default::from_row,
    )
    .await?
    {
        tally.fail(Finding::new(
            "config.default-context",
            format!("setting {setting}"),
            format!(
                "{setting} has a default for database {}, role {}",
                d.database, d.role
            ),
        ));
    }
    let now: Option<String> = col(
        &client
            .query_typed_one(CURRENT_CONTEXT, typed![setting])
            .await
            .context("cannot read the context setting")?,
        "value",
    )?;
    if let Some(v) = now.filter(|v| !v.is_empty()) {
        tally.fail(Finding::new(
            "config.default-context",
            format!("setting {setting}"),
            format!("{setting} is already set to {v:?} when a session starts (server configuration or connection options)"),
        ));
    }
    Ok(())
}
