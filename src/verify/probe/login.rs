//! Who the probes act as: the application's own login (`--app-url`), checked to be one, or,
//! without it, the app role by `SET ROLE`, with the logins that were therefore not probed.

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::model::Tenancy;
use crate::pg;
use crate::pg::unnamed::typed;

/// The login roles that can act as the app role (members of it, directly or through other
/// roles), except the role verify connects as.
const LOGINS: &str = "
WITH RECURSIVE m(oid) AS (
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1
    UNION SELECT a.member FROM pg_catalog.pg_auth_members a JOIN m ON a.roleid = m.oid)
SELECT r.rolname::text AS name FROM m JOIN pg_catalog.pg_roles r ON r.oid = m.oid
WHERE r.rolcanlogin AND r.rolname <> current_user
ORDER BY 1";

/// On the application's connection: who logged in, and whether it can act as the app role.
/// (The login's role-level `role` setting may make it act as another role: the probes then act
/// as that role, as the application would.)
const WHO: &str = "SELECT session_user::text AS name, \
                   pg_catalog.pg_has_role(session_user, $1, 'MEMBER') AS member";

typed_row! {
    /// The application's login, as its own connection sees it (a row of [`WHO`]).
    struct Who {
        name: String,
        member: bool,
    }
}

/// The login roles granted the app role that verify did not probe as (no `--app-url`).
pub(super) async fn granted_logins(client: &Client, t: &Tenancy) -> Result<Vec<String>> {
    Ok(client
        .query_typed(LOGINS, typed![&t.app_role])
        .await
        .context("cannot list the login roles granted the app role")?
        .iter()
        .map(|r| r.get("name"))
        .collect())
}

/// Connect as the application's login and check that it is one: not the role verify connects
/// as, not the owner or admin role, and a member of the app role. Its name; any failure is
/// "could not run" (exit 2).
pub(super) async fn check(verifier: &Client, app: &pg::Target, t: &Tenancy) -> Result<String> {
    let client = pg::connect(app)
        .await
        .with_context(|| format!("cannot connect as the application's login ({app})"))?;
    let who = Who::from_row(
        &client
            .query_typed_one(WHO, typed![&t.app_role])
            .await
            .context("cannot read the application's login")?,
    )?;
    let me: String = verifier
        .query_typed_one("SELECT current_user::text AS name", &[])
        .await
        .context("cannot read the current user")?
        .get("name");
    if who.name == me || who.name == t.owner_role || who.name == t.admin_role {
        bail!(
            "the application's login ({app}) is {}, an operator role (the role verify connects as, the owner or the admin role): the application must never log in as one\n  hint: give --app-url the login the application uses, a LOGIN role granted {} and nothing else",
            who.name,
            t.app_role
        );
    }
    if !who.member {
        bail!(
            "the application's login ({app}) is {}, which is not granted {}: it cannot act as the application\n  hint: GRANT {} TO {}, or give --app-url the login the application uses",
            who.name,
            t.app_role,
            t.app_role,
            who.name
        );
    }
    Ok(who.name)
}
