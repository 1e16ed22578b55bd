//! Statements that survive a transaction pooler: unnamed (parsed, bound and run in one round
//! trip with their parameter types given), never a named prepared statement that another client
//! of the same server connection could collide with, or that the next transaction would not find.

use postgres_types::{ToSql, Type};
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
            $crate::pg::unnamed::PgType::pg_type(&$p),
        )),*]
    };
}
pub(crate) use typed;

/// Whether relation `name` (qualified or found on the search_path) exists: `to_regclass`, which
/// answers NULL instead of failing, in one unnamed statement.
pub async fn relation_exists(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    let found: Option<String> = client
        .query_typed_one(
            "SELECT pg_catalog.to_regclass($1)::text AS found",
            typed![name],
        )
        .await?
        .get("found");
    Ok(found.is_some())
}
