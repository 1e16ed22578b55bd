//! `tenantctl bench` on real Postgres: the JSON it prints, the plan checks telling the generated
//! policies (ok) from the naive one (not ok), and a database left exactly as it was found (no
//! scratch schema or database, no changed row), both on a given database and with --scratch.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{cluster, query_strings, tenantctl, test_db, TestDb};
use crate::support::{generate_and_migrate, write_project};

/// Few rounds and runs: the tests check what bench does, not how fast.
const QUICK: &[&str] = &["--rounds", "5", "--iterations", "2"];

fn migrated(label: &str) -> (TestDb, PathBuf) {
    let db = test_db(label);
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    (db, dir)
}

/// `tenantctl --format json bench ...`: its exit code and JSON.
fn bench(dir: &Path, extra: &[&str]) -> (i32, Value) {
    let out = tenantctl(dir)
        .args(["--format", "json", "bench"])
        .args(QUICK)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "bench printed no JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// Everything bench must leave as it found: every row of every table (as the superuser, so RLS
/// hides nothing), the schemas, and the cluster's databases.
/// Held by the tests that compare the cluster's `tenantctl_bench*` databases before and after:
/// `--scratch` creates one while it runs, so two such tests at once would see each other's.
static BENCH_DATABASES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fingerprint(url: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = query_strings(
        url,
        "SELECT 'gyms', count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM gyms t \
         UNION ALL SELECT 'coaches', count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM coaches t \
         UNION ALL SELECT 'members', count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM members t \
         UNION ALL SELECT 'schemas', count(*), string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace \
         UNION ALL SELECT 'functions', count(*), NULL FROM pg_proc",
    );
    rows.extend(query_strings(
        &cluster().url,
        // Only bench's names: other tests create databases concurrently.
        "SELECT 'databases', count(*), string_agg(datname, ',' ORDER BY datname) FROM pg_database \
         WHERE datname LIKE 'tenantctl\\_bench%'",
    ));
    rows
}

fn seed_tenants(dir: &Path) {
    for (slug, seed) in [("bench-a", "1"), ("bench-b", "2"), ("bench-c", "3")] {
        let out = tenantctl(dir)
            .args(["tenant", "create", slug, "--name", slug])
            .args(["--coaches", "4", "--members", "40", "--seed", seed])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn num(q: &Value, key: &str) -> f64 {
    q[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {q}"))
}

#[test]
fn bench_on_a_database_reports_every_query_and_leaves_it_as_found() {
    let _databases = BENCH_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    let (db, dir) = migrated("bench_given");
    seed_tenants(&dir);
    let before = fingerprint(&db.url);
    let (code, v) = bench(&dir, &["--chart", "chart.svg"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(fingerprint(&db.url), before, "bench changed the database");

    let queries = v["queries"].as_array().expect("queries");
    let names: Vec<&str> = queries
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    for kind in [
        "point lookup by email",
        "page by full_name",
        "insert",
        "update by email",
    ] {
        for table in ["coaches", "members"] {
            assert!(
                names.contains(&format!("{table}: {kind}").as_str()),
                "{names:?}"
            );
        }
    }
    assert!(names.contains(&"members: join coaches"), "{names:?}");
    assert!(names.contains(&"members: count by status"), "{names:?}");
    for q in queries {
        for key in [
            "policy_ms",
            "policy_p95_ms",
            "baseline_ms",
            "baseline_p95_ms",
            "naive_ms",
        ] {
            assert!(num(q, key) > 0.0, "{key} in {q}");
        }
        let ratio = num(q, "ratio");
        let expected = num(q, "policy_ms") / num(q, "baseline_ms");
        assert!(
            (ratio - expected).abs() < 0.01,
            "ratio {ratio} vs {expected} in {q}"
        );
        assert!(num(q, "naive_ratio") > 0.0);
        let statement = &q["statement"];
        assert!(
            num(statement, "policy_ms") > 0.0 && num(statement, "ratio") > 0.0,
            "{q}"
        );
        // The statement is part of the transaction: it cannot take longer.
        assert!(num(statement, "policy_ms") <= num(q, "policy_ms"), "{q}");
        assert_eq!(q["samples"], 10, "5 rounds x 2 runs: {q}");
        // Every query that reads the table is checked: the generated policy passes, the naive
        // one (an unwrapped, non-inlinable context function) does not.
        if q["name"].as_str().unwrap().ends_with("insert") {
            assert!(q["plan_ok"].is_null(), "{q}");
        } else {
            assert_eq!(q["plan_ok"], true, "{q}");
            assert_eq!(q["naive_plan_ok"], false, "{q}");
        }
    }
    let checks = v["plan_checks"].as_array().unwrap();
    assert_eq!(checks.len(), 6, "two checks per table: {checks:?}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    let naive = v["naive_plan_checks"].as_array().unwrap();
    let context: Vec<&Value> = naive
        .iter()
        .filter(|c| c["name"] == "perf.context-once")
        .collect();
    assert_eq!(context.len(), 2, "{naive:?}");
    assert!(context.iter().all(|c| c["ok"] == false), "{naive:?}");
    assert_eq!(v["plans_ok"], true);
    let svg = std::fs::read_to_string(dir.join("chart.svg")).expect("the chart is written");
    assert!(svg.contains("<svg") && svg.contains("members: join coaches"));
}

#[test]
fn bench_scratch_seeds_its_own_database_and_drops_it() {
    let _databases = BENCH_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    let (db, dir) = migrated("bench_scratch");
    let before = fingerprint(&db.url);
    let (code, v) = bench(
        &dir,
        &[
            "--scratch",
            "--gyms",
            "3",
            "--coaches",
            "6",
            "--members",
            "60",
            "--no-naive",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(fingerprint(&db.url), before, "bench left something behind");
    assert_eq!(v["seeded"]["gyms"], 3);
    assert_eq!(v["seeded"]["members"], 60);
    let queries = v["queries"].as_array().unwrap();
    assert!(queries.len() >= 10, "{v}");
    assert!(queries
        .iter()
        .all(|q| q["naive_ms"].is_null() && num(q, "policy_ms") > 0.0));
}

#[test]
fn plan_check_flags_a_table_without_a_tenant_index() {
    let (db, dir) = migrated("bench_no_index");
    seed_tenants(&dir);
    // Every index of coaches led by gym_id, gone: a tenant query can only scan the table.
    crate::harness::psql_exec(
        &db.url,
        "ALTER TABLE members DROP CONSTRAINT members_home_coach_id_fkey; \
         ALTER TABLE coaches DROP CONSTRAINT coaches_tenant_key, DROP CONSTRAINT coaches_gym_id_email_key; \
         DROP INDEX coaches_gym_id_full_name_idx",
    );
    let (code, v) = bench(&dir, &["--no-naive"]);
    assert_eq!(code, 1, "a failed plan check is a finding: {v}");
    let failed: Vec<(String, String)> = v["plan_checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["table"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [(
            "public.coaches".to_string(),
            "perf.tenant-index".to_string()
        )]
    );
}
