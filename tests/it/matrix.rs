//! The isolation-and-permissions suite as a Neon-like owner: a login role that is not a superuser,
//! with CREATEROLE, CREATEDB and BYPASSRLS, owning a fresh database (Neon's default role). It runs
//! on the default server version in the main suite; `.ci/run` runs `matrix::` again on every
//! other version with `TENANTCTL_PG_BINDIR` set, and the tests check that the server really is
//! that version.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{cluster, psql_exec, query_strings, tenantctl, test_db, TestDb};
use crate::support::{write_project, Pg, Roles};

/// A database owned by a Neon-like role, and a project that connects as it.
struct Neon {
    db: TestDb,
    /// The owner role's name and URL.
    login: String,
    url: String,
    roles: Roles,
    dir: PathBuf,
    /// The server's major version.
    major: i32,
}

/// Create the Neon-like login role (as the harness's superuser), hand it a fresh database, and
/// write a project whose URL logs in as it. `bypassrls`: whether the login holds BYPASSRLS.
fn neon(label: &str, bypassrls: bool) -> Neon {
    let bypass = if bypassrls {
        "BYPASSRLS"
    } else {
        "NOBYPASSRLS"
    };
    login_role(label, &format!("CREATEROLE CREATEDB {bypass}"), true)
}

/// A login role with `attributes` (never a superuser), owning the test's database if `owns`.
fn login_role(label: &str, attributes: &str, owns: bool) -> Neon {
    let db = test_db(label);
    let login = format!("{}neon", db.role_prefix);
    let password = format!("pw-{}", db.role_prefix);
    let mut sql =
        format!("CREATE ROLE \"{login}\" LOGIN PASSWORD '{password}' {attributes} NOSUPERUSER;");
    if owns {
        sql.push_str(&format!(
            "ALTER DATABASE \"{}\" OWNER TO \"{login}\";",
            db.name
        ));
    }
    psql_exec(&cluster().url, &sql);
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(&login).unwrap();
    url.set_password(Some(&password)).unwrap();
    let url = url.to_string();
    let dir = write_project(&db, false);
    let config = dir.join("tenantctl.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&db.url, &url);
    std::fs::write(&config, text).unwrap();
    let major = server_major(&db.url);
    Neon {
        roles: Roles::for_db(&db),
        db,
        login,
        url,
        dir,
        major,
    }
}

/// The server's major version; when `TENANTCTL_PG_BINDIR` chose the server, it must be that one.
fn server_major(url: &str) -> i32 {
    let num: i32 = query_strings(url, "SELECT current_setting('server_version_num')")[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    let major = num / 10_000;
    if let Some(bindir) = std::env::var_os("TENANTCTL_PG_BINDIR") {
        let out = std::process::Command::new(Path::new(&bindir).join("postgres"))
            .arg("--version")
            .output()
            .expect("run postgres --version");
        let text = String::from_utf8_lossy(&out.stdout);
        // "postgres (PostgreSQL) 16.4 ..."
        let wanted: i32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.split('.').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the version in {text:?}"));
        assert_eq!(
            major, wanted,
            "TENANTCTL_PG_BINDIR is PostgreSQL {wanted} but the cluster runs {num}"
        );
    }
    major
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tenantctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(dir, args);
    assert_eq!(code, 0, "tenantctl {args:?}:\n{out}\n{err}");
    out
}

/// Whether the database has a migration history (something was applied).
fn migrated(n: &Neon) -> bool {
    query_strings(
        &n.db.url,
        "SELECT (to_regclass('tenantctl.refinery_schema_history') IS NOT NULL)::text",
    )[0][0]
        .as_deref()
        == Some("true")
}

/// On PG 14/15 only a superuser gives a role BYPASSRLS: the superuser creates the admin role once.
fn precreate_admin_on_old_servers(n: &Neon) {
    if n.major < 16 {
        psql_exec(
            &cluster().url,
            &format!("CREATE ROLE \"{}\" NOLOGIN BYPASSRLS", n.roles.admin),
        );
    }
}

/// status, two tenants, verify, exec and the seed's scenarios, all as the owner role, on a
/// migrated database.
fn isolation_holds(n: &Neon) {
    ok(&n.dir, &["status", "--check"]);
    let a = create(&n.dir, "gym-a", 12);
    let b = create(&n.dir, "gym-b", 7);
    let (code, out, err) = run(&n.dir, &["verify"]);
    assert_eq!(code, 0, "verify as the owner role:\n{out}\n{err}");

    let out = ok(
        &n.dir,
        &[
            "--format",
            "json",
            "exec",
            "--tenant",
            "gym-a",
            "SELECT gym_id FROM members",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12, "{v}");
    assert!(rows.iter().all(|r| r[0] == a.as_str()), "{v}");

    // The seed's four scenarios, acting as the application does (SET ROLE in a transaction,
    // transaction-local context), on the owner role's own connection.
    let mut pg = Pg::connect(&n.url);
    let app = &n.roles.app;
    let count = |pg: &mut Pg, gym: Option<&str>, role: &str, sql: &str| -> i64 {
        pg.as_role(role, gym, sql).unwrap()[0][0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    // 1. Gym A sees only its own members.
    let own = format!("SELECT count(*) FROM members WHERE gym_id = '{a}'");
    assert_eq!(count(&mut pg, Some(&a), app, &own), 12);
    // 2. Gym B's rows are invisible: zero rows, no error.
    let theirs = format!("SELECT count(*) FROM members WHERE gym_id = '{b}'");
    assert_eq!(count(&mut pg, Some(&a), app, &theirs), 0);
    // 3. Without WHERE gym_id: only its own rows.
    let all = "SELECT count(*) FROM members";
    assert_eq!(count(&mut pg, Some(&a), app, all), 12);
    assert_eq!(count(&mut pg, Some(&b), app, all), 7);
    // 4. The platform admin sees every gym's rows.
    assert_eq!(count(&mut pg, None, &n.roles.admin, all), 19);
    // And no context: no rows.
    assert_eq!(count(&mut pg, None, app, all), 0);
    // Writing another gym's id is rejected.
    let insert = format!(
        "INSERT INTO members (gym_id, full_name, email) VALUES ('{b}', 'Mallory', 'm@example.com')"
    );
    let e = pg.as_role(app, Some(&a), &insert).unwrap_err();
    assert_eq!(crate::support::sqlstate(&e), "42501", "{e}");
}

fn create(dir: &Path, slug: &str, members: u32) -> String {
    let members = members.to_string();
    let out = ok(
        dir,
        &[
            "--format",
            "json",
            "tenant",
            "create",
            slug,
            "--name",
            slug,
            "--members",
            &members,
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["id"].as_str().expect("id in create JSON").to_string()
}

#[test]
fn the_owner_role_migrates_and_isolation_holds() {
    let n = neon("matrix_owner", true);
    precreate_admin_on_old_servers(&n);
    ok(&n.dir, &["generate"]);
    ok(&n.dir, &["migrate"]);
    isolation_holds(&n);
}

#[test]
fn with_admin_bypass_policy_no_role_needs_bypassrls() {
    let n = neon("matrix_policy", false);
    let tenancy = n.dir.join("policies/tenancy.toml");
    let text = std::fs::read_to_string(&tenancy).unwrap();
    assert!(text.contains("admin_bypass = \"bypassrls\""), "{text}");
    let text = text.replace("admin_bypass = \"bypassrls\"", "admin_bypass = \"policy\"");
    std::fs::write(&tenancy, text).unwrap();
    ok(&n.dir, &["generate"]);
    ok(&n.dir, &["migrate"]);
    isolation_holds(&n);
}

#[test]
fn bypassrls_the_owner_cannot_give_is_refused_before_anything_is_applied() {
    // On PG 14/15 no non-superuser gives BYPASSRLS; on 16+ only one that holds it.
    let n = neon("matrix_refused", false);
    ok(&n.dir, &["generate"]);
    let (code, out, err) = run(&n.dir, &["migrate"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let admin = &n.roles.admin;
    let fix = if n.major < 16 {
        format!("as a superuser, run once: CREATE ROLE \"{admin}\" NOLOGIN BYPASSRLS;")
    } else {
        format!(
            "as a superuser, run once: ALTER ROLE \"{}\" BYPASSRLS;",
            n.login
        )
    };
    assert!(err.contains(&fix), "{err}");
    assert!(err.contains("admin_bypass = \"policy\""), "{err}");
    assert!(err.contains("V1__initial.sql:"), "{err}");
    assert!(!migrated(&n), "nothing may be applied: {err}");
    let roles = query_strings(
        &n.db.url,
        &format!(
            "SELECT count(*)::text FROM pg_roles WHERE rolname LIKE '{}%gym%'",
            n.db.role_prefix
        ),
    );
    assert_eq!(roles[0][0].as_deref(), Some("0"), "no role created");
}

/// This repository's own migrations (generated by an older tenantctl, applied by real users, so
/// their statements cannot change), with the test's role names.
fn older_migrations(n: &Neon) {
    let p = &n.db.role_prefix;
    let from = crate::support::repo().join("migrations");
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for role in ["gym_app", "gym_owner", "platform_admin"] {
            text = text.replace(role, &format!("{p}{role}"));
        }
        std::fs::write(
            n.dir.join("migrations").join(path.file_name().unwrap()),
            text,
        )
        .unwrap();
    }
}

#[test]
fn migrations_of_an_older_tenantctl_apply_as_the_owner_role() {
    let n = neon("matrix_older", true);
    older_migrations(&n);
    if n.major < 16 {
        // V1 says `ALTER ROLE ... NOLOGIN BYPASSRLS` unconditionally: a superuser's statement
        // there, whatever the role has; refused before anything runs, and a superuser applies it.
        let (code, out, err) = run(&n.dir, &["migrate"]);
        assert_eq!(code, 2, "{out}\n{err}");
        assert!(
            err.contains("V1__initial.sql:32:1 runs ALTER ROLE"),
            "{err}"
        );
        assert!(
            err.contains("apply this migration once as a superuser"),
            "{err}"
        );
        assert!(err.contains("admin_bypass = \"policy\""), "{err}");
        assert!(!migrated(&n), "nothing may be applied: {err}");
        ok(
            &n.dir,
            &["migrate", "--target", "1", "--database-url", &n.db.url],
        );
        let hand_over = format!(
            "ALTER TABLE \"tenantctl\".\"refinery_schema_history\" OWNER TO \"{}\";",
            n.login
        );
        assert!(err.contains(&hand_over), "{err}");
        psql_exec(&n.db.url, &hand_over);
    }
    // The owner role's CREATE on the schema and its memberships come from the preflight.
    ok(&n.dir, &["migrate"]);
    isolation_holds(&n);
}

#[test]
fn the_generated_migration_runs_as_the_owner_role_on_its_own() {
    // Without tenantctl's preflight: the file alone, as psql would run it.
    let n = neon("matrix_plain", true);
    precreate_admin_on_old_servers(&n);
    ok(&n.dir, &["generate"]);
    let v1 = std::fs::read_to_string(n.dir.join("migrations/V1__initial.sql")).unwrap();
    psql_exec(&n.url, &format!("BEGIN;\n{v1}\nCOMMIT;"));
    // The owner role owns the tables; the login can act as the app and admin roles.
    let owner = query_strings(
        &n.url,
        "SELECT tableowner::text FROM pg_tables WHERE tablename = 'members'",
    );
    assert_eq!(owner[0][0].as_deref(), Some(n.roles.owner.as_str()));
    let mut pg = Pg::connect(&n.url);
    for role in [&n.roles.app, &n.roles.admin] {
        let rows = pg.as_role(role, None, "SELECT count(*) FROM members");
        assert!(rows.is_ok(), "SET ROLE {role}: {rows:?}");
    }
}

#[test]
fn a_role_without_createrole_or_create_on_the_database_is_told_what_to_run() {
    let cases = [
        (
            "CREATEDB BYPASSRLS",
            true,
            "as a superuser, run once: ALTER ROLE \"{login}\" CREATEROLE;",
        ),
        (
            "CREATEROLE BYPASSRLS",
            false,
            "or a superuser, run once: GRANT CREATE ON DATABASE \"{db}\" TO \"{login}\";",
        ),
    ];
    for (attributes, owns, fix) in cases {
        let n = login_role("matrix_lacking", attributes, owns);
        if !owns {
            // Not the owner: it can still use the schema (as on PG 14's public).
            psql_exec(
                &n.db.url,
                &format!("GRANT CREATE ON SCHEMA public TO \"{}\"", n.login),
            );
        }
        precreate_admin_on_old_servers(&n);
        ok(&n.dir, &["generate"]);
        let (code, out, err) = run(&n.dir, &["migrate"]);
        assert_eq!(code, 2, "{out}\n{err}");
        let fix = fix.replace("{login}", &n.login).replace("{db}", &n.db.name);
        assert!(err.contains(&fix), "{err}");
        assert!(err.contains("nothing was applied"), "{err}");
        assert!(!migrated(&n), "nothing may be applied: {err}");
    }
}

#[test]
fn a_permission_error_names_the_failing_statement() {
    // Raised while the statement runs: Postgres gives no position.
    let n = neon("matrix_denied", true);
    std::fs::write(
        n.dir.join("migrations/V1__denied.sql"),
        "CREATE TABLE t (n int);\n-- a comment; with a semicolon\nSELECT 1;   SELECT pg_catalog.pg_read_file('PG_VERSION');\n",
    )
    .unwrap();
    let (code, out, err) = run(&n.dir, &["migrate"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("V1__denied.sql:3:13 failed: permission denied"),
        "{err}"
    );
    let t = query_strings(&n.db.url, "SELECT (to_regclass('t') IS NULL)::text");
    assert_eq!(t[0][0].as_deref(), Some("true"), "rolled back");
}
