//! The corpus of deliberately broken databases: each is a copy of the clean, seeded database
//! broken by SQL a real team could run, with a demonstration that it leaks (a query as the app in
//! gym A's context that reads, changes or creates gym B's rows) and the check ids `verify` must
//! report for it. One file per class of breakage; `every_broken_database_is_caught...` runs them.
//!
//! Placeholders in the SQL: `{app}`, `{admin}`, `{owner}` (quoted role names), `{db}` (quoted
//! database name; `{dbname}` unquoted), `{prefix}` (this run's role prefix), `{gym_a}`, `{gym_b}`
//! (the two gyms' ids), `{port}` (the cluster's port).

mod adversarial;
mod basic;
mod hardening;
mod probes;
mod reach;
mod realistic;
mod world;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{cluster, psql_exec, query_strings, tenantctl, test_db, TestDb};
use crate::support::{generate_and_migrate, write_project, Roles};

pub const GYM_A: &str = "00000000-0000-4000-8000-00000000000a";
pub const GYM_B: &str = "00000000-0000-4000-8000-00000000000b";

/// One migrated database with two seeded gyms (a row in every table each), cloned per case
/// with `CREATE DATABASE ... TEMPLATE`, which is much faster than migrating again.
pub struct Template {
    pub db: TestDb,
    pub dir: PathBuf,
    pub roles: Roles,
}

pub fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| make_template("verify_template"))
}

/// A second template with roles of its own, for the cases that change roles: roles are
/// cluster-wide, and the other tests must not see those changes.
pub fn role_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| make_template("verify_roles"))
}

/// A third, for the connecting role without the TEMP privilege (it is granted the app and admin
/// roles, which other tests' role checks would see).
pub fn notemp_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| make_template("verify_notemp"))
}

/// A fourth, for the documented least-privilege verify role (granted the app and admin roles).
pub fn least_privilege_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| make_template("verify_leastpriv"))
}

pub fn make_template(label: &str) -> Template {
    {
        let db = test_db(label);
        let dir = write_project(&db, true);
        generate_and_migrate(&dir);
        let mut sql = String::new();
        for (gym, s) in [(GYM_A, "a"), (GYM_B, "b")] {
            sql.push_str(&format!(
                "INSERT INTO gyms (id, slug, name) VALUES ('{gym}', 'gym-{s}', 'Gym {s}');
                 INSERT INTO coaches (id, gym_id, full_name, email) VALUES ('1{gym_rest}', '{gym}', 'Coach {s}', 'c@{s}.test');
                 INSERT INTO members (id, gym_id, full_name, email, home_coach_id) VALUES ('2{gym_rest}', '{gym}', 'Member {s}', 'm@{s}.test', '1{gym_rest}');
                 INSERT INTO members (gym_id, full_name, email) VALUES ('{gym}', 'Second {s}', 'm2@{s}.test');
                 INSERT INTO sessions (id, gym_id, title, author_coach_id, starts_at) VALUES ('3{gym_rest}', '{gym}', 'HIIT', '1{gym_rest}', now());
                 INSERT INTO bookings (gym_id, session_id, member_id) VALUES ('{gym}', '3{gym_rest}', '2{gym_rest}');",
                gym_rest = &gym[1..]
            ));
        }
        psql_exec(&db.url, &sql);
        let roles = Roles::for_db(&db);
        Template { db, dir, roles }
    }
}

/// A fresh copy of the template. Retried: the template's last session may still be exiting.
pub fn clone(label: &str) -> (String, String) {
    clone_of(template(), label)
}

/// A copy of `t` no login of another test can connect to: verify reads every other database of
/// the cluster the application's logins can connect to (CONNECT is PUBLIC's by default), and the
/// corpus's broken copies must not show in other tests' runs. The app and admin roles keep it.
pub fn clone_of(t: &Template, label: &str) -> (String, String) {
    let name = format!("{}_{label}", t.db.name);
    copy_of(t, &name);
    let r = &t.roles;
    psql_exec(
        &cluster().url,
        &format!(
            "REVOKE CONNECT ON DATABASE \"{name}\" FROM PUBLIC;
             GRANT CONNECT ON DATABASE \"{name}\" TO \"{}\", \"{}\"",
            r.app, r.admin
        ),
    );
    (cluster().url_for(&name), name)
}

/// `CREATE DATABASE name TEMPLATE t`, retried: the template's last session may still be exiting.
fn copy_of(t: &Template, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = std::panic::catch_unwind(|| {
            psql_exec(
                &cluster().url,
                &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{}\"", t.db.name),
            )
        });
        match result {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

pub fn verify(url: &str, extra: &[&str]) -> (i32, Value, String) {
    verify_in(template(), url, extra)
}

pub fn verify_in(t: &Template, url: &str, extra: &[&str]) -> (i32, Value, String) {
    let out = tenantctl(&t.dir)
        .args(["--database-url", url, "--format", "json", "verify"])
        .args(extra)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, json, stderr)
}

pub fn failing_ids(json: &Value) -> Vec<String> {
    json["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["status"] != "pass")
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn fill(sql: &str, db: &str) -> String {
    fill_for(template(), sql, db)
}

pub fn fill_for(t: &Template, sql: &str, db: &str) -> String {
    let r = &t.roles;
    sql.replace("{app}", &format!("\"{}\"", r.app))
        .replace("{admin}", &format!("\"{}\"", r.admin))
        .replace("{owner}", &format!("\"{}\"", r.owner))
        .replace("{db}", &format!("\"{db}\""))
        .replace("{prefix}", &t.db.role_prefix)
        .replace("{gym_a}", GYM_A)
        .replace("{gym_b}", GYM_B)
        .replace("{dbname}", db)
        .replace("{port}", &cluster().port.to_string())
}

/// One way isolation breaks: SQL run as superuser on a copy of the clean database, the check ids
/// verify must report, the demonstration that it leaks, whether warnings fail the gate for it,
/// and SQL that undoes changes to cluster-wide roles (shared by every copy).
pub struct Case {
    pub name: &'static str,
    pub sql: &'static str,
    pub expect: &'static [&'static str],
    /// Run in one transaction as `leak_as` (after `SET ROLE`; or connected as the login named by
    /// `login`, password `leak`), with gym A's context set; its last statement returns one
    /// boolean, true when gym B's rows were read, changed or created.
    pub leak: &'static str,
    pub leak_as: &'static str,
    pub login: &'static str,
    pub fail_on_warning: bool,
    pub undo: &'static str,
    /// Verify with `--app-url` as `login`: the probes log in as it.
    pub app_url: bool,
    /// SQL run in a second database of the cluster, `{dbname}_bi`, a copy of the template made
    /// after `sql` ran (CONNECT as the SQL leaves it), dropped after verify.
    pub sibling: &'static str,
}

pub const fn case(name: &'static str, sql: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        sql,
        expect,
        leak: "",
        leak_as: "{app}",
        login: "",
        fail_on_warning: false,
        undo: "",
        app_url: false,
        sibling: "",
    }
}

impl Case {
    /// The demonstration that this database leaks (see [`Case::leak`]).
    pub const fn leak(self, leak: &'static str) -> Case {
        Case { leak, ..self }
    }
    /// Demonstrate as this login (created by the case with `PASSWORD 'leak'`), not `SET ROLE`.
    pub const fn login(self, login: &'static str) -> Case {
        Case { login, ..self }
    }
    /// Verify with `--app-url` as the case's `login` (a leak only the real login shows).
    pub const fn probe_as_login(self) -> Case {
        Case {
            app_url: true,
            ..self
        }
    }
    pub const fn sibling(self, sibling: &'static str) -> Case {
        Case { sibling, ..self }
    }
    pub const fn undo(self, undo: &'static str) -> Case {
        Case { undo, ..self }
    }
    pub const fn fail_on_warning(self) -> Case {
        Case {
            fail_on_warning: true,
            ..self
        }
    }
}

/// Every corpus case: (broken databases that leak, changes that weaken the defences without a
/// leak of their own that a query can show: verify reports them all the same).
fn all_cases() -> (Vec<&'static Case>, Vec<&'static Case>) {
    let leaks: Vec<&Case> = [
        basic::CASES,
        probes::CASES,
        world::CASES,
        reach::CASES,
        adversarial::CASES,
    ]
    .into_iter()
    .flatten()
    .collect();
    let hardening = [hardening::CASES, world::HARDENING]
        .into_iter()
        .flatten()
        .collect();
    (leaks, hardening)
}

#[test]
fn every_broken_database_is_caught_with_its_check_id() {
    let (leaks, hardening) = all_cases();
    assert!(leaks.len() >= 96, "{} leaking cases", leaks.len());
    assert!(leaks.iter().all(|c| !c.leak.is_empty()));
    let (url, _) = clone("clean");
    let (code, json, stderr) = verify(&url, &["--fail-on", "warning"]);
    assert_eq!(code, 0, "the clean schema must pass: {json:#}\n{stderr}");
    assert!(failing_ids(&json).is_empty(), "{json:#}");

    // Cases that change cluster-wide roles run one at a time (every copy shares the roles);
    // the others run on a few threads, each on its own copy.
    // TENANTCTL_CORPUS_ONLY=<part of a name> runs only the matching cases (while writing one).
    let only = std::env::var("TENANTCTL_CORPUS_ONLY").unwrap_or_default();
    let (role_cases, db_cases): (Vec<&Case>, Vec<&Case>) = leaks
        .into_iter()
        .chain(hardening)
        .filter(|c| c.name.contains(only.as_str()))
        .partition(|c| !c.undo.is_empty());
    let mut missed: Vec<String> = role_cases.into_iter().filter_map(run_case).collect();
    let queue = std::sync::Mutex::new(db_cases);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let next = queue.lock().unwrap().pop();
                        let Some(c) = next else { break };
                        out.extend(run_case(c));
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            missed.extend(h.join().unwrap());
        }
    });
    assert!(
        missed.is_empty(),
        "broken databases not caught:\n{}",
        missed.join("\n")
    );
}

/// Break a copy of the clean database, show that it leaks, verify it; a description of what went
/// wrong (no leak, or a finding missed), if anything.
fn run_case(c: &Case) -> Option<String> {
    let t = if c.undo.is_empty() {
        template()
    } else {
        role_template()
    };
    let (url, name) = clone_of(t, c.name);
    exec_parts(&url, &fill_for(t, c.sql, &name));
    let sibling = format!("{name}_bi");
    if !c.sibling.is_empty() {
        copy_of(t, &sibling);
        psql_exec(&cluster().url_for(&sibling), &fill_for(t, c.sibling, &name));
    }
    let leaked = (!c.leak.is_empty()).then(|| demonstrate(t, c, &url, &name));
    let mut args: Vec<String> = Vec::new();
    if c.fail_on_warning {
        args.extend(["--fail-on".into(), "warning".into()]);
    }
    if c.app_url {
        args.extend(["--app-url".into(), login_url(t, c, &url, &name)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, json, stderr) = verify_in(t, &url, &args);
    if !c.sibling.is_empty() {
        // A sibling kept as a template (IS_TEMPLATE) cannot be dropped until it is not one.
        let admin = &cluster().url;
        psql_exec(
            admin,
            &format!("ALTER DATABASE \"{sibling}\" IS_TEMPLATE false"),
        );
        psql_exec(admin, &format!("DROP DATABASE \"{sibling}\" WITH (FORCE)"));
    }
    if !c.undo.is_empty() {
        exec_parts(&url, &fill_for(t, c.undo, &name));
    }
    if let Some(Err(e)) = leaked {
        return Some(format!("{}: the demonstration did not leak: {e}", c.name));
    }
    let ids = failing_ids(&json);
    let absent: Vec<&&str> = c
        .expect
        .iter()
        .filter(|id| !ids.iter().any(|i| i == *id))
        .collect();
    (code != 1 || !absent.is_empty()).then(|| {
        format!(
            "{}: exit {code}, missing {absent:?}, reported {ids:?}\n{stderr}",
            c.name
        )
    })
}

/// Run `sql` in parts split at lines `--;`, each its own implicit transaction: `ALTER SYSTEM`
/// cannot run in a transaction block, which a multi-statement batch is.
fn exec_parts(url: &str, sql: &str) {
    for part in sql.split("\n--;\n") {
        psql_exec(url, part);
    }
}

/// The URL of the case's login (password `leak`) on the database at `url`.
fn login_url(t: &Template, c: &Case, url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_username(&fill_for(t, c.login, db)).unwrap();
    u.set_password(Some("leak")).unwrap();
    u.to_string()
}

/// Run the case's leak demonstration as the app (or its login) in gym A's context, rolled back.
fn demonstrate(t: &Template, c: &Case, url: &str, db: &str) -> Result<(), String> {
    let (url, switch) = if c.login.is_empty() {
        (
            url.to_string(),
            format!("SET LOCAL ROLE {};", fill_for(t, c.leak_as, db)),
        )
    } else {
        (login_url(t, c, url, db), String::new())
    };
    let sql = format!(
        "BEGIN; {switch} SELECT set_config('tenantctl.gym_id', '{GYM_A}', true);\n{};\n",
        fill_for(t, c.leak, db)
    );
    let result = std::panic::catch_unwind(|| query_strings(&url, &sql));
    // query_strings connects afresh each time: the transaction ends with its connection.
    match result {
        Ok(rows) => match rows.last().and_then(|r| r.first()).cloned().flatten() {
            Some(v) if v == "t" => Ok(()),
            other => Err(format!("last value {other:?}, not t")),
        },
        Err(_) => Err("the demonstration failed with an error (printed above)".into()),
    }
}
