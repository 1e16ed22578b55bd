//! The embedded local Postgres cluster: find server binaries, initdb, start, stop, URL.
//!
//! Layout of a cluster directory `DIR` (default `.tenantctl/` beside `tenantctl.toml`):
//! `DIR/data/` (the Postgres data directory), `DIR/state.json` (port, password, binaries; mode
//! 0600), `DIR/postgres.log` (the server log), and `DIR/.lock` (locked while tenantctl changes
//! the cluster).

mod bindir;
mod layout;
mod lock;
mod runner;
mod server;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use bindir::{check_version, resolve_bindir};
pub use bindir::{find_bindir, psql_path, recorded_bindir};
use layout::{Layout, State};
use lock::DirLock;
use runner::Runner;
use server::{create_dir, free_port, initdb, output_text, port_is_free, running_port, start};

/// Superuser that initdb creates; the URL logs in as this role.
pub const SUPERUSER: &str = "tenantctl";
/// Database named in the URL.
pub const DATABASE: &str = "postgres";
/// Unprivileged account that runs the server when tenantctl runs as root (Postgres refuses root).
const SERVER_USER: &str = "postgres";
const BINDIR_ENV: &str = "TENANTCTL_PG_BINDIR";

/// What `up` found or did.
#[derive(Debug, Clone)]
pub struct Info {
    /// Superuser URL with the password in it: redact before printing.
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The cluster was created by this call.
    pub initialised: bool,
    /// The cluster was already running; nothing was started.
    pub was_running: bool,
}

/// Start the cluster in `dir` if it is not running (initialising it on first use) and return its URL.
pub fn ensure_running(dir: &Path) -> Result<String> {
    Ok(up(dir, None)?.url)
}

/// Start the cluster in `dir`, initialising it on first use. Idempotent: a running cluster is left
/// alone (but `port` must then match the port it runs on).
pub fn up(dir: &Path, port: Option<u16>) -> Result<Info> {
    let layout = Layout::new(dir)?;
    let runner = Runner::detect()?;
    // Fail before creating anything when the cluster could not be made anyway.
    if !layout.initialised() {
        resolve_bindir(None)?;
    }
    let existing = layout
        .dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    runner.check_reachable(existing)?;
    create_dir(&layout.dir, &runner)?;
    let _lock = DirLock::acquire(&layout.dir)?;

    let (mut state, initialised) = load_or_init(&layout, &runner)?;

    if let Some(running_port) = running_port(&layout, &runner, &state.bindir)? {
        if let Some(wanted) = port.filter(|p| *p != running_port) {
            bail!(
                "the local cluster in {} already runs on port {running_port}, not {wanted}\n  \
                 hint: run `tenantctl dev down` first to restart it on another port",
                layout.dir.display()
            );
        }
        if running_port != state.port {
            state.port = running_port;
            layout.write_state(&state)?;
        }
        return Ok(Info {
            url: layout.url(&state),
            port: state.port,
            data_dir: layout.data.clone(),
            initialised,
            was_running: true,
        });
    }

    state.port = pick_port(state.port, port)?;
    layout.write_state(&state)?;
    start(&layout, &runner, &state)?;
    eprintln!(
        "note: started the local Postgres cluster in {} on 127.0.0.1:{}{}",
        layout.dir.display(),
        state.port,
        match &runner {
            Runner::Me => String::new(),
            Runner::User { name, .. } =>
                format!(" (as user {name}, since Postgres refuses to run as root)"),
        }
    );
    Ok(Info {
        url: layout.url(&state),
        port: state.port,
        data_dir: layout.data.clone(),
        initialised,
        was_running: false,
    })
}

/// The cluster's state, initialising the cluster first when it has no data directory yet
/// (reusing a reset cluster's password and port). Returns whether it was initialised now.
fn load_or_init(layout: &Layout, runner: &Runner) -> Result<(State, bool)> {
    match layout.read_state()? {
        Some(state) if layout.initialised() => {
            let bindir = resolve_bindir(Some(&state.bindir))?;
            check_version(&bindir, &layout.data)?;
            Ok((State { bindir, ..state }, false))
        }
        None if layout.initialised() => bail!(
            "{} holds a Postgres data directory but {} is missing, so its password is unknown\n  \
             hint: run `tenantctl dev reset --dir {}` to recreate the cluster (its data is lost)",
            layout.data.display(),
            layout.state.display(),
            layout.dir.display()
        ),
        previous => {
            // Reuse the password of a reset cluster so its URL stays the same.
            let password = previous
                .as_ref()
                .map(|s| s.password.clone())
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            let bindir = resolve_bindir(None)?;
            initdb(layout, runner, &bindir, &password)?;
            let port = previous.map(|s| s.port).unwrap_or(0);
            let state = State {
                port,
                password,
                bindir,
            };
            layout.write_state(&state)?;
            Ok((state, true))
        }
    }
}

/// The port to start on: the one asked for (if free), else the last one (if still free), else
/// a free one.
fn pick_port(last: u16, asked: Option<u16>) -> Result<u16> {
    Ok(match asked {
        Some(p) if !port_is_free(p) => {
            bail!("port {p} on 127.0.0.1 is in use\n  hint: pick another --port, or omit it to get a free one")
        }
        Some(p) => p,
        None if last == 0 => free_port()?,
        None if port_is_free(last) => last,
        None => {
            let new = free_port()?;
            eprintln!("note: port {last} is now in use; the local cluster moves to port {new}");
            new
        }
    })
}

/// Stop the cluster in `dir` (its data stays). Returns whether it was running.
pub fn down(dir: &Path) -> Result<bool> {
    let layout = Layout::new(dir)?;
    if !layout.initialised() {
        return Ok(false);
    }
    let runner = Runner::detect()?;
    let _lock = DirLock::acquire(&layout.dir)?;
    let state = layout.read_state()?;
    let bindir = resolve_bindir(state.as_ref().map(|s| s.bindir.as_path()))?;
    if running_port(&layout, &runner, &bindir)?.is_none() {
        return Ok(false);
    }
    let out = runner
        .command(&bindir.join("pg_ctl"))
        .arg("stop")
        .arg("-D")
        .arg(&layout.data)
        .args(["-m", "fast", "-w", "-t", "60"])
        .output()
        .context("cannot run pg_ctl stop")?;
    if !out.status.success() {
        bail!(
            "pg_ctl stop failed for {}: {}",
            layout.data.display(),
            output_text(&out)
        );
    }
    Ok(true)
}

/// The URL of the cluster in `dir` (with password), or `None` when there is no cluster there.
/// The cluster need not be running.
pub fn url(dir: &Path) -> Result<Option<String>> {
    let layout = Layout::new(dir)?;
    if !layout.initialised() {
        return Ok(None);
    }
    Ok(layout
        .read_state()?
        .filter(|s| s.port != 0)
        .map(|s| layout.url(&s)))
}

/// Whether the cluster in `dir` is running.
pub fn is_running(dir: &Path) -> Result<bool> {
    let layout = Layout::new(dir)?;
    if !layout.initialised() {
        return Ok(false);
    }
    let runner = Runner::detect()?;
    let state = layout.read_state()?;
    let bindir = resolve_bindir(state.as_ref().map(|s| s.bindir.as_path()))?;
    Ok(running_port(&layout, &runner, &bindir)?.is_some())
}

/// Stop the cluster, delete its data and log, and start a fresh, empty one. The port and password
/// are kept (so the URL does not change) unless `port` asks for another port.
pub fn reset(dir: &Path, port: Option<u16>) -> Result<Info> {
    let layout = Layout::new(dir)?;
    down(dir)?;
    if layout.data.exists() {
        // Refuse to delete anything that does not look like a cluster we made: `--dir` may be a typo.
        if !layout.initialised() && layout.data_has_files() {
            bail!(
                "{} is not a Postgres data directory; not deleting it\n  hint: check --dir",
                layout.data.display()
            );
        }
        let _lock = DirLock::acquire(&layout.dir)?;
        fs::remove_dir_all(&layout.data)
            .with_context(|| format!("cannot delete {}", layout.data.display()))?;
        match fs::remove_file(&layout.log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot delete {}", layout.log.display()))
            }
            _ => {}
        }
    }
    up(dir, port)
}
