//! The declared world: objects attached to a tenant table (columns, constraints, indexes,
//! triggers, rules, inheritance, sequences, foreign keys) or reachable by the app that policies/
//! does not declare, each a leak shown as the app in gym A's context. Then the allow-list.

use super::{case, Case};

/// A DO block that runs `$1` (an insert) as the app and records, in a transaction-local
/// setting, whether it failed with `$2`: the last statement says whether it did.
macro_rules! fails_with {
    ($stmt:literal, $cond:literal) => {
        concat!(
            "DO $$BEGIN ",
            $stmt,
            "; EXCEPTION WHEN ",
            $cond,
            " THEN PERFORM set_config('leak.hit', 't', true); END$$;
             SELECT current_setting('leak.hit', true) = 't'"
        )
    };
}

pub const CASES: &[Case] = &[
    // Unique side channels: gym A learns that gym B has m@b.test from a unique violation.
    case(
        "world_unique_index_without_tenant",
        "CREATE UNIQUE INDEX members_email_everywhere ON public.members (email)",
        &["world.unique"],
    )
    .leak(fails_with!(
        "INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'Probe', 'm@b.test')",
        "unique_violation"
    )),
    case(
        "world_unique_constraint_without_tenant",
        "ALTER TABLE public.coaches ADD CONSTRAINT coaches_email_everywhere UNIQUE (email)",
        &["world.unique"],
    )
    .leak(fails_with!(
        "INSERT INTO public.coaches (gym_id, full_name, email) VALUES ('{gym_a}', 'Probe', 'c@b.test')",
        "unique_violation"
    )),
    case(
        "world_exclusion_without_tenant",
        "ALTER TABLE public.members ADD CONSTRAINT members_email_excl EXCLUDE USING btree (email WITH =)",
        &["world.unique"],
    )
    .leak(fails_with!(
        "INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'Probe', 'm@b.test')",
        "exclusion_violation"
    )),
    case(
        "world_unique_expression_index",
        "CREATE UNIQUE INDEX members_email_ci ON public.members (lower(email))",
        &["world.unique"],
    )
    .leak(fails_with!(
        "INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'Probe', 'M@B.test')",
        "unique_violation"
    )),
    // A CHECK and an index expression that call a SECURITY DEFINER function: it sees every gym.
    case(
        "world_check_calls_definer",
        "CREATE FUNCTION public.email_free(g uuid, e text) RETURNS boolean LANGUAGE sql IMMUTABLE SECURITY DEFINER
           SET search_path = pg_catalog AS $f$SELECT NOT EXISTS (SELECT FROM public.members WHERE email = e AND gym_id <> g)$f$;
         ALTER TABLE public.members ADD CONSTRAINT members_email_free CHECK (public.email_free(gym_id, email))",
        &["world.constraint"],
    )
    .leak(fails_with!(
        "INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'Probe', 'm@b.test')",
        "check_violation"
    )),
    case(
        "world_index_calls_definer",
        "CREATE FUNCTION public.taken(g uuid, e text) RETURNS text LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER
           SET search_path = pg_catalog AS $f$BEGIN
             -- (not while the index is built: the planner cannot read the index being built)
             IF current_setting('tenantctl.gym_id', true) IS NOT NULL THEN
               IF EXISTS (SELECT FROM public.members WHERE email = e AND gym_id <> g) THEN RAISE EXCEPTION 'taken'; END IF;
             END IF;
             RETURN e; END$f$;
         CREATE INDEX members_taken ON public.members (public.taken(gym_id, email))",
        &["world.index"],
    )
    .leak(fails_with!(
        "INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'Probe', 'm@b.test')",
        "raise_exception"
    )),
    // Columns whose value a SECURITY DEFINER function computes: gym B's e-mails in gym A's rows.
    case(
        "world_generated_column",
        concat!(
            "CREATE FUNCTION public.peek(g uuid) RETURNS text LANGUAGE sql IMMUTABLE SECURITY DEFINER
               SET search_path = pg_catalog AS $f$SELECT string_agg(email, ',') FROM public.members WHERE gym_id <> g$f$;",
            "ALTER TABLE public.members ADD COLUMN hint text GENERATED ALWAYS AS (public.peek(gym_id)) STORED"
        ),
        &["world.column"],
    )
    .leak("SELECT bool_or(hint LIKE '%m@b.test%') FROM public.members"),
    case(
        "world_default_calls_definer",
        "CREATE FUNCTION public.everyone() RETURNS text LANGUAGE sql VOLATILE SECURITY DEFINER
           SET search_path = pg_catalog AS $f$SELECT string_agg(email, ',') FROM public.coaches$f$;
         ALTER TABLE public.coaches ADD COLUMN colleagues text DEFAULT public.everyone()",
        &["world.column"],
    )
    .leak(
        "INSERT INTO public.coaches (gym_id, full_name, email) VALUES ('{gym_a}', 'New', 'n@a.test');
         SELECT colleagues LIKE '%c@b.test%' FROM public.coaches WHERE email = 'n@a.test'",
    ),
    // Triggers: a SECURITY DEFINER trigger function runs as its owner, whatever the app may do.
    case(
        "world_trigger_definer_reads",
        "CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$BEGIN
           NEW.full_name := (SELECT string_agg(email, ',') FROM public.members WHERE gym_id <> NEW.gym_id); RETURN NEW; END$f$;
         CREATE TRIGGER audit BEFORE INSERT ON public.members FOR EACH ROW EXECUTE FUNCTION public.audit()",
        &["world.trigger"],
    )
    .leak(
        "WITH i AS (INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'New', 'n@a.test') RETURNING full_name)
         SELECT bool_or(full_name LIKE '%m@b.test%') FROM i",
    ),
    case(
        "world_trigger_definer_writes",
        "CREATE FUNCTION public.close_others() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
           DECLARE n int; BEGIN
           UPDATE public.members SET status = 'cancelled' WHERE gym_id <> NEW.gym_id;
           GET DIAGNOSTICS n = ROW_COUNT; NEW.full_name := 'changed ' || n; RETURN NEW; END$f$;
         CREATE TRIGGER close_others BEFORE INSERT ON public.members FOR EACH ROW EXECUTE FUNCTION public.close_others()",
        &["world.trigger"],
    )
    .leak(
        "WITH i AS (INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'New', 'n@a.test') RETURNING full_name)
         SELECT bool_or(full_name LIKE 'changed %' AND full_name <> 'changed 0') FROM i",
    ),
    // An invoker trigger that copies every gym's new rows into a log the app can read.
    case(
        "world_trigger_copies_to_log",
        "CREATE TABLE public.member_log (email text);
         GRANT SELECT, INSERT ON public.member_log TO {app};
         CREATE FUNCTION public.log_member() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN
           INSERT INTO public.member_log VALUES (NEW.email); RETURN NULL; END$f$;
         CREATE TRIGGER log_member AFTER INSERT ON public.members FOR EACH ROW EXECUTE FUNCTION public.log_member();
         INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_b}', 'Late', 'late@b.test')",
        &["world.trigger", "world.relation"],
    )
    .leak("SELECT count(*) > 0 FROM public.member_log WHERE email = 'late@b.test'"),
    // Rules on relations that are not tenant tables: their actions run as the relation's owner.
    case(
        "world_rule_on_request_table",
        "CREATE TABLE public.requests (gym uuid);
         CREATE TABLE public.answers (email text);
         GRANT INSERT ON public.requests TO {app};
         GRANT SELECT ON public.answers TO {app};
         CREATE RULE fetch_answers AS ON INSERT TO public.requests
           DO ALSO INSERT INTO public.answers SELECT email FROM public.members WHERE gym_id = NEW.gym",
        &["world.rule"],
    )
    .leak(
        "INSERT INTO public.requests VALUES ('{gym_b}');
         SELECT count(*) > 0 FROM public.answers WHERE email = 'm@b.test'",
    ),
    // An invoker view (reads are the app's own) with an update rule that runs as the view's owner.
    case(
        "world_rule_on_invoker_view",
        "CREATE VIEW public.member_names WITH (security_invoker = true) AS SELECT id, full_name FROM public.members;
         CREATE RULE rename AS ON UPDATE TO public.member_names DO INSTEAD
           UPDATE public.members SET full_name = NEW.full_name WHERE id = NEW.id RETURNING members.id, members.full_name;
         GRANT SELECT, UPDATE ON public.member_names TO {app}",
        &["world.rule"],
    )
    .leak(
        "WITH u AS (UPDATE public.member_names SET id = '20000000-0000-4000-8000-00000000000b', full_name = 'Renamed'
                    WHERE id = '20000000-0000-4000-8000-00000000000a' RETURNING id)
         SELECT count(*) > 0 FROM u",
    ),
    // Inheritance: a parent shows its children's rows under its own policies (none here).
    case(
        "world_tenant_table_inherits",
        "CREATE TABLE public.people (email text);
         ALTER TABLE public.members INHERIT public.people;
         GRANT SELECT ON public.people TO {app}",
        &["world.inheritance", "world.relation"],
    )
    .leak("SELECT count(*) > 0 FROM public.people WHERE email = 'm@b.test'"),
    case(
        "world_child_of_tenant_table",
        "CREATE TABLE public.members_archive () INHERITS (public.members);
         INSERT INTO public.members_archive (gym_id, full_name, email) VALUES ('{gym_b}', 'Old', 'old@b.test');
         GRANT SELECT ON public.members_archive TO {app}",
        &["world.inheritance", "exposure.table"],
    )
    .leak("SELECT count(*) > 0 FROM public.members_archive WHERE gym_id = '{gym_b}'"),
    // A partition has no policies of its own: reached directly, it shows every row.
    case(
        "world_partition_without_rls",
        "CREATE TABLE public.visits (gym_id uuid NOT NULL, note text) PARTITION BY LIST (gym_id);
         CREATE TABLE public.visits_b PARTITION OF public.visits FOR VALUES IN ('{gym_b}');
         ALTER TABLE public.visits ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE POLICY visits_tenant ON public.visits TO {app}
           USING (gym_id = (SELECT tenantctl.current_gym_id())) WITH CHECK (gym_id = (SELECT tenantctl.current_gym_id()));
         INSERT INTO public.visits VALUES ('{gym_b}', 'secret');
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {app}",
        &["world.inheritance", "exposure.table"],
    )
    .leak("SELECT count(*) > 0 FROM public.visits_b WHERE gym_id = '{gym_b}'"),
    // Sequences shared by every tenant: a value tells how many rows the other gyms wrote.
    case(
        "world_serial_column",
        "ALTER TABLE public.members ADD COLUMN number bigserial;
         GRANT USAGE ON SEQUENCE public.members_number_seq TO {app}",
        &["world.sequence"],
    )
    .leak(
        "WITH i AS (INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_a}', 'New', 'n@a.test') RETURNING number)
         SELECT bool_and(number > (SELECT count(*) FROM public.members) + 1) FROM i",
    ),
    case(
        "world_identity_column",
        "ALTER TABLE public.coaches ADD COLUMN seq int GENERATED ALWAYS AS IDENTITY",
        &["world.sequence"],
    )
    // Gym A has two coaches after the insert; the new one is number 3.
    .leak(
        "INSERT INTO public.coaches (gym_id, full_name, email) VALUES ('{gym_a}', 'New', 'n@a.test');
         SELECT max(seq) > count(*) FROM public.coaches",
    ),
    case(
        "world_default_sequence",
        "CREATE SEQUENCE public.tickets;
         ALTER TABLE public.bookings ADD COLUMN ticket bigint DEFAULT nextval('public.tickets');
         GRANT USAGE ON SEQUENCE public.tickets TO {app}",
        &["world.sequence"],
    )
    .leak("SELECT nextval('public.tickets') > (SELECT count(*) FROM public.bookings) + 1"),
    // A foreign key into a tenant table: its check ignores RLS, so an insert tells existence.
    case(
        "world_foreign_key_existence",
        "CREATE TABLE public.lookups (member_id uuid REFERENCES public.members (id));
         GRANT INSERT ON public.lookups TO {app}",
        &["world.foreign-key"],
    )
    .leak(
        "DO $$BEGIN INSERT INTO public.lookups VALUES ('20000000-0000-4000-8000-00000000000b');
           PERFORM set_config('leak.hit', 't', true);
           EXCEPTION WHEN foreign_key_violation THEN NULL; END$$;
         SELECT current_setting('leak.hit', true) = 't'"
    ),
    // A view over a SECURITY DEFINER function: pg_depend ties it to no tenant table.
    case(
        "world_view_over_function",
        "CREATE FUNCTION public.all_emails() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER
           SET search_path = pg_catalog AS $f$SELECT email FROM public.members$f$;
         CREATE VIEW public.contacts AS SELECT e AS email FROM public.all_emails() e;
         GRANT SELECT ON public.contacts TO {app}",
        &["world.relation"],
    )
    .leak("SELECT count(*) > 0 FROM public.contacts WHERE email = 'm@b.test'"),
];

/// Changes that break the declared world without a leak a query can show as the app.
pub const HARDENING: &[Case] = &[
    // The subscriber gets every gym's rows; the app itself reads nothing more.
    case(
        "world_publication_of_table",
        "CREATE PUBLICATION members_out FOR TABLE public.members",
        &["world.publication"],
    ),
    case(
        "world_publication_all_tables",
        "CREATE PUBLICATION everything FOR ALL TABLES",
        &["world.publication"],
    ),
    // Whatever the publisher sends lands in the tables, outside RLS (not connected here).
    case(
        "world_subscription",
        "CREATE SUBSCRIPTION feed CONNECTION 'dbname=postgres' PUBLICATION members_out WITH (connect = false)",
        &["world.subscription"],
    ),
    case(
        "world_extra_plain_column",
        "ALTER TABLE public.members ADD COLUMN nickname text",
        &["world.column-extra"],
    )
    .fail_on_warning(),
    case(
        "world_extra_index",
        "CREATE INDEX members_gym_phone ON public.members (gym_id, phone)",
        &["world.index-extra"],
    )
    .fail_on_warning(),
];

/// Verify `url` (JSON) with the template's project plus one more policy file holding `allow`.
fn verify_allowing(url: &str, allow: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let t = super::template();
    let dir = crate::support::copy_project(&t.dir);
    std::fs::write(dir.path().join("policies/zz_allow.toml"), allow).unwrap();
    let out = crate::harness::tenantctl(dir.path())
        .args([
            "--database-url",
            url,
            "--format",
            "json",
            "verify",
            "--static-only",
        ])
        .args(extra)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.code().unwrap_or(-1), json)
}

fn entries<'a>(json: &'a serde_json::Value, id: &str) -> Vec<&'a serde_json::Value> {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id && c["status"] != "pass")
        .collect()
}

#[test]
fn an_allow_listed_finding_is_reported_as_allowed_and_does_not_fail_the_gate() {
    let (url, _) = super::clone("world_allow");
    crate::harness::psql_exec(
        &url,
        "CREATE UNIQUE INDEX members_email_everywhere ON public.members (email)",
    );
    let object = "index public.members_email_everywhere";
    // The wrong check id does not accept it.
    let wrong = format!(
        "[[verify.allow]]\nobject = \"{object}\"\ncheck = \"world.index\"\nreason = \"e-mails are global logins\"\n"
    );
    let (code, json) = verify_allowing(&url, &wrong, &[]);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(
        entries(&json, "world.unique")[0]["status"],
        "fail",
        "{json:#}"
    );
    assert_eq!(entries(&json, "verify.allow-unused").len(), 1, "{json:#}");

    let right = format!(
        "[[verify.allow]]\nobject = \"{object}\"\nreason = \"e-mails are global logins\"\n"
    );
    let (code, json) = verify_allowing(&url, &right, &["--fail-on", "warning"]);
    assert_eq!(code, 0, "{json:#}");
    let found = entries(&json, "world.unique");
    assert_eq!(found.len(), 1, "{json:#}");
    assert_eq!(found[0]["status"], "allowed");
    assert_eq!(found[0]["object"], object);
    let reason = found[0]["allowed"].as_str().unwrap();
    assert!(
        reason.starts_with("e-mails are global logins (") && reason.contains("zz_allow.toml:1:1"),
        "{reason}"
    );
    // The entry names no check: it accepts both findings on the index (world.unique, and
    // world.index-leading: it is not led by the tenant column either).
    assert_eq!(
        entries(&json, "world.index-leading")[0]["status"],
        "allowed"
    );
    assert_eq!(json["stats"]["allowed"], 2, "{json:#}");
    assert_eq!(json["stats"]["errors"], 0, "{json:#}");
}

#[test]
fn an_allow_list_entry_that_matches_nothing_is_a_warning() {
    let (url, _) = super::clone("world_allow_unused");
    let stale =
        "[[verify.allow]]\nobject = \"trigger public.members.gone\"\nreason = \"was reviewed\"\n";
    let (code, json) = verify_allowing(&url, stale, &[]);
    assert_eq!(
        code, 0,
        "a warning does not fail the default gate: {json:#}"
    );
    let unused = entries(&json, "verify.allow-unused");
    assert_eq!(unused.len(), 1, "{json:#}");
    assert_eq!(unused[0]["status"], "warn");
    assert!(unused[0]["message"]
        .as_str()
        .unwrap()
        .contains("zz_allow.toml:1:1"));
    let (code, _) = verify_allowing(&url, stale, &["--fail-on", "warning"]);
    assert_eq!(code, 1);
}

/// pg_stat_statements as installed (SELECT and EXECUTE to PUBLIC) shows every statement of the
/// application's one login, other tenants' included (round 4, leak 02: the shared cluster cannot
/// preload it to show the leak, so this is a verify test): `privilege.stat-statements`. Once
/// revoked from PUBLIC, nothing: an extension's own relations (pg_depend type 'e') are the
/// extension's, not undeclared relations of the app.
#[test]
fn pg_stat_statements_is_reported_until_revoked_and_its_relations_are_not_undeclared() {
    let (url, _) = super::clone("world_extension");
    crate::harness::psql_exec(&url, "CREATE EXTENSION pg_stat_statements SCHEMA public");
    let (code, json, stderr) = super::verify(&url, &["--static-only"]);
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    assert_eq!(
        super::failing_ids(&json),
        ["privilege.stat-statements"; 4],
        "{json:#}"
    );
    crate::harness::psql_exec(&url, STAT_STATEMENTS_REVOKED);
    let (code, json, stderr) = super::verify(&url, &["--static-only", "--fail-on", "warning"]);
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    assert!(super::failing_ids(&json).is_empty(), "{json:#}");
}

/// The fix of `privilege.stat-statements` (docs/verify.md), for pg_stat_statements in public.
pub const STAT_STATEMENTS_REVOKED: &str =
    "REVOKE SELECT ON public.pg_stat_statements, public.pg_stat_statements_info FROM PUBLIC;
     REVOKE EXECUTE ON FUNCTION public.pg_stat_statements(boolean), public.pg_stat_statements_info() FROM PUBLIC;
     GRANT SELECT ON public.pg_stat_statements, public.pg_stat_statements_info TO pg_read_all_stats;
     GRANT EXECUTE ON FUNCTION public.pg_stat_statements(boolean), public.pg_stat_statements_info() TO pg_read_all_stats";
