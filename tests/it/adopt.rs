//! `adopt`: a database whose objects were made by hand (psql, from the migrations' SQL) and that
//! has no tenantctl history is baselined at the longest prefix of the migrations it matches, so
//! that `migrate` brings only what is missing; a database that differs marks nothing.

use std::path::{Path, PathBuf};

use crate::harness::{psql_exec, tenantctl, test_db, TestDb};
use crate::support::{write_project, Pg};

fn output(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tenantctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A project with its generated V1, and a database made by hand from V1's SQL (no history).
fn made_by_hand(label: &str) -> (TestDb, PathBuf) {
    let db = test_db(label);
    let dir = write_project(&db, false);
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    psql_exec(&db.url, &std::fs::read_to_string(v1(&dir)).unwrap());
    (db, dir)
}

fn v1(dir: &Path) -> PathBuf {
    let migrations = dir.join("migrations");
    std::fs::read_dir(&migrations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("V1__"))
        .expect("generate wrote V1")
}

/// The versions in the history (none when there is no history table).
fn history(db: &TestDb) -> Vec<String> {
    let mut pg = Pg::connect(&db.url);
    if pg.one("SELECT count(*)::text FROM pg_class WHERE relname = 'refinery_schema_history'")
        == "0"
    {
        return Vec::new();
    }
    pg.rows("SELECT version::text FROM tenantctl.refinery_schema_history ORDER BY version")
        .unwrap()
        .iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

#[test]
fn a_database_made_by_hand_from_v1_adopts_as_v1_and_migrate_applies_v2_only() {
    let (db, dir) = made_by_hand("adopt_v1");
    std::fs::write(
        dir.join("migrations/V2__notes.sql"),
        "CREATE TABLE public.notes (id int PRIMARY KEY, body text NOT NULL);\n",
    )
    .unwrap();
    let (code, _, err) = output(&dir, &["adopt", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("matches V1__"), "{err}");
    assert!(err.contains("missing  table public.notes"), "{err}");
    assert!(history(&db).is_empty(), "a dry run marked: {err}");
    // Naming a migration the database does not match marks nothing; naming none that exists is an
    // error.
    let (code, _, err) = output(&dir, &["adopt", "--applied", "V2"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--applied V2: the database does not match"),
        "{err}"
    );
    assert!(history(&db).is_empty(), "marked: {err}");
    let (code, _, err) = output(&dir, &["adopt", "--applied", "V9"]);
    assert_eq!(code, 2, "{err}");

    let (code, _, err) = output(&dir, &["adopt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(history(&db), ["1"], "{err}");
    // refinery accepts the recorded V1 (its checksum) and applies V2 alone.
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Applied V2__notes"), "{err}");
    assert!(!err.contains("Applied V1__"), "{err}");
    assert_eq!(history(&db), ["1", "2"]);
    let (code, _, err) = output(&dir, &["adopt"]);
    assert_eq!(
        code, 2,
        "a database with a history is not adopted again: {err}"
    );
}

#[test]
fn a_database_with_a_changed_column_exits_1_and_marks_nothing() {
    let (db, dir) = made_by_hand("adopt_changed");
    psql_exec(
        &db.url,
        "ALTER TABLE public.gyms ALTER COLUMN name DROP NOT NULL",
    );
    let (code, out, err) = output(&dir, &["adopt"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("changed  column public.gyms.name"), "{err}");
    assert!(err.contains("Nothing was marked"), "{err}");
    assert!(history(&db).is_empty(), "marked: {err}");
    let (code, out, _) = output(&dir, &["--format", "json", "adopt"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["adopted"], false);
    assert_eq!(json["differences"][0]["object"], "column public.gyms.name");
}

#[test]
fn a_hand_written_migration_is_adopted_when_named_with_applied() {
    let (db, dir) = made_by_hand("adopt_applied");
    let migrations = dir.join("migrations");
    std::fs::write(
        migrations.join("V2__backfill.sql"),
        "UPDATE public.gyms SET name = trim(name);\n",
    )
    .unwrap();
    let v3 = "CREATE TABLE public.notes (id int PRIMARY KEY);\n";
    std::fs::write(migrations.join("V3__notes.sql"), v3).unwrap();
    psql_exec(&db.url, v3);
    // V3's table is there, so V2 probably ran; but the schema cannot tell: the user says so.
    let (code, _, err) = output(&dir, &["adopt"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--applied V2"), "{err}");
    assert!(history(&db).is_empty(), "marked: {err}");

    let (code, _, err) = output(&dir, &["adopt", "--applied", "V2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(history(&db), ["1", "2", "3"], "{err}");
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Nothing to apply"), "{err}");
}

#[test]
fn a_function_redefined_by_a_later_migration_is_compared() {
    let (db, dir) = made_by_hand("adopt_function");
    // Like the shipped V2 (the inlinable context function): only a function's body changes.
    std::fs::write(
        dir.join("migrations/V2__context_function.sql"),
        "CREATE OR REPLACE FUNCTION tenantctl.current_gym_id() RETURNS uuid\n    \
         LANGUAGE sql STABLE AS $$ SELECT NULL::uuid $$;\n",
    )
    .unwrap();
    let (code, _, err) = output(&dir, &["adopt"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("matches V1__"), "{err}");
    assert!(
        err.contains("changed  function tenantctl.current_gym_id()"),
        "{err}"
    );
    assert_eq!(history(&db), ["1"], "{err}");
}
