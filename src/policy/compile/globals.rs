//! Global reference tables (`global = true`): shared by every tenant, with no tenant column, no
//! row-level security and no policies; the application may only read them.

use super::Declared;
use crate::model::{Column, Tenancy};
use crate::policy::diagnostics::Sink;
use crate::policy::raw::RawTable;

/// `global = true`.
pub(super) fn is_global(r: &RawTable) -> bool {
    r.global.as_ref().is_some_and(|g| *g.get_ref())
}

/// What a global table cannot have: the tenant column, an isolation mode, partitions.
pub(super) fn rules(d: &Declared<'_>, tenancy: &Tenancy, columns: &[Column], sink: &mut Sink<'_>) {
    let (name, r) = (&d.name, d.raw.get_ref());
    if name == &tenancy.tenant_table {
        sink.err(
            d.key.span(),
            format!("the tenant table {name} cannot be global"),
            "remove global = true",
        );
    }
    if columns.iter().any(|c| c.name == tenancy.tenant_column) {
        sink.err(
            d.key.span(),
            format!(
                "global table {name} has the tenant column {}: a global table is shared by every tenant",
                tenancy.tenant_column
            ),
            "remove global = true to make it a tenant table, or remove the column",
        );
    }
    if let Some(iso) = &r.isolation {
        sink.err(
            iso.span(),
            format!("global table {name} has no tenant isolation to set"),
            "remove isolation",
        );
    }
    if let Some(p) = &r.partition_by {
        sink.err(
            p.span(),
            format!("global table {name} cannot be partitioned"),
            "partition_by is for tenant tables",
        );
    }
}
