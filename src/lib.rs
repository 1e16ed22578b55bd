//! tenantctl: compile tenant-isolation policies into Postgres RLS migrations, apply them, prove isolation.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod embedded;
pub mod ident;
pub mod migrate;
pub mod model;
pub mod output;
pub mod pg;
pub mod policy;
pub mod settings;
pub mod snapshot;
pub mod sqlgen;
pub mod tenants;
pub mod verify;

/// How a command that ran to the end came out: `Clean` maps to exit 0, `Findings` to exit 1.
/// Anything that stops a command from doing its job is an `Err`, which maps to exit 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Findings,
}
