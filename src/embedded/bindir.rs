//! Finding the Postgres server binaries, and checking them against a cluster's data directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::layout::Layout;
use super::BINDIR_ENV;

/// Find the Postgres server binaries: `$TENANTCTL_PG_BINDIR`, then `PATH` (a `postgres` beside
/// `pg_ctl`), then `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if is_server_bindir(&dir) {
            return Ok(dir);
        }
        bail!(
            "{BINDIR_ENV}={} does not hold the Postgres server binaries (pg_ctl, initdb, postgres)\n  \
             hint: point it at the bin/ directory of a PostgreSQL installation, e.g. /usr/lib/postgresql/15/bin, \
             or unset it to search PATH",
            dir.display()
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| is_server_bindir(d)) {
            // PATH often holds symlinks (/usr/local/bin/pg_ctl); the real directory also has psql.
            let real = fs::canonicalize(dir.join("pg_ctl"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            return Ok(real.filter(|r| is_server_bindir(r)).unwrap_or(dir));
        }
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && is_server_bindir(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            is_server_bindir(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    bail!(
        "no PostgreSQL server binaries found (looked in ${BINDIR_ENV}, PATH, `pg_config --bindir` and \
         /usr/lib/postgresql/*/bin)\n  hint: install the server (e.g. `apt-get install postgresql`) or set \
         {BINDIR_ENV} to the directory holding pg_ctl, initdb and postgres"
    )
}

/// The `psql` to use with a cluster whose server binaries are in `bindir`.
pub fn psql_path(bindir: Option<&Path>) -> PathBuf {
    bindir
        .map(|d| d.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// The server binaries recorded for the cluster in `dir`, if any.
pub fn recorded_bindir(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(Layout::new(dir)?.read_state()?.map(|s| s.bindir))
}

pub(super) fn is_server_bindir(dir: &Path) -> bool {
    ["pg_ctl", "initdb", "postgres"]
        .iter()
        .all(|b| is_executable(&dir.join(b)))
}

pub(super) fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An explicit `$TENANTCTL_PG_BINDIR` wins; else the binaries the cluster was made with; else search.
pub(super) fn resolve_bindir(recorded: Option<&Path>) -> Result<PathBuf> {
    if std::env::var_os(BINDIR_ENV).is_some_and(|v| !v.is_empty()) {
        return find_bindir();
    }
    match recorded {
        Some(dir) if is_server_bindir(dir) => Ok(dir.to_path_buf()),
        _ => find_bindir(),
    }
}

/// A data directory only works with the major version that created it; say so plainly.
pub(super) fn check_version(bindir: &Path, data: &Path) -> Result<()> {
    let data_version = fs::read_to_string(data.join("PG_VERSION"))
        .with_context(|| format!("cannot read {}", data.join("PG_VERSION").display()))?;
    let data_version = data_version.trim();
    let out = Command::new(bindir.join("pg_ctl"))
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", bindir.join("pg_ctl").display()))?;
    // "pg_ctl (PostgreSQL) 15.13 (Debian ...)": the major version is 15 (9.6 for old ones).
    let text = String::from_utf8_lossy(&out.stdout);
    let full = text.split_whitespace().nth(2).unwrap_or("");
    let major = if full.starts_with("9.") {
        full.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
    } else {
        full.split('.').next().unwrap_or("").to_string()
    };
    if !major.is_empty() && major != data_version {
        bail!(
            "the local cluster in {} was made by PostgreSQL {data_version}, but the binaries in {} are \
             PostgreSQL {major}\n  hint: set {BINDIR_ENV} to a PostgreSQL {data_version} bin/ directory, or run \
             `tenantctl dev reset` to recreate the cluster (its data is lost)",
            data.display(),
            bindir.display()
        );
    }
    Ok(())
}
