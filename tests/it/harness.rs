//! Test harness: a real Postgres cluster per test run (started by `tenantctl dev up`), a database
//! and role prefix per test, and the `tenantctl` binary as a command.

#![allow(dead_code)] // Each test module uses its own part of the harness.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running cluster owned by this test run.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// Superuser URL to database `postgres`, with the password.
    pub url: String,
}

impl Cluster {
    /// The superuser URL to another database on this cluster.
    pub fn url_for(&self, dbname: &str) -> String {
        let mut url = url::Url::parse(&self.url).expect("cluster URL parses");
        url.set_path(dbname);
        url.to_string()
    }
}

/// The cluster shared by every test of this run, started on first use. It is stopped and its
/// directory removed by a watchdog when the test process exits (`TENANTCTL_TEST_KEEP=1` keeps it).
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(start_cluster)
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Start another, separate cluster (for tests that reconfigure a server, e.g. TLS).
pub fn start_cluster() -> Cluster {
    let dir = cluster_dir();
    watch(&dir);
    let parent = dir.parent().expect("cluster dir has a parent");
    let out = tenantctl(parent)
        .args(["dev", "up", "--dir"])
        .arg(&dir)
        .output()
        .expect("run tenantctl dev up");
    assert!(
        out.status.success(),
        "tenantctl dev up --dir {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tenantctl(parent)
        .args(["--format", "json", "dev", "url", "--show-password", "--dir"])
        .arg(&dir)
        .output()
        .expect("run tenantctl dev url");
    assert!(
        out.status.success(),
        "tenantctl dev url failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dev url prints JSON");
    let cluster = Cluster {
        port: json["port"].as_u64().expect("port in dev url JSON") as u16,
        url: json["url"]
            .as_str()
            .expect("url in dev url JSON")
            .to_string(),
        dir,
    };
    if keep() {
        eprintln!(
            "TENANTCTL_TEST_KEEP: cluster kept running in {} on port {} (stop: tenantctl dev down --dir {})",
            cluster.dir.display(),
            cluster.port,
            cluster.dir.display()
        );
    }
    cluster
}

/// A fresh directory for a cluster, under the temp dir. Not a `TempDir`: statics are never dropped,
/// so the watchdog removes it. Mode 0755 because the server may run as user postgres (under root).
pub fn cluster_dir() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("tenantctl-test-")
        .tempdir()
        .expect("create temp dir")
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir.join("cluster")
}

fn keep() -> bool {
    std::env::var_os("TENANTCTL_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Stop the cluster in `dir` and delete its parent temp dir once this test process has exited.
/// Detached in its own session so that it outlives us, and holds none of cargo's output pipes.
pub fn watch(dir: &Path) {
    if keep() {
        return;
    }
    let parent = dir.parent().expect("cluster dir has a parent");
    // Every cluster under the temp dir, not only `dir`: a test that forgot --dir may have made one.
    after_exit(
        r#""$2" dev down --dir "$3"
            find "$4" -maxdepth 4 -path '*/data/PG_VERSION' | while read -r v; do
                "$2" dev down --dir "${v%/data/PG_VERSION}"
            done
            rm -rf "$4""#,
        &[Path::new(env!("CARGO_BIN_EXE_tenantctl")), dir, parent],
    );
}

/// Run the shell `script` (its arguments `$2`...) once this test process has exited. Detached in
/// its own session so that it outlives us, and holds none of cargo's output pipes.
fn after_exit(script: &str, args: &[&Path]) {
    // `setsid --fork` returns at once, so it can be waited for and leaves no zombie behind.
    let status = Command::new("setsid")
        .arg("--fork")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done\n            {script}"
        ))
        .arg("tenantctl-test-watchdog")
        .arg(std::process::id().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn the test watchdog (setsid sh)");
    assert!(
        status.success(),
        "the test watchdog did not start: {status}"
    );
}

/// One test's own database on `cluster()`, a role prefix unique to it (roles are cluster-wide),
/// and a fresh project directory.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub role_prefix: String,
    pub project: tempfile::TempDir,
}

pub fn test_db(label: &str) -> TestDb {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let name = format!("t_{label}_{pid}_{n}");
    let cluster = cluster();
    psql_exec(&cluster.url, &format!("CREATE DATABASE \"{name}\""));
    TestDb {
        url: cluster.url_for(&name),
        role_prefix: format!("t{pid}_{n}_"),
        name,
        project: tempfile::tempdir().expect("create project temp dir"),
    }
}

/// The `tenantctl` binary, run in `dir`, with no database URL or config inherited from the caller.
pub fn tenantctl(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    cmd.current_dir(dir)
        .env_remove("CI")
        .env_remove("DATABASE_URL")
        .env_remove("TENANTCTL_CONFIG")
        .env_remove("TENANTCTL_SCRATCH_URL");
    // `generate` test-applies in a scratch database of the harness's cluster (once it runs), not
    // in a cluster of its own per project.
    if let Some(c) = CLUSTER.get() {
        cmd.env("TENANTCTL_SCRATCH_URL", &c.url);
    }
    // libpq's variables fill what a URL leaves unset: a developer's exported PGOPTIONS or
    // PGSSLMODE must not change what the tests see.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", redact(url)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Run SQL (several statements allowed) as given by `url`; panics with the Postgres error.
pub fn psql_exec(url: &str, sql: &str) {
    block_on(async {
        let client = connect(url).await;
        if let Err(e) = client.batch_execute(sql).await {
            panic!("SQL failed on {}: {}\n{sql}", redact(url), db_error(&e));
        }
    })
}

/// Rows of a query whose columns the caller casts to text; NULL is `None`.
pub fn query_strings(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    block_on(async {
        let client = connect(url).await;
        // The simple protocol returns every value as text, whatever its type.
        let messages = client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed on {}: {}\n{sql}", redact(url), db_error(&e)));
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    })
}

/// The server's message, detail and SQLSTATE rather than tokio-postgres's bare "db error".
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail()
                .map(|d| format!("\nDETAIL: {d}"))
                .unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A PgBouncer in `pool_mode = transaction` in front of one database of `cluster()`, with SCRAM
/// between clients and the pooler: every client transaction may land on another server
/// connection, and `pool_size` server connections are shared by all clients of one user.
pub struct Pooler {
    pub port: u16,
    pub dir: PathBuf,
}

impl Pooler {
    /// The URL of `user` through the pooler (the pooler's database name is the real one).
    pub fn url(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{dbname}",
            self.port
        )
    }
}

/// The PgBouncer binary: `TENANTCTL_PGBOUNCER`, else Debian's (`scripts/setup.sh` installs it).
pub fn pgbouncer_bin() -> PathBuf {
    std::env::var_os("TENANTCTL_PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"))
}

/// A free TCP port on 127.0.0.1 (free now; the caller binds it right away).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Start a PgBouncer of its own for `dbname` on `cluster()`, for the logins `users` (name,
/// password), with `pool_size` server connections per user. Runs as `postgres` under root
/// (PgBouncer refuses root); stopped by a watchdog when the test process exits.
pub fn start_pgbouncer(dbname: &str, users: &[(&str, &str)], pool_size: usize) -> Pooler {
    let bin = pgbouncer_bin();
    assert!(
        bin.exists(),
        "{} not found: run scripts/setup.sh (it installs PgBouncer)",
        bin.display()
    );
    let dir = cluster_dir().with_file_name("pgbouncer");
    std::fs::create_dir_all(&dir).expect("create the pgbouncer dir");
    let port = free_port();
    let auth: String = users
        .iter()
        .map(|(u, p)| format!("\"{u}\" \"{p}\"\n"))
        .collect();
    std::fs::write(dir.join("userlist.txt"), auth).expect("write auth_file");
    let d = dir.display();
    let ini = format!(
        "[databases]\n{dbname} = host=127.0.0.1 port={} dbname={dbname} pool_size={pool_size}\n\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = scram-sha-256\nauth_file = {d}/userlist.txt\npool_mode = transaction\n\
         default_pool_size = {pool_size}\nmax_client_conn = 1000\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
        cluster().port
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).expect("write pgbouncer.ini");
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown the pgbouncer dir");
        assert!(status.success(), "chown -R postgres {d} failed");
    }
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let out = cmd
        .arg("-d")
        .arg(dir.join("pgbouncer.ini"))
        .output()
        .expect("run pgbouncer");
    assert!(
        out.status.success(),
        "pgbouncer failed to start: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
    );
    watch_pid_file(&dir.join("pgbouncer.pid"));
    wait_for_port(port);
    Pooler { port, dir }
}

/// Kill the process in `pid_file` once this test process has exited (see [`watch`]).
fn watch_pid_file(pid_file: &Path) {
    if keep() {
        return;
    }
    let dir = pid_file.parent().expect("pid file has a directory");
    after_exit(
        r#"[ -f "$2" ] && kill "$(cat "$2")"; sleep 1; rm -rf "$(dirname "$3")""#,
        &[pid_file, dir],
    );
}

fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}
