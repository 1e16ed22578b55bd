//! Who runs the server processes: the current user, or (under root, which Postgres refuses) an
//! unprivileged account through `runuser`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::bindir::is_executable;
use super::SERVER_USER;

/// Who runs the server processes.
pub(super) enum Runner {
    /// The current user (not root).
    Me,
    /// Root delegating to an unprivileged account through `runuser`.
    User {
        name: String,
        uid: u32,
        gid: u32,
        runuser: PathBuf,
    },
}

impl Runner {
    pub(super) fn detect() -> Result<Runner> {
        if effective_uid() != 0 {
            return Ok(Runner::Me);
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id")
                .args([flag, SERVER_USER])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .ok()
                .filter(|_| out.status.success())
        };
        let (Some(uid), Some(gid)) = (id("-u"), id("-g")) else {
            bail!(
                "tenantctl runs as root, Postgres refuses to run as root, and there is no `{SERVER_USER}` \
                 user to run it as\n  hint: create one (`useradd --system --user-group {SERVER_USER}`), or run \
                 tenantctl as a normal user"
            );
        };
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                anyhow!(
                    "tenantctl runs as root and needs `runuser` (util-linux) to start Postgres as user \
                     {SERVER_USER}\n  hint: install util-linux, or run tenantctl as a normal user"
                )
            })?;
        Ok(Runner::User {
            name: SERVER_USER.to_string(),
            uid,
            gid,
            runuser,
        })
    }

    /// A command that runs `program` as the server user.
    pub(super) fn command(&self, program: &Path) -> Command {
        let mut cmd = match self {
            Runner::Me => Command::new(program),
            Runner::User { name, runuser, .. } => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", name, "--"]).arg(program);
                cmd
            }
        };
        // The server user may not be able to enter our working directory; "/" it can always enter.
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }

    /// Hand a file or directory we created to the server user.
    pub(super) fn give(&self, path: &Path) -> Result<()> {
        if let Runner::User { uid, gid, name, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .with_context(|| format!("cannot hand {} to user {name}", path.display()))?;
        }
        Ok(())
    }

    /// The server user must be able to walk down to `dir`; find the first directory it cannot enter.
    pub(super) fn check_reachable(&self, dir: &Path) -> Result<()> {
        let Runner::User { name, .. } = self else {
            return Ok(());
        };
        let can_enter = |d: &Path| {
            self.command(Path::new("test"))
                .arg("-x")
                .arg(d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if can_enter(dir) {
            return Ok(());
        }
        let mut ancestors: Vec<&Path> = dir.ancestors().collect();
        ancestors.reverse();
        let blocked = ancestors.into_iter().find(|d| !can_enter(d)).unwrap_or(dir);
        let mode = fs::metadata(blocked)
            .map(|m| format!("{:o}", m.mode() & 0o7777))
            .unwrap_or_default();
        bail!(
            "Postgres runs as user {name} (it refuses to run as root), and {name} cannot enter {} (mode {mode})\n  \
             hint: `chmod o+x {}`, or use a --dir that {name} can reach (e.g. under /tmp)",
            blocked.display(),
            blocked.display()
        )
    }
}

/// The effective uid: root needs another account to run the server.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
