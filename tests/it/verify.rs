//! `tenantctl verify`: a corpus of deliberately broken databases, each reported with its check
//! id, the clean schema reported clean, the output formats, and exit 2 when it cannot run.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{cluster, psql_exec, query_strings, tenantctl, test_db, TestDb};
use crate::support::{generate_and_migrate, password_of, write_project, Pg, Roles};

const GYM_A: &str = "00000000-0000-4000-8000-00000000000a";
const GYM_B: &str = "00000000-0000-4000-8000-00000000000b";

/// One migrated database with two seeded gyms (a row in every table each), cloned per case
/// with `CREATE DATABASE ... TEMPLATE`, which is much faster than migrating again.
struct Template {
    db: TestDb,
    dir: PathBuf,
    roles: Roles,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| make_template("verify_template"))
}

/// A second template with roles of its own, for the cases that change roles: roles are
/// cluster-wide, and the other tests must not see those changes.
fn role_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| make_template("verify_roles"))
}

/// A third, for the connecting role without the TEMP privilege (it is granted the app and admin
/// roles, which other tests' role checks would see).
fn notemp_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| make_template("verify_notemp"))
}

fn make_template(label: &str) -> Template {
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
fn clone(label: &str) -> (String, String) {
    clone_of(template(), label)
}

fn clone_of(t: &Template, label: &str) -> (String, String) {
    let name = format!("{}_{label}", t.db.name);
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
    (cluster().url_for(&name), name)
}

fn verify(url: &str, extra: &[&str]) -> (i32, Value, String) {
    verify_in(template(), url, extra)
}

fn verify_in(t: &Template, url: &str, extra: &[&str]) -> (i32, Value, String) {
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

fn failing_ids(json: &Value) -> Vec<String> {
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

/// Ways that isolation breaks: SQL run as superuser on a copy of the clean database, the check
/// ids verify must report, whether warnings fail the gate for it, and SQL that undoes changes
/// to cluster-wide roles (shared by every copy).
struct Case {
    name: &'static str,
    sql: &'static str,
    expect: &'static [&'static str],
    fail_on_warning: bool,
    undo: &'static str,
}

const fn case(name: &'static str, sql: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        name,
        sql,
        expect,
        fail_on_warning: false,
        undo: "",
    }
}

const CORPUS: &[Case] = &[
    case("rls_not_forced", "ALTER TABLE public.members NO FORCE ROW LEVEL SECURITY", &["rls.not-forced"]),
    case("rls_disabled", "ALTER TABLE public.coaches DISABLE ROW LEVEL SECURITY", &["rls.disabled"]),
    case(
        "uncovered_table",
        "CREATE TABLE public.notes (id uuid PRIMARY KEY, gym_id uuid NOT NULL, body text);
         INSERT INTO public.notes VALUES (gen_random_uuid(), '00000000-0000-4000-8000-00000000000a', 'x');
         GRANT SELECT, INSERT ON public.notes TO {app}",
        &["exposure.table"],
    ),
    case(
        "always_true_policy",
        "CREATE POLICY leak ON public.members FOR SELECT TO {app} USING (true)",
        &["policy.always-true", "probe.foreign-rows", "probe.no-context"],
    ),
    case(
        "fail_open_disjunct",
        "ALTER POLICY members_tenant_isolation ON public.members
           USING (gym_id = (SELECT tenantctl.current_gym_id()) OR (SELECT tenantctl.current_gym_id()) IS NULL)",
        &["policy.fail-open", "drift.policy", "probe.no-context", "probe.empty-context"],
    ),
    case(
        "coalesce_fail_open",
        "ALTER POLICY coaches_tenant_isolation ON public.coaches
           USING (COALESCE(gym_id = (SELECT tenantctl.current_gym_id()), true))",
        &["policy.fail-open", "probe.no-context"],
    ),
    case(
        "missing_with_check",
        "DROP POLICY members_tenant_isolation ON public.members;
         CREATE POLICY members_tenant_isolation ON public.members FOR ALL TO {app}
           USING (gym_id = (SELECT tenantctl.current_gym_id()))",
        &["policy.missing-with-check"],
    ),
    case(
        "insert_without_isolation",
        "CREATE POLICY open_insert ON public.members FOR INSERT TO {app} WITH CHECK (true)",
        &["policy.always-true", "probe.cross-insert"],
    ),
    case(
        "tenant_id_movable",
        "DROP TRIGGER zzz_tenantctl_tenant_immutable ON public.bookings;
         DO $$DECLARE c text; BEGIN
           FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = 'public.bookings'::regclass AND contype = 'f' LOOP
             EXECUTE format('ALTER TABLE public.bookings DROP CONSTRAINT %I', c);
           END LOOP; END$$;
         CREATE POLICY see_all ON public.bookings FOR SELECT TO {app} USING (true);
         CREATE POLICY move ON public.bookings FOR UPDATE TO {app}
           USING (gym_id = (SELECT tenantctl.current_gym_id())) WITH CHECK (true);
         GRANT UPDATE (gym_id) ON public.bookings TO {app}",
        &["probe.tenant-id-change", "probe.foreign-rows"],
    ),
    case("app_owns_table", "ALTER TABLE public.coaches OWNER TO {app}", &["role.app-owns"]),
    Case {
        undo: "ALTER ROLE {app} NOBYPASSRLS",
        ..case("app_bypassrls", "ALTER ROLE {app} BYPASSRLS", &["role.app-bypassrls", "probe.foreign-rows"])
    },
    Case {
        undo: "REVOKE {admin} FROM {app}",
        ..case("app_member_of_admin", "GRANT {admin} TO {app}", &["role.app-membership"])
    },
    Case {
        undo: "REVOKE {owner} FROM {app}",
        ..case("app_member_of_owner", "GRANT {owner} TO {app}", &["role.app-membership"])
    },
    Case {
        undo: "ALTER ROLE {admin} BYPASSRLS",
        ..case("admin_bypass_missing", "ALTER ROLE {admin} NOBYPASSRLS", &["role.admin-bypass"])
    },
    case(
        "definer_view",
        "CREATE VIEW public.member_emails AS SELECT gym_id, email FROM public.members;
         GRANT SELECT ON public.member_emails TO {app}",
        &["exposure.view", "probe.view"],
    ),
    case(
        "definer_function",
        "CREATE FUNCTION public.all_members() RETURNS SETOF public.members LANGUAGE sql STABLE
           SECURITY DEFINER SET search_path = pg_catalog AS 'SELECT * FROM public.members'",
        &["exposure.function", "probe.function"],
    ),
    case(
        "definer_function_search_path",
        "CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'",
        &["exposure.function-search-path"],
    ),
    case("truncate_grant", "GRANT TRUNCATE ON public.members TO {app}", &["grant.dangerous", "drift.grant"]),
    case("references_to_public", "GRANT REFERENCES, TRIGGER ON public.sessions TO PUBLIC", &["grant.dangerous"]),
    case(
        "materialized_view",
        "CREATE MATERIALIZED VIEW public.member_counts AS SELECT gym_id, count(*) FROM public.members GROUP BY gym_id;
         GRANT SELECT ON public.member_counts TO {app}",
        &["exposure.materialized-view", "probe.view"],
    ),
    case(
        "foreign_table",
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER tc_remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'nowhere');
         CREATE FOREIGN TABLE public.remote_members (id uuid, gym_id uuid) SERVER tc_remote;
         GRANT SELECT ON public.remote_members TO {app}",
        &["exposure.foreign-table"],
    ),
    case(
        "mutable_tenant_id",
        "DROP TRIGGER zzz_tenantctl_tenant_immutable ON public.members;
         GRANT UPDATE (gym_id) ON public.members TO {app}",
        &["drift.trigger", "grant.tenant-column-update"],
    ),
    case(
        "default_context",
        "ALTER DATABASE {db} SET tenantctl.gym_id = '00000000-0000-4000-8000-00000000000a'",
        &["config.default-context", "probe.no-context"],
    ),
    case(
        "context_not_via_function",
        "ALTER POLICY members_tenant_isolation ON public.members
           USING (gym_id = current_setting('tenantctl.gym_id', true)::uuid)
           WITH CHECK (gym_id = current_setting('tenantctl.gym_id', true)::uuid)",
        &["policy.context", "drift.policy"],
    ),
    case(
        "context_function_fails_open",
        "CREATE OR REPLACE FUNCTION tenantctl.current_gym_id() RETURNS uuid LANGUAGE sql STABLE
           AS $$ SELECT COALESCE(NULLIF(current_setting('tenantctl.gym_id', true), '')::uuid, '00000000-0000-4000-8000-00000000000a') $$",
        &["drift.function", "probe.no-context"],
    ),
    case(
        "changed_expression",
        "ALTER POLICY members_tenant_isolation ON public.members
           USING (gym_id = (SELECT tenantctl.current_gym_id()) AND status <> 'cancelled')",
        &["drift.policy"],
    ),
    case(
        "undeclared_policy",
        "CREATE POLICY extra ON public.bookings AS RESTRICTIVE FOR SELECT TO {app} USING (status <> 'cancelled')",
        &["drift.policy-undeclared"],
    ),
    case("dropped_index", "DROP INDEX public.members_gym_id_status_idx", &["drift.index"]),
    Case {
        fail_on_warning: true,
        ..case(
            "context_per_row",
            "ALTER POLICY members_tenant_isolation ON public.members
               USING (gym_id = tenantctl.current_gym_id()) WITH CHECK (gym_id = tenantctl.current_gym_id())",
            &["policy.context-per-row"],
        )
    },
    Case {
        fail_on_warning: true,
        ..case(
            "several_permissive_policies",
            "CREATE POLICY members_select_again ON public.members FOR SELECT TO {app}
               USING (gym_id = (SELECT tenantctl.current_gym_id()))",
            &["policy.multiple-permissive"],
        )
    },
    Case {
        fail_on_warning: true,
        ..case(
            "no_tenant_index",
            "CREATE TABLE public.notes (id uuid, gym_id uuid NOT NULL, body text);
             ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
             ALTER TABLE public.notes FORCE ROW LEVEL SECURITY;
             CREATE POLICY notes_tenant ON public.notes TO {app}
               USING (gym_id = (SELECT tenantctl.current_gym_id())) WITH CHECK (gym_id = (SELECT tenantctl.current_gym_id()));
             GRANT SELECT ON public.notes TO {app}",
            &["perf.tenant-index"],
        )
    },
    // A declared table whose every index led by the tenant column is gone: a tenant query can
    // only scan it (the plan check, as the app role in a tenant context, beside the drift).
    Case {
        fail_on_warning: true,
        ..case(
            "declared_table_without_tenant_led_index",
            "ALTER TABLE public.members DROP CONSTRAINT members_home_coach_id_fkey;
             ALTER TABLE public.coaches DROP CONSTRAINT coaches_tenant_key CASCADE, DROP CONSTRAINT coaches_gym_id_email_key;
             DROP INDEX public.coaches_gym_id_full_name_idx",
            &["perf.plan-tenant-index", "drift.constraint"],
        )
    },
    // The context function as tenantctl wrote it before helpers revision 2: not inlinable.
    Case {
        fail_on_warning: true,
        ..case(
            "context_function_with_settings",
            "ALTER FUNCTION tenantctl.current_gym_id() SET search_path = pg_catalog, pg_temp",
            &["perf.context-function"],
        )
    },
    // The context function of an older tenantctl (unqualified `::uuid`) is safe only with its
    // pinned search_path: without it, each caller's own `uuid` type could stand in.
    case(
        "context_function_old_body_unpinned",
        "CREATE OR REPLACE FUNCTION tenantctl.current_gym_id() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
           AS $tc$ SELECT NULLIF(pg_catalog.current_setting('tenantctl.gym_id', true), '')::uuid $tc$",
        &["drift.function"],
    ),
    // ... and with it, as databases migrated before V2 have it, a warning only.
    Case {
        fail_on_warning: true,
        ..case(
            "context_function_as_before_v2",
            "CREATE OR REPLACE FUNCTION tenantctl.current_gym_id() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE
               SET search_path = pg_catalog, pg_temp
               AS $tc$ SELECT NULLIF(pg_catalog.current_setting('tenantctl.gym_id', true), '')::uuid $tc$",
            &["perf.context-function"],
        )
    },
    // Any other setting on a helper function is drift: a default tenant, another search_path.
    case(
        "context_function_default_tenant",
        "ALTER FUNCTION tenantctl.current_gym_id() SET tenantctl.gym_id = '00000000-0000-4000-8000-00000000000a'",
        &["drift.function"],
    ),
    case(
        "trigger_function_search_path",
        "ALTER FUNCTION tenantctl.forbid_tenant_change() SET search_path = public, pg_catalog",
        &["drift.function"],
    ),
    // Owners: a tenant table owned by a superuser (RLS never applies to it, FORCE or not) or by
    // the admin; the helper schema and context function owned by someone else.
    case("owner_superuser", "ALTER TABLE public.members OWNER TO CURRENT_USER", &["drift.owner"]),
    case(
        "owner_admin_and_helpers",
        "ALTER TABLE public.coaches OWNER TO {admin};
         ALTER SCHEMA tenantctl OWNER TO {admin};
         ALTER FUNCTION tenantctl.current_gym_id() OWNER TO {admin}",
        &["drift.owner"],
    ),
    case(
        "rule_on_tenant_table",
        "CREATE RULE wipe AS ON INSERT TO public.members
           DO ALSO DELETE FROM public.members WHERE gym_id <> NEW.gym_id",
        &["drift.rule"],
    ),
    case(
        "trigger_after_immutability",
        "CREATE FUNCTION public.mv() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN NEW.gym_id := (SELECT id FROM public.gyms WHERE slug = 'gym-b'); RETURN NEW; END$$;
         CREATE TRIGGER zzzz_move BEFORE UPDATE ON public.members FOR EACH ROW EXECUTE FUNCTION public.mv()",
        &["drift.trigger-late"],
    ),
    Case {
        fail_on_warning: true,
        ..case(
            "undeclared_trigger",
            "CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
             CREATE TRIGGER audit AFTER INSERT ON public.coaches FOR EACH ROW EXECUTE FUNCTION public.audit()",
            &["drift.trigger-undeclared"],
        )
    },
    case(
        "definer_function_dynamic_sql",
        "CREATE FUNCTION public.count_all(t text) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog AS
           $$DECLARE n bigint; BEGIN EXECUTE 'select count(*) from public.' || t INTO n; RETURN n; END$$",
        &["exposure.function"],
    ),
    // A declared table's name in another schema, RLS forced, with a policy that fails open in a
    // way the text heuristics miss.
    case(
        "undeclared_table_other_schema",
        "CREATE SCHEMA shadow;
         CREATE TABLE shadow.members (id uuid PRIMARY KEY, gym_id uuid NOT NULL, email text);
         CREATE INDEX ON shadow.members (gym_id);
         INSERT INTO shadow.members SELECT id, gym_id, email FROM public.members;
         ALTER TABLE shadow.members ENABLE ROW LEVEL SECURITY;
         ALTER TABLE shadow.members FORCE ROW LEVEL SECURITY;
         CREATE POLICY leak ON shadow.members TO {app}
           USING (gym_id = (SELECT tenantctl.current_gym_id()) OR gym_id IS NOT NULL)
           WITH CHECK (gym_id = (SELECT tenantctl.current_gym_id()));
         GRANT USAGE ON SCHEMA shadow TO {app};
         GRANT SELECT ON shadow.members TO {app}",
        &["exposure.undeclared"],
    ),
    // A copy with the tenant column renamed: nothing in the catalog ties it to tenant data.
    Case {
        fail_on_warning: true,
        ..case(
            "renamed_tenant_copy",
            "CREATE SCHEMA shadow;
             CREATE TABLE shadow.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
             GRANT USAGE ON SCHEMA shadow TO {app};
             GRANT SELECT ON shadow.people TO {app}",
            &["exposure.undeclared-other"],
        )
    },
    Case {
        undo: "ALTER ROLE {app} NOCREATEROLE",
        ..case("app_createrole", "ALTER ROLE {app} CREATEROLE", &["role.app-createrole"])
    },
    Case {
        undo: "DROP ROLE \"{prefix}creator\"",
        ..case(
            "app_createrole_via_membership",
            "CREATE ROLE \"{prefix}creator\" NOLOGIN CREATEROLE; GRANT \"{prefix}creator\" TO {app}",
            &["role.app-createrole"],
        )
    },
    Case {
        undo: "REVOKE pg_read_server_files FROM {app}",
        ..case("app_member_of_predefined", "GRANT pg_read_server_files TO {app}", &["role.app-membership"])
    },
    Case {
        undo: "DROP ROLE \"{prefix}applogin2\"",
        ..case(
            "login_role_bypassrls",
            "CREATE ROLE \"{prefix}applogin2\" LOGIN BYPASSRLS IN ROLE {app}",
            &["role.app-grantee"],
        )
    },
    Case {
        undo: "DROP ROLE \"{prefix}applogin3\"",
        ..case(
            "login_role_also_admin",
            "CREATE ROLE \"{prefix}applogin3\" LOGIN IN ROLE {app}, {admin}",
            &["role.app-grantee"],
        )
    },
];

fn fill(sql: &str, db: &str) -> String {
    fill_for(template(), sql, db)
}

fn fill_for(t: &Template, sql: &str, db: &str) -> String {
    let r = &t.roles;
    sql.replace("{app}", &format!("\"{}\"", r.app))
        .replace("{admin}", &format!("\"{}\"", r.admin))
        .replace("{owner}", &format!("\"{}\"", r.owner))
        .replace("{db}", &format!("\"{db}\""))
        .replace("{prefix}", &t.db.role_prefix)
}

#[test]
fn every_broken_database_is_caught_with_its_check_id() {
    assert!(CORPUS.len() >= 15);
    let (url, _) = clone("clean");
    let (code, json, stderr) = verify(&url, &["--fail-on", "warning"]);
    assert_eq!(code, 0, "the clean schema must pass: {json:#}\n{stderr}");
    assert!(failing_ids(&json).is_empty(), "{json:#}");

    // Cases that change cluster-wide roles run one at a time (every copy shares the roles);
    // the others run on a few threads, each on its own copy.
    let (role_cases, db_cases): (Vec<&Case>, Vec<&Case>) =
        CORPUS.iter().partition(|c| !c.undo.is_empty());
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

/// Break a copy of the clean database, verify it; a description of what was missed, if anything.
fn run_case(c: &Case) -> Option<String> {
    let t = if c.undo.is_empty() {
        template()
    } else {
        role_template()
    };
    let (url, name) = clone_of(t, c.name);
    psql_exec(&url, &fill_for(t, c.sql, &name));
    let args: &[&str] = if c.fail_on_warning {
        &["--fail-on", "warning"]
    } else {
        &[]
    };
    let (code, json, stderr) = verify_in(t, &url, args);
    if !c.undo.is_empty() {
        psql_exec(&url, &fill_for(t, c.undo, &name));
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
