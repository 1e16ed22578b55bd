//! `migrate` and `status` on real Postgres: locking, atomicity, history checks, URL resolution.

use std::path::Path;

use crate::harness::{tenantctl, test_db};
use crate::support::{generate_and_migrate, password_of, write_project, Pg};

fn output(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tenantctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn status_shows_every_migration_applied() {
    let db = test_db("status");
    let dir = write_project(&db, true);
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = output(&dir, &["status", "--check", "--format", "json"]);
    assert_eq!(code, 1, "pending under --check is a finding: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["pending"], 1);
    assert!(
        !v["database"]
            .as_str()
            .unwrap()
            .contains(&password_of(&db.url)),
        "password in output"
    );

    let (code, _, err) = output(&dir, &["migrate", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        pg.one("SELECT (to_regclass('members') IS NULL)::text"),
        "true",
        "dry run changed the database"
    );

    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = output(&dir, &["status", "--check", "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["current"], 1);
    assert_eq!(v["migrations"][0]["state"], "applied");
    let (code, table, _) = output(&dir, &["status"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("initial") && table.contains("applied"),
        "{table}"
    );
    assert!(!table.contains(&password_of(&db.url)), "password in output");
}

#[test]
fn four_concurrent_migrates_apply_each_migration_once() {
    let db = test_db("concurrent");
    let dir = write_project(&db, true);
    // Several migrations, so that the runs really overlap.
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    for v in 2..=4 {
        std::fs::write(
            dir.join(format!("migrations/V{v}__step{v}.sql")),
            format!("CREATE TABLE step{v} (id int); SELECT pg_sleep(0.2);"),
        )
        .unwrap();
    }
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("tenantctl"));
            cmd.current_dir(&dir)
                .arg("migrate")
                .env_remove("CI")
                .env_remove("DATABASE_URL");
            cmd.stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut pg = Pg::connect(&db.url);
    let history = pg.rows("SELECT version::text, count(*)::text FROM tenantctl.refinery_schema_history GROUP BY version ORDER BY version").unwrap();
    assert_eq!(
        history,
        (1..=4)
            .map(|v| vec![Some(v.to_string()), Some("1".to_string())])
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_failing_third_migration_leaves_version_two() {
    let db = test_db("syntax");
    let dir = write_project(&db, false);
    let m = dir.join("migrations");
    std::fs::write(m.join("V1__one.sql"), "CREATE TABLE one (id int);\n").unwrap();
    std::fs::write(m.join("V2__two.sql"), "CREATE TABLE two (id int);\n").unwrap();
    std::fs::write(
        m.join("V3__three.sql"),
        "CREATE TABLE three (id int);\nCREAT TABLE broken (id int);\n",
    )
    .unwrap();
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("V3__three.sql:2:1"),
        "the error names the file and position: {err}"
    );
    assert!(err.contains("syntax error"), "{err}");
    assert!(err.contains("stays at V2"), "{err}");
    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        pg.one("SELECT count(*)::text FROM tenantctl.refinery_schema_history"),
        "2"
    );
    assert_eq!(
        pg.one("SELECT max(version)::text FROM tenantctl.refinery_schema_history"),
        "2"
    );
    assert_eq!(
        pg.one("SELECT (to_regclass('three') IS NULL)::text"),
        "true",
        "half of V3 was applied"
    );
    // Fixing the file lets it apply.
    std::fs::write(m.join("V3__three.sql"), "CREATE TABLE three (id int);\n").unwrap();
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_error_without_a_position_still_names_the_failing_statement() {
    // Errors raised while a statement runs (a check violated, a permission denied, an
    // exception in a DO block) carry no position: the failing statement is found and named.
    let db = test_db("no_position");
    let dir = write_project(&db, false);
    let m = dir.join("migrations");
    let cases = [
        (
            "V1__check.sql",
            "-- a; comment\nCREATE TABLE t (n int CHECK (n > 0), s text);\nINSERT INTO t VALUES (1, 'a;b');\n  /* ; */ INSERT INTO t VALUES\n    (-1, $$;$$);\nINSERT INTO t VALUES (2, 'c');\n",
            "V1__check.sql:4:11",
            "violates check constraint",
        ),
        (
            "V1__raise.sql",
            "CREATE TABLE t (n int);\nDO $tc$\nBEGIN\n    PERFORM 1;\nEND\n$tc$;\n\tDO $$ BEGIN RAISE EXCEPTION 'boom; here'; END $$;\n",
            "V1__raise.sql:7:2",
            "boom; here",
        ),
    ];
    for (file, sql, at, message) in cases {
        std::fs::write(m.join(file), sql).unwrap();
        let (code, _, err) = output(&dir, &["migrate"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("{at} failed")), "{file}: {err}");
        assert!(err.contains(message), "{err}");
        std::fs::remove_file(m.join(file)).unwrap();
    }
    // Locating the statement ran them again, and rolled them back.
    let mut pg = Pg::connect(&db.url);
    assert_eq!(pg.one("SELECT (to_regclass('t') IS NULL)::text"), "true");
}

#[test]
fn divergent_and_missing_migrations_abort() {
    let db = test_db("divergent");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let v1 = dir.join("migrations/V1__initial.sql");
    let text = std::fs::read_to_string(&v1).unwrap();
    std::fs::write(&v1, format!("{text}-- edited after it was applied\n")).unwrap();
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 2);
    assert!(err.contains("V1__initial: the file differs"), "{err}");
    let (code, out, _) = output(&dir, &["status"]);
    assert_eq!(code, 1, "divergence is drift: {out}");
    assert!(out.contains("divergent"), "{out}");
    std::fs::remove_file(&v1).unwrap();
    let (code, out, _) = output(&dir, &["status", "--format", "json"]);
    assert_eq!(code, 1);
    assert!(out.contains("\"missing\""), "{out}");
}

/// Hand-written V1..V3, each creating a table t<n>.
fn write_three_migrations(dir: &Path) {
    let m = dir.join("migrations");
    for v in 1..=3 {
        std::fs::write(
            m.join(format!("V{v}__t{v}.sql")),
            format!("CREATE TABLE t{v} (id int);"),
        )
        .unwrap();
    }
}

#[test]
fn target_stops_at_a_version() {
    let db = test_db("target");
    let dir = write_project(&db, false);
    write_three_migrations(&dir);
    let (code, _, err) = output(&dir, &["migrate", "--target", "2"]);
    assert_eq!(code, 0, "{err}");
    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        pg.one("SELECT max(version)::text FROM tenantctl.refinery_schema_history"),
        "2"
    );
    let (code, out, _) = output(&dir, &["migrate", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("V3__t3"), "{out}");
}

#[test]
fn neon_pooler_is_refused_without_allow_pooler() {
    let db = test_db("pooler");
    let dir = write_project(&db, false);
    let url = "postgres://u:secretpw@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require";
    let (code, _, err) = output(&dir, &["migrate", "--database-url", url]);
    assert_eq!(code, 2);
    assert!(
        err.contains("ep-cool-darkness-123456.us-east-2.aws.neon.tech"),
        "names the direct host: {err}"
    );
    assert!(!err.contains("secretpw"), "password leaked: {err}");
}

#[test]
fn ci_without_a_url_is_an_error_not_the_local_database() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        tenantctl(dir.path())
            .args(["init", "."])
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    let out = tenantctl(dir.path())
        .env("CI", "true")
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("$CI is set"), "{err}");
    assert!(
        !dir.path().join(".tenantctl").exists(),
        "a local database was started"
    );
}

#[test]
fn url_precedence_flag_over_env_over_config() {
    let db = test_db("precedence");
    let dir = write_project(&db, false);
    let bad = "postgres://nobody@127.0.0.1:1/none?connect_timeout=2";
    // Config has the good URL; env overrides it with a bad one; the flag overrides the env.
    let out = tenantctl(&dir)
        .env("DATABASE_URL", bad)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "env must win over the config: {err}"
    );
    // Exit 2 alone would pass on any failure: it must be the env URL's (user nobody) connection.
    assert!(
        err.contains("cannot connect") && err.contains("nobody") && !err.contains(&db.name),
        "env must win over the config: {err}"
    );
    let out = tenantctl(&dir)
        .env("DATABASE_URL", bad)
        .args(["status", "--database-url", &db.url])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "flag must win over env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A nullable column `column` added to `coaches` in the policy files, without `generate`.
fn add_column_to_policy(dir: &Path, column: &str) {
    let file = dir.join("policies/coaches.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let phone = r#"{ name = "phone", type = "text", nullable = true },"#;
    assert!(
        text.contains(phone),
        "coaches.toml changed: update the test"
    );
    let added = format!("{phone}\n  {{ name = \"{column}\", type = \"text\", nullable = true }},");
    std::fs::write(&file, text.replace(phone, &added)).unwrap();
}

fn column_exists(pg: &mut Pg, column: &str) -> bool {
    let sql = format!(
        "SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'coaches' AND column_name = '{column}'"
    );
    pg.one(&sql) == "1"
}

#[test]
fn stale_policies_are_reported_and_refused_until_generate() {
    let db = test_db("stale");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let (code, out, err) = output(&dir, &["status", "--check"]);
    assert_eq!(code, 0, "a migrated project is clean: {out}{err}");
    assert!(!out.contains("policies changed"), "{out}");

    add_column_to_policy(&dir, "nickname");
    let (code, out, _) = output(&dir, &["status"]);
    assert_eq!(code, 0, "stale is a finding only under --check: {out}");
    assert!(
        out.contains("policies changed since V1: run `tenantctl generate`"),
        "{out}"
    );
    let (code, out, _) = output(&dir, &["status", "--check", "--format", "json"]);
    assert_eq!(code, 1, "stale under --check is a finding: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["policies_changed_since"], 1);
    assert_eq!(v["summary"]["pending"], 0, "stale alone made it exit 1");

    // V2 (nickname) generated but not applied, then the policies change again.
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    add_column_to_policy(&dir, "pronouns");
    let mut pg = Pg::connect(&db.url);
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 2, "stale policies are refused: {err}");
    assert!(
        err.contains("policies changed since V2") && err.contains("--allow-stale"),
        "{err}"
    );
    assert_eq!(
        pg.one("SELECT max(version)::text FROM tenantctl.refinery_schema_history"),
        "1",
        "a refused migrate applied V2"
    );
    assert!(!column_exists(&mut pg, "nickname"));

    let (code, _, err) = output(&dir, &["migrate", "--allow-stale"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        column_exists(&mut pg, "nickname"),
        "--allow-stale applied V2"
    );

    generate_and_migrate(&dir);
    assert!(column_exists(&mut pg, "pronouns"));
    let (code, out, err) = output(&dir, &["status", "--check"]);
    assert_eq!(
        code, 0,
        "after generate the policies are current: {out}{err}"
    );
    assert!(!out.contains("policies changed"), "{out}");
}

#[test]
fn target_below_the_current_version_is_refused() {
    let db = test_db("rollback");
    let dir = write_project(&db, false);
    write_three_migrations(&dir);
    let (code, _, err) = output(&dir, &["migrate", "--target", "2"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = output(&dir, &["migrate", "--target", "1"]);
    assert_eq!(code, 2, "a target below the database is an error: {err}");
    assert!(
        err.contains("no down migrations") && err.contains("new forward migration"),
        "{err}"
    );
    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        pg.one(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM tenantctl.refinery_schema_history"
        ),
        "1,2",
        "a refused migrate changed the history"
    );
    assert_eq!(
        pg.one("SELECT (to_regclass('t2') IS NOT NULL AND to_regclass('t3') IS NULL)::text"),
        "true"
    );
    // At the target itself there is nothing to do, and that is not an error.
    let (code, _, err) = output(&dir, &["migrate", "--target", "2"]);
    assert_eq!(code, 0, "{err}");
}
