//! CLI output snapshots: each main command's exit code, stdout and stderr together, in table and
//! JSON format, with what differs between runs (temp paths, the database name and port, UUIDs,
//! timings, timestamps) replaced by placeholders. The projects use fixed role names (unique to
//! each test in the run's fresh cluster), so table widths do not depend on the test's pid.

use std::path::Path;

use crate::harness::{cluster, tenantctl, test_db, TestDb};
use crate::support::write_project;

/// A project of the shipped policies on its own database, with roles named `<prefix>gym_app`...
fn project(label: &str, role_prefix: &str) -> TestDb {
    let mut db = test_db(label);
    db.role_prefix = role_prefix.to_string();
    write_project(&db, false);
    db
}

/// Run `tenantctl <args>` in `dir`; the exit code, stdout and stderr as one text, with the
/// run-specific strings of `db` replaced.
fn run(dir: &Path, db: Option<&TestDb>, args: &[&str]) -> String {
    let out = tenantctl(dir).args(args).output().unwrap();
    let text = format!(
        "$ tenantctl {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let mut text = text.replace(&dir.display().to_string(), "[PROJECT]");
    if let Some(db) = db {
        text = text
            .replace(&db.name, "[DB]")
            .replace(&format!(":{}/", cluster().port), ":[PORT]/");
    }
    text
}

/// Snapshot `text` as `name`, with UUIDs, timings and timestamps replaced.
fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        filters => vec![
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[UUID]"),
            (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})", "[TIMESTAMP]"),
            (r"\b\d+\.\d+ ?s\b", "[TIME]"),
            (r"\(\d+ rows/s\)", "([RATE] rows/s)"),
            (r#""(\w*seconds|rows_per_second)": [0-9.e+-]+"#, "\"$1\": [MEASURED]"),
        ],
        prepend_module_to_snapshot => true,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// Both formats of one command.
fn both(dir: &Path, db: &TestDb, name: &str, args: &[&str]) {
    snapshot(&format!("{name}_table"), &run(dir, Some(db), args));
    let json: Vec<&str> = ["--format", "json"].iter().chain(args).copied().collect();
    snapshot(&format!("{name}_json"), &run(dir, Some(db), &json));
}

#[test]
fn init_output() {
    let parent = tempfile::tempdir().unwrap();
    snapshot("init_table", &run(parent.path(), None, &["init", "gym"]));
    snapshot(
        "init_json",
        &run(parent.path(), None, &["--format", "json", "init", "gym2"]),
    );
    snapshot("init_again", &run(parent.path(), None, &["init", "gym"]));
}

#[test]
fn workflow_output() {
    let db = project("cli_workflow", "cli_w_");
    let dir = db.project.path();
    both(dir, &db, "plan", &["plan"]);
    snapshot("generate_table", &run(dir, Some(&db), &["generate"]));
    both(dir, &db, "generate_no_change", &["generate"]);
    both(dir, &db, "status_pending", &["status"]);
    snapshot(
        "status_check_pending",
        &run(dir, Some(&db), &["status", "--check"]),
    );
    snapshot("migrate_table", &run(dir, Some(&db), &["migrate"]));
    both(dir, &db, "migrate_up_to_date", &["migrate"]);
    both(dir, &db, "status", &["status"]);
    fn create(slug: &str) -> Vec<&str> {
        vec![
            "tenant",
            "create",
            slug,
            "--name",
            slug,
            "--coaches",
            "2",
            "--members",
            "5",
            "--seed",
            "7",
        ]
    }
    snapshot(
        "tenant_create_table",
        &run(dir, Some(&db), &create("iron-temple")),
    );
    let json: Vec<&str> = ["--format", "json"]
        .into_iter()
        .chain(create("lotus-yoga"))
        .collect();
    snapshot("tenant_create_json", &run(dir, Some(&db), &json));
    both(dir, &db, "tenant_list", &["tenant", "list"]);
    both(
        dir,
        &db,
        "exec_tenant",
        &[
            "exec",
            "--tenant",
            "iron-temple",
            "SELECT full_name, email, status FROM members ORDER BY email",
        ],
    );
    both(dir, &db, "verify", &["verify"]);
}

#[test]
fn migrate_json_output() {
    let db = project("cli_migrate_json", "cli_m_");
    let dir = db.project.path();
    snapshot("migrate_generate", &run(dir, Some(&db), &["generate"]));
    snapshot(
        "migrate_json",
        &run(dir, Some(&db), &["--format", "json", "migrate"]),
    );
}

/// Piped, every line `status` prints keeps within 100 columns (prose wraps), however long the
/// migration names.
#[test]
fn status_lines_stay_within_100_columns_when_piped() {
    let db = crate::harness::test_db("status_width");
    let dir = crate::support::write_project(&db, false);
    crate::support::generate_and_migrate(&dir);
    let long =
        "a_hand_written_migration_with_a_name_long_enough_to_push_a_table_row_past_the_limit";
    std::fs::write(dir.join(format!("migrations/V2__{long}.sql")), "SELECT 1;").unwrap();
    let out = crate::harness::tenantctl(&dir)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("pending"), "{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.chars().count()
        );
    }
}
