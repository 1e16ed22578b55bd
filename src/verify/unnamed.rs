//! Statements that survive a transaction pooler: unnamed (parsed, bound and run in one round
//! trip with their parameter types given), never a named prepared statement that another client
//! of the same server connection could collide with, or that the next transaction would not find.

use postgres_types::{ToSql, Type};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// A bind parameter with the Postgres type it is sent as.
pub(crate) type Typed<'a> = (&'a (dyn ToSql + Sync), Type);

/// The Postgres type a Rust value is bound as.
pub(crate) trait PgType {
    fn pg_type(&self) -> Type;
}

macro_rules! pg_type {
    ($($t:ty => $pg:expr),* $(,)?) => {
        $(impl PgType for $t {
            fn pg_type(&self) -> Type {
                $pg
            }
        })*
    };
}

pg_type! {
    str => Type::TEXT,
    String => Type::TEXT,
    bool => Type::BOOL,
    i32 => Type::INT4,
    i64 => Type::INT8,
    u32 => Type::OID,
    Uuid => Type::UUID,
    Option<Uuid> => Type::UUID,
    Option<String> => Type::TEXT,
    Vec<String> => Type::TEXT_ARRAY,
    Vec<Option<String>> => Type::TEXT_ARRAY,
    Vec<&str> => Type::TEXT_ARRAY,
    Vec<&String> => Type::TEXT_ARRAY,
    Vec<u32> => Type::OID_ARRAY,
    Vec<Uuid> => Type::UUID_ARRAY,
    Vec<Option<Uuid>> => Type::UUID_ARRAY,
    Vec<bool> => Type::BOOL_ARRAY,
    [String] => Type::TEXT_ARRAY,
    [u32] => Type::OID_ARRAY,
}

impl<T: PgType + ?Sized> PgType for &T {
    fn pg_type(&self) -> Type {
        (**self).pg_type()
    }
}

/// Bind parameters with their types: `typed![a, b]` for `query_typed(sql, typed![a, b])`.
macro_rules! typed {
    ($($p:expr),* $(,)?) => {
        &[$((
            &$p as &(dyn postgres_types::ToSql + Sync),
            $crate::verify::unnamed::PgType::pg_type(&$p),
        )),*]
    };
}
pub(crate) use typed;

/// Act as `role` until the transaction ends (as `pg::tx::set_role`, unnamed).
pub(crate) async fn set_role(
    tx: &impl GenericClient,
    role: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute_typed(
        "SELECT pg_catalog.set_config('role', $1, true)",
        typed![role],
    )
    .await
    .map(drop)
}

/// Act as `role` in `tenant`'s context until the transaction ends (as `pg::tx::set_tenant`, unnamed).
pub(crate) async fn set_tenant(
    tx: &impl GenericClient,
    role: &str,
    setting: &str,
    tenant: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute_typed(
        "SELECT pg_catalog.set_config('role', $1, true), pg_catalog.set_config($2, $3, true)",
        typed![role, setting, tenant],
    )
    .await
    .map(drop)
}
