//! Tenants on a live database: create (and seed as the tenant), list, show, delete, and run one
//! SQL statement as a tenant or as the platform admin.
//!
//! Every session here impersonates a role the way the application does: inside a transaction,
//! `set_config('role', ..., true)` and `set_config(<context setting>, ..., true)`, so nothing
//! outlives the transaction (safe behind a transaction pooler too). On the Citus target the
//! context is `SET LOCAL` with `citus.propagate_set_commands = 'local'` (`pg::tx`,
//! docs/citus.md); `citus` holds what only that target has.
//!
//! Imports run one way: `gym` (the tenant table, acting as a tenant) and `seed` (fake data) are
//! leaves; `create`, `manage`, `exec` and `scenarios` build on them; this file only re-exports.

pub mod citus;
mod create;
mod exec;
mod gym;
mod manage;
pub mod scenarios;
pub mod seed;

pub use crate::sqlgen::tenants::{NAME_COLUMN, SLUG_COLUMN};
pub use create::{create, create_application_name, CreateSpec, Created};
pub use exec::{exec, ExecAs, ExecResult};
pub use gym::{
    as_admin, as_tenant, check_schema, data_tables, find, require, set_role, validate_slug, Gym,
};
pub use manage::{delete, list, preview_delete, show, Tenant};
