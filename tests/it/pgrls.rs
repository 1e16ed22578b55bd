//! pgrls, the RLS linter from PyPI (installed by `scripts/setup.sh --test`), finds no error on a
//! freshly migrated database.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{psql_exec, test_db};
use crate::support::{generate_and_migrate, repo, write_project};

/// `$TENANTCTL_PGRLS`, else the virtualenv `scripts/setup.sh --test` makes.
fn pgrls() -> PathBuf {
    let path = std::env::var_os("TENANTCTL_PGRLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tenantctl/tools/pgrls/bin/pgrls"));
    assert!(
        path.exists(),
        "pgrls not found at {}: run ./scripts/setup.sh --test (or set TENANTCTL_PGRLS)",
        path.display()
    );
    path
}

/// `pgrls lint` of the tables' schema, as JSON.
fn lint(url: &str) -> Value {
    let out = std::process::Command::new(pgrls())
        .args(["lint", "--database-url", url, "--schemas", "public"])
        .args(["--format", "json"])
        .output()
        .expect("run pgrls");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pgrls printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The errors pgrls reports on this test's objects: the database's tables, and the roles named
/// with the test's prefix (roles are cluster-wide; other tests' roles are not this database's).
fn errors(report: &Value, role_prefix: &str) -> Vec<String> {
    report["violations"]
        .as_array()
        .expect("pgrls JSON has violations")
        .iter()
        .filter(|v| v["severity"] == "error")
        .map(|v| {
            let at = v["location"].as_str().unwrap_or_default();
            (format!("{} {at}", v["rule_id"].as_str().unwrap_or("?")), at)
        })
        .filter(|(_, at)| at.starts_with("public.") || at.starts_with(role_prefix))
        .map(|(line, _)| line)
        .collect()
}

#[test]
fn pgrls_finds_no_error_on_a_freshly_migrated_database() {
    let db = test_db("pgrls");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let report = lint(&db.url);
    let looked_at: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["location"].as_str())
        .collect();
    assert!(
        looked_at.iter().any(|l| l.starts_with("public.members")),
        "pgrls did not look at the tenant tables: {report}"
    );
    assert_eq!(errors(&report, &db.role_prefix), Vec::<String>::new());

    // What it would say of a tenant table left without row-level security: an error, so the
    // assertion above is not empty-handed.
    psql_exec(
        &db.url,
        &format!(
            "CREATE TABLE public.unprotected (gym_id uuid, note text); \
             GRANT SELECT ON public.unprotected TO \"{}gym_app\"",
            db.role_prefix
        ),
    );
    let found = errors(&lint(&db.url), &db.role_prefix);
    assert!(
        found.iter().any(|e| e.ends_with(" public.unprotected")),
        "pgrls found no error on a table without RLS: {found:?}"
    );
}
