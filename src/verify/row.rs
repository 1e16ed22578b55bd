//! Typed rows: a struct per query shape, each field filled from the column of its own name, and
//! catalog codes (`relkind`, `provolatile`, ...) decoded into enums as the row is read.

use anyhow::{Context, Result};
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Row};

/// A struct for one query's rows, with `from_row` filling each field from the column of the
/// same name (give computed columns an alias).
macro_rules! typed_row {
    ($(#[$m:meta])* $vis:vis struct $name:ident {
        $($(#[$fm:meta])* $fvis:vis $field:ident: $ty:ty,)*
    }) => {
        $(#[$m])*
        $vis struct $name {
            $($(#[$fm])* $fvis $field: $ty,)*
        }

        impl $name {
            #[allow(dead_code)]
            $vis fn from_row(r: &tokio_postgres::Row) -> anyhow::Result<$name> {
                Ok($name {
                    $($field: $crate::verify::row::col(r, stringify!($field))?,)*
                })
            }
        }
    };
}

/// An enum for a one-letter catalog code (a `"char"` column read as text), decoded as the row
/// is read; `_ => Variant` takes every other code, else an unknown code is an error.
macro_rules! catalog_code {
    ($(#[$m:meta])* $vis:vis enum $name:ident {
        $($(#[$vm:meta])* $code:literal => $variant:ident,)*
        $(_ => $other:ident,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vm])* $variant,)*
            $($other,)?
        }

        impl<'a> tokio_postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &tokio_postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let code = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
                #[allow(unreachable_patterns)]
                match code {
                    $($code => Ok($name::$variant),)*
                    $(_ => Ok($name::$other),)?
                    other => Err(format!("unknown code {other:?}").into()),
                }
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::FromSql>::accepts(ty)
            }
        }
    };
}

/// A column of a row, by name. A value of an unexpected type is an error (verify exits 2),
/// never a panic.
pub(crate) fn col<'a, T: FromSql<'a>>(r: &'a Row, name: &str) -> Result<T> {
    r.try_get(name).with_context(|| {
        let i = r.columns().iter().position(|c| c.name() == name);
        format!(
            "unexpected catalog value in column {} ({name})",
            i.map_or_else(|| "?".to_string(), |i| i.to_string())
        )
    })
}

/// Run `sql` and read its row, if there is one, into `T` with `from_row`.
pub(crate) async fn query_opt<T>(
    client: &Client,
    sql: &str,
    params: &[crate::pg::unnamed::Typed<'_>],
    what: &'static str,
    from_row: impl Fn(&Row) -> Result<T>,
) -> Result<Option<T>> {
    let row = client.query_typed_opt(sql, params).await.context(what)?;
    row.as_ref().map(from_row).transpose()
}

/// Run `sql` and read every row into `T` with `from_row`; `what` says what failed to be read.
pub(crate) async fn query<T>(
    client: &Client,
    sql: &str,
    params: &[crate::pg::unnamed::Typed<'_>],
    what: &'static str,
    from_row: impl Fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = client.query_typed(sql, params).await.context(what)?;
    rows.iter().map(from_row).collect()
}
