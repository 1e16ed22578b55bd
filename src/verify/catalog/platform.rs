//! What a managed platform adds to a database by itself, so that a correct database there passes:
//! Neon creates `neon_superuser` (NOLOGIN, BYPASSRLS, a member of pg_read_all_data and
//! pg_write_all_data), `cloud_admin` (owns the `neon` extension's objects), the project's owner
//! role (`neondb_owner`, the operator), the `neon` and `neon_utils` extensions, default
//! privileges from `cloud_admin` to `neon_superuser`, and `neon.*` settings. None of that is
//! granted to the application's roles, so the closure checks need nothing from the profile; the
//! settings and event trigger checks do.

use anyhow::Result;
use tokio_postgres::Client;

use super::{col, query};
use crate::verify::Reach;

/// Neon's footprint: its roles or its extension.
const DETECT: &str = "
SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname IN ('neon_superuser', 'cloud_admin'))
    OR EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname IN ('neon', 'neon_utils')) AS neon";

/// The platform profile in force.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Platform {
    pub neon: bool,
}

impl Platform {
    /// `[verify] platform`, else detected.
    pub(super) async fn of(client: &Client, reach: &Reach) -> Result<Platform> {
        let neon = match reach.neon {
            Some(n) => n,
            None => {
                let what = "cannot detect the platform";
                let rows = query(client, DETECT, &[], what, |r| col::<bool>(r, "neon")).await?;
                rows.into_iter().any(|n| n)
            }
        };
        Ok(Platform { neon })
    }

    /// A setting the platform sets itself.
    pub(super) fn setting(&self, name: &str) -> bool {
        self.neon && name.starts_with("neon.")
    }

    /// An event trigger the platform installs itself (Neon installs none outside extensions).
    pub(super) fn event_trigger(&self, _name: &str) -> bool {
        false
    }
}
