//! TLS against a real server: every sslmode, sslrootcert, channel binding, and redacted errors.
//!
//! Self-contained on purpose: it needs a server with its own CA-signed certificate, which the
//! shared harness does not set up. Certificates come from the `openssl` CLI (present wherever
//! the PostgreSQL server is), so no certificate-generation crate joins the dependency tree.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tenantctl::pg;

use crate::harness;

const USER: &str = "tenantctl";
const PASSWORD: &str = "Tls-Test-Pw-7391";

/// A throwaway TLS-enabled cluster under /tmp; stopped and removed on drop, even after a panic.
struct TlsCluster {
    _root: tempfile::TempDir,
    data: PathBuf,
    bindir: PathBuf,
    run_as: Option<String>,
    port: u16,
    ca: PathBuf,
    other_ca: PathBuf,
    /// Where the certificates are, for tests that make more.
    tls: PathBuf,
    /// The server's user and group, when the test runs as root and the server as `postgres`.
    owner: Option<(u32, u32)>,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let mut cmd = self.pg_cmd("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = cmd.output();
    }
}

fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TENANTCTL_PG_BINDIR") {
        return dir.into();
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL server binaries: set TENANTCTL_PG_BINDIR")
}

fn check(what: &str, output: std::io::Result<Output>) {
    let output = output.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no user {user}: postgres refuses to run as root"))
}

/// Hand a file to the server's user with this mode.
fn give(owner: Option<(u32, u32)>, path: &Path, mode: u32) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    check(&format!("openssl {}", args.join(" ")), cmd.output());
}

fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let cnf = dir.join(format!("{name}.cnf"));
    fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
             [dn]\nCN = tenantctl test {name}\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n"
        ),
    )
    .unwrap();
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", &format!("{name}.key"), "-out", &format!("{name}.crt"), "-days", "2",
        "-config", &format!("{name}.cnf"),
    ]);
    dir.join(format!("{name}.crt"))
}

impl TlsCluster {
    fn pg_cmd(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    fn start() -> TlsCluster {
        let root = tempfile::Builder::new()
            .prefix("tenantctl-tls-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let is_root = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let run_as = is_root.then(|| "postgres".to_string());
        let owner = run_as.as_deref().map(|u| (id_of(u, "-u"), id_of(u, "-g")));
        let give = |path: &Path, mode: u32| give(owner, path, mode);

        // Certificates: a CA, a server certificate for `localhost` signed by it, and a second,
        // unrelated CA for the "wrong root" case.
        let tls = root.path().join("tls");
        fs::create_dir(&tls).unwrap();
        let ca = make_ca(&tls, "ca");
        let other_ca = make_ca(&tls, "other-ca");
        fs::write(
            tls.join("server.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n\
             [v3_srv]\nsubjectAltName = DNS:localhost\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        #[rustfmt::skip]
        openssl(&tls, &[
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-config", "server.cnf",
        ]);
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        #[rustfmt::skip]
        openssl(&tls, &[
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", &serial.to_string(), "-days", "2", "-out", "server.crt",
            "-extfile", "server.cnf", "-extensions", "v3_srv",
        ]);
        give(&tls, 0o755);
        give(&tls.join("server.crt"), 0o644);
        // The server refuses a key file that others can read.
        give(&tls.join("server.key"), 0o600);

        let pwfile = root.path().join("pwfile");
        fs::write(&pwfile, PASSWORD).unwrap();
        give(&pwfile, 0o600);
        let data = root.path().join("data");
        fs::create_dir(&data).unwrap();
        give(&data, 0o700);

        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut cluster = TlsCluster {
            _root: root,
            data,
            bindir: bindir(),
            run_as,
            port,
            ca,
            other_ca,
            tls,
            owner,
        };

        let mut initdb = cluster.pg_cmd("initdb");
        initdb
            .arg("-D")
            .arg(&cluster.data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()));
        check("initdb", initdb.output());
        let _ = fs::remove_file(&pwfile);

        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n\
             ssl = on\nssl_cert_file = '{tls}/server.crt'\nssl_key_file = '{tls}/server.key'\n\
             password_encryption = 'scram-sha-256'\nfsync = off\n",
            data = cluster.data.display(),
            tls = cluster.tls.display(),
        );
        let conf_path = cluster.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        fs::write(&conf_path, text).unwrap();
        fs::write(
            cluster.data.join("pg_hba.conf"),
            "local all all scram-sha-256\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();

        let log = cluster.data.join("server.log");
        let mut start = cluster.pg_cmd("pg_ctl");
        start
            .arg("-D")
            .arg(&cluster.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "30", "start"]);
        let out = start.output().expect("pg_ctl");
        if !out.status.success() {
            let log = fs::read_to_string(&log).unwrap_or_default();
            // Keep the directory for inspection rather than deleting the evidence.
            let kept = std::mem::replace(&mut cluster._root, tempfile::tempdir().unwrap());
            panic!(
                "pg_ctl start failed (kept {}): {}\n{log}",
                kept.keep().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster
    }

    /// A self-signed X.509 version 1 certificate and its key (no extensions, as Citus makes them),
    /// readable by the server; their paths.
    fn make_v1_certificate(&self) -> (String, String) {
        #[rustfmt::skip]
        openssl(&self.tls, &[
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "v1.key", "-subj", "/CN=citus", "-out", "v1.csr",
        ]);
        #[rustfmt::skip]
        openssl(&self.tls, &[
            "x509", "-req", "-in", "v1.csr", "-signkey", "v1.key", "-days", "2", "-out", "v1.crt",
        ]);
        let text = Command::new("openssl")
            .current_dir(&self.tls)
            .args(["x509", "-noout", "-text", "-in", "v1.crt"])
            .output()
            .expect("openssl x509 -text");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("Version: 1 (0x0)"),
            "not a v1 certificate:\n{text}"
        );
        give(self.owner, &self.tls.join("v1.crt"), 0o644);
        give(self.owner, &self.tls.join("v1.key"), 0o600);
        let path = |name: &str| self.tls.join(name).display().to_string();
        (path("v1.crt"), path("v1.key"))
    }

    /// Change server settings (ALTER SYSTEM, reload) and wait until new sessions have them: the
    /// postmaster reloads its TLS context in the same step, so new handshakes use them too.
    async fn reconfigure(&self, settings: &[(&str, &str)]) {
        let plain = self.url("127.0.0.1", PASSWORD, "sslmode=disable");
        let admin = must_connect(&plain).await;
        for (name, value) in settings {
            let sql = format!("ALTER SYSTEM SET {name} = '{value}'");
            admin.batch_execute(&sql).await.expect(&sql);
        }
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        let (name, value) = settings.last().expect("a setting");
        for _ in 0..200 {
            let now: String = must_connect(&plain)
                .await
                .query_one("SELECT current_setting($1)", &[name])
                .await
                .unwrap()
                .get(0);
            if now == *value {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server did not take {name} = {value}");
    }

    fn url(&self, host: &str, password: &str, params: &str) -> String {
        format!(
            "postgres://{USER}:{password}@{host}:{}/postgres?{params}",
            self.port
        )
    }
}

/// The `tenantctl` binary given only `postgres:///postgres`: the host, port and TLS mode come
/// from a service file named by PGSERVICE/PGSERVICEFILE, the user from PGUSER, the password from
/// the file PGPASSFILE names. Nothing secret on the command line.
fn settings_from_a_service_file_and_the_environment(c: &TlsCluster) {
    let root = c.tls.parent().unwrap();
    let services = root.join("pg_service.conf");
    let service = format!("[tls]\nhost=127.0.0.1\nport={}\nsslmode=require\n", c.port);
    fs::write(&services, service).unwrap();
    let pgpass = root.join("pgpass-env");
    fs::write(
        &pgpass,
        format!("127.0.0.1:{}:*:{USER}:{PASSWORD}\n", c.port),
    )
    .unwrap();
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600)).unwrap();
    let project = tempfile::tempdir().unwrap();
    harness::tenantctl(project.path())
        .args(["init", "p"])
        .assert()
        .success();
    let out = harness::tenantctl(&project.path().join("p"))
        .env("PGSERVICE", "tls")
        .env("PGSERVICEFILE", &services)
        .env("PGUSER", USER)
        .env("PGPASSFILE", &pgpass)
        .env_remove("PGPASSWORD")
        .args(["--database-url", "postgres:///postgres", "status"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status failed: {stderr}");
    assert!(!stderr.contains(PASSWORD), "password leaked: {stderr}");
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

async fn must_connect(url: &str) -> tokio_postgres::Client {
    match pg::connect(url).await {
        Ok(client) => client,
        Err(e) => panic!("expected to connect with {}: {e:#}", pg::redact(url)),
    }
}

async fn must_fail(url: &str) -> String {
    match pg::connect(url).await {
        Ok(_) => panic!("expected {} to be refused", pg::redact(url)),
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("refused as expected: {text}");
            assert!(!text.contains(PASSWORD), "password leaked: {text}");
            text
        }
    }
}

#[tokio::test]
async fn tls_modes_against_a_real_server() {
    let started = Instant::now();
    let c = TlsCluster::start();
    let ca = c.ca.display().to_string();
    let other_ca = c.other_ca.display().to_string();
    let port = c.port;

    // require: encrypted, not verified; defaults applied.
    let client = must_connect(&c.url("127.0.0.1", PASSWORD, "sslmode=require")).await;
    assert!(uses_tls(&client).await);
    let app: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "tenantctl");

    // verify-full: chain and name.
    let params = format!("sslmode=verify-full&sslrootcert={ca}");
    let client = must_connect(&c.url("localhost", PASSWORD, &params)).await;
    assert!(uses_tls(&client).await);
    // Same in key=value form, with hostaddr doing the connecting and host naming the certificate.
    let kv = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={USER} password='{PASSWORD}' \
         dbname=postgres sslmode=verify-full sslrootcert='{ca}'"
    );
    assert!(uses_tls(&must_connect(&kv).await).await);

    // verify-full to 127.0.0.1: the certificate names only localhost.
    let err = must_fail(&c.url("127.0.0.1", PASSWORD, &params)).await;
    assert!(
        err.contains(&format!(
            "cannot connect to 127.0.0.1:{port}/postgres as user {USER}"
        )),
        "{err}"
    );
    assert!(err.contains("not valid for"), "{err}");

    // verify-ca: chain only, so 127.0.0.1 is fine.
    let params = format!("sslmode=verify-ca&sslrootcert={ca}");
    assert!(uses_tls(&must_connect(&c.url("127.0.0.1", PASSWORD, &params)).await).await);
    // ...but not against an unrelated CA.
    let params = format!("sslmode=verify-ca&sslrootcert={other_ca}");
    let err = must_fail(&c.url("127.0.0.1", PASSWORD, &params)).await;
    assert!(err.contains("invalid peer certificate"), "{err}");

    // libpq: require with a root certificate verifies the chain.
    let params = format!("sslmode=require&sslrootcert={ca}");
    must_connect(&c.url("127.0.0.1", PASSWORD, &params)).await;
    let params = format!("sslmode=require&sslrootcert={other_ca}");
    must_fail(&c.url("127.0.0.1", PASSWORD, &params)).await;

    // verify-full without sslrootcert: webpki + system roots do not know this CA.
    let err = must_fail(&c.url("localhost", PASSWORD, "sslmode=verify-full")).await;
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("sslrootcert"), "hint missing: {err}");

    // SCRAM with channel binding over TLS (tokio-postgres errors if it could not bind).
    let params = "sslmode=require&channel_binding=require";
    assert!(uses_tls(&must_connect(&c.url("127.0.0.1", PASSWORD, params)).await).await);
    let params = format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require");
    must_connect(&c.url("localhost", PASSWORD, &params)).await;

    // No TLS: works through the `host` line, but cannot do channel binding.
    let client = must_connect(&c.url("127.0.0.1", PASSWORD, "sslmode=disable")).await;
    assert!(!uses_tls(&client).await);
    let err = must_fail(&c.url(
        "127.0.0.1",
        PASSWORD,
        "sslmode=disable&channel_binding=require",
    ))
    .await;
    assert!(err.contains("channel_binding"), "{err}");

    // A wrong password is reported, never printed.
    let wrong = "Wrong-Secret-0815";
    let err = must_fail(&c.url("127.0.0.1", wrong, "sslmode=require")).await;
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}/postgres")), "{err}");
    assert!(!err.contains(wrong), "password leaked: {err}");
    let kv = format!("host=127.0.0.1 port={port} user={USER} password={wrong} dbname=postgres");
    let err = must_fail(&kv).await;
    assert!(!err.contains(wrong), "password leaked: {err}");

    // The password only in a password file (`passfile=`; PGPASSFILE or ~/.pgpass name it the
    // same way), never on a command line.
    let pgpass = c.tls.with_file_name("pgpass");
    let line = |pw: &str| format!("# tenantctl test\n127.0.0.1:{port}:postgres:{USER}:{pw}\n");
    fs::write(&pgpass, line(PASSWORD)).unwrap();
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!(
        "postgres://{USER}@127.0.0.1:{port}/postgres?sslmode=require&passfile={}",
        pgpass.display()
    );
    assert!(uses_tls(&must_connect(&url).await).await);
    // A wrong one is named, as libpq names it.
    fs::write(&pgpass, line(wrong)).unwrap();
    let err = must_fail(&url).await;
    assert!(err.contains("password retrieved from file"), "{err}");
    assert!(!err.contains(wrong), "password leaked: {err}");
    // Readable by others: ignored, as libpq ignores it (with a warning on stderr).
    fs::write(&pgpass, line(PASSWORD)).unwrap();
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o644)).unwrap();
    let err = must_fail(&url).await;
    assert!(err.contains("password missing"), "{err}");

    assert!(
        started.elapsed().as_secs() < 10,
        "TLS test took {:?}",
        started.elapsed()
    );
    // Outside the TLS time budget: it runs the binary twice.
    settings_from_a_service_file_and_the_environment(&c);
}

/// libpq's weak sslmodes take any certificate, even one rustls cannot parse; channel binding is
/// then not offered (nothing proved the server holds the key) and cannot be required.
#[tokio::test]
async fn weak_sslmodes_accept_a_version_1_certificate() {
    let c = TlsCluster::start();
    let (cert, key) = c.make_v1_certificate();
    c.reconfigure(&[("ssl_key_file", &key), ("ssl_cert_file", &cert)])
        .await;

    for mode in ["require", "prefer", "allow"] {
        let client = must_connect(&c.url("127.0.0.1", PASSWORD, &format!("sslmode={mode}"))).await;
        assert!(
            uses_tls(&client).await,
            "sslmode={mode} fell back to plaintext"
        );
    }
    for mode in ["require", "prefer"] {
        let params = format!("sslmode={mode}&channel_binding=require");
        let err = must_fail(&c.url("127.0.0.1", PASSWORD, &params)).await;
        assert!(
            err.contains("channel_binding=require cannot be honoured"),
            "{err}"
        );
    }
    // verify-ca keeps verifying: webpki cannot use a version 1 certificate as a root or a leaf.
    let params = format!("sslmode=verify-ca&sslrootcert={cert}");
    let err = must_fail(&c.url("127.0.0.1", PASSWORD, &params)).await;
    assert!(err.contains("invalid peer certificate"), "{err}");
}

/// `prefer` retries without TLS when the handshake fails, as libpq does; `require` does not.
/// The server speaks at most TLS 1.1, which rustls never does, so every handshake fails.
#[tokio::test]
async fn prefer_falls_back_to_plaintext_when_the_handshake_fails() {
    let c = TlsCluster::start();
    c.reconfigure(&[
        ("ssl_min_protocol_version", "TLSv1"),
        ("ssl_max_protocol_version", "TLSv1.1"),
    ])
    .await;

    let err = must_fail(&c.url("127.0.0.1", PASSWORD, "sslmode=require")).await;
    assert!(err.contains("TLS"), "{err}");
    for params in ["sslmode=prefer", "sslmode=allow", "connect_timeout=5"] {
        let client = must_connect(&c.url("127.0.0.1", PASSWORD, params)).await;
        assert!(!uses_tls(&client).await, "{params}");
    }
    // Channel binding needs TLS: no plaintext retry, the handshake failure is the error.
    let err = must_fail(&c.url(
        "127.0.0.1",
        PASSWORD,
        "sslmode=prefer&channel_binding=require",
    ))
    .await;
    assert!(!err.contains("without TLS"), "{err}");
    // A plaintext retry that fails too reports both failures.
    let err = must_fail(&c.url("127.0.0.1", "Wrong-Secret-0815", "sslmode=prefer")).await;
    assert!(err.contains("then without TLS"), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
}
