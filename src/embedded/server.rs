//! The server's life: creating the directory, initdb, start, and reading the port it runs on.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::layout::{Layout, State};
use super::runner::Runner;
use super::SUPERUSER;

pub(super) fn create_dir(dir: &Path, runner: &Runner) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Runner::User { .. } = runner {
        // The server user only needs to pass through; state.json (the password) stays 0600 root.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    }
    Ok(())
}

pub(super) fn initdb(
    layout: &Layout,
    runner: &Runner,
    bindir: &Path,
    password: &str,
) -> Result<()> {
    if layout.data_has_files() {
        bail!(
            "{} exists but is not a Postgres data directory\n  hint: remove it, or pick another --dir",
            layout.data.display()
        );
    }
    fs::create_dir_all(&layout.data)
        .with_context(|| format!("cannot create {}", layout.data.display()))?;
    fs::set_permissions(&layout.data, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", layout.data.display()))?;
    runner.give(&layout.data)?;

    // The password goes through a file, never the command line (visible in `ps`).
    let pwfile = layout.dir.join(".pwfile");
    let _remove = RemoveOnDrop(pwfile.clone());
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&pwfile)
            .with_context(|| format!("cannot write {}", pwfile.display()))?;
        writeln!(f, "{password}").with_context(|| format!("cannot write {}", pwfile.display()))?;
    }
    runner.give(&pwfile)?;

    let started = Instant::now();
    let out = runner
        .command(&bindir.join("initdb"))
        .arg("-D")
        .arg(&layout.data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        // A throwaway dev cluster: skipping the final fsync of initdb saves most of its time.
        .arg("--no-sync")
        .output()
        .with_context(|| format!("cannot run {}", bindir.join("initdb").display()))?;
    if !out.status.success() {
        bail!(
            "initdb failed for {}: {}",
            layout.data.display(),
            output_text(&out)
        );
    }

    let conf = layout.data.join("postgresql.conf");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .with_context(|| format!("cannot write {}", conf.display()))?;
    f.write_all(DEV_CONF.as_bytes())
        .with_context(|| format!("cannot write {}", conf.display()))?;
    eprintln!(
        "note: initialised a local Postgres cluster in {} ({} in {:.1}s)",
        layout.dir.display(),
        bindir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Appended to postgresql.conf. The port is given on the command line instead, since it may change.
pub(super) const DEV_CONF: &str = "
# --- tenantctl dev cluster ---
# Loopback TCP only; no Unix socket (none to clash with a system server, none to secure).
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
# Durability is off because this is a throwaway development database: a crash of the machine may
# lose or corrupt it (`tenantctl dev reset` recreates it). Never copy these settings to a real server.
fsync = off
synchronous_commit = off
full_page_writes = off
";

pub(super) fn start(layout: &Layout, runner: &Runner, state: &State) -> Result<()> {
    // pg_ctl opens the log as the server user, who cannot create files in a root-owned DIR.
    if !layout.log.exists() {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&layout.log)
            .with_context(|| format!("cannot create {}", layout.log.display()))?;
    }
    runner.give(&layout.log)?;
    let log_len = fs::metadata(&layout.log).map(|m| m.len()).unwrap_or(0);
    let out = runner
        .command(&state.bindir.join("pg_ctl"))
        .arg("start")
        .arg("-D")
        .arg(&layout.data)
        .arg("-l")
        .arg(&layout.log)
        .args(["-w", "-t", "60", "-o"])
        .arg(format!("-p {}", state.port))
        .output()
        .context("cannot run pg_ctl start")?;
    if !out.status.success() {
        let log = fs::read(&layout.log).unwrap_or_default();
        let tail = String::from_utf8_lossy(&log[(log_len as usize).min(log.len())..]);
        let tail: Vec<&str> = tail.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the local Postgres cluster in {} did not start: {}\n  server log ({}):\n    {}",
            layout.dir.display(),
            output_text(&out),
            layout.log.display(),
            tail.join("\n    ")
        );
    }
    Ok(())
}

/// The port the cluster runs on, or `None` when it is not running.
pub(super) fn running_port(layout: &Layout, runner: &Runner, bindir: &Path) -> Result<Option<u16>> {
    let out = runner
        .command(&bindir.join("pg_ctl"))
        .arg("status")
        .arg("-D")
        .arg(&layout.data)
        .output()
        .context("cannot run pg_ctl status")?;
    // pg_ctl status: 0 running, 3 not running, 4 no data directory.
    match out.status.code() {
        Some(0) => {}
        Some(3) | Some(4) => return Ok(None),
        _ => bail!(
            "pg_ctl status failed for {}: {}",
            layout.data.display(),
            output_text(&out)
        ),
    }
    // postmaster.pid, line 4, is the port the server listens on.
    let pid_file = layout.data.join("postmaster.pid");
    let text = fs::read_to_string(&pid_file)
        .with_context(|| format!("cannot read {}", pid_file.display()))?;
    let port = text
        .lines()
        .nth(3)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("{} has no port on its 4th line", pid_file.display()))?;
    Ok(Some(port))
}

pub(super) fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Ask the kernel for a free port. Another process could take it before Postgres binds it; the
/// start then fails with the reason in the log, and the next `up` picks again.
pub(super) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

pub(super) fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    if text.is_empty() {
        text = format!("exit status {}", out.status);
    }
    text
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
