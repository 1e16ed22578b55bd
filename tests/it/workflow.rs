//! The migration workflow around generated migrations: hand-written ones (`tenantctl new`).

use std::path::Path;

use crate::harness::{tenantctl, test_db};
use crate::support::{generate_and_migrate, repo, write_project, Pg, Roles};

fn output(dir: &Path, args: &[&str]) -> (i32, String, String) {
    output_in_ci(dir, args, false)
}

/// `output`, with $CI set when `ci`.
fn output_in_ci(dir: &Path, args: &[&str], ci: bool) -> (i32, String, String) {
    let mut cmd = tenantctl(dir);
    if ci {
        cmd.env("CI", "true");
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The README's per-tenant backfill, with the test's role names.
fn readme_backfill(roles: &Roles) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let at = readme
        .find("<!-- backfill-example")
        .expect("README marks its backfill");
    let block = &readme[at..];
    let start = block.find("```sql\n").unwrap() + "```sql\n".len();
    let end = start + block[start..].find("```").unwrap();
    block[start..end]
        .replace("platform_admin", &roles.admin)
        .replace("gym_app", &roles.app)
}

/// Replace the first `from` in a policy file with `to`.
fn edit_policy(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join("policies").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replacen(from, to, 1);
    assert_ne!(text, changed, "{from} not in {file}");
    std::fs::write(&path, changed).unwrap();
}

/// Add an index on members(joined_on): a policy change generate must write after V2.
fn add_index(dir: &Path) {
    let index = "{ columns = [\"status\"] }";
    let more = "{ columns = [\"status\"] }, { columns = [\"joined_on\"] }";
    edit_policy(dir, "members.toml", index, more);
}

#[test]
fn hand_written_backfill_runs_per_tenant_and_generate_keeps_going() {
    let db = test_db("new_backfill");
    let roles = Roles::for_db(&db);
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let mut pg = Pg::connect(&db.url);
    pg.batch(
        "INSERT INTO gyms (id, slug, name) VALUES \
           ('00000000-0000-4000-8000-00000000000a', 'gym-a', 'Gym A'), \
           ('00000000-0000-4000-8000-00000000000b', 'gym-b', 'Gym B'); \
         INSERT INTO members (gym_id, full_name, email) VALUES \
           ('00000000-0000-4000-8000-00000000000a', 'Ann', 'Ann@A.test'), \
           ('00000000-0000-4000-8000-00000000000b', 'Bob', 'BOB@b.test');",
    )
    .unwrap();

    let (code, _, err) = output(&dir, &["new", "lowercase_emails"]);
    assert_eq!(code, 0, "{err}");
    let file = dir.join("migrations/V2__lowercase_emails.sql");
    let header = std::fs::read_to_string(&file).unwrap();
    assert!(header.contains("hand-written"), "{header}");
    std::fs::write(&file, header + &readme_backfill(&roles)).unwrap();

    // generate and plan own only what they generated: the hand-written V2 changes nothing.
    let (code, _, err) = output(&dir, &["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("No changes"), "{err}");
    add_index(&dir);
    let (code, out, err) = output(&dir, &["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("V3__planned"), "{out}");
    let (code, _, err) = output(&dir, &["generate", "--name", "joined_index"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        dir.join("migrations/V3__joined_index_index.sql").exists(),
        "{err}"
    );

    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let emails = pg
        .as_role(
            &roles.admin,
            None,
            "SELECT string_agg(email, ',' ORDER BY email) FROM members",
        )
        .unwrap();
    assert_eq!(emails[0][0].as_deref(), Some("ann@a.test,bob@b.test"));
    let (code, out, err) = output(&dir, &["status", "--check"]);
    assert_eq!(code, 0, "{out}{err}");
    // Another hand-written one after the generated V3 takes V4.
    let (code, _, err) = output(&dir, &["new", "later"]);
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("migrations/V4__later.sql").exists(), "{err}");
}

#[test]
fn a_generated_file_after_the_snapshot_is_still_refused() {
    let db = test_db("new_snapshot_behind");
    let dir = write_project(&db, false);
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    let v1 = std::fs::read_to_string(dir.join("migrations/V1__initial.sql")).unwrap();
    // A generated migration the snapshot does not know (from another commit).
    std::fs::write(
        dir.join("migrations/V2__policies.sql"),
        v1.replace("V1__initial.sql", "V2__policies.sql"),
    )
    .unwrap();
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("records V1 but"), "{err}");
    let (code, _, err) = output(&dir, &["new", "bad name"]);
    assert_eq!(code, 2, "{err}");
}

/// Whether `relation` exists in the database.
fn exists(pg: &mut Pg, relation: &str) -> bool {
    pg.one(&format!(
        "SELECT (to_regclass('{relation}') IS NOT NULL)::text"
    )) == "true"
}

#[test]
fn the_history_lives_in_the_helper_schema_out_of_the_apps_reach() {
    let db = test_db("history_helper");
    let roles = Roles::for_db(&db);
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let mut pg = Pg::connect(&db.url);
    assert!(exists(&mut pg, "tenantctl.refinery_schema_history"));
    assert!(!exists(&mut pg, "public.refinery_schema_history"));
    let granted = pg.one(&format!(
        "SELECT has_table_privilege('{}', 'tenantctl.refinery_schema_history', \
         'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')::text",
        roles.app
    ));
    assert_eq!(granted, "false", "the app role reaches the history");
    let (code, out, err) = output(&dir, &["status", "--check", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["current"], 1, "{out}");
}

#[test]
fn a_history_left_in_public_is_read_there_and_moved_by_the_next_migrate() {
    let db = test_db("history_moved");
    let roles = Roles::for_db(&db);
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let mut pg = Pg::connect(&db.url);
    // Where tenantctl versions before this one kept it, with a grant someone added.
    pg.batch(&format!(
        "ALTER TABLE tenantctl.refinery_schema_history SET SCHEMA public; \
         GRANT SELECT ON public.refinery_schema_history TO \"{}\"",
        roles.app
    ))
    .unwrap();
    let (code, out, err) = output(&dir, &["status", "--check", "--format", "json"]);
    assert_eq!(code, 0, "status reads the old place: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["current"], 1, "{out}");

    add_index(&dir);
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Moved the migration history"), "{err}");
    assert!(!exists(&mut pg, "public.refinery_schema_history"));
    assert_eq!(
        pg.one("SELECT string_agg(version::text, ',' ORDER BY version) FROM tenantctl.refinery_schema_history"),
        "1,2"
    );
    let granted = pg.one(&format!(
        "SELECT has_table_privilege('{}', 'tenantctl.refinery_schema_history', 'SELECT')::text",
        roles.app
    ));
    assert_eq!(granted, "false", "the moved history keeps the app's grant");

    // Both places at once: refused, nothing applied.
    pg.batch(
        "CREATE TABLE public.refinery_schema_history (LIKE tenantctl.refinery_schema_history)",
    )
    .unwrap();
    std::fs::write(
        dir.join("migrations/V3__more.sql"),
        "CREATE TABLE more (id int);",
    )
    .unwrap();
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists twice"), "{err}");
    assert!(
        !exists(&mut pg, "public.more"),
        "applied despite the refusal"
    );
}

#[test]
fn generate_test_applies_and_writes_nothing_that_fails() {
    let db = test_db("generate_checks");
    let dir = write_project(&db, false);
    // A typo in a column type that the policy compiler cannot know about.
    let phone = "{ name = \"phone\", type = \"text\"";
    edit_policy(&dir, "members.toml", phone, &phone.replace("text", "txet"));
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("V1__initial.sql:"), "{err}");
    assert!(err.contains("type \"txet\" does not exist"), "{err}");
    let line = std::fs::read_to_string(dir.join("policies/members.toml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("txet"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("policies/members.toml:{line}:")),
        "points at the policy line: {err}"
    );
    let written: Vec<_> = std::fs::read_dir(dir.join("migrations")).unwrap().collect();
    assert!(written.is_empty(), "wrote {written:?}");

    // --offline writes it, and says it did not test-apply.
    let (code, _, err) = output(&dir, &["generate", "--offline"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("not test-applied (--offline)"), "{err}");
    assert!(dir.join("migrations/V1__initial.sql").exists());
}

#[test]
fn generate_without_server_binaries_writes_and_says_so() {
    let db = test_db("generate_no_binaries");
    let dir = write_project(&db, false);
    let out = tenantctl(&dir)
        .arg("generate")
        .env_remove("TENANTCTL_SCRATCH_URL")
        .env("TENANTCTL_PG_BINDIR", dir.join("no-such-bindir"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no PostgreSQL server binaries found"), "{err}");
    assert!(dir.join("migrations/V1__initial.sql").exists());
}

#[test]
fn a_widening_policy_change_is_labelled_and_needs_allow_widening_in_ci() {
    let db = test_db("widening");
    let roles = Roles::for_db(&db);
    let dir = write_project(&db, false);
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    let v1 = std::fs::read_to_string(dir.join("migrations/V1__initial.sql")).unwrap();
    assert!(v1.contains("-- Summary: +3 tables, +4 policies\n"), "{v1}");

    // Not widening: an index. CI writes it.
    add_index(&dir);
    let (code, _, err) = output_in_ci(&dir, &["generate"], true);
    assert_eq!(code, 0, "{err}");
    // Only an index on an existing table: a non-transactional migration of its own.
    let v2 = std::fs::read_to_string(dir.join("migrations/V2__policies_index.sql")).unwrap();
    assert!(!v2.contains("RISK"), "{v2}");

    // gym_app sees every gym: a change that widens what the role can see.
    let own = "using = \"id = (SELECT tenantctl.current_gym_id())\"";
    edit_policy(&dir, "gyms.toml", own, "using = \"true\"");
    let (code, plan, err) = output(&dir, &["plan"]);
    assert_eq!(code, 0, "{err}");
    let app = &roles.app;
    assert!(
        plan.contains(&format!("~1 policy widened for {app}")),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "-- RISK widening: {app} may see or write more: policy gyms.gyms_select_own"
        )),
        "{plan}"
    );
    let (code, _, err) = output_in_ci(&dir, &["generate"], true);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--allow-widening"), "{err}");
    assert!(!dir.join("migrations/V3__policies.sql").exists());
    let (code, _, err) = output_in_ci(&dir, &["generate", "--allow-widening"], true);
    assert_eq!(code, 0, "{err}");
    let v3 = std::fs::read_to_string(dir.join("migrations/V3__policies.sql")).unwrap();
    assert!(v3.contains("RISK widening"), "{v3}");
}

#[test]
fn a_database_migrated_by_a_newer_tenantctl_is_refused() {
    let db = test_db("newer_tenantctl");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let mut pg = Pg::connect(&db.url);
    let marker =
        "SELECT obj_description('tenantctl.refinery_schema_history'::regclass, 'pg_class')";
    assert_eq!(pg.one(marker), "tenantctl history format 1");
    // A newer history format.
    pg.batch("COMMENT ON TABLE tenantctl.refinery_schema_history IS 'tenantctl history format 99'")
        .unwrap();
    add_index(&dir);
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    for args in [&["migrate"][..], &["status"][..]] {
        let (code, _, err) = output(&dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("migrated by a newer tenantctl"), "{err}");
    }
    let applied = "SELECT max(version)::text FROM tenantctl.refinery_schema_history";
    assert_eq!(pg.one(applied), "1", "applied despite the refusal");

    // A history ahead of every file: migrated from newer migration files.
    pg.batch("COMMENT ON TABLE tenantctl.refinery_schema_history IS 'tenantctl history format 1'; \
              INSERT INTO tenantctl.refinery_schema_history VALUES (7, 'later', '2026-01-01T00:00:00Z', '1')")
        .unwrap();
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the database is ahead of these migration files"),
        "{err}"
    );
    let versions = "SELECT string_agg(version::text, ',' ORDER BY version) FROM tenantctl.refinery_schema_history";
    assert_eq!(pg.one(versions), "1,7", "applied despite the refusal");
}

#[test]
fn status_notices_a_generator_upgrade() {
    let db = test_db("generator_upgrade");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    // A snapshot written by a tenantctl whose helper objects were older (revision 1).
    let path = dir.join("migrations/tenantctl.snapshot.json");
    let mut snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    snap["helpers"] = serde_json::json!(1);
    std::fs::write(&path, serde_json::to_string_pretty(&snap).unwrap()).unwrap();
    let (code, out, err) = output(&dir, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tenantctl's generator changed since V1"),
        "{out}"
    );
    let (code, _, _) = output(&dir, &["status", "--check"]);
    assert_eq!(code, 1);
    let (code, _, err) = output(&dir, &["generate"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = output(&dir, &["status", "--check"]);
    assert_eq!(code, 1, "V2 pending: {out}");
    assert!(!out.contains("generator changed"), "{out}");
}
