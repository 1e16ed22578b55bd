//! The statements around refinery's history table: where it lives (the helper schema), reading
//! it, and moving it there from the tables' schema where older tenantctl versions left it.

use super::{q, rel};

/// refinery's history table, qualified: what refinery is told to create and write.
pub fn history_relation(schema: &str, table: &str) -> String {
    rel(schema, table)
}

/// refinery's history rows, as refinery reads them (every value as text but the version).
pub fn history_rows(schema: &str, table: &str) -> String {
    format!(
        "SELECT version, name::text AS name, applied_on::text AS applied_on, \
         checksum::text AS checksum FROM {} ORDER BY version",
        rel(schema, table)
    )
}

/// The helper schema, before refinery creates its history table in it (the first generated
/// migration takes it over: `CREATE SCHEMA IF NOT EXISTS`, then `ALTER SCHEMA ... OWNER`).
pub fn create_history_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", q(schema))
}

/// Move the history from the tables' schema to the helper schema, and take back whatever was
/// granted on it: the application never reads or writes the history.
pub fn move_history(from: &str, to: &str, table: &str, app_role: &str) -> String {
    format!(
        "ALTER TABLE {} SET SCHEMA {}; REVOKE ALL ON TABLE {} FROM PUBLIC, {}",
        rel(from, table),
        q(to),
        rel(to, table),
        q(app_role)
    )
}

/// The marker tenantctl leaves on the history table: the format of the history it writes, so
/// that an older tenantctl can tell a database migrated by a newer one.
pub fn mark_history(schema: &str, table: &str, marker: &str) -> String {
    format!(
        "COMMENT ON TABLE {} IS {}",
        rel(schema, table),
        postgres_protocol::escape::escape_literal(marker)
    )
}
