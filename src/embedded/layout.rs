//! A cluster directory's files: where the data, state and log live, and the state (port,
//! password, binaries) kept in `state.json`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{DATABASE, SUPERUSER};

/// Kept in `DIR/state.json`, so the URL stays the same across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) port: u16,
    pub(super) password: String,
    pub(super) bindir: PathBuf,
}

pub(super) struct Layout {
    pub(super) dir: PathBuf,
    pub(super) data: PathBuf,
    pub(super) state: PathBuf,
    pub(super) log: PathBuf,
}

impl Layout {
    pub(super) fn new(dir: &Path) -> Result<Layout> {
        // Absolute paths: the server runs with another working directory, and perhaps as another user.
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(dir)
        };
        // Drop "." components, so paths in messages read /project/.tenantctl, not /project/./.tenantctl.
        let dir: PathBuf = dir.components().collect();
        Ok(Layout {
            data: dir.join("data"),
            state: dir.join("state.json"),
            log: dir.join("postgres.log"),
            dir,
        })
    }

    pub(super) fn initialised(&self) -> bool {
        self.data.join("PG_VERSION").is_file()
    }

    /// The data directory exists and holds something (or cannot be read): not ours to fill or
    /// to delete unless it is a cluster.
    pub(super) fn data_has_files(&self) -> bool {
        self.data.exists()
            && fs::read_dir(&self.data)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
    }

    pub(super) fn read_state(&self) -> Result<Option<State>> {
        match fs::read_to_string(&self.state) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not valid tenantctl state", self.state.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.state.display())),
        }
    }

    /// Written to a temporary file and renamed, mode 0600 from the start: it holds the password.
    pub(super) fn write_state(&self, state: &State) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let text = serde_json::to_string_pretty(state).expect("state always serialises");
        file.write_all(text.as_bytes())
            .and_then(|_| file.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &self.state)
            .with_context(|| format!("cannot write {}", self.state.display()))
    }

    pub(super) fn url(&self, state: &State) -> String {
        url_for(state.port, &state.password)
    }
}

/// The cluster listens on loopback without TLS, so the URL says so: a `PGSSLMODE=require`
/// exported for a cloud database must not break the local one.
pub(super) fn url_for(port: u16, password: &str) -> String {
    format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}?sslmode=disable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_the_documented_shape() {
        assert_eq!(
            url_for(5432, "pw"),
            "postgres://tenantctl:pw@127.0.0.1:5432/postgres?sslmode=disable"
        );
    }
}
