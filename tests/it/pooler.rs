//! Through a real PgBouncer in `pool_mode = transaction` (few server connections shared by every
//! client): every command but `migrate` works with many concurrent invocations, `migrate` refuses
//! the pooler and leaves nothing behind, and `verify --pooled-url` catches a login whose context
//! outlives its transactions.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::{cluster, start_pgbouncer, tenantctl, test_db, Pooler, TestDb};
use crate::support::{generate_and_migrate, write_project, Pg};

/// The cluster's superuser and password (the pooler logs in to the server with them).
fn superuser() -> (String, String) {
    let url = url::Url::parse(&cluster().url).expect("cluster URL parses");
    (
        url.username().to_string(),
        url.password()
            .expect("cluster URL has a password")
            .to_string(),
    )
}

/// A migrated project with two tenants (created directly), and a pooler in front of its database
/// for the superuser with `pool_size` server connections; its URL.
fn pooled_project(label: &str, pool_size: usize) -> (TestDb, PathBuf, Pooler, String) {
    let db = test_db(label);
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    for slug in ["gym-a", "gym-b"] {
        let out = run(
            &dir,
            &["tenant", "create", slug, "--name", slug, "--members", "5"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (user, password) = superuser();
    let pooler = start_pgbouncer(&db.name, &[(&user, &password)], pool_size);
    let url = pooler.url(&user, &password, &db.name);
    (db, dir, pooler, url)
}

fn run(dir: &Path, args: &[&str]) -> Output {
    tenantctl(dir).args(args).output().expect("run tenantctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `n` invocations at once (each its own process); every one's exit code and stderr.
fn concurrently(dir: &Path, n: usize, args: impl Fn(usize) -> Vec<String>) -> Vec<(i32, String)> {
    let children: Vec<_> = (0..n)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_tenantctl"))
                .current_dir(dir)
                .env_remove("CI")
                .env_remove("DATABASE_URL")
                .args(args(i))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn tenantctl")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait for tenantctl");
            (out.status.code().unwrap_or(-1), stderr(&out))
        })
        .collect()
}

/// A command's arguments for its i-th concurrent invocation.
type Args = Box<dyn Fn(usize) -> Vec<String>>;

#[test]
fn every_command_but_migrate_works_with_8_concurrent_invocations_through_the_pooler() {
    // Two server connections for 8 clients: every transaction may land on either.
    let (db, dir, _pooler, url) = pooled_project("pooler_concurrent", 2);
    // verify needs more server connections than concurrent runs: each holds one for its feed
    // transaction while its workers probe on others (docs/verify.md says so for operators).
    let (user, password) = superuser();
    let verify_pooler = start_pgbouncer(&db.name, &[(&user, &password)], 12);
    let verify_url = verify_pooler.url(&user, &password, &db.name);
    let commands: Vec<(&str, Args)> = vec![
        ("verify", Box::new(|_| vec!["verify".into()])),
        ("status", Box::new(|_| vec!["status".into()])),
        (
            "tenant list",
            Box::new(|_| vec!["tenant".into(), "list".into()]),
        ),
        (
            "tenant create",
            Box::new(|i| {
                let slug = format!("pooled-{i}");
                vec![
                    "tenant".into(),
                    "create".into(),
                    slug.clone(),
                    "--name".into(),
                    slug,
                    "--members".into(),
                    "3".into(),
                ]
            }),
        ),
        (
            "exec",
            Box::new(|_| {
                ["exec", "--tenant", "gym-a", "SELECT count(*) FROM members"]
                    .map(String::from)
                    .to_vec()
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (name, args) in &commands {
        let results = concurrently(&dir, 8, |i| {
            let url = if *name == "verify" { &verify_url } else { &url };
            let mut a = vec!["--database-url".to_string(), url.clone()];
            a.extend(args(i));
            a
        });
        for (i, (code, err)) in results.iter().enumerate() {
            if *code != 0 {
                failures.push(format!("{name} #{i}: exit {code}\n{err}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every server connection of `pooler` (it has `pool_size` of them at most): each client below
/// holds a transaction, so the next one gets another. Per server connection: lock_timeout,
/// statement_timeout, search_path.
fn server_settings(url: &str, pool_size: usize) -> Vec<Vec<Option<String>>> {
    let mut clients: Vec<Pg> = (0..pool_size).map(|_| Pg::connect(url)).collect();
    let mut seen = Vec::new();
    for pg in &mut clients {
        pg.batch("BEGIN").unwrap();
        seen.extend(
            pg.rows(
                "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), \
                 current_setting('search_path'), pg_backend_pid()::text",
            )
            .unwrap(),
        );
    }
    for pg in &mut clients {
        pg.batch("COMMIT").unwrap();
    }
    seen
}

/// Advisory locks held in `db`'s database, from a direct connection.
fn advisory_locks(db: &TestDb) -> String {
    Pg::connect(&db.url).one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
}

#[test]
fn migrate_refuses_a_pooler_by_behaviour_and_leaves_nothing_behind() {
    let db = test_db("pooler_migrate");
    let dir = write_project(&db, false);
    let out = run(&dir, &["generate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (user, password) = superuser();
    let pooler = start_pgbouncer(&db.name, &[(&user, &password)], 2);
    let url = pooler.url(&user, &password, &db.name);

    // 127.0.0.1 is no Neon pooler name: only behaviour can give it away.
    let out = run(&dir, &["--database-url", &url, "migrate"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("transaction pooler"), "{err}");
    let direct = format!("127.0.0.1:{}/{}", cluster().port, db.name);
    assert!(
        err.contains(&direct),
        "names the direct URL {direct}: {err}"
    );
    assert!(!err.contains(&password), "{err}");
    // Nothing was applied.
    let out = run(&dir, &["--database-url", &db.url, "status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // An operator who knows better migrates through it anyway: it applies, and leaves no lock
    // and no setting on any server connection.
    let out = run(&dir, &["--database-url", &url, "migrate", "--allow-pooler"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: migrating through a transaction pooler"));
    assert_eq!(advisory_locks(&db), "0");
    let defaults = Pg::connect(&db.url).rows(
        "SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), current_setting('search_path')",
    ).unwrap()[0].clone();
    let seen = server_settings(&url, 2);
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!(
            s[..3],
            defaults[..],
            "a server connection kept a setting: {seen:?}"
        );
    }
    // A direct migrate after all that neither waits for a lock nor finds anything to do.
    let out = run(&dir, &["--database-url", &db.url, "migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `verify --pooled-url URL` (without a URL: `[verify] pooled_url` from tenantctl.toml): exit
/// code, and the `probe.pooler-leak` entries of the report.
fn pooled_verify(dir: &Path, url: Option<&str>) -> (i32, Vec<serde_json::Value>, String) {
    let mut args = vec!["--format", "json", "verify"];
    args.extend(url.map(|u| ["--pooled-url", u]).into_iter().flatten());
    let out = run(dir, &args);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify JSON ({e}): {}", stderr(&out)));
    let entries = report["checks"]
        .as_array()
        .expect("checks in the report")
        .iter()
        .filter(|c| c["id"] == "probe.pooler-leak")
        .cloned()
        .collect();
    (out.status.code().unwrap_or(-1), entries, stderr(&out))
}

fn failed(entries: &[serde_json::Value]) -> bool {
    entries.iter().any(|e| e["status"] == "fail")
}

#[test]
fn the_pooler_leak_probe_passes_a_correct_login_and_catches_session_context_and_bypassrls() {
    let (db, dir, _pooler, _) = pooled_project("pooler_leak", 2);
    let login = format!("{}app_login", db.role_prefix);
    let app_password = "app-login-pw-7391";
    crate::harness::psql_exec(
        &db.url,
        &format!(
            "CREATE ROLE \"{login}\" LOGIN PASSWORD '{app_password}' IN ROLE \"{}gym_app\"",
            db.role_prefix
        ),
    );
    let gym_a = Pg::connect(&db.url).one("SELECT id::text FROM gyms WHERE slug = 'gym-a'");
    // Two server connections for the login: eight clients' transactions interleave on them.
    let start = || start_pgbouncer(&db.name, &[(&login, app_password)], 2);

    // A login granted the app role only, its context set per transaction: passes.
    let pooler = start();
    let app_url = pooler.url(&login, app_password, &db.name);
    let (code, entries, err) = pooled_verify(&dir, Some(&app_url));
    assert_eq!(code, 0, "{err}\n{entries:?}");
    assert!(
        !entries.is_empty() && !failed(&entries),
        "the probe ran and passed: {entries:?}"
    );
    assert!(!err.contains(app_password) && !format!("{entries:?}").contains(app_password));

    // The application's connection sets the context at session level (SET, not SET LOCAL):
    // it stays on both server connections after its transactions end.
    let mut bad: Vec<Pg> = (0..2).map(|_| Pg::connect(&app_url)).collect();
    for pg in &mut bad {
        pg.batch(&format!("BEGIN; SET tenantctl.gym_id = '{gym_a}'"))
            .unwrap();
    }
    for pg in &mut bad {
        pg.batch("COMMIT").unwrap();
    }
    drop(bad);
    let (code, entries, err) = pooled_verify(&dir, Some(&app_url));
    assert_eq!(code, 1, "{err}\n{entries:?}");
    assert!(
        failed(&entries),
        "session-level context caught: {entries:?}"
    );

    // A login with BYPASSRLS, through a new pooler (fresh server connections: no leftover context).
    crate::harness::psql_exec(&db.url, &format!("ALTER ROLE \"{login}\" BYPASSRLS"));
    // The URL from tenantctl.toml this time.
    let pooler = start();
    let app_url = pooler.url(&login, app_password, &db.name);
    let toml = dir.join("tenantctl.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!("{config}\n[verify]\npooled_url = \"{app_url}\"\n"),
    )
    .unwrap();
    let (code, entries, err) = pooled_verify(&dir, None);
    assert_eq!(code, 1, "{err}\n{entries:?}");
    assert!(failed(&entries), "BYPASSRLS caught: {entries:?}");
    let message = entries.iter().find(|e| e["status"] == "fail").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    // Transactions in a tenant's context saw the other tenant's rows (not only those without one).
    assert!(
        message.contains(" with a tenant context") && !message.contains("(0 with a tenant context"),
        "{message}"
    );
}
