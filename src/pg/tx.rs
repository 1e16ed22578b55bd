//! Acting as a role or a tenant inside a transaction, the way the application does: every switch
//! is transaction-local (`set_config(..., true)`), so nothing outlives the transaction and nothing
//! leaks to the next client of a pooled server connection. Names and values are bound, never spliced,
//! in unnamed statements (nothing is left prepared on a pooled server connection).

use tokio_postgres::GenericClient;

use crate::pg::unnamed::typed;

/// The statement of [`set_role`]: `$1` the role. Public for callers that pipeline it.
pub const SET_ROLE_SQL: &str = "SELECT pg_catalog.set_config('role', $1, true)";
/// The statement of [`set_tenant`]: `$1` the role, `$2` the context setting, `$3` the tenant.
pub const SET_TENANT_SQL: &str =
    "SELECT pg_catalog.set_config('role', $1, true), pg_catalog.set_config($2, $3, true)";

/// [`set_tenant`] on Citus, which passes `set_config` to no worker: the role as there (the
/// coordinator opens its worker connections as the current role), then the context with
/// `SET LOCAL`, which Citus sends to the workers' transactions once `citus.propagate_set_commands`
/// is `local` (docs/citus.md). SET binds no parameters: the value is a quoted literal. Each is a
/// query of its own (Citus forwards the text of the whole query).
pub async fn set_tenant_citus(
    tx: &impl GenericClient,
    role: &str,
    setting: &str,
    tenant: &str,
) -> Result<(), tokio_postgres::Error> {
    set_role(tx, role).await?;
    tx.batch_execute(crate::sqlgen::citus::PROPAGATE_SET_LOCAL)
        .await?;
    tx.batch_execute(&crate::sqlgen::citus::set_local(setting, tenant))
        .await
}

/// Act as `role` until the transaction ends (`SET LOCAL ROLE`, with the name bound).
pub async fn set_role(tx: &impl GenericClient, role: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute_typed(SET_ROLE_SQL, typed![role]).await.map(drop)
}

/// Act as `role` in `tenant`'s context (the context `setting` set to `tenant`) until the
/// transaction ends: one statement, as the application's request would start.
pub async fn set_tenant(
    tx: &impl GenericClient,
    role: &str,
    setting: &str,
    tenant: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute_typed(SET_TENANT_SQL, typed![role, setting, tenant])
        .await
        .map(drop)
}
