//! The policy model beyond tenant tables, end to end: a project with a global reference table, a
//! partitioned tenant table, a security_invoker view and an extension is generated, migrated,
//! seeded with two gyms and verified clean; then copies are broken, and each break is reported
//! by verify with its check id and really leaks (as the app role in gym A's context, gym B's
//! rows are read or changed).

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::{cluster, psql_exec, query_strings, tenantctl, test_db, TestDb};
use crate::support::{generate_and_migrate, repo, write_project, Pg, Roles};

const GYM_A: &str = "00000000-0000-4000-8000-00000000000a";
const GYM_B: &str = "00000000-0000-4000-8000-00000000000b";

/// The migrated, seeded database that every case copies.
struct Project {
    db: TestDb,
    dir: PathBuf,
    roles: Roles,
}

/// The shipped policies plus tests/fixtures/model_growth (plans, subscriptions, member_plans,
/// pgcrypto).
fn write(db: &TestDb) -> PathBuf {
    let dir = write_project(db, false);
    std::fs::copy(
        repo().join("tests/fixtures/model_growth/model.toml"),
        dir.join("policies/model.toml"),
    )
    .unwrap();
    dir
}

fn server_major(url: &str) -> i32 {
    let num = query_strings(url, "SELECT current_setting('server_version_num')")[0][0].clone();
    num.unwrap().parse::<i32>().unwrap() / 10_000
}

fn project() -> Option<&'static Project> {
    static P: OnceLock<Option<Project>> = OnceLock::new();
    P.get_or_init(|| {
        let db = test_db("model_growth");
        if server_major(&db.url) < 15 {
            return None; // views need PG 15: see views_are_refused_before_postgresql_15
        }
        let dir = write(&db);
        generate_and_migrate(&dir);
        let mut sql = String::from(
            "INSERT INTO plans (id, title, monthly_price) VALUES ('basic', 'Basic', 10), ('pro', 'Pro', 30);",
        );
        for (gym, s) in [(GYM_A, "a"), (GYM_B, "b")] {
            let rest = &gym[1..];
            sql.push_str(&format!(
                "INSERT INTO gyms (id, slug, name) VALUES ('{gym}', 'gym-{s}', 'Gym {s}');
                 INSERT INTO coaches (id, gym_id, full_name, email) VALUES ('1{rest}', '{gym}', 'Coach {s}', 'c@{s}.test');
                 INSERT INTO members (id, gym_id, full_name, email) VALUES ('2{rest}', '{gym}', 'Member {s}', 'm@{s}.test');
                 INSERT INTO subscriptions (gym_id, member_id, plan_id) VALUES ('{gym}', '2{rest}', 'basic');"
            ));
        }
        psql_exec(&db.url, &sql);
        let roles = Roles::for_db(&db);
        Some(Project { db, dir, roles })
    })
    .as_ref()
}

/// A copy of the project's database, as a superuser URL.
fn copy(p: &Project, label: &str) -> String {
    let name = format!("{}_{label}", p.db.name);
    psql_exec(
        &cluster().url,
        &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\"", p.db.name),
    );
    // The copies are broken on purpose: no login of another test may connect to them (verify
    // reads every database of the cluster the application's logins can connect to).
    psql_exec(
        &cluster().url,
        &format!("REVOKE CONNECT ON DATABASE \"{name}\" FROM PUBLIC"),
    );
    cluster().url_for(&name)
}

fn verify(p: &Project, url: &str) -> (i32, Value, String) {
    let out = tenantctl(&p.dir)
        .args([
            "--database-url",
            url,
            "--format",
            "json",
            "verify",
            "--fail-on",
            "warning",
        ])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// (id, object) of every failing check.
fn failing(json: &Value) -> Vec<(String, String)> {
    json["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "pass")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("object"))
        })
        .collect()
}

/// Gym B's subscriptions, counted by the superuser.
fn gym_b_subscriptions(url: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM subscriptions WHERE gym_id = '{GYM_B}'");
    query_strings(url, &sql)[0][0]
        .clone()
        .unwrap()
        .parse()
        .unwrap()
}

/// Run `sql` as the app role in gym A's context and commit (a write that must not reach gym B).
fn commit_as_app_in_gym_a(url: &str, app: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let mut pg = Pg::connect(url);
    pg.batch(&format!(
        "BEGIN; SET LOCAL ROLE \"{app}\"; SELECT set_config('tenantctl.gym_id', '{GYM_A}', true); {sql}; COMMIT;"
    ))
}

/// Rows of gym B that the app role sees in gym A's context through `relation`.
fn gym_b_rows_seen_from_gym_a(url: &str, app: &str, relation: &str) -> i64 {
    let mut pg = Pg::connect(url);
    let sql = format!("SELECT count(*) FROM {relation} WHERE gym_id = '{GYM_B}'");
    let rows = pg.as_role(app, Some(GYM_A), &sql).unwrap();
    rows[0][0].clone().unwrap().parse().unwrap()
}

#[test]
fn the_declared_model_verifies_clean_and_holds() {
    let Some(p) = project() else { return };
    let url = copy(p, "clean");
    let (code, json, err) = verify(p, &url);
    assert_eq!(code, 0, "{:?}\n{err}", failing(&json));
    // Every new kind was looked at.
    for id in [
        "grant.global-write",
        "drift.view",
        "drift.view-invoker",
        "drift.partition",
        "drift.extension",
    ] {
        let ran = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id);
        assert!(ran, "{id} did not run: {json}");
    }
    let app = &p.roles.app;
    // The app reads the global table and the view, sees only its own gym through both the
    // partitioned table and each partition, and cannot write the global table.
    let mut pg = Pg::connect(&url);
    let plans = pg
        .as_role(app, Some(GYM_A), "SELECT count(*) FROM plans")
        .unwrap();
    assert_eq!(plans[0][0].as_deref(), Some("2"));
    let own = pg
        .as_role(app, Some(GYM_A), "SELECT count(*) FROM member_plans")
        .unwrap();
    assert_eq!(own[0][0].as_deref(), Some("1"));
    for rel in [
        "member_plans",
        "subscriptions",
        "subscriptions_p0",
        "subscriptions_p1",
    ] {
        assert_eq!(gym_b_rows_seen_from_gym_a(&url, app, rel), 0, "{rel}");
    }
    let denied = commit_as_app_in_gym_a(&url, app, "DELETE FROM plans WHERE id = 'basic'");
    assert!(denied.is_err(), "the app deleted a plan");
    assert_eq!(gym_b_subscriptions(&url), 1);
    // The extension is where it was declared, and the default that calls it works for the app.
    let token = pg.as_role(
        app,
        Some(GYM_A),
        &format!("INSERT INTO subscriptions (member_id, plan_id) VALUES ('2{}', 'pro') RETURNING length(token)", &GYM_A[1..]),
    );
    assert_eq!(token.unwrap()[0][0].as_deref(), Some("32"));
}

/// A broken copy: the SQL that breaks it (role names substituted), the id verify must report on
/// the object, and the leak it opens (gym B's rows read or changed from gym A's context).
struct Break {
    name: &'static str,
    sql: &'static str,
    id: &'static str,
    object: &'static str,
    leak: Leak,
}

enum Leak {
    /// Gym B's rows the app sees through this relation in gym A's context.
    Reads(&'static str),
    /// A statement the app commits in gym A's context that deletes gym B's subscriptions.
    Deletes(&'static str),
}

const BREAKS: &[Break] = &[
    Break {
        name: "global_write",
        sql: "GRANT DELETE ON plans TO {app}",
        id: "grant.global-write",
        object: "table public.plans",
        // The cascade from subscriptions.plan_id runs as the table owner, outside RLS.
        leak: Leak::Deletes("DELETE FROM plans WHERE id = 'basic'"),
    },
    Break {
        name: "view_definer",
        sql: "ALTER VIEW member_plans OWNER TO {admin}; ALTER VIEW member_plans SET (security_invoker = false)",
        id: "drift.view-invoker",
        object: "view public.member_plans",
        leak: Leak::Reads("member_plans"),
    },
    Break {
        name: "view_redefined",
        // Qualified: the harness's superuser is named `tenantctl`, so "$user" in its
        // search_path is the helper schema, where an unqualified CREATE would land.
        sql: "CREATE FUNCTION public.all_member_plans() RETURNS TABLE (gym_id uuid, full_name text, title text)
                  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
                  AS $$ BEGIN RETURN QUERY SELECT s.gym_id, m.full_name, p.title FROM public.subscriptions s
                        JOIN public.members m ON m.id = s.member_id JOIN public.plans p ON p.id = s.plan_id; END $$;
              ALTER FUNCTION public.all_member_plans() OWNER TO {admin};
              CREATE OR REPLACE VIEW public.member_plans WITH (security_invoker = true, security_barrier = true)
                  AS SELECT * FROM public.all_member_plans()",
        id: "drift.view",
        object: "view public.member_plans",
        leak: Leak::Reads("member_plans"),
    },
    Break {
        name: "partition_rls_off",
        sql: "ALTER TABLE subscriptions_p0 DISABLE ROW LEVEL SECURITY; ALTER TABLE subscriptions_p1 DISABLE ROW LEVEL SECURITY",
        id: "rls.disabled",
        object: "table public.subscriptions_p1",
        leak: Leak::Reads("(SELECT gym_id FROM subscriptions_p0 UNION ALL SELECT gym_id FROM subscriptions_p1) s"),
    },
    Break {
        name: "partition_policy_open",
        sql: "ALTER POLICY subscriptions_tenant_isolation ON subscriptions_p0 USING (true);
              ALTER POLICY subscriptions_tenant_isolation ON subscriptions_p1 USING (true)",
        id: "drift.policy",
        object: "policy public.subscriptions_p0.subscriptions_tenant_isolation",
        leak: Leak::Reads("(SELECT gym_id FROM subscriptions_p0 UNION ALL SELECT gym_id FROM subscriptions_p1) s"),
    },
    Break {
        name: "partition_truncate",
        sql: "GRANT TRUNCATE ON subscriptions_p0, subscriptions_p1 TO {app}",
        id: "grant.dangerous",
        object: "table public.subscriptions_p0",
        leak: Leak::Deletes("TRUNCATE subscriptions_p0, subscriptions_p1"),
    },
];

#[test]
fn each_break_is_reported_with_its_id_and_leaks() {
    let Some(p) = project() else { return };
    let mut missed = Vec::new();
    for b in BREAKS {
        let url = copy(p, b.name);
        let sql = b
            .sql
            .replace("{app}", &format!("\"{}\"", p.roles.app))
            .replace("{admin}", &format!("\"{}\"", p.roles.admin));
        psql_exec(&url, &sql);
        let (code, json, err) = verify(p, &url);
        let found = failing(&json);
        let reported = found
            .iter()
            .any(|(id, obj)| id == b.id && obj.contains(b.object));
        if code != 1 || !reported {
            missed.push(format!(
                "{}: exit {code}, wanted {} on {}, got {found:?}\n{err}",
                b.name, b.id, b.object
            ));
        }
        let leaked = match b.leak {
            Leak::Reads(rel) => gym_b_rows_seen_from_gym_a(&url, &p.roles.app, rel) > 0,
            Leak::Deletes(stmt) => {
                commit_as_app_in_gym_a(&url, &p.roles.app, stmt).unwrap();
                gym_b_subscriptions(&url) == 0
            }
        };
        assert!(
            leaked,
            "{}: the break does not leak, so it proves nothing",
            b.name
        );
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

/// Drift that opens no leak by itself is still reported: a detached partition, a missing
/// extension.
#[test]
fn detached_partitions_and_missing_extensions_are_drift() {
    let Some(p) = project() else { return };
    for (name, sql, id) in [
        (
            "detached",
            "ALTER TABLE subscriptions DETACH PARTITION subscriptions_p1",
            "drift.partition",
        ),
        (
            "extension_moved",
            "CREATE SCHEMA other; ALTER EXTENSION pgcrypto SET SCHEMA other",
            "drift.extension",
        ),
    ] {
        let url = copy(p, name);
        psql_exec(&url, sql);
        let (code, json, err) = verify(p, &url);
        let ids: Vec<String> = failing(&json).into_iter().map(|(id, _)| id).collect();
        assert!(
            code == 1 && ids.iter().any(|i| i == id),
            "{name}: exit {code}, {ids:?}\n{err}"
        );
    }
}

/// With one tenant, verify creates two synthetic ones (rolled back): their rows in a table with a
/// foreign key to a global table take an existing key of it, and the probes run on them.
#[test]
fn synthetic_tenants_reference_global_rows() {
    let Some(p) = project() else { return };
    let url = copy(p, "one_tenant");
    psql_exec(
        &url,
        &format!(
            "DELETE FROM subscriptions WHERE gym_id = '{GYM_B}'; DELETE FROM members WHERE gym_id = '{GYM_B}';
             DELETE FROM coaches WHERE gym_id = '{GYM_B}'; DELETE FROM gyms WHERE id = '{GYM_B}'"
        ),
    );
    let (code, json, err) = verify(p, &url);
    assert_eq!(code, 0, "{json:#}\n{err}");
    assert_eq!(json["stats"]["tenants_probed"], 3, "{json:#}");
}

/// On PostgreSQL 14 (no security_invoker views) the migration that creates a view fails with
/// what to do, and applies nothing. Runs on the server the suite runs on: `.ci/run` and
/// `TENANTCTL_PG_BINDIR=<14's bindir>` reach the refusing branch.
#[test]
fn views_are_refused_before_postgresql_15() {
    let db = test_db("model_growth_pg14");
    let dir = write(&db);
    let out = tenantctl(&dir).arg("generate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tenantctl(&dir).arg("migrate").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if server_major(&db.url) >= 15 {
        assert!(out.status.success(), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("declared views need PostgreSQL 15 or later"),
        "{stderr}"
    );
    let tables = query_strings(
        &db.url,
        "SELECT count(*) FROM pg_class WHERE relname = 'gyms'",
    );
    assert_eq!(tables[0][0].as_deref(), Some("0"), "nothing applied");
}

/// As Neon's owner (a login that is not a superuser, with CREATEROLE, CREATEDB and BYPASSRLS,
/// owning the database), the grown model migrates: the trusted extension is created without a
/// superuser, in its declared schema, and the app can call it.
#[test]
fn a_non_superuser_owner_migrates_the_grown_model() {
    let db = test_db("model_growth_neon");
    let major = server_major(&db.url);
    let roles = Roles::for_db(&db);
    let (login, password) = (
        format!("{}neon", db.role_prefix),
        format!("pw-{}", db.role_prefix),
    );
    let mut sql = format!(
        "CREATE ROLE \"{login}\" LOGIN PASSWORD '{password}' CREATEROLE CREATEDB BYPASSRLS NOSUPERUSER;
         ALTER DATABASE \"{}\" OWNER TO \"{login}\";",
        db.name
    );
    if major < 16 {
        // On PG 14/15 only a superuser gives a role BYPASSRLS (as on Neon, where it exists).
        sql.push_str(&format!(
            "CREATE ROLE \"{}\" NOLOGIN BYPASSRLS;",
            roles.admin
        ));
    }
    psql_exec(&cluster().url, &sql);
    let dir = write(&db);
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(&login).unwrap();
    url.set_password(Some(&password)).unwrap();
    let config = dir.join("tenantctl.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&db.url, url.as_str());
    std::fs::write(&config, text).unwrap();
    if major < 15 {
        return; // the view refuses PG 14: views_are_refused_before_postgresql_15
    }
    generate_and_migrate(&dir);
    let ext = query_strings(
        &db.url,
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'",
    );
    assert_eq!(ext[0][0].as_deref(), Some("extensions"));
    let mut pg = Pg::connect(&db.url);
    let bytes = pg
        .as_role(
            &roles.app,
            Some(GYM_A),
            "SELECT length(extensions.gen_random_bytes(4))::text",
        )
        .unwrap();
    assert_eq!(bytes[0][0].as_deref(), Some("4"));
}
