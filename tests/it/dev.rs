//! `tenantctl dev`: each test drives its own cluster directory, never the shared cluster.

use std::path::Path;

use crate::harness::{cluster, cluster_dir, query_strings, tenantctl, test_db, watch};

/// `dev url --show-password --format json` of the cluster in `dir`: (url, port).
fn url_of(dir: &Path) -> (String, u16) {
    let out = tenantctl(dir.parent().unwrap())
        .args(["--format", "json", "dev", "url", "--show-password", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dev url: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        json["url"].as_str().unwrap().to_string(),
        json["port"].as_u64().unwrap() as u16,
    )
}

fn dev(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    tenantctl(dir.parent().unwrap())
        .arg("dev")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .assert()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

#[test]
fn up_down_up_keeps_port_password_and_data() {
    let dir = cluster_dir();
    watch(&dir);

    let up = dev(&dir, &["up"]).success();
    assert!(
        stderr(&up).contains("initialised"),
        "first up initialises: {}",
        stderr(&up)
    );
    assert!(
        stdout(&up).starts_with("postgres://tenantctl:"),
        "up prints the URL: {}",
        stdout(&up)
    );
    let (url, port) = url_of(&dir);
    assert_eq!(
        url,
        format!(
            "postgres://tenantctl:{}@127.0.0.1:{port}/postgres?sslmode=disable",
            password(&url)
        )
    );
    assert_eq!(
        query_strings(&url, "SELECT 1"),
        vec![vec![Some("1".to_string())]]
    );
    crate::harness::psql_exec(
        &url,
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
    );

    // Idempotent: a running cluster is left alone.
    let again = dev(&dir, &["up"]).success();
    assert!(
        !stderr(&again).contains("started"),
        "second up starts nothing: {}",
        stderr(&again)
    );
    assert_eq!(url_of(&dir), (url.clone(), port));

    let down = dev(&dir, &["down"]).success();
    assert!(stdout(&down).contains("stopped"), "{}", stdout(&down));
    let down = dev(&dir, &["down"]).success();
    assert!(
        stdout(&down).contains("was not running"),
        "{}",
        stdout(&down)
    );
    // The URL is still known while stopped, with a note that the cluster is down.
    let stopped = dev(&dir, &["url"]).success();
    assert!(
        stderr(&stopped).contains("not running"),
        "{}",
        stderr(&stopped)
    );

    let up = dev(&dir, &["up"]).success();
    assert!(
        stderr(&up).contains("started") && !stderr(&up).contains("initialised"),
        "{}",
        stderr(&up)
    );
    assert_eq!(
        url_of(&dir),
        (url.clone(), port),
        "same port and password after a restart"
    );
    assert_eq!(
        query_strings(&url, "SELECT x::text FROM kept"),
        vec![vec![Some("42".to_string())]]
    );
}

#[test]
fn up_moves_to_a_new_port_when_the_old_one_is_taken() {
    let dir = cluster_dir();
    watch(&dir);
    dev(&dir, &["up"]).success();
    let (_, port) = url_of(&dir);
    dev(&dir, &["down"]).success();

    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the old port");
    let up = dev(&dir, &["up"]).success();
    assert!(
        stderr(&up).contains(&format!("port {port} is now in use")),
        "{}",
        stderr(&up)
    );
    let (url, new_port) = url_of(&dir);
    assert_ne!(new_port, port);
    assert_eq!(
        query_strings(&url, "SELECT 1"),
        vec![vec![Some("1".to_string())]]
    );
    drop(squatter);
}

#[test]
fn reset_gives_an_empty_cluster_at_the_same_url() {
    let dir = cluster_dir();
    watch(&dir);
    dev(&dir, &["up"]).success();
    let (url, port) = url_of(&dir);
    crate::harness::psql_exec(&url, "CREATE TABLE doomed (x int)");

    // Piped, without --yes: refused, the data kept.
    let refused = dev(&dir, &["reset"]).code(2);
    assert!(
        stderr(&refused).contains("hint: pass --yes"),
        "{}",
        stderr(&refused)
    );
    let kept = "SELECT count(*)::text FROM pg_tables WHERE tablename = 'doomed'";
    assert_eq!(query_strings(&url, kept), vec![vec![Some("1".to_string())]]);

    let reset = dev(&dir, &["reset", "--yes"]).success();
    assert!(stderr(&reset).contains("initialised"), "{}", stderr(&reset));
    assert_eq!(url_of(&dir), (url.clone(), port));
    let tables = query_strings(
        &url,
        "SELECT count(*)::text FROM pg_tables WHERE tablename = 'doomed'",
    );
    assert_eq!(tables, vec![vec![Some("0".to_string())]]);
}

#[test]
fn up_and_url_print_stable_json() {
    let dir = cluster_dir();
    watch(&dir);
    let up = tenantctl(dir.parent().unwrap())
        .args(["dev", "up", "--format", "json", "--dir"])
        .arg(&dir)
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&up.get_output().stdout).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["data_dir", "port", "url"]);
    assert_eq!(
        json["data_dir"].as_str().unwrap(),
        dir.join("data").to_str().unwrap()
    );
    assert_eq!(json["port"].as_u64().unwrap() as u16, url_of(&dir).1);

    // The redacted URL says on stderr how to get a usable one; the full URL needs no hint.
    let hidden = dev(&dir, &["url"]).success();
    assert!(stdout(&hidden).contains(":***@"), "{}", stdout(&hidden));
    assert!(
        stderr(&hidden).contains(
            "the password is hidden: `tenantctl dev url --show-password`, or `tenantctl dev psql`"
        ),
        "{}",
        stderr(&hidden)
    );
    let shown = dev(&dir, &["url", "--show-password"]).success();
    assert!(!stdout(&shown).contains("***"), "{}", stdout(&shown));
    assert!(
        !stderr(&shown).contains("password is hidden"),
        "{}",
        stderr(&shown)
    );
}

#[test]
fn psql_runs_beside_the_server_with_the_password_in_the_environment() {
    let dir = cluster_dir();
    watch(&dir);
    dev(&dir, &["up"]).success();
    let psql = tenantctl(dir.parent().unwrap())
        .args(["dev", "psql", "--dir"])
        .arg(&dir)
        .args(["--", "-X", "-A", "-t", "-c", "SELECT current_user"])
        .assert()
        .success();
    assert_eq!(stdout(&psql).trim(), "tenantctl");
}

#[test]
fn up_with_a_bad_bindir_exits_2_with_a_hint() {
    let dir = cluster_dir();
    let out = tenantctl(dir.parent().unwrap())
        .env("TENANTCTL_PG_BINDIR", "/nonexistent")
        .args(["dev", "up", "--dir"])
        .arg(&dir)
        .assert()
        .code(2);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: TENANTCTL_PG_BINDIR=/nonexistent does not hold"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(
        !dir.exists(),
        "nothing is created when the cluster cannot be made"
    );
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn url_without_a_cluster_exits_2() {
    let dir = cluster_dir();
    let out = dev(&dir, &["url"]).code(2);
    assert!(
        stderr(&out).contains("no local cluster in"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("tenantctl dev up"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn harness_gives_each_test_its_own_database() {
    let a = test_db("harness a");
    let b = test_db("harness a");
    assert_ne!(a.name, b.name);
    assert_ne!(a.role_prefix, b.role_prefix);
    let current = query_strings(
        &a.url,
        "SELECT current_database()::text, current_user::text",
    );
    assert_eq!(
        current,
        vec![vec![Some(a.name.clone()), Some("tenantctl".to_string())]]
    );
    assert_eq!(cluster().url_for(&b.name), b.url);
}

fn password(url: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .password()
        .unwrap()
        .to_string()
}

/// The embedded cluster has no TLS and its URL says so: an exported `PGSSLMODE=require` (usual
/// for a cloud database) must not break commands that fall back to it.
#[test]
fn embedded_database_ignores_an_exported_pgsslmode() {
    let dir = cluster_dir();
    watch(&dir);
    let project = dir.parent().unwrap().join("project");
    tenantctl(dir.parent().unwrap())
        .arg("init")
        .arg(&project)
        .assert()
        .success();
    let status = tenantctl(&project)
        .env("PGSSLMODE", "require")
        .arg("status")
        .assert();
    let err = stderr(&status);
    assert_eq!(status.get_output().status.code(), Some(0), "{err}");
    assert!(err.contains("using the embedded local database"), "{err}");
    // The note comes with the start of the cluster, not with every command.
    let again = tenantctl(&project).arg("status").assert().success();
    let err = stderr(&again);
    assert!(!err.contains("using the embedded local database"), "{err}");
    assert!(!err.contains("note:"), "{err}");
    tenantctl(&project).args(["dev", "down"]).assert().success();
}
