//! SQL text `verify` needs for the declared objects beyond tenant tables: a scratch copy of a
//! declared view (to compare definitions as Postgres renders them) and the fixes it suggests.

use super::{q, rel};

/// `CREATE TEMP VIEW scratch AS query`: rolled back by the caller.
pub fn scratch_view(scratch: &str, query: &str) -> String {
    format!("CREATE TEMP VIEW {} AS {query}", q(scratch))
}

/// Make a declared view read with its reader's rights again.
pub fn fix_view_options(schema: &str, view: &str) -> String {
    format!(
        "ALTER VIEW {} SET (security_invoker = true, security_barrier = true)",
        rel(schema, view)
    )
}

/// Take every write privilege on a global table back from the app role and PUBLIC.
pub fn fix_global_write(schema: &str, table: &str, app: &str) -> String {
    format!(
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {} FROM {}, PUBLIC (and from the roles it is a member of)",
        rel(schema, table),
        q(app)
    )
}
