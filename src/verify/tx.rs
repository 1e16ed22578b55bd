//! "Always rolled back": the one way verify opens a transaction (or a savepoint inside the
//! caller's), runs its work in it and undoes it, whatever the work returned.

use std::borrow::Cow;
use std::future::Future;

use tokio_postgres::Client;

use crate::sqlgen;

/// A savepoint and the statements that undo it (rolled back to, then released).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Savepoint {
    set: &'static str,
    undo: &'static str,
}

/// Each probe of one tenant, inside an outer transaction (synthetic tenants).
pub(crate) const TENANT_SAVEPOINT: Savepoint = Savepoint {
    set: "SAVEPOINT tc_tenant",
    undo: "ROLLBACK TO SAVEPOINT tc_tenant; RELEASE SAVEPOINT tc_tenant",
};

/// Listing the tenants as the admin, inside the synthetic tenants' transaction.
pub(crate) const LIST_SAVEPOINT: Savepoint = Savepoint {
    set: "SAVEPOINT tc_list",
    undo: "ROLLBACK TO SAVEPOINT tc_list; RELEASE SAVEPOINT tc_list",
};

const BEGIN: &str = "BEGIN";
const BEGIN_REPEATABLE_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";
const ROLLBACK: &str = "ROLLBACK";

/// What to open, and so what undoes it.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// `BEGIN` (READ COMMITTED).
    Transaction,
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ`.
    RepeatableRead,
    /// REPEATABLE READ in a snapshot another transaction exported.
    Snapshot(String),
    /// A savepoint in the caller's transaction.
    Savepoint(Savepoint),
}

impl Scope {
    /// The statement(s) that open it.
    pub(crate) fn begin(&self) -> Cow<'static, str> {
        match self {
            Scope::Transaction => BEGIN.into(),
            Scope::RepeatableRead => BEGIN_REPEATABLE_READ.into(),
            Scope::Snapshot(id) => sqlgen::begin_in_snapshot(BEGIN_REPEATABLE_READ, id).into(),
            Scope::Savepoint(s) => s.set.into(),
        }
    }

    /// The statement(s) that undo everything done since [`Scope::begin`].
    pub(crate) fn undo(&self) -> &'static str {
        match self {
            Scope::Savepoint(s) => s.undo,
            _ => ROLLBACK,
        }
    }

    /// A transaction of its own, or (`nested`: inside the caller's) the tenant savepoint.
    pub(crate) fn or_nested(self, nested: bool) -> Scope {
        if nested {
            Scope::Savepoint(TENANT_SAVEPOINT)
        } else {
            self
        }
    }
}

/// Undo the current transaction and start another REPEATABLE READ one, in one round trip.
pub(crate) const RESTART_REPEATABLE_READ: &str = "ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ";

/// The work's result and the rollback's.
pub(crate) struct Undone<T> {
    pub body: T,
    pub rollback: Result<(), tokio_postgres::Error>,
}

/// Open `scope` on `client`, run `body` in it, then undo it unconditionally. `Err` only when the
/// scope could not be opened (then `body` never ran); the caller decides which of the two
/// results to report first.
pub(crate) async fn rolled_back<T>(
    client: &Client,
    scope: &Scope,
    body: impl Future<Output = T>,
) -> Result<Undone<T>, tokio_postgres::Error> {
    client.batch_execute(&scope.begin()).await?;
    let body = body.await;
    let rollback = client.batch_execute(scope.undo()).await;
    Ok(Undone { body, rollback })
}
