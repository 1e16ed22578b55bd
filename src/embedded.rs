//! The embedded local Postgres cluster: find server binaries, initdb, start, stop, URL.
// OWNED BY HELPER A — stub.

use std::path::Path;

/// Start the cluster in `dir` if it is not running (initialising it on first use) and return its URL.
pub fn ensure_running(dir: &Path) -> anyhow::Result<String> {
    anyhow::bail!("embedded database not built yet ({})", dir.display())
}
