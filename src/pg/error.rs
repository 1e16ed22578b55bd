//! One way to turn a Postgres error into text: what the server said (tokio-postgres alone prints
//! "db error"), with its SQLSTATE, detail and hint; for a client-side error, its whole cause chain.

use std::fmt::Write as _;

/// The text of `e`: the server's message with SQLSTATE, detail and hint, or the cause chain.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut msg = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                let _ = write!(msg, "\n  detail: {d}");
            }
            if let Some(h) = db.hint() {
                let _ = write!(msg, "\n  hint: {h}");
            }
            msg
        }
        None => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let _ = write!(msg, ": {s}");
                source = s.source();
            }
            msg
        }
    }
}

/// [`describe`] as an `anyhow` error, for `map_err`.
pub fn pg_error(e: tokio_postgres::Error) -> anyhow::Error {
    anyhow::anyhow!(describe(&e))
}
