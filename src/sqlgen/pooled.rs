//! The pooler leak probe's statements (`verify --pooled-url`): what a transaction of the
//! application's login, in one tenant's context or in none, must never see.

use super::{q, rel};
use crate::model::Schema;

/// Up to `$1` tenant ids, in id order, as whoever the transaction acts as (the admin).
pub fn pooled_tenant_ids(schema: &Schema) -> String {
    let t = &schema.tenancy;
    format!(
        "SELECT {key}::uuid AS id FROM {table} ORDER BY {key} LIMIT $1",
        key = q(&t.tenant_key),
        table = rel(&t.table_schema, &t.tenant_table)
    )
}

/// In one row: the rows of every tenant table whose tenant is not `$1::uuid` (every row when
/// `$1` is NULL: no context), and the context setting `$2` as the transaction sees it ('' unset).
pub fn pooled_foreign_rows(schema: &Schema) -> String {
    let t = &schema.tenancy;
    let counts: Vec<String> = schema
        .tables
        .iter()
        .map(|(name, table)| {
            format!(
                "(SELECT count(*) FROM {} WHERE {} IS DISTINCT FROM $1::uuid)",
                rel(&t.table_schema, name),
                q(&table.tenant_column)
            )
        })
        .collect();
    let sum = if counts.is_empty() {
        "0::bigint".to_string()
    } else {
        counts.join("\n     + ")
    };
    format!(
        "SELECT {sum} AS foreign_rows,\n       coalesce(pg_catalog.current_setting($2, true), '') AS context"
    )
}
