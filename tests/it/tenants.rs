//! `tenant create|list|show|delete`, `exec` and `demo` on real Postgres: seeding as the tenant,
//! reproducible seeds, all-or-nothing creates (even when the server kills the seeding backend),
//! and exec as gym A never showing gym B's rows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{cluster_dir, tenantctl, test_db, watch, TestDb};
use crate::support::{copy_dir, generate_and_migrate, repo, write_project, Pg};

/// A migrated project of the shipped policies on the test's own database.
fn project(label: &str) -> (TestDb, PathBuf) {
    let db = test_db(label);
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    (db, dir)
}

/// Run tenantctl with `--format json`; return the exit code, parsed stdout (Null if empty) and stderr.
fn json(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = tenantctl(dir)
        .args(["--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{stdout}"))
    };
    (
        out.status.code().unwrap_or(-1),
        value,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Create a tenant; panic unless it succeeds; return its id.
fn create(dir: &Path, slug: &str, extra: &[&str]) -> String {
    let mut args = vec!["tenant", "create", slug, "--name", slug];
    args.extend_from_slice(extra);
    let (code, v, err) = json(dir, &args);
    assert_eq!(code, 0, "create {slug}: {err}\n{v}");
    v["id"].as_str().expect("id in create JSON").to_string()
}

fn count(pg: &mut Pg, sql: &str) -> i64 {
    pg.one(sql).parse().unwrap()
}

#[test]
fn create_seeds_as_the_tenant_then_list_show_delete() {
    let (db, dir) = project("tenant_lifecycle");
    let (code, v, err) = json(
        &dir,
        &[
            "tenant",
            "create",
            "iron-temple",
            "--name",
            "Iron Temple",
            "--coaches",
            "3",
            "--members",
            "250",
            "--seed",
            "7",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["created"], true);
    assert_eq!(v["rows"]["members"], 250);
    assert_eq!(v["rows"]["coaches"], 3);
    assert_eq!(v["seed"], 7);
    assert!(v["probe"]["checks"].as_u64().unwrap() >= 9, "{v}");
    assert_eq!(v["probe"]["failures"], serde_json::json!([]));
    let id = v["id"].as_str().unwrap().to_string();
    let other = create(&dir, "harbor-gym", &["--members", "40"]);

    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        count(
            &mut pg,
            &format!("SELECT count(*) FROM members WHERE gym_id = '{id}'")
        ),
        250
    );
    // Realistic data: distinct names and emails, several statuses, coach assignments in the gym.
    assert!(
        count(
            &mut pg,
            &format!("SELECT count(DISTINCT full_name) FROM members WHERE gym_id = '{id}'")
        ) > 200
    );
    assert_eq!(
        count(
            &mut pg,
            &format!("SELECT count(DISTINCT status) FROM members WHERE gym_id = '{id}'")
        ),
        3
    );
    assert!(
        count(
            &mut pg,
            &format!("SELECT count(home_coach_id) FROM members WHERE gym_id = '{id}'")
        ) > 100
    );
    assert_eq!(
        count(&mut pg, &format!("SELECT count(*) FROM members m JOIN coaches c ON c.id = m.home_coach_id WHERE m.gym_id = '{id}' AND c.gym_id <> m.gym_id")),
        0
    );

    let (code, v, err) = json(&dir, &["tenant", "list"]);
    assert_eq!(code, 0, "{err}");
    let tenants = v["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2);
    assert_eq!(tenants[1]["slug"], "iron-temple");
    assert_eq!(tenants[1]["id"], id.as_str());
    assert_eq!(tenants[1]["rows"]["members"], 250);
    assert_eq!(tenants[0]["rows"]["members"], 40);

    let (code, v, err) = json(&dir, &["tenant", "show", "iron-temple"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["record"]["name"], "Iron Temple");
    assert_eq!(v["record"]["plan"], "standard");
    assert_eq!(v["rows"]["coaches"], 3);

    // Table output on a pipe: plain text, the id present.
    let out = tenantctl(&dir).args(["tenant", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    let (code, v, err) = json(&dir, &["tenant", "delete", "iron-temple", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["deleted"]["rows"]["members"], 250);
    for table in ["members", "coaches"] {
        assert_eq!(
            count(
                &mut pg,
                &format!("SELECT count(*) FROM {table} WHERE gym_id = '{id}'")
            ),
            0
        );
    }
    assert_eq!(
        count(
            &mut pg,
            &format!("SELECT count(*) FROM gyms WHERE id = '{id}'")
        ),
        0
    );
    // The other gym is untouched.
    assert_eq!(
        count(
            &mut pg,
            &format!("SELECT count(*) FROM members WHERE gym_id = '{other}'")
        ),
        40
    );
}

/// The content of a gym's seed data, without ids and timestamps.
fn content(pg: &mut Pg, gym: &str) -> Vec<Vec<Option<String>>> {
    pg.rows(&format!(
        "SELECT m.full_name, m.email, m.phone, m.date_of_birth::text, m.joined_on::text, m.status, c.email
         FROM members m LEFT JOIN coaches c ON c.id = m.home_coach_id
         WHERE m.gym_id = '{gym}' ORDER BY m.email"
    ))
    .unwrap()
}

#[test]
fn create_with_a_seed_is_reproducible() {
    let (db, dir) = project("tenant_seed");
    let a = create(&dir, "seed-a", &["--members", "300", "--seed", "42"]);
    let b = create(&dir, "seed-b", &["--members", "300", "--seed", "42"]);
    let c = create(&dir, "seed-c", &["--members", "300", "--seed", "43"]);
    let mut pg = Pg::connect(&db.url);
    let (ra, rb, rc) = (
        content(&mut pg, &a),
        content(&mut pg, &b),
        content(&mut pg, &c),
    );
    assert_eq!(ra.len(), 300);
    assert_eq!(ra, rb, "the same seed must give the same data");
    assert_ne!(ra, rc, "another seed must give other data");
    let coaches = |pg: &mut Pg, g: &str| {
        pg.rows(&format!("SELECT full_name, email, phone, specialties::text, hired_on::text, active::text FROM coaches WHERE gym_id = '{g}' ORDER BY email"))
            .unwrap()
    };
    assert_eq!(coaches(&mut pg, &a), coaches(&mut pg, &b));
}

#[test]
fn bad_input_exits_2_and_creates_nothing() {
    let (db, dir) = project("tenant_bad_input");
    let id = create(&dir, "taken", &["--members", "5"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["tenant", "create", "Bad_Slug", "--name", "X"],
            "invalid slug",
        ),
        (&["tenant", "create", "ab", "--name", "X"], "invalid slug"),
        (&["tenant", "create", "-abc", "--name", "X"], ""),
        (
            &["tenant", "create", "taken", "--name", "X"],
            "already exists",
        ),
        (
            &[
                "tenant",
                "create",
                "fresh",
                "--name",
                "X",
                "--members",
                "-5",
            ],
            "cannot be negative",
        ),
        (
            &[
                "tenant",
                "create",
                "fresh",
                "--name",
                "X",
                "--coaches",
                "-1",
            ],
            "cannot be negative",
        ),
        (
            &["tenant", "create", "fresh", "--name", ""],
            "name cannot be empty",
        ),
        (&["tenant", "show", "no-such-gym"], "no tenant with slug"),
        (
            &["tenant", "delete", "no-such-gym", "--yes"],
            "no tenant with slug",
        ),
        (
            &["exec", "--tenant", "no-such-gym", "SELECT 1"],
            "no tenant with slug",
        ),
        // No terminal here: delete must not proceed without --yes.
        (&["tenant", "delete", "taken"], "without confirmation"),
    ];
    for (args, message) in cases {
        let (code, _, err) = json(&dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        if !message.is_empty() {
            assert!(err.starts_with("error: "), "{args:?}: {err}");
        }
    }
    assert!(json(&dir, &["tenant", "create", "taken", "--name", "X"])
        .2
        .contains("hint: "));
    let mut pg = Pg::connect(&db.url);
    assert_eq!(pg.one("SELECT string_agg(slug, ',') FROM gyms"), "taken");
    assert_eq!(count(&mut pg, "SELECT count(*) FROM members"), 5);

    // --if-not-exists accepts the existing slug, returns its id and changes nothing.
    let (code, v, err) = json(
        &dir,
        &[
            "tenant",
            "create",
            "taken",
            "--name",
            "X",
            "--if-not-exists",
            "--members",
            "9",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["created"], false);
    assert_eq!(count(&mut pg, "SELECT count(*) FROM members"), 5);
}

#[test]
fn a_create_killed_midway_leaves_no_partial_tenant() {
    let (db, dir) = project("tenant_killed");
    let before = create(&dir, "survivor", &["--members", "20"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantctl"))
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env_remove("CI")
        .args([
            "tenant",
            "create",
            "doomed",
            "--name",
            "Doomed",
            "--members",
            "3000000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pg = Pg::connect(&db.url);
    // Wait until member rows are being inserted, i.e. the gym row and some batches exist in the
    // open transaction; then kill that backend from this connection.
    let deadline = Instant::now() + Duration::from_secs(120);
    let pid = loop {
        let rows = pg
            .rows(
                "SELECT pid::text FROM pg_stat_activity
                 WHERE application_name = 'tenantctl tenant create doomed'
                   AND query LIKE 'INSERT INTO \"public\".\"members\"%' AND state = 'active'",
            )
            .unwrap();
        if let Some(row) = rows.first() {
            break row[0].clone().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the create never reached the member inserts"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the create ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500)); // a few batches into the transaction
    assert_eq!(
        pg.one(&format!("SELECT pg_terminate_backend({pid})::text")),
        "true"
    );
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: seeding tenant doomed failed; nothing was created"),
        "{err}"
    );
    assert_eq!(
        count(&mut pg, "SELECT count(*) FROM gyms WHERE slug = 'doomed'"),
        0
    );
    assert_eq!(
        count(
            &mut pg,
            &format!("SELECT count(*) FROM members WHERE gym_id <> '{before}'")
        ),
        0
    );
    assert_eq!(
        count(
            &mut pg,
            &format!("SELECT count(*) FROM coaches WHERE gym_id <> '{before}'")
        ),
        0
    );
    // And the slug is free again.
    create(&dir, "doomed", &["--members", "3"]);
}

#[test]
fn exec_as_gym_a_never_shows_gym_b() {
    let (db, dir) = project("tenant_exec");
    let a = create(&dir, "gym-a", &["--members", "30"]);
    let b = create(&dir, "gym-b", &["--members", "20"]);

    let rows = |v: &Value| v["rows"].as_array().unwrap().clone();
    // Without WHERE: only A's rows.
    let (code, v, err) = json(
        &dir,
        &[
            "exec",
            "--tenant",
            "gym-a",
            "SELECT gym_id, email FROM members",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["columns"], serde_json::json!(["gym_id", "email"]));
    assert_eq!(rows(&v).len(), 30);
    assert!(rows(&v).iter().all(|r| r[0] == a.as_str()), "{v}");
    assert!(err.contains("rolled back"), "{err}");
    // Asking for B's rows explicitly: zero rows, no error. Same for B's gym row and coaches.
    for sql in [
        format!("SELECT * FROM members WHERE gym_id = '{b}'"),
        format!("SELECT * FROM coaches WHERE gym_id = '{b}'"),
        format!("SELECT * FROM gyms WHERE id = '{b}'"),
    ] {
        let (code, v, err) = json(&dir, &["exec", "--tenant", "gym-a", &sql]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(rows(&v).len(), 0, "{sql}: {v}");
    }
    // The admin sees both.
    let (_, v, _) = json(&dir, &["exec", "--admin", "SELECT count(*) FROM members"]);
    assert_eq!(v["rows"][0][0], "50");

    // Writes need --write; without it nothing changes.
    let (code, _, err) = json(
        &dir,
        &[
            "exec",
            "--tenant",
            "gym-a",
            "UPDATE members SET status = 'paused'",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--write"), "{err}");
    let mut pg = Pg::connect(&db.url);
    let paused = |pg: &mut Pg, g: &str| {
        count(
            pg,
            &format!("SELECT count(*) FROM members WHERE gym_id = '{g}' AND status = 'paused'"),
        )
    };
    let b_paused = paused(&mut pg, &b);
    // With --write, as A, even with no WHERE: only A's rows change.
    let (code, v, err) = json(
        &dir,
        &[
            "exec",
            "--tenant",
            "gym-a",
            "--write",
            "UPDATE members SET status = 'paused'",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["row_count"], 30);
    assert_eq!(v["committed"], true);
    assert_eq!(paused(&mut pg, &a), 30);
    assert_eq!(paused(&mut pg, &b), b_paused);
    // And A cannot move a row to B.
    let (code, _, err) = json(
        &dir,
        &[
            "exec",
            "--tenant",
            "gym-a",
            "--write",
            &format!("UPDATE members SET gym_id = '{b}'"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        count(
            &mut pg,
            &format!("SELECT count(*) FROM members WHERE gym_id = '{b}'")
        ),
        20
    );

    // One statement only, and one that leaves the tenant's role is refused.
    for (sql, message) in [
        (
            "SELECT 1; SELECT * FROM members",
            "exactly one SQL statement",
        ),
        ("RESET ROLE", "refused"),
        ("SET ROLE NONE", "refused"),
        ("COMMIT", "refused"),
    ] {
        let (code, _, err) = json(&dir, &["exec", "--tenant", "gym-a", sql]);
        assert_eq!(code, 2, "{sql}: {err}");
        assert!(err.contains(message), "{sql}: {err}");
    }
    // Switching the context mid-statement and back (found in review) is refused before it runs.
    let switch = format!(
        "SELECT m.gym_id, count(*), max(set_config('tenantctl.gym_id', '{a}', true)) \
         FROM (SELECT set_config('tenantctl.gym_id', '{b}', true) AS v) s \
         CROSS JOIN LATERAL (SELECT gym_id FROM members WHERE s.v IS NOT NULL) m GROUP BY 1"
    );
    for (sql, message) in [
        (switch.as_str(), "set_config"),
        (
            "SELECT current_setting('tenantctl.gym_id')",
            "tenantctl.gym_id",
        ),
    ] {
        let (code, _, err) = json(&dir, &["exec", "--tenant", "gym-a", sql]);
        assert_eq!(code, 2, "{sql}: {err}");
        assert!(err.contains(message), "{sql}: {err}");
    }
    // Table output.
    let out = tenantctl(&dir)
        .args([
            "exec",
            "--tenant",
            "gym-b",
            "SELECT count(*) AS n FROM members",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("│ n ") && stdout.contains("20"), "{stdout}");
}

#[test]
fn the_probe_reports_a_tenant_whose_isolation_is_broken() {
    let (db, dir) = project("tenant_probe_broken");
    create(&dir, "gym-a", &["--members", "10"]);
    let mut pg = Pg::connect(&db.url);
    pg.batch("ALTER TABLE members DISABLE ROW LEVEL SECURITY")
        .unwrap();
    let (code, v, err) = json(
        &dir,
        &[
            "tenant",
            "create",
            "gym-b",
            "--name",
            "B",
            "--members",
            "10",
        ],
    );
    assert_eq!(code, 1, "a broken tenant is a finding: {err}\n{v}");
    let ids: Vec<&str> = v["probe"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["object"] == "table public.members")
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    for expected in [
        "probe.foreign-rows",
        "probe.no-context",
        "probe.cross-insert",
    ] {
        assert!(ids.contains(&expected), "{expected} missing: {v}");
    }
}

#[test]
fn demo_runs_end_to_end_on_its_own_database_and_shows_isolation_holding() {
    // A project of its own whose embedded cluster lives under a watched temp dir.
    let dir = cluster_dir().parent().unwrap().join("project");
    watch(&dir.join("cluster"));
    for sub in ["policies", "migrations"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        copy_dir(&repo().join(sub), &dir.join(sub));
    }
    std::fs::copy(repo().join("tenantctl.toml"), dir.join("tenantctl.toml")).unwrap();

    for run in 0..2 {
        let (code, v, err) = json(&dir, &["demo", "--members", "200"]);
        assert_eq!(code, 0, "run {run}: {err}\n{v}");
        assert_eq!(v["isolation_holds"], true, "{v}");
        assert_eq!(
            v["tenants"].as_array().unwrap().len(),
            3,
            "recreated each run: {v}"
        );
        assert_eq!(v["verify"]["passed"], true, "{v}");
        assert_eq!(v["verify"]["stats"]["tenants_probed"], 3, "{v}");
        let scenarios = v["scenarios"].as_array().unwrap();
        assert_eq!(scenarios.len(), 7);
        assert!(scenarios.iter().all(|s| s["holds"] == true), "{v}");
        assert!(
            !v.to_string().contains(&dev_password(&dir)),
            "the password leaked"
        );
    }
    // demo never runs on a URL given to it.
    let (code, _, err) = json(
        &dir,
        &["--database-url", "postgres://x@127.0.0.1:1/y", "demo"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("embedded local database only"), "{err}");
    tenantctl(&dir).args(["dev", "down"]).assert().success();
}

fn dev_password(dir: &Path) -> String {
    let out = tenantctl(dir)
        .args(["dev", "url", "--show-password"])
        .output()
        .unwrap();
    crate::support::password_of(String::from_utf8_lossy(&out.stdout).trim())
}
