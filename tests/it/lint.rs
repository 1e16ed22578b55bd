//! `tenantctl lint`: what a migration locks on tables that already exist, for the pending
//! migrations of a database or the files given; `generate` warns the same.

use std::path::{Path, PathBuf};

use crate::harness::{tenantctl, test_db, TestDb};
use crate::support::{generate_and_migrate, write_project};

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tenantctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A project migrated to V1 on a fresh test database, then `from` replaced by `to` in
/// policies/coaches.toml: the next `generate` changes a table that already exists.
fn migrated_then_edited(label: &str, from: &str, to: &str) -> (TestDb, PathBuf) {
    let db = test_db(label);
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let policy = dir.join("policies/coaches.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(text.contains(from), "coaches.toml has no {from}");
    std::fs::write(&policy, text.replacen(from, to, 1)).unwrap();
    (db, dir)
}

#[test]
fn an_index_on_a_live_table_is_reported_for_the_pending_migration_only() {
    let db = test_db("lint_pending");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    // Nothing pending: nothing to lint. The migration that creates the tables is clean.
    let (code, out, err) = run(&dir, &["lint"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("none pending"), "{out}");
    let (code, out, err) = run(&dir, &["lint", "migrations/V1__initial.sql"]);
    assert_eq!(
        (code, out.trim()),
        (0, "No lock findings in 1 migration(s)."),
        "{err}"
    );

    let policy = dir.join("policies/coaches.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let more = r#"indexes = [{ columns = ["full_name"] }, { columns = ["hired_on"] }]"#;
    let edited = text.replace(r#"indexes = [{ columns = ["full_name"] }]"#, more);
    assert_ne!(text, edited);
    std::fs::write(&policy, edited).unwrap();
    // generate builds the index CONCURRENTLY in a non-transactional migration: nothing to warn.
    let (code, _, err) = run(&dir, &["generate", "--name", "hired"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning:"), "{err}");
    let sql = std::fs::read_to_string(dir.join("migrations/V2__hired_index.sql")).unwrap();
    assert!(sql.contains("\n-- tenantctl: no-transaction\n"), "{sql}");
    assert!(
        sql.contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS"),
        "{sql}"
    );
    let (code, out, err) = run(&dir, &["lint"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");

    // A hand-written plain CREATE INDEX on the same live table is reported.
    let (code, _, err) = run(&dir, &["new", "hired_index"]);
    assert_eq!(code, 0, "{err}");
    let file = dir.join("migrations/V3__hired_index.sql");
    let mut sql = std::fs::read_to_string(&file).unwrap();
    sql.push_str(
        "CREATE INDEX \"coaches_phone_idx\" ON \"public\".\"coaches\" (\"gym_id\", \"phone\");\n",
    );
    std::fs::write(&file, &sql).unwrap();
    let line = 1 + sql
        .lines()
        .position(|l| l.starts_with("CREATE INDEX"))
        .expect("the new index");
    let (code, out, err) = run(&dir, &["lint"]);
    assert_eq!(code, 1, "{out}{err}");
    let at = format!(
        "migrations/V3__hired_index.sql:{line}:1: require-concurrent-index-creation on \"coaches\""
    );
    assert!(out.contains(&at), "{out}");
    assert!(
        out.contains("locks SHARE on the table: blocks INSERT"),
        "{out}"
    );
    assert!(
        out.contains("1 lock finding(s) in 1 migration(s)."),
        "{out}"
    );
    assert!(out.lines().all(|l| l.chars().count() <= 100), "{out}");

    let (code, out, err) = run(&dir, &["lint", "--format", "json"]);
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["findings"], 1, "{v}");
    let finding = &v["files"][0]["findings"][0];
    assert_eq!(v["files"][0]["file"], "migrations/V3__hired_index.sql");
    assert_eq!(finding["rule"], "require-concurrent-index-creation");
    assert_eq!(finding["line"], line);
    assert_eq!(finding["table"], "coaches");

    // Once applied, it is no longer pending.
    let (code, _, err) = run(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(&dir, &["lint"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_file_that_cannot_be_read_is_an_error() {
    let db = test_db("lint_missing");
    let dir = write_project(&db, false);
    let (code, _, err) = run(&dir, &["lint", "migrations/V9__nope.sql"]);
    assert_eq!(code, 2);
    assert!(err.contains("error: cannot read"), "{err}");
}

/// What Postgres does, for the type changes `generate` tells apart: a rewrite gives the table a
/// new file; `sqlgen::type_change_rewrites` must say so exactly when Postgres does.
#[test]
fn the_type_changes_generate_calls_rewrites_are_the_ones_postgres_rewrites() {
    let db = test_db("lint_rewrite_types");
    let mut pg = crate::support::Pg::connect(&db.url);
    let pairs = [
        ("varchar(20)", "text"),
        ("varchar(20)", "varchar(40)"),
        ("text", "varchar"),
        ("numeric(10,2)", "numeric"),
        ("integer", "bigint"),
        ("date", "timestamptz"),
        ("varchar(40)", "varchar(20)"),
        ("text", "varchar(20)"),
        ("numeric", "numeric(10,2)"),
    ];
    for (i, (from, to)) in pairs.iter().enumerate() {
        let value = if from.starts_with("date") {
            "'2024-01-02'"
        } else {
            "'1'"
        };
        pg.batch(&format!(
            "CREATE TABLE t{i} (c {from}); INSERT INTO t{i} VALUES ({value});"
        ))
        .unwrap();
        let before = pg.one(&format!("SELECT pg_relation_filenode('t{i}')::text"));
        pg.batch(&format!(
            "ALTER TABLE t{i} ALTER COLUMN c TYPE {to} USING c::{to}"
        ))
        .unwrap();
        let after = pg.one(&format!("SELECT pg_relation_filenode('t{i}')::text"));
        assert_eq!(
            tenantctl::sqlgen::type_change_rewrites(from, to),
            before != after,
            "{from} -> {to}"
        );
    }
}

#[test]
fn generate_refuses_a_type_change_that_rewrites_a_live_table_without_allow_rewrite() {
    let from = r#"{ name = "hired_on", type = "date""#;
    let to = r#"{ name = "hired_on", type = "timestamptz""#;
    let (_db, dir) = migrated_then_edited("lint_allow_rewrite", from, to);
    let (code, _, err) = run(&dir, &["generate"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rewrites a table") && err.contains("--allow-rewrite"),
        "{err}"
    );
    assert!(err.contains("date -> timestamptz"), "{err}");
    assert!(!dir.join("migrations/V2__policies.sql").exists());

    let (code, _, err) = run(&dir, &["generate", "--allow-rewrite"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("changing-column-type"), "{err}");
    assert!(dir.join("migrations/V2__policies.sql").exists());
}

#[test]
fn a_check_added_to_a_live_table_is_validated_in_a_migration_of_its_own() {
    let from = r#"{ name = "phone", type = "text", nullable = true }"#;
    let to = r#"{ name = "phone", type = "text", nullable = true, check = "length(phone) < 40" }"#;
    let (db, dir) = migrated_then_edited("lint_not_valid", from, to);
    let mut pg = crate::support::Pg::connect(&db.url);
    let (code, _, err) = run(&dir, &["generate", "--name", "phone_check"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning:"), "{err}");
    let add = std::fs::read_to_string(dir.join("migrations/V2__phone_check.sql")).unwrap();
    let validate =
        std::fs::read_to_string(dir.join("migrations/V3__phone_check_validate.sql")).unwrap();
    assert!(
        add.contains("CHECK (length(phone) < 40) NOT VALID;"),
        "{add}"
    );
    assert!(!add.contains("VALIDATE"), "{add}");
    assert!(validate.contains("VALIDATE CONSTRAINT"), "{validate}");
    let (code, out, _) = run(&dir, &["lint"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No lock findings in 2 migration(s)."), "{out}");

    let (code, _, err) = run(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let valid = pg.one(
        "SELECT string_agg(convalidated::text, ',') FROM pg_constraint \
         WHERE conrelid = 'coaches'::regclass AND pg_get_constraintdef(oid) LIKE '%length(phone)%'",
    );
    assert_eq!(valid, "true");
    let (code, out, err) = run(&dir, &["status", "--check"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn set_not_null_on_a_live_table_goes_through_a_validated_check() {
    let from = r#"{ name = "phone", type = "text", nullable = true }"#;
    let to = r#"{ name = "phone", type = "text" }"#;
    let (db, dir) = migrated_then_edited("lint_set_not_null", from, to);
    let mut pg = crate::support::Pg::connect(&db.url);
    let (code, _, err) = run(&dir, &["generate", "--name", "phone_required"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning:"), "{err}");
    let add = std::fs::read_to_string(dir.join("migrations/V2__phone_required.sql")).unwrap();
    assert!(
        add.contains("CHECK (\"phone\" IS NOT NULL) NOT VALID;"),
        "{add}"
    );
    assert!(!add.contains("SET NOT NULL"), "{add}");
    let (code, out, _) = run(&dir, &["lint"]);
    assert_eq!(code, 0, "{out}");

    let (code, _, err) = run(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let state = pg.one(
        "SELECT a.attnotnull::text || ',' || (SELECT count(*) FROM pg_constraint c \
           WHERE c.conrelid = a.attrelid AND c.conname = 'phone_not_null') \
         FROM pg_attribute a WHERE a.attrelid = 'coaches'::regclass AND a.attname = 'phone'",
    );
    assert_eq!(state, "true,0", "NOT NULL set, the helper check dropped");
    let (code, out, err) = run(&dir, &["status", "--check"]);
    assert_eq!(code, 0, "{out}{err}");
}
