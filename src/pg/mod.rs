//! Postgres connections, one concern a file: the connection-string syntax (`conninfo`), libpq's
//! defaults from service files and the environment (`defaults`) and the password file
//! (`passfile`), the secret-safe connection target (`target`), TLS (`tls`, and per handshake
//! `tls_connect`), connecting (`connect`), scrubbing free text (`redact`), Neon's pooler
//! (`neon`), error text (`error`) and transaction helpers (`tx`).

mod connect;
mod conninfo;
mod defaults;
pub mod error;
mod neon;
mod passfile;
mod redact;
mod target;
mod tls;
mod tls_connect;
pub mod tx;
pub mod unnamed;

pub use connect::connect;
pub use neon::neon_pooler;
pub use redact::{redact, redact_text};
pub use target::{RootCert, SslMode, Target, ToTarget, Verification};
pub use tls::tls_config;
