//! The SQL of non-transactional migrations: the marker that makes a migration one, the
//! `CONCURRENTLY` index statements `generate` writes for tables that already exist, and what the
//! scratch replays run instead (the same statement without `CONCURRENTLY`, inside their
//! transaction: the index that results is the same).

use super::*;
use crate::model::Index;

/// A line of the leading comments of a migration that runs outside a transaction, statement by
/// statement (`migrate`), holding only `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS` and
/// `DROP INDEX CONCURRENTLY IF EXISTS`.
pub const NO_TRANSACTION_MARKER: &str = "-- tenantctl: no-transaction";

/// Whether `sql` is a non-transactional migration: the marker is one of the `--` comment lines
/// before its first statement (a generated file's first line stays its generated header).
pub fn is_no_transaction(sql: &str) -> bool {
    sql.lines()
        .map(str::trim_end)
        .take_while(|l| l.is_empty() || l.starts_with("--"))
        .any(|l| l == NO_TRANSACTION_MARKER)
}

/// `CREATE [UNIQUE] INDEX name ON table (columns);`: for a table the same migration creates.
pub(super) fn index_def(table: &str, name: &str, ix: &Index) -> String {
    let unique = if ix.unique { "UNIQUE " } else { "" };
    format!(
        "CREATE {unique}INDEX {} ON {} ({});",
        q(name),
        table,
        qlist(&ix.columns)
    )
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name ON table (columns);`: builds while
/// writes go on; a rerun skips an index that a previous run built.
pub fn create_index_concurrently(table: &str, name: &str, ix: &Index) -> String {
    let unique = if ix.unique { "UNIQUE " } else { "" };
    format!(
        "CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {} ON {table} ({});",
        q(name),
        qlist(&ix.columns)
    )
}

/// `ALTER TABLE table ADD CONSTRAINT name UNIQUE USING INDEX name;`: the unique index a
/// non-transactional migration built, attached as the constraint (a brief lock, no scan).
pub fn attach_unique(table: &str, name: &str) -> String {
    format!(
        "ALTER TABLE {table} ADD CONSTRAINT {} UNIQUE USING INDEX {};",
        q(name),
        q(name)
    )
}

/// `DROP INDEX CONCURRENTLY IF EXISTS schema.name;`
pub fn drop_index_concurrently(schema: &str, name: &str) -> String {
    format!("DROP INDEX CONCURRENTLY IF EXISTS {};", rel(schema, name))
}

/// `statement` without the `CONCURRENTLY` keyword at byte range `keyword` (found by the
/// parser in `migrate`): what a replay inside a transaction runs.
pub fn without_concurrently(statement: &str, keyword: std::ops::Range<usize>) -> String {
    format!(
        "{}{}",
        &statement[..keyword.start],
        &statement[keyword.end..]
    )
}

/// The file header of a non-transactional migration, after the marker.
pub fn no_transaction_header() -> &'static str {
    "-- Runs outside a transaction, statement by statement: indexes built CONCURRENTLY while\n\
     -- writes go on. Only CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS and\n\
     -- DROP INDEX CONCURRENTLY IF EXISTS may appear here.\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_index_statements_quote_and_guard() {
        let ix = Index {
            columns: vec!["gym_id".into(), "e\"mail".into()],
            unique: true,
        };
        assert_eq!(
            create_index_concurrently("\"public\".\"members\"", "m_idx", &ix),
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"m_idx\" ON \"public\".\"members\" (\"gym_id\", \"e\"\"mail\");"
        );
        assert_eq!(
            drop_index_concurrently("public", "m_idx"),
            "DROP INDEX CONCURRENTLY IF EXISTS \"public\".\"m_idx\";"
        );
        assert_eq!(
            without_concurrently("CREATE INDEX CONCURRENTLY x ON t (a)", 13..26),
            "CREATE INDEX x ON t (a)"
        );
        assert!(is_no_transaction(&format!(
            "{NO_TRANSACTION_MARKER}\nSELECT 1"
        )));
        assert!(is_no_transaction(&format!(
            "-- V3\n\n{NO_TRANSACTION_MARKER}\n"
        )));
        assert!(!is_no_transaction(&format!(
            "SELECT 1;\n{NO_TRANSACTION_MARKER}"
        )));
        assert!(!is_no_transaction(&format!("-- {NO_TRANSACTION_MARKER}")));
    }
}
