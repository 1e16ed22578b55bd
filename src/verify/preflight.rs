//! Before any check: verify impersonates the app and admin roles with SET ROLE, so both must
//! exist and the connecting role must be allowed to switch to them.

use crate::pg::unnamed::typed;
use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use super::tx::{rolled_back, Scope};
use crate::model::Schema;
use crate::pg::tx::set_role;
use crate::sqlgen;

const CURRENT_USER: &str =
    "SELECT current_user::text AS name, current_setting('server_version_num')::int AS version";
const ROLE_EXISTS: &str =
    "SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1) AS exists";

/// On Postgres 16 and later a role that created another (Neon's owner role) may not SET ROLE to
/// it unless granted: say exactly what to grant rather than report a misleading result.
pub(super) async fn check_set_role(client: &Client, schema: &Schema) -> Result<()> {
    let t = &schema.tenancy;
    let row = client
        .query_typed_one(CURRENT_USER, &[])
        .await
        .context("cannot read the current user")?;
    let user: String = row.try_get("name").context("unexpected current_user")?;
    let version: i32 = row
        .try_get("version")
        .context("unexpected server_version_num")?;
    let mut missing = Vec::new();
    for role in [&t.app_role, &t.admin_role] {
        let exists: bool = client
            .query_typed_one(ROLE_EXISTS, typed![role])
            .await
            .context("cannot read pg_roles")?
            .try_get("exists")
            .context("unexpected value from pg_roles")?;
        if !exists {
            bail!(
                "role {role} does not exist, so verify cannot impersonate it\n  hint: run `tenantctl migrate` first (it creates the roles)"
            );
        }
        let done = rolled_back(client, &Scope::Transaction, set_role(client, role))
            .await
            .context("cannot begin")?;
        done.rollback.context("cannot roll back")?;
        match done.body {
            Ok(()) => {}
            Err(e) if e.as_db_error().is_some() => missing.push(role.clone()),
            Err(e) => return Err(e).context("cannot switch role"),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let grant = sqlgen::grant_set_role(&missing, &user, version);
    bail!(
        "{user} cannot SET ROLE to {}: verify probes as those roles\n  hint: run, as a role that can grant them (on Neon, the project owner):\n    {grant}\n  (on Postgres 16 and later a role that creates another does not get SET on it by default)",
        missing.join(", ")
    )
}
