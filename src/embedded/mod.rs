//! The embedded local Postgres cluster: find server binaries, initdb, start, stop, URL.
//!
//! Layout of a cluster directory `DIR` (default `.tenantctl/` beside `tenantctl.toml`):
//! `DIR/data/` (the Postgres data directory), `DIR/state.json` (port, password, binaries; mode
//! 0600), `DIR/postgres.log` (the server log), and `DIR/.lock` while tenantctl is changing it.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

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

/// Kept in `DIR/state.json`, so the URL stays the same across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    port: u16,
    password: String,
    bindir: PathBuf,
}

struct Layout {
    dir: PathBuf,
    data: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Result<Layout> {
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

    fn initialised(&self) -> bool {
        self.data.join("PG_VERSION").is_file()
    }

    fn read_state(&self) -> Result<Option<State>> {
        match fs::read_to_string(&self.state) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not valid tenantctl state", self.state.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.state.display())),
        }
    }

    /// Written to a temporary file and renamed, mode 0600 from the start: it holds the password.
    fn write_state(&self, state: &State) -> Result<()> {
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

    fn url(&self, state: &State) -> String {
        url_for(state.port, &state.password)
    }
}

fn url_for(port: u16, password: &str) -> String {
    format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}")
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

    let mut initialised = false;
    let mut state = match layout.read_state()? {
        Some(state) if layout.initialised() => {
            let bindir = resolve_bindir(Some(&state.bindir))?;
            check_version(&bindir, &layout.data)?;
            State { bindir, ..state }
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
            initdb(&layout, &runner, &bindir, &password)?;
            initialised = true;
            let port = previous.map(|s| s.port).unwrap_or(0);
            let state = State {
                port,
                password,
                bindir,
            };
            layout.write_state(&state)?;
            state
        }
    };

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

    state.port = match port {
        Some(p) if !port_is_free(p) => {
            bail!("port {p} on 127.0.0.1 is in use\n  hint: pick another --port, or omit it to get a free one")
        }
        Some(p) => p,
        None if state.port == 0 => free_port()?,
        None if port_is_free(state.port) => state.port,
        None => {
            let new = free_port()?;
            eprintln!(
                "note: port {} is now in use; the local cluster moves to port {new}",
                state.port
            );
            new
        }
    };
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
        if !layout.initialised()
            && fs::read_dir(&layout.data)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
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

fn is_server_bindir(dir: &Path) -> bool {
    ["pg_ctl", "initdb", "postgres"]
        .iter()
        .all(|b| is_executable(&dir.join(b)))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An explicit `$TENANTCTL_PG_BINDIR` wins; else the binaries the cluster was made with; else search.
fn resolve_bindir(recorded: Option<&Path>) -> Result<PathBuf> {
    if std::env::var_os(BINDIR_ENV).is_some_and(|v| !v.is_empty()) {
        return find_bindir();
    }
    match recorded {
        Some(dir) if is_server_bindir(dir) => Ok(dir.to_path_buf()),
        _ => find_bindir(),
    }
}

/// A data directory only works with the major version that created it; say so plainly.
fn check_version(bindir: &Path, data: &Path) -> Result<()> {
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

/// Who runs the server processes.
enum Runner {
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
    fn detect() -> Result<Runner> {
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
    fn command(&self, program: &Path) -> Command {
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
    fn give(&self, path: &Path) -> Result<()> {
        if let Runner::User { uid, gid, name, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .with_context(|| format!("cannot hand {} to user {name}", path.display()))?;
        }
        Ok(())
    }

    /// The server user must be able to walk down to `dir`; find the first directory it cannot enter.
    fn check_reachable(&self, dir: &Path) -> Result<()> {
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

/// The effective uid, without a libc dependency: `/proc/self` belongs to it on Linux.
fn effective_uid() -> u32 {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return meta.uid();
    }
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(u32::MAX)
}

fn create_dir(dir: &Path, runner: &Runner) -> Result<()> {
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

fn initdb(layout: &Layout, runner: &Runner, bindir: &Path, password: &str) -> Result<()> {
    if layout.data.exists()
        && fs::read_dir(&layout.data)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
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
const DEV_CONF: &str = "
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

fn start(layout: &Layout, runner: &Runner, state: &State) -> Result<()> {
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
fn running_port(layout: &Layout, runner: &Runner, bindir: &Path) -> Result<Option<u16>> {
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

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Ask the kernel for a free port. Another process could take it before Postgres binds it; the
/// start then fails with the reason in the log, and the next `up` picks again.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

fn output_text(out: &Output) -> String {
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

/// Serialises tenantctl processes that change the same cluster directory (two commands started at
/// once would both initdb or both pick a port). Stale locks of dead processes are taken over.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(".lock");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(DirLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if !process_alive(pid) => {
                            let _ = fs::remove_file(&path);
                            continue;
                        }
                        // Empty: the holder is between creating and writing it; wait.
                        _ => {}
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "{} is locked by another tenantctl process{}\n  hint: if none is running, delete {}",
                            dir.display(),
                            holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                            path.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn process_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return Path::new(&format!("/proc/{pid}")).exists();
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_the_documented_shape() {
        assert_eq!(
            url_for(5432, "pw"),
            "postgres://tenantctl:pw@127.0.0.1:5432/postgres"
        );
    }
}
