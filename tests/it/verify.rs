//! `tenantctl verify`: exemptions that must pass, the output formats, selecting what is probed,
//! and exit 2 when it cannot run. The corpus of broken databases is in `corpus/`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::corpus::{
    clone, clone_of, failing_ids, fill, fill_for, notemp_template, template, verify, verify_in,
    GYM_A, GYM_B,
};
use crate::harness::{cluster, psql_exec, query_strings, tenantctl, test_db};
use crate::support::{generate_and_migrate, password_of, write_project, Pg};

/// Undeclared relations are findings, except a security_invoker view (over security_invoker
/// views only): the app role's own rights and the policies apply beneath it.
#[test]
fn security_invoker_view_over_tenant_tables_passes() {
    let (url, name) = clone("invoker_view");
    psql_exec(
        &url,
        &fill(
            "CREATE VIEW public.member_emails WITH (security_invoker = true) AS
               SELECT m.gym_id, m.email, c.full_name AS coach FROM public.members m
               LEFT JOIN public.coaches c ON c.id = m.home_coach_id;
             GRANT SELECT ON public.member_emails TO {app}",
            &name,
        ),
    );
    let (code, json, stderr) = verify(&url, &["--fail-on", "warning"]);
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    psql_exec(
        &url,
        "ALTER VIEW public.member_emails SET (security_invoker = false)",
    );
    let (code, json, _) = verify(&url, &[]);
    assert_eq!(code, 1);
    let ids = failing_ids(&json);
    assert!(
        ids.iter().any(|i| i == "exposure.undeclared") && ids.iter().any(|i| i == "exposure.view"),
        "{ids:?}"
    );
}

#[test]
fn json_output_has_the_documented_shape_and_no_password() {
    let (url, _) = clone("json");
    let (code, json, stderr) = verify(&url, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["passed"], true);
    let db = json["database"].as_str().unwrap();
    assert!(
        !db.contains(&password_of(&url)) && db.contains("***"),
        "{db}"
    );
    for c in json["checks"].as_array().unwrap() {
        for key in [
            "id", "severity", "status", "object", "tenant", "message", "hint",
        ] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
    }
    let stats = &json["stats"];
    assert_eq!(stats["tenants_probed"], 2);
    assert_eq!(stats["errors"], 0);
    assert!(stats["checks"].as_u64().unwrap() > 100, "{stats}");
    assert!(stats["seconds"].is_number());
}

#[test]
fn junit_output_is_valid_xml_with_one_failure_per_finding() {
    let (url, name) = clone("junit");
    psql_exec(
        &url,
        "ALTER TABLE public.members NO FORCE ROW LEVEL SECURITY",
    );
    let out = tenantctl(&template().dir)
        .args(["--database-url", &url, "--format", "junit", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{name}");
    let text = String::from_utf8(out.stdout).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("JUnit output parses as XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("failures"), Some("1"));
    let failures: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].attribute("type"), Some("rls.not-forced"));
    assert!(failures[0]
        .attribute("message")
        .unwrap()
        .contains("public.members"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 2);
    let cases = root
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(root.attribute("tests"), Some(cases.to_string().as_str()));
}

#[test]
fn other_commands_refuse_junit() {
    let t = template();
    let out = tenantctl(&t.dir)
        .args(["--format", "junit", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only for `tenantctl verify`"));
}

/// The README's main command builds a database with no tenant: verify probes synthetic ones,
/// passes, leaves nothing behind, and fails once RLS is no longer forced on members.
#[test]
fn readme_database_passes_then_fails_without_force() {
    let db = test_db("verify_readme");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let out = tenantctl(&dir).args(["verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("verify PASSED") && stdout.contains("synthetic"),
        "{stdout}"
    );
    let left = query_strings(&db.url, "SELECT count(*)::text FROM gyms");
    assert_eq!(
        left[0][0].as_deref(),
        Some("0"),
        "synthetic tenants survived"
    );

    psql_exec(&db.url, "ALTER TABLE members NO FORCE ROW LEVEL SECURITY");
    let out = tenantctl(&dir).args(["verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("rls.not-forced") && stdout.contains("public.members"),
        "{stdout}"
    );
}

#[test]
fn tenant_and_sample_select_what_is_probed() {
    let (url, _) = clone("select");
    let (code, json, stderr) = verify(&url, &["--tenant", "gym-a"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["stats"]["tenants_probed"], 1);
    let (code, json, _) = verify(&url, &["--sample", "1"]);
    assert_eq!(code, 0);
    assert_eq!(json["stats"]["tenants_probed"], 1);
    let (code, _, stderr) = verify(&url, &["--tenant", "no-such-gym"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no-such-gym"), "{stderr}");
}

#[test]
fn probe_single_tenant_reports_leaks_for_one_tenant() {
    let (url, name) = clone("single");
    let t = template();
    let mut project = tenantctl::settings::Project::load(&t.dir.join("tenantctl.toml")).unwrap();
    project.config.database.url = Some(url.clone());
    let schema = project.schema().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gym: uuid::Uuid = GYM_A.parse().unwrap();
    let clean = rt
        .block_on(tenantctl::verify::probe_single_tenant(
            &url.parse().unwrap(),
            &schema,
            gym,
        ))
        .unwrap();
    assert!(clean.checks > 10 && clean.failures.is_empty(), "{clean:?}");
    psql_exec(
        &url,
        &fill(
            "CREATE POLICY leak ON public.coaches FOR SELECT TO {app} USING (true)",
            &name,
        ),
    );
    let leaky = rt
        .block_on(tenantctl::verify::probe_single_tenant(
            &url.parse().unwrap(),
            &schema,
            gym,
        ))
        .unwrap();
    assert!(
        leaky
            .failures
            .iter()
            .any(|f| f.id == "probe.foreign-rows" && f.tenant.as_deref() == Some(GYM_A)),
        "{leaky:?}"
    );
}

/// A role that may not SET ROLE to the app role: exit 2, naming the GRANT to run.
#[test]
fn missing_set_role_names_the_grant() {
    let (url, name) = clone("setrole");
    let r = &template().roles;
    let user = format!("{}migrator", template().db.role_prefix);
    let password = "verify-test-password-1";
    psql_exec(
        &url,
        &format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'; GRANT CONNECT ON DATABASE \"{name}\" TO \"{user}\""),
    );
    let mut u = url::Url::parse(&url).unwrap();
    u.set_username(&user).unwrap();
    u.set_password(Some(password)).unwrap();
    let (code, _, stderr) = verify(u.as_str(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "GRANT \"{}\", \"{}\" TO \"{user}\"",
            r.app, r.admin
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(password), "{stderr}");
}

/// Without the TEMP privilege on the database the write probes cannot run in verify's
/// session-temporary function: they are sent one statement each, and still pass on the clean
/// schema and catch an INSERT policy that lets a tenant write another tenant's rows.
#[test]
fn write_probes_without_temp_privilege_fall_back_to_statements() {
    let t = notemp_template();
    let (url, name) = clone_of(t, "notemp");
    let user = format!("{}verifier", t.db.role_prefix);
    let password = "verify-test-password-2";
    psql_exec(
        &url,
        &fill_for(
            t,
            &format!(
                "CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}';
                 GRANT {{app}}, {{admin}} TO \"{user}\";
                 GRANT CONNECT ON DATABASE {{db}} TO \"{user}\";
                 REVOKE TEMP ON DATABASE {{db}} FROM PUBLIC;
                 REVOKE TEMP ON DATABASE {{db}} FROM {{app}}"
            ),
            &name,
        ),
    );
    let mut u = url::Url::parse(&url).unwrap();
    u.set_username(&user).unwrap();
    u.set_password(Some(password)).unwrap();
    let probe_failures = |json: &Value| -> Vec<String> {
        failing_ids(json)
            .into_iter()
            .filter(|i| i.starts_with("probe."))
            .collect()
    };
    let passed = |json: &Value, id: &str| {
        json["checks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["id"] == id && c["status"] == "pass"))
    };
    // The declared expressions are compared on scratch tables, which need TEMP as well:
    // only the probes are asserted on here.
    let (code, json, stderr) = verify_in(t, u.as_str(), &[]);
    assert_ne!(code, 2, "{stderr}");
    assert_eq!(json["stats"]["tenants_probed"], 2, "{json:#}");
    assert!(probe_failures(&json).is_empty(), "{json:#}");
    assert!(passed(&json, "probe.cross-insert"), "{json:#}");
    assert!(passed(&json, "probe.tenant-id-change"), "{json:#}");

    psql_exec(
        &url,
        &fill_for(
            t,
            "CREATE POLICY open_insert ON public.members FOR INSERT TO {app} WITH CHECK (true)",
            &name,
        ),
    );
    let (code, json, stderr) = verify_in(t, u.as_str(), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        probe_failures(&json)
            .iter()
            .any(|i| i == "probe.cross-insert"),
        "{json:#}"
    );
}

/// Backends terminated mid-run: exit 2, never a pass.
#[test]
fn a_connection_lost_mid_run_exits_2() {
    let (url, name) = clone("killed");
    psql_exec(
        &url,
        "INSERT INTO gyms (id, slug, name) SELECT gen_random_uuid(), 'g-' || i, 'G' || i FROM generate_series(1, 300) i;
         INSERT INTO members (gym_id, full_name, email) SELECT id, 'M', slug || '@x' FROM gyms;",
    );
    // Block writes to members (SHARE conflicts with the ROW EXCLUSIVE lock every INSERT,
    // UPDATE and DELETE takes, even to prepare, not with reads): the probe workers wait on it,
    // so the probes are still running (however fast they are) when the backends go.
    let mut locker = Pg::connect(&url);
    locker
        .batch("BEGIN; LOCK TABLE public.members IN SHARE MODE")
        .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tenantctl"))
        .current_dir(&template().dir)
        .args(["--database-url", &url, "--format", "json", "verify"])
        .env_remove("CI")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    // Wait until verify is probing (several connections, one waiting on the lock), then cut
    // every one of them (the locker's too).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = 0;
    while !waiter.is_finished() && Instant::now() < deadline {
        let n = query_strings(
            &cluster().url,
            &format!(
                "SELECT count(*)::text, count(*) FILTER (WHERE wait_event_type = 'Lock')::text \
                 FROM pg_stat_activity WHERE datname = '{name}' AND application_name = 'tenantctl'"
            ),
        );
        let count = |k: usize| n[0][k].as_deref().unwrap_or("0").parse::<u32>().unwrap();
        if (count(0) >= 3 && count(1) >= 1) || killed > 0 {
            query_strings(
                &cluster().url,
                &format!(
                    "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ),
            );
            killed += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().unwrap();
    assert!(
        killed > 0,
        "verify (pid {pid}) finished before its connections could be cut: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"passed\": true"));
}

/// The fast path probes many tenants in one transaction, one after another. A leak that only
/// one tenant in the middle of a batch gets is reported for that tenant alone, and what one
/// tenant's probes wrote never reaches the next tenant's: with every tenant able to DELETE any
/// row, each one's DELETE of another tenant's row still finds that row (were the first DELETE
/// to survive, the next tenants' would touch nothing and pass).
#[test]
fn batched_probes_attribute_leaks_and_undo_each_tenants_writes() {
    let (url, name) = clone("batched");
    psql_exec(
        &url,
        "INSERT INTO gyms (id, slug, name) SELECT ('00000000-0000-4000-9000-' || lpad(i::text, 12, '0'))::uuid, 'batch-' || i, 'B' || i FROM generate_series(1, 40) i;
         INSERT INTO members (gym_id, full_name, email) SELECT id, 'M', slug || '@x' FROM gyms WHERE slug LIKE 'batch-%';",
    );
    let leaky = "00000000-0000-4000-9000-000000000023";
    let probe_failures = |json: &Value| -> Vec<(String, String)> {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] != "pass" && c["id"].as_str().unwrap().starts_with("probe."))
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_string(),
                    c["tenant"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };

    psql_exec(
        &url,
        &fill(
            &format!(
                "CREATE POLICY one_leaks ON public.members FOR SELECT TO {{app}} USING (tenantctl.current_gym_id() = '{leaky}')"
            ),
            &name,
        ),
    );
    let (code, json, stderr) = verify(&url, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(json["stats"]["tenants_probed"], 42, "{json:#}");
    let failures = probe_failures(&json);
    assert!(
        failures.contains(&("probe.foreign-rows".to_string(), leaky.to_string())),
        "{failures:?}"
    );
    assert!(
        failures.iter().all(|(_, tenant)| tenant == leaky),
        "only the leaky tenant: {failures:?}"
    );

    psql_exec(
        &url,
        &fill(
            "DROP POLICY one_leaks ON public.members;
             CREATE POLICY open_select ON public.members FOR SELECT TO {app} USING (true);
             CREATE POLICY open_delete ON public.members FOR DELETE TO {app} USING (true);",
            &name,
        ),
    );
    let (code, json, stderr) = verify(&url, &[]);
    assert_eq!(code, 1, "{stderr}");
    let deleted: std::collections::BTreeSet<String> = probe_failures(&json)
        .into_iter()
        .filter(|(id, _)| id == "probe.cross-delete")
        .map(|(_, tenant)| tenant)
        .collect();
    assert_eq!(deleted.len(), 42, "every tenant's DELETE hit: {deleted:?}");
    let left = query_strings(&url, "SELECT count(*)::text FROM members");
    assert_eq!(left[0][0].as_deref(), Some("44"), "verify deleted rows");
}

/// A column named like one of the probe function's variables (`tc_probe_...`) would be ambiguous
/// inside it: verify then probes statement by statement, and still passes the clean schema and
/// catches a leak.
#[test]
fn a_column_named_like_the_probe_variables_still_gets_probed() {
    let (url, name) = clone("clash");
    psql_exec(
        &url,
        "ALTER TABLE public.members ADD COLUMN tc_probe_tenant uuid, ADD COLUMN tc_probe_foreign bigint",
    );
    let (code, json, stderr) = verify(&url, &[]);
    assert_ne!(code, 2, "{stderr}");
    let probe_failures: Vec<String> = failing_ids(&json)
        .into_iter()
        .filter(|i| i.starts_with("probe."))
        .collect();
    assert!(probe_failures.is_empty(), "{json:#}");
    assert_eq!(json["stats"]["tenants_probed"], 2, "{json:#}");

    psql_exec(
        &url,
        &fill(
            "CREATE POLICY open_select ON public.members FOR SELECT TO {app} USING (true)",
            &name,
        ),
    );
    let (code, json, stderr) = verify(&url, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        failing_ids(&json).iter().any(|i| i == "probe.foreign-rows"),
        "{json:#}"
    );
}

/// The URL of `user` (password `pw`) on the database at `url`.
fn as_user(url: &str, user: &str, pw: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_username(user).unwrap();
    u.set_password(Some(pw)).unwrap();
    u.to_string()
}

/// A probe that errors because of the database's own objects (a policy raising, infinite
/// recursion in a policy) is a finding (exit 1) reported beside every static finding.
#[test]
fn probe_errors_caused_by_the_database_are_findings_beside_the_static_ones() {
    for (label, policy) in [
        (
            "probe_raises",
            "CREATE FUNCTION public.refuse() RETURNS boolean LANGUAGE plpgsql
               AS $$BEGIN RAISE EXCEPTION 'refused by a hotfix'; END$$;
             CREATE POLICY refuse ON public.members AS RESTRICTIVE TO {app} USING (public.refuse())",
        ),
        (
            "probe_recursion",
            "CREATE POLICY recurse ON public.members AS RESTRICTIVE TO {app}
               USING (EXISTS (SELECT FROM public.members m WHERE m.id = members.id))",
        ),
    ] {
        let (url, name) = clone(label);
        let sql = format!("{policy}; ALTER TABLE public.coaches NO FORCE ROW LEVEL SECURITY");
        psql_exec(&url, &fill(&sql, &name));
        let (code, json, stderr) = verify(&url, &[]);
        assert_eq!(code, 1, "{label}: {json:#}\n{stderr}");
        let ids = failing_ids(&json);
        for id in ["probe.error", "rls.not-forced", "drift.policy-undeclared"] {
            assert!(ids.iter().any(|i| i == id), "{label}: {id} missing: {ids:?}");
        }
        assert!(json["probes"]["error"].is_null(), "{label}: {json:#}");
    }
}

/// Probes that cannot run (here: the application's login cannot authenticate) exit 2, and the
/// static findings are reported all the same.
#[test]
fn probes_that_cannot_run_exit_2_with_the_static_findings() {
    let (url, _) = clone("probe_cannot_run");
    psql_exec(
        &url,
        "ALTER TABLE public.coaches NO FORCE ROW LEVEL SECURITY",
    );
    let wrong = as_user(&url, "no_such_login_x", "wrong");
    let (code, json, stderr) = verify(&url, &["--app-url", &wrong]);
    assert_eq!(code, 2, "{json:#}\n{stderr}");
    assert!(
        failing_ids(&json).iter().any(|i| i == "rls.not-forced"),
        "{json:#}"
    );
    let error = json["probes"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot connect as the application's login"),
        "{error}"
    );
    assert!(
        !error.contains("wrong") && !stderr.contains(":wrong@"),
        "{stderr}"
    );
    assert!(stderr.contains("error: probes failed to run"), "{stderr}");
}

/// A probe that runs longer than --probe-timeout is cancelled and reported, not waited for.
#[test]
fn a_probe_that_times_out_is_a_finding() {
    let (url, name) = clone("probe_timeout");
    psql_exec(
        &url,
        &fill(
            "CREATE POLICY slow ON public.members AS RESTRICTIVE TO {app}
               USING (pg_sleep(0.5) IS NOT NULL)",
            &name,
        ),
    );
    let (code, json, stderr) = verify(&url, &["--probe-timeout", "100ms"]);
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    let timeouts: Vec<&Value> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "probe.timeout" && c["status"] == "fail")
        .collect();
    assert!(!timeouts.is_empty(), "{json:#}");
    assert!(timeouts
        .iter()
        .all(|c| c["object"] == "table public.members"));
    assert_eq!(json["probes"]["statement_timeout_ms"], 100);
}

/// --read-only runs no write probe: a trigger that counts every write (a sequence is not
/// transactional: the rollback does not undo it) sees none, and the report says what is unproven.
#[test]
fn read_only_runs_no_write_probe_and_says_what_it_cannot_prove() {
    let (url, name) = clone("read_only");
    psql_exec(
        &url,
        &fill(
            "CREATE SEQUENCE public.writes_seen;
             GRANT USAGE ON SEQUENCE public.writes_seen TO PUBLIC;
             CREATE FUNCTION public.count_write() RETURNS trigger LANGUAGE plpgsql
               AS $$BEGIN PERFORM nextval('public.writes_seen'); RETURN COALESCE(NEW, OLD); END$$;
             CREATE TRIGGER count_write BEFORE INSERT OR UPDATE OR DELETE ON public.members
               FOR EACH ROW EXECUTE FUNCTION public.count_write()",
            &name,
        ),
    );
    let seen = || {
        query_strings(
            &url,
            "SELECT last_value::text || is_called FROM public.writes_seen",
        )
    };
    let (code, json, stderr) = verify(&url, &["--read-only"]);
    // The counting trigger and its sequence's grant are themselves undeclared: the only findings.
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    assert_eq!(
        failing_ids(&json),
        ["world.trigger", "privilege.undeclared"],
        "{json:#}"
    );
    assert_eq!(seen()[0][0].as_deref(), Some("1false"), "a write probe ran");
    assert_eq!(json["probes"]["read_only"], true);
    let notes = json["probes"]["notes"].to_string();
    assert!(
        notes.contains("probe.cross-update") && notes.contains("not proven"),
        "{notes}"
    );
    let ran = |json: &Value, id: &str| {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id)
    };
    assert!(!ran(&json, "probe.cross-insert") && ran(&json, "probe.foreign-rows"));
    // Without it, the same trigger sees the write probes.
    let (code, json, _) = verify(&url, &[]);
    assert_eq!(code, 1);
    assert_ne!(seen()[0][0].as_deref(), Some("1false"));
    assert!(ran(&json, "probe.cross-insert"));
}

/// --app-url: the probes log in as the application's login (also from TENANTCTL_APP_URL);
/// verify refuses an operator role or a login not granted the app role (exit 2); without it,
/// the report names the logins it did not probe as.
#[test]
fn app_url_probes_as_the_login_and_refuses_operator_roles() {
    // A template of its own: its logins granted the app role must not see the other tests'
    // copies of the shared template (privilege.other-database), nor they its logins.
    // (and no copy of it: the template itself would be one).
    let t = &crate::corpus::make_template("verify_app_url");
    let (url, name) = (t.db.url.clone(), t.db.name.clone());
    let login = format!("{}app_url_login", t.db.role_prefix);
    let stray = format!("{}app_url_stray", t.db.role_prefix);
    psql_exec(
        &url,
        &fill_for(
            t,
            &format!(
                "CREATE ROLE \"{login}\" LOGIN PASSWORD 'pw' IN ROLE {{app}};
                 CREATE ROLE \"{stray}\" LOGIN PASSWORD 'pw'"
            ),
            &name,
        ),
    );
    let (code, json, stderr) = verify_in(t, &url, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["probes"]["real_login"], false);
    assert!(json["probes"]["logins"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == login.as_str()));
    assert!(
        json["probes"]["notes"].to_string().contains("SET ROLE"),
        "{json:#}"
    );

    let out = tenantctl(&t.dir)
        .env("TENANTCTL_APP_URL", as_user(&url, &login, "pw"))
        .args(["--database-url", &url, "--format", "json", "verify"])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    assert_eq!(json["probes"]["real_login"], true);
    assert_eq!(json["probes"]["acted_as"], login.as_str());

    for (target, says) in [
        (url.clone(), "operator role"),
        (as_user(&url, &stray, "pw"), "not granted"),
    ] {
        let (code, json, stderr) = verify_in(t, &url, &["--app-url", &target]);
        assert_eq!(code, 2, "{json:#}");
        assert!(stderr.contains(says), "{stderr}");
    }
    // A login declared an operator in tenantctl.toml is refused too.
    let project = crate::support::copy_project(&t.dir);
    let toml = std::fs::read_to_string(t.dir.join("tenantctl.toml")).unwrap();
    std::fs::write(
        project.path().join("tenantctl.toml"),
        format!("{toml}\n[verify]\noperators = [\"{login}\"]\n"),
    )
    .unwrap();
    let out = tenantctl(project.path())
        .args(["--database-url", &url, "verify"])
        .args(["--app-url", &as_user(&url, &login, "pw")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[verify] operators"), "{stderr}");
    psql_exec(
        &url,
        &format!("DROP ROLE \"{login}\"; DROP ROLE \"{stray}\""),
    );
}

/// SARIF 2.1.0 as GitHub code scanning requires it: version, $schema, rules with ids, results
/// with ruleId, level, message and a physical location at the declaring policy file's line.
#[test]
fn sarif_output_has_the_shape_github_requires() {
    let (url, _) = clone("sarif");
    psql_exec(
        &url,
        "ALTER TABLE public.members NO FORCE ROW LEVEL SECURITY",
    );
    let t = template();
    let out = tenantctl(&t.dir)
        .args(["--database-url", &url, "--format", "sarif", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &log["runs"][0];
    assert_eq!(run["properties"]["schema_version"], 1);
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"rls.not-forced") && rules.contains(&"probe.error"));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{results:#?}");
    for r in results {
        assert!(rules.contains(&r["ruleId"].as_str().unwrap()));
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap()));
        assert!(!r["message"]["text"].as_str().unwrap().is_empty());
        let loc = &r["locations"][0]["physicalLocation"];
        let uri = loc["artifactLocation"]["uri"].as_str().unwrap();
        let line = loc["region"]["startLine"].as_u64().unwrap() as usize;
        let text = std::fs::read_to_string(t.dir.join(uri)).unwrap();
        assert_eq!(r["ruleId"], "rls.not-forced");
        assert_eq!(
            text.lines().nth(line - 1),
            Some("[tables.members]"),
            "{uri}:{line}"
        );
    }
}

/// `verify --explain ID` needs no project and no database.
#[test]
fn explain_describes_a_check_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = tenantctl(dir.path())
        .args(["verify", "--explain", "rls.not-forced"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "FORCE ROW LEVEL SECURITY",
        "[[verify.allow]]",
        "check = \"rls.not-forced\"",
    ] {
        assert!(text.contains(part), "{part} missing:\n{text}");
    }
    let out = tenantctl(dir.path())
        .args(["verify", "--explain", "no.such-check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The documented least-privilege role (docs/verify.md) runs verify clean: LOGIN, no
/// superuser or other attribute, granted the app and admin roles, CONNECT on the database.
#[test]
fn verify_runs_clean_as_the_least_privilege_role() {
    let t = crate::corpus::least_privilege_template();
    let (url, name) = clone_of(t, "leastpriv");
    let user = format!("{}least_verifier", t.db.role_prefix);
    psql_exec(
        &url,
        &fill_for(
            t,
            &format!(
                "CREATE ROLE \"{user}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD 'pw';
                 GRANT {{app}}, {{admin}} TO \"{user}\";
                 REVOKE ALL ON DATABASE {{db}} FROM PUBLIC;
                 GRANT CONNECT, TEMP ON DATABASE {{db}} TO \"{user}\", {{app}}"
            ),
            &name,
        ),
    );
    let (code, json, stderr) = verify_in(t, &as_user(&url, &user, "pw"), &["--fail-on", "warning"]);
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    assert_eq!(json["stats"]["tenants_probed"], 2);
}

/// With fewer than two tenants the probes as the application's login are skipped with a
/// warning (synthetic tenants live only in verify's own transaction).
#[test]
fn app_url_with_fewer_than_two_tenants_warns_that_the_login_was_not_probed() {
    let db = test_db("verify_login_skip");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let login = format!("{}skip_login", db.role_prefix);
    let app = format!("{}gym_app", db.role_prefix);
    psql_exec(
        &db.url,
        &format!("CREATE ROLE \"{login}\" LOGIN PASSWORD 'pw' IN ROLE \"{app}\""),
    );
    let app_url = as_user(&db.url, &login, "pw");
    let run = |extra: &[&str]| {
        let out = tenantctl(&dir)
            .args(["--database-url", &db.url, "--format", "json", "verify"])
            .args(["--app-url", &app_url])
            .args(extra)
            .output()
            .unwrap();
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), json)
    };
    let (code, json) = run(&[]);
    psql_exec(&db.url, &format!("DROP ROLE \"{login}\""));
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json["probes"]["real_login"], false);
    let skipped: Vec<&Value> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "probe.real-login-skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{json:#}");
    assert_eq!(skipped[0]["status"], "warn");
    assert_eq!(json["stats"]["synthetic_tenants"], true);
}

/// Piped, the human report keeps to 100 columns: the findings table is fitted and the notes
/// wrap (issue 11: a 183 to 326 column table before).
#[test]
fn piped_table_output_keeps_to_100_columns() {
    let (url, _) = clone("width");
    psql_exec(
        &url,
        "CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
         CREATE TRIGGER audit_with_a_rather_long_name AFTER INSERT ON public.coaches
           FOR EACH ROW EXECUTE FUNCTION public.audit()",
    );
    let out = tenantctl(&template().dir)
        .args(["--database-url", &url, "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("world.trigger") && stdout.contains("note:"),
        "{stdout}"
    );
    let wide: Vec<&str> = stdout.lines().filter(|l| l.chars().count() > 100).collect();
    assert!(wide.is_empty(), "{wide:#?}");
}

/// Roles are cluster-wide: a copy of this database in the same cluster (a BI copy made with
/// CREATE DATABASE ... TEMPLATE, RLS switched off there) is reachable by the application's login,
/// which reads gym B's rows in it; verify reports the copy (adversarial review, round 2).
#[test]
fn a_copy_in_the_same_cluster_the_login_can_reach_is_reported() {
    let t = &crate::corpus::make_template("verify_sibling");
    let login = format!("{}sibling_login", t.db.role_prefix);
    psql_exec(
        &t.db.url,
        &format!(
            "CREATE ROLE \"{login}\" LOGIN PASSWORD 'leak' IN ROLE \"{}\"",
            t.roles.app
        ),
    );
    let (code, json, stderr) = verify_in(t, &t.db.url, &[]);
    assert_eq!(
        code, 0,
        "alone in the cluster it is clean: {json:#}\n{stderr}"
    );

    let (bi_url, bi) = clone_of(t, "bi");
    psql_exec(
        &bi_url,
        "ALTER TABLE public.members DISABLE ROW LEVEL SECURITY",
    );
    let seen = query_strings(
        &as_user(&bi_url, &login, "leak"),
        &format!("SELECT count(*) FROM public.members WHERE gym_id = '{GYM_B}'"),
    );
    assert_ne!(
        seen[0][0].as_deref(),
        Some("0"),
        "the login reads gym B's rows in the copy"
    );

    let (code, json, stderr) = verify_in(t, &t.db.url, &[]);
    assert_eq!(code, 1, "{stderr}");
    let found = json["checks"].as_array().unwrap().iter().any(|c| {
        c["id"] == "privilege.other-database"
            && c["status"] == "fail"
            && c["object"] == format!("database {bi}").as_str()
    });
    assert!(found, "{json:#}");
    psql_exec(&cluster().url, &format!("DROP DATABASE \"{bi}\""));
    psql_exec(&t.db.url, &format!("DROP ROLE \"{login}\""));
}

/// Probe findings name their tenant by slug as well as by id (issue 11: UUIDs only before).
#[test]
fn probe_findings_name_the_tenant_by_slug() {
    let (url, _) = clone("slugs");
    psql_exec(
        &url,
        &fill(
            "CREATE POLICY leak ON public.members FOR SELECT TO {app} USING (true)",
            "",
        ),
    );
    let (code, json, stderr) = verify(&url, &[]);
    assert_eq!(code, 1, "{stderr}");
    let named: Vec<(&str, &str)> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "probe.foreign-rows")
        .map(|c| {
            (
                c["tenant"].as_str().unwrap(),
                c["tenant_slug"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(named.contains(&(GYM_A, "gym-a")), "{named:?}\n{stderr}");
    let out = tenantctl(&template().dir)
        .args(["--database-url", &url, "verify"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("gym-a"));
}

/// A database of the cluster the application's login can connect to but the role verify
/// connects as cannot read is an error (what it exposes is unknown), and passes once verify can
/// read it and finds nothing exposed there.
#[test]
fn another_database_verify_cannot_read_is_reported() {
    let t = &crate::corpus::make_template("verify_uninspected");
    let p = &t.db.role_prefix;
    let (login, verifier) = (format!("{p}unread_login"), format!("{p}unread_verifier"));
    psql_exec(
        &t.db.url,
        &fill_for(
            t,
            &format!(
                "CREATE ROLE \"{login}\" LOGIN PASSWORD 'leak' IN ROLE {{app}};
                 CREATE ROLE \"{verifier}\" LOGIN PASSWORD 'pw' IN ROLE {{app}}, {{admin}}"
            ),
            &t.db.name,
        ),
    );
    let other = format!("{}_unread", t.db.name);
    psql_exec(&cluster().url, &format!("CREATE DATABASE \"{other}\""));
    psql_exec(
        &cluster().url,
        &format!(
            "REVOKE CONNECT ON DATABASE \"{other}\" FROM PUBLIC;
             GRANT CONNECT ON DATABASE \"{other}\" TO \"{login}\""
        ),
    );
    let as_verifier = as_user(&t.db.url, &verifier, "pw");
    let reported = |json: &Value, id: &str| {
        json["checks"].as_array().unwrap().iter().any(|c| {
            c["id"] == id && c["status"] == "fail" && c["object"] == format!("database {other}")
        })
    };
    let (code, json, stderr) = verify_in(t, &as_verifier, &[]);
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    assert!(
        reported(&json, "privilege.other-database-uninspected"),
        "{json:#}"
    );

    psql_exec(
        &cluster().url,
        &format!("GRANT CONNECT ON DATABASE \"{other}\" TO \"{verifier}\""),
    );
    let (code, json, stderr) = verify_in(t, &as_verifier, &[]);
    assert_eq!(code, 0, "read, and empty: {json:#}\n{stderr}");

    psql_exec(&cluster().url, &format!("DROP DATABASE \"{other}\""));
    psql_exec(
        &t.db.url,
        &format!(
            "DROP OWNED BY \"{login}\", \"{verifier}\"; DROP ROLE \"{login}\", \"{verifier}\""
        ),
    );
}
