//! The compiler, offline: golden SQL, determinism, minimal diffs, and bad input.

use std::path::Path;

use crate::harness::tenantctl;
use crate::support::{copy_dir, repo};

/// A project in a temp dir holding the shipped policies (and optionally the fixtures).
fn project(with_fixtures: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    copy_dir(&repo().join("policies"), &dir.path().join("policies"));
    if with_fixtures {
        copy_dir(
            &repo().join("tests/fixtures/policies"),
            &dir.path().join("policies"),
        );
    }
    std::fs::copy(
        repo().join("tenantctl.toml"),
        dir.path().join("tenantctl.toml"),
    )
    .unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tenantctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn migration_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("migrations")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn golden_sql_of_the_shipped_policies() {
    let dir = project(false);
    let (code, sql, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("shipped_policies_sql", sql);
    // The committed migrations are current: with them and their snapshot, nothing is planned.
    std::fs::create_dir_all(dir.path().join("migrations")).unwrap();
    copy_dir(&repo().join("migrations"), &dir.path().join("migrations"));
    let (code, planned, err) = run(dir.path(), &["plan"]);
    assert_eq!((code, planned.as_str()), (0, ""), "{err}");
    assert!(err.contains("No changes"), "{err}");
}

/// A project whose snapshot was written by a tenantctl with older helper objects (no `helpers`
/// field: the context function had `SET search_path`, which keeps Postgres from inlining it)
/// gets a migration that re-creates them, and only them; the next generate writes nothing.
#[test]
fn older_helper_objects_are_recreated_by_the_next_migration() {
    let dir = project(false);
    assert_eq!(run(dir.path(), &["generate"]).0, 0);
    let snap_path = dir.path().join("migrations/tenantctl.snapshot.json");
    let mut snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snap_path).unwrap()).unwrap();
    assert_eq!(snap["helpers"], 2, "{snap}");
    snap.as_object_mut().unwrap().remove("helpers");
    std::fs::write(&snap_path, serde_json::to_string_pretty(&snap).unwrap()).unwrap();

    let (code, out, err) = run(dir.path(), &["generate"]);
    assert_eq!(code, 0, "{out}{err}");
    let v2 = std::fs::read_to_string(dir.path().join("migrations/V2__policies.sql")).unwrap();
    assert!(v2.contains("CREATE OR REPLACE FUNCTION \"tenantctl\".\"current_gym_id\"() RETURNS uuid\n    LANGUAGE sql STABLE PARALLEL SAFE\n    AS "), "{v2}");
    assert!(
        !v2.contains("CREATE TABLE") && !v2.contains("POLICY"),
        "{v2}"
    );
    let (code, _, err) = run(dir.path(), &["generate"]);
    assert_eq!(code, 0);
    assert!(err.contains("No changes"), "{err}");
    assert_eq!(
        migration_files(dir.path()).len(),
        3,
        "V1, V2 and the snapshot"
    );
}

#[test]
fn same_policies_same_bytes() {
    let a = project(true);
    let b = project(true);
    let (_, sql_a, _) = run(a.path(), &["plan"]);
    let (_, sql_b, _) = run(b.path(), &["plan"]);
    assert_eq!(sql_a, sql_b);
    assert_eq!(run(a.path(), &["generate"]).0, 0);
    assert_eq!(run(b.path(), &["generate"]).0, 0);
    let read = |d: &Path| std::fs::read(d.join("migrations/V1__initial.sql")).unwrap();
    assert_eq!(read(a.path()), read(b.path()));
    let snap = |d: &Path| std::fs::read(d.join("migrations/tenantctl.snapshot.json")).unwrap();
    assert_eq!(snap(a.path()), snap(b.path()));
}

#[test]
fn fixture_tables_get_the_full_treatment_from_toml_alone() {
    let dir = project(true);
    let (code, sql, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 0, "{err}");
    for table in ["sessions", "bookings"] {
        for needle in [
            format!("ALTER TABLE \"public\".\"{table}\" ENABLE ROW LEVEL SECURITY;"),
            format!("ALTER TABLE \"public\".\"{table}\" FORCE ROW LEVEL SECURITY;"),
            format!("CREATE POLICY \"{table}_tenant_isolation\" ON \"public\".\"{table}\""),
            format!("CONSTRAINT \"{table}_tenant_key\" UNIQUE (\"gym_id\", \"id\")"),
            "\"gym_id\" uuid NOT NULL DEFAULT \"tenantctl\".\"current_gym_id\"()".to_string(),
            format!("ON \"public\".\"{table}\" FOR EACH ROW EXECUTE FUNCTION \"tenantctl\".\"forbid_tenant_change\"('gym_id')"),
            format!("ALTER TABLE \"public\".\"{table}\" ADD CONSTRAINT \"{table}_tenant_fkey\" FOREIGN KEY (\"gym_id\") REFERENCES \"public\".\"gyms\" (\"id\")"),
        ] {
            assert!(sql.contains(&needle), "missing for {table}: {needle}");
        }
    }
    assert!(sql.contains(
        "FOREIGN KEY (\"gym_id\", \"session_id\") REFERENCES \"public\".\"sessions\" (\"gym_id\", \"id\") ON DELETE CASCADE"
    ));
    assert!(sql.contains("CONSTRAINT \"bookings_gym_id_session_id_member_id_key\" UNIQUE (\"gym_id\", \"session_id\", \"member_id\")"));
    assert!(
        !sql.contains("TRUNCATE")
            && !sql.contains("GRANT REFERENCES")
            && !sql.contains("TRIGGER ON")
    );
}

#[test]
fn changing_one_using_gives_a_migration_with_just_that_change() {
    let dir = project(false);
    assert_eq!(run(dir.path(), &["generate"]).0, 0);
    let (code, _, err) = run(dir.path(), &["generate"]);
    assert_eq!(code, 0);
    assert!(err.contains("No changes"), "{err}");
    assert_eq!(
        migration_files(dir.path()),
        ["V1__initial.sql", "tenantctl.snapshot.json"]
    );

    let gyms = dir.path().join("policies/gyms.toml");
    let text = std::fs::read_to_string(&gyms).unwrap();
    let changed = text.replacen(
        "using = \"id = (SELECT tenantctl.current_gym_id())\"",
        "using = \"id = (SELECT tenantctl.current_gym_id()) AND plan <> 'trial'\"",
        1,
    );
    assert_ne!(text, changed);
    std::fs::write(&gyms, changed).unwrap();
    let (code, _, err) = run(dir.path(), &["generate", "--name", "trial_gyms_hidden"]);
    assert_eq!(code, 0, "{err}");
    let v2 =
        std::fs::read_to_string(dir.path().join("migrations/V2__trial_gyms_hidden.sql")).unwrap();
    let statements: Vec<&str> = v2
        .lines()
        .filter(|l| !l.starts_with("--") && !l.trim().is_empty())
        .collect();
    assert_eq!(
        statements,
        [
            "ALTER POLICY \"gyms_select_own\" ON \"public\".\"gyms\"",
            "    USING (id = (SELECT tenantctl.current_gym_id()) AND plan <> 'trial');",
        ],
        "{v2}"
    );
    let (code, _, err) = run(dir.path(), &["generate"]);
    assert_eq!(code, 0);
    assert!(err.contains("No changes"), "{err}");
    assert_eq!(migration_files(dir.path()).len(), 3);
}

#[test]
fn a_changed_policy_command_is_dropped_and_recreated_in_one_migration() {
    let dir = project(false);
    assert_eq!(run(dir.path(), &["generate"]).0, 0);
    let gyms = dir.path().join("policies/gyms.toml");
    let text = std::fs::read_to_string(&gyms).unwrap();
    std::fs::write(
        &gyms,
        text.replacen("command = \"select\"", "command = \"all\"", 1),
    )
    .unwrap();
    let (code, sql, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 0, "{err}");
    let drop = sql
        .find("DROP POLICY \"gyms_select_own\" ON \"public\".\"gyms\";")
        .expect(&sql);
    let create = sql
        .find("CREATE POLICY \"gyms_select_own\" ON \"public\".\"gyms\"\n    AS PERMISSIVE FOR ALL")
        .expect(&sql);
    assert!(drop < create);
    assert!(
        !sql.contains("ROW LEVEL SECURITY"),
        "RLS is never switched off: {sql}"
    );
}

#[test]
fn new_table_and_column_then_drops_need_allow_destructive() {
    let dir = project(false);
    assert_eq!(run(dir.path(), &["generate"]).0, 0);
    copy_dir(
        &repo().join("tests/fixtures/policies"),
        &dir.path().join("policies"),
    );
    let members = dir.path().join("policies/members.toml");
    let text = std::fs::read_to_string(&members).unwrap();
    std::fs::write(&members, text.replace(
        "  { name = \"created_at\", type = \"timestamptz\", default = \"now()\" },\n]",
        "  { name = \"created_at\", type = \"timestamptz\", default = \"now()\" },\n  { name = \"notes\", type = \"text\", nullable = true },\n]",
    ))
    .unwrap();
    let (code, _, err) = run(dir.path(), &["generate", "--name", "sessions"]);
    assert_eq!(code, 0, "{err}");
    let v2 = std::fs::read_to_string(dir.path().join("migrations/V2__sessions.sql")).unwrap();
    assert!(
        v2.contains("ALTER TABLE \"public\".\"members\" ADD COLUMN \"notes\" text;"),
        "{v2}"
    );
    assert!(
        v2.contains("GRANT UPDATE (\"notes\") ON TABLE \"public\".\"members\""),
        "{v2}"
    );
    assert!(v2.contains("CREATE TABLE \"public\".\"sessions\""));
    assert!(!v2.contains("CREATE TABLE \"public\".\"members\""));

    std::fs::remove_file(dir.path().join("policies/bookings.toml")).unwrap();
    std::fs::write(&members, text).unwrap();
    let (code, _, err) = run(dir.path(), &["generate"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("DROP TABLE \"public\".\"bookings\";") && err.contains("--allow-destructive"),
        "{err}"
    );
    assert!(err.contains("DROP COLUMN \"notes\""), "{err}");
    assert_eq!(migration_files(dir.path()).len(), 3, "nothing written");
    let (code, _, err) = run(dir.path(), &["generate", "--allow-destructive"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(migration_files(dir.path()).len(), 4);
}

/// Each case edits members.toml into one kind of bad input and names a fragment of the message.
#[test]
fn bad_input_exits_2_with_position_and_hint_and_writes_nothing() {
    let long = "x".repeat(64);
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit, String)> = vec![
        (
            "malformed TOML",
            Box::new(|t: &str| t.replacen("[tables.members]", "[tables.members", 1)),
            "members.toml:2:".into(),
        ),
        (
            "unknown key",
            Box::new(|t: &str| t.replacen("unique = [", "colour = \"red\"\nunique = [", 1)),
            "unknown field `colour`".into(),
        ),
        (
            "identifier over 63 bytes",
            Box::new(move |t: &str| t.replacen("\"phone\"", &format!("\"{long}\""), 1)),
            "is 64 bytes long".into(),
        ),
        (
            "quote in a name",
            Box::new(|t: &str| t.replacen("[tables.members]", "[tables.'mem\"bers']", 1)),
            "may hold only lowercase".into(),
        ),
        (
            "semicolon in a name",
            Box::new(|t: &str| t.replacen("name = \"email\"", "name = \"email;drop\"", 1)),
            "may hold only lowercase".into(),
        ),
        (
            "undeclared table",
            Box::new(|t: &str| t.replacen("table = \"coaches\"", "table = \"trainers\"", 1)),
            "which no policy file declares".into(),
        ),
        (
            "no tenant column",
            Box::new(|t: &str| t.replacen("  { name = \"gym_id\", type = \"uuid\" },\n", "", 1)),
            "has no tenant column gym_id".into(),
        ),
        (
            "column constraint smuggled in a type",
            Box::new(|t: &str| {
                t.replacen(
                    "{ name = \"phone\", type = \"text\"",
                    "{ name = \"phone\", type = \"text references gyms(id)\"",
                    1,
                )
            }),
            "is not a type name".into(),
        ),
        (
            "escape string that would end early",
            Box::new(|t: &str| {
                t.replacen(
                    "default = \"'active'\"",
                    "default = \"E'\\\\' '; DROP TABLE gyms; --'\"",
                    1,
                )
            }),
            "backslash".into(),
        ),
        (
            "semicolon in an expression",
            Box::new(|t: &str| {
                t.replacen(
                    "default = \"'active'\"",
                    "default = \"'active'; DROP TABLE gyms\"",
                    1,
                )
            }),
            "contains `;`".into(),
        ),
    ];
    for (what, edit, expected) in cases {
        let dir = project(false);
        let path = dir.path().join("policies/members.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = edit(&text);
        assert_ne!(edited, text, "{what}: the edit did not apply");
        std::fs::write(&path, edited).unwrap();
        for cmd in ["plan", "generate"] {
            let (code, _, err) = run(dir.path(), &[cmd]);
            assert_eq!(code, 2, "{what}: {err}");
            assert!(err.starts_with("error: "), "{what}: {err}");
            assert!(
                err.contains(&expected),
                "{what}: expected {expected:?} in {err}"
            );
            assert!(
                err.contains("policies/members.toml:"),
                "{what}: no file in {err}"
            );
            let located = err.lines().any(|l| {
                l.split("members.toml:").nth(1).is_some_and(|rest| {
                    let mut parts = rest.splitn(3, ':');
                    parts.next().is_some_and(|n| n.parse::<usize>().is_ok())
                        && parts.next().is_some_and(|n| n.parse::<usize>().is_ok())
                })
            });
            assert!(located, "{what}: no line:column in {err}");
            assert!(err.contains("hint: "), "{what}: no hint in {err}");
        }
        assert!(
            migration_files(dir.path()).is_empty(),
            "{what}: something was written"
        );
    }
}

#[test]
fn truncate_to_the_app_role_is_refused() {
    let dir = project(false);
    let path = dir.path().join("policies/members.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "grants.gym_app = [\"select\"",
            "grants.gym_app = [\"truncate\", \"select\"",
            1,
        ),
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("TRUNCATE cannot be granted to gym_app"),
        "{err}"
    );
}

#[test]
fn no_project_is_a_teaching_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 2);
    assert!(err.contains("tenantctl init"), "{err}");
}

#[test]
fn init_scaffolds_a_project_that_generates() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(dir.path(), &["init", "proj"]);
    assert_eq!(code, 0, "{err}");
    let proj = dir.path().join("proj");
    let (code, _, err) = run(&proj, &["generate"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        migration_files(&proj),
        ["V1__initial.sql", "tenantctl.snapshot.json"]
    );
    let (code, _, err) = run(dir.path(), &["init", "proj"]);
    assert_eq!(code, 2, "init over an existing project must refuse: {err}");
    // ... and migrate works there too.
    let db = crate::harness::test_db("init_migrate");
    let (code, _, err) = run(&proj, &["migrate", "--database-url", &db.url]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&proj, &["status", "--check", "--database-url", &db.url]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn switching_the_admin_bypass_to_policies_removes_bypassrls() {
    let dir = project(false);
    assert_eq!(run(dir.path(), &["generate"]).0, 0);
    let tenancy = dir.path().join("policies/tenancy.toml");
    let text = std::fs::read_to_string(&tenancy).unwrap();
    std::fs::write(
        &tenancy,
        text.replacen(
            "admin_bypass = \"bypassrls\"",
            "admin_bypass = \"policy\"",
            1,
        ),
    )
    .unwrap();
    let (code, sql, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        sql.contains("ALTER ROLE \"platform_admin\" NOBYPASSRLS;"),
        "{sql}"
    );
    for table in ["gyms", "coaches", "members"] {
        assert!(
            sql.contains(&format!(
                "CREATE POLICY \"{table}_platform_admin\" ON \"public\".\"{table}\"\n    AS PERMISSIVE FOR ALL\n    TO \"platform_admin\"\n    USING (true)\n    WITH CHECK (true);"
            )),
            "{table}: {sql}"
        );
    }
}

#[test]
fn a_table_or_policy_declared_twice_names_both_places() {
    let dir = project(false);
    let extra = dir.path().join("policies/zz_extra.toml");
    let coaches = std::fs::read_to_string(dir.path().join("policies/coaches.toml")).unwrap();
    let gyms = std::fs::read_to_string(dir.path().join("policies/gyms.toml")).unwrap();
    let policy = &gyms[gyms.find("[[policies]]").unwrap()..];
    std::fs::write(&extra, format!("{coaches}\n{policy}")).unwrap();
    let (code, _, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("table coaches is declared twice (first at policies/coaches.toml:"),
        "{err}"
    );
    assert!(
        err.contains(
            "policy gyms_select_own on gyms is declared twice (first at policies/gyms.toml:"
        ),
        "{err}"
    );
    assert!(err.contains("zz_extra.toml:"), "{err}");
}

/// A project with the shipped policies and tests/fixtures/model_growth: a global table, a
/// partitioned tenant table, a view and an extension.
fn model_project() -> tempfile::TempDir {
    let dir = project(false);
    std::fs::copy(
        repo().join("tests/fixtures/model_growth/model.toml"),
        dir.path().join("policies/model.toml"),
    )
    .unwrap();
    dir
}

/// The golden SQL of the grown model: the same bytes twice (deterministic), and generate then
/// plan again gives nothing more to do.
#[test]
fn golden_sql_of_global_tables_partitions_views_and_extensions() {
    let dir = model_project();
    let (code, sql, err) = run(dir.path(), &["plan"]);
    assert_eq!(code, 0, "{err}");
    let (_, again, _) = run(dir.path(), &["plan"]);
    assert_eq!(sql, again);
    insta::assert_snapshot!("model_growth_sql", sql);
    assert_eq!(run(dir.path(), &["generate"]).0, 0);
    let (code, planned, err) = run(dir.path(), &["plan"]);
    assert_eq!((code, planned.as_str()), (0, ""), "{err}");
}

/// The application can never be granted a write on a global table: a policy-file error at the
/// privilege, exit 2, nothing written.
#[test]
fn a_write_grant_on_a_global_table_to_the_app_is_refused_where_it_is_written() {
    let dir = model_project();
    let path = dir.path().join("policies/model.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(
        "grants.gym_app = [\"select\"]",
        "grants.gym_app = [\"select\", \"update\"]",
        1,
    );
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();
    let (code, _, err) = run(dir.path(), &["generate"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("policies/model.toml:12:29: UPDATE cannot be granted to gym_app: a global table is shared by every tenant"),
        "{err}"
    );
    assert!(migration_files(dir.path()).is_empty());
}
