//! The helper objects tenantctl owns in every database: the context function and the trigger
//! function that keeps the tenant id immutable.

use super::*;
use crate::ident::literal;
use crate::model::Tenancy;

/// Name of the trigger that keeps the tenant id immutable. It sorts last among BEFORE triggers
/// (which fire in name order), so no other trigger can change the tenant id after the check.
pub const IMMUTABILITY_TRIGGER: &str = "zzz_tenantctl_tenant_immutable";

pub fn context_function(t: &Tenancy) -> String {
    format!("{}.{}", q(&t.helper_schema), q(&t.context_function))
}

pub fn trigger_function(t: &Tenancy) -> String {
    format!("{}.{}", q(&t.helper_schema), q("forbid_tenant_change"))
}

/// The context function's body. `verify` compares the live function's source with it: any
/// other body (a COALESCE, a default tenant) may fail open.
pub fn context_function_body(t: &Tenancy) -> String {
    // The cast names pg_catalog: the function is inlined, so its body is parsed with the
    // caller's search_path, where an unqualified `uuid` would find a type of the caller's own
    // first (pg_temp is searched first for types). NULLIF's `=` is the caller's to choose too,
    // and can only make the result NULL (no rows) or the setting itself.
    context_body_casting_to(t, "pg_catalog.uuid")
}

/// The context function's body before helpers revision 2, safe only with its pinned
/// `search_path` (which kept it from being inlined); `verify` accepts it only so.
pub fn context_function_body_v1(t: &Tenancy) -> String {
    context_body_casting_to(t, "uuid")
}

fn context_body_casting_to(t: &Tenancy, ty: &str) -> String {
    format!(
        " SELECT NULLIF(pg_catalog.current_setting({}, true), '')::{ty} ",
        literal(&t.context_setting)
    )
}

/// The immutability trigger function's body (compared by `verify` like the context function's).
pub fn trigger_function_body() -> String {
    format!(
        "\nBEGIN\n    IF to_jsonb(NEW) -> TG_ARGV[0] IS DISTINCT FROM to_jsonb(OLD) -> TG_ARGV[0] THEN\n        RAISE EXCEPTION 'tenant id is immutable: %.% cannot change', TG_TABLE_NAME, TG_ARGV[0]\n            USING ERRCODE = {}, HINT = 'rows never move between tenants: insert a new row for the other tenant instead';\n    END IF;\n    RETURN NEW;\nEND\n",
        literal(TENANT_IMMUTABLE_SQLSTATE)
    )
}

/// A call of the context function: the tenant column's default.
pub fn context_call(t: &Tenancy) -> String {
    format!("{}()", context_function(t))
}

/// The generated tenant isolation policy's USING and WITH CHECK expression. The call sits in a
/// sub-select so that Postgres can evaluate it once per statement (an InitPlan), not per row.
pub fn tenant_isolation_expr(t: &Tenancy, tenant_column: &str) -> String {
    format!("({} = (SELECT {}))", q(tenant_column), context_call(t))
}
