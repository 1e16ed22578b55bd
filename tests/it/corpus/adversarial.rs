//! Leaks written by an independent adversarial review (a reviewer who had not read the code,
//! given the schema and the brief to break isolation past the gate), each of which the gate of
//! the time passed (`verify` exit 0 on 15 of them, warnings only on 4 more). Member `2…b` /
//! session `3…b` and `m@b.test` belong to gym B only.

use super::{case, Case};

macro_rules! login_case {
    ($name:literal, $login:literal, $sql:expr, $expect:expr, $leak:expr) => {
        case($name, $sql, $expect)
            .leak($leak)
            .login(concat!("{prefix}", $login))
            .undo(concat!(
                "DROP OWNED BY \"{prefix}",
                $login,
                "\"; DROP ROLE \"{prefix}",
                $login,
                "\""
            ))
    };
}

/// Round 1's dblink reporting server (a BYPASSRLS reporting login, a dblink server with a user
/// mapping FOR PUBLIC, USAGE on the server to PUBLIC), then `$tail`; gym_app counts gym B's
/// members through it.
macro_rules! dblink_reporting_case {
    ($name:literal, $tail:literal) => {
        case(
            $name,
            concat!(
                "CREATE ROLE \"{prefix}adv_bi\" LOGIN BYPASSRLS PASSWORD 'bi_pw';
         GRANT pg_read_all_data TO \"{prefix}adv_bi\";
         GRANT CONNECT ON DATABASE {db} TO \"{prefix}adv_bi\";
         CREATE EXTENSION dblink SCHEMA public;
         CREATE SERVER reporting FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host '127.0.0.1', port '{port}', dbname '{dbname}');
         CREATE USER MAPPING FOR PUBLIC SERVER reporting OPTIONS (user '{prefix}adv_bi', password 'bi_pw');
         GRANT USAGE ON FOREIGN SERVER reporting TO PUBLIC",
                $tail
            ),
            &["privilege.undeclared"],
        )
        .leak(
            "SELECT n > 0 FROM public.dblink('reporting',
           'SELECT count(*) FROM public.members WHERE gym_id = ''{gym_b}''') AS t(n bigint)",
        )
        .undo("DROP OWNED BY \"{prefix}adv_bi\"; DROP ROLE \"{prefix}adv_bi\"")
    };
}

/// A sibling's members with RLS off and the app's own grants revoked (it reads them by
/// PUBLIC's grants only: the role template, PUBLIC-connectable, already holds the app's).
macro_rules! rls_off_app_revoked {
    () => {
        "ALTER TABLE public.members DISABLE ROW LEVEL SECURITY;
         REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {app}, {admin};
         REVOKE ALL ON SCHEMA tenantctl FROM {app}, {admin};
         REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tenantctl FROM {app}, {admin};
         "
    };
}

pub const CASES: &[Case] = &[
    login_case!(
        "adv_login_createrole",
        "adv1",
        "CREATE ROLE \"{prefix}adv1\" LOGIN CREATEROLE PASSWORD 'leak' IN ROLE {app}",
        &["role.closure-attribute"],
        "GRANT {admin} TO \"{prefix}adv1\"; SET LOCAL ROLE {admin};
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'"
    ),
    case(
        "adv_login_via_deployer_to_owner",
        "CREATE ROLE \"{prefix}adv_deployers\" NOLOGIN NOINHERIT;
         GRANT {owner} TO \"{prefix}adv_deployers\";
         CREATE ROLE \"{prefix}adv2\" LOGIN PASSWORD 'leak' IN ROLE {app}, \"{prefix}adv_deployers\"",
        &["role.app-grantee"],
    )
    .leak(
        "SET LOCAL ROLE {owner}; ALTER TABLE public.members NO FORCE ROW LEVEL SECURITY;
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
    )
    .login("{prefix}adv2")
    .undo("DROP ROLE \"{prefix}adv2\"; DROP ROLE \"{prefix}adv_deployers\""),
    // Unique across tenants: ON CONFLICT DO NOTHING inserts nothing, so gym B has that e-mail.
    case(
        "adv_global_unique_email",
        "CREATE UNIQUE INDEX members_email_lower_uniq ON public.members (lower(email))",
        &["world.unique"],
    )
    .leak(
        "WITH ins AS (INSERT INTO public.members (full_name, email) VALUES ('Probe', 'M@B.TEST')
                      ON CONFLICT DO NOTHING RETURNING id)
         SELECT (SELECT count(*) FROM ins) = 0
            AND NOT EXISTS (SELECT 1 FROM public.members WHERE lower(email) = 'm@b.test')",
    ),
    case(
        "adv_definer_identity_merge_trigger",
        "CREATE FUNCTION public.members_fill_profile() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog, public AS $$
         BEGIN
           SELECT m.phone, m.date_of_birth, m.full_name INTO NEW.phone, NEW.date_of_birth, NEW.full_name
             FROM public.members m WHERE lower(m.email) = lower(NEW.email) ORDER BY m.created_at LIMIT 1;
           NEW.full_name := coalesce(NEW.full_name, 'unknown');
           RETURN NEW;
         END $$;
         REVOKE ALL ON FUNCTION public.members_fill_profile() FROM PUBLIC;
         CREATE TRIGGER members_fill_profile BEFORE INSERT ON public.members
           FOR EACH ROW EXECUTE FUNCTION public.members_fill_profile()",
        &["world.trigger"],
    )
    .leak(
        "WITH ins AS (INSERT INTO public.members (full_name, email) VALUES ('x', 'm@b.test') RETURNING full_name)
         SELECT EXISTS (SELECT 1 FROM ins WHERE full_name <> 'x')",
    ),
    case(
        "adv_audit_log_jsonb",
        "CREATE SCHEMA audit;
         CREATE TABLE audit.events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), tbl text, op text, row_data jsonb);
         CREATE FUNCTION audit.log_row() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog AS $$
         BEGIN INSERT INTO audit.events (tbl, op, row_data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW)); RETURN NULL; END $$;
         CREATE TRIGGER audit_members AFTER INSERT OR UPDATE ON public.members FOR EACH ROW EXECUTE FUNCTION audit.log_row();
         GRANT USAGE ON SCHEMA audit TO {app};
         GRANT SELECT, INSERT ON audit.events TO {app};
         GRANT USAGE ON SEQUENCE audit.events_id_seq TO {app};
         INSERT INTO audit.events (tbl, op, row_data) SELECT 'members', 'INSERT', to_jsonb(m) FROM public.members m",
        &["world.trigger"],
    )
    .leak("SELECT count(*) > 0 FROM audit.events WHERE row_data->>'gym_id' = '{gym_b}'"),
    // A rule's action runs as the rule's table owner, here the superuser who made it.
    case(
        "adv_rule_on_helper_table",
        "CREATE TABLE public.cancellation_requests (member_id uuid NOT NULL, requested_at timestamptz DEFAULT now());
         CREATE RULE apply_cancellation AS ON INSERT TO public.cancellation_requests
           DO ALSO UPDATE public.members SET status = 'cancelled' WHERE id = NEW.member_id;
         GRANT INSERT ON public.cancellation_requests TO {app}",
        &["world.rule"],
    )
    .leak(
        "INSERT INTO public.cancellation_requests (member_id) VALUES ('20000000-0000-4000-8000-00000000000b');
         RESET ROLE; SELECT status = 'cancelled' FROM public.members WHERE id = '20000000-0000-4000-8000-00000000000b'",
    ),
    case(
        "adv_truncate_via_group_role",
        "CREATE ROLE \"{prefix}adv_maint\" NOLOGIN;
         GRANT TRUNCATE ON public.bookings, public.sessions TO \"{prefix}adv_maint\";
         GRANT \"{prefix}adv_maint\" TO {app}",
        &["grant.dangerous"],
    )
    .leak("TRUNCATE public.bookings; RESET ROLE; SELECT count(*) = 0 FROM public.bookings WHERE gym_id = '{gym_b}'")
    .undo("DROP OWNED BY \"{prefix}adv_maint\"; DROP ROLE \"{prefix}adv_maint\""),
    dblink_reporting_case!("adv_dblink_reporting_server", ""),
    case(
        "adv_large_object_export",
        "SELECT lo_from_bytea(424242, convert_to((SELECT string_agg(gym_id || ',' || email, E'\\n') FROM public.members), 'UTF8'));
         GRANT SELECT ON LARGE OBJECT 424242 TO {app}",
        &["privilege.undeclared"],
    )
    .leak("SELECT position('{gym_b}' in convert_from(lo_get(424242), 'UTF8')) > 0"),
    case(
        "adv_inheritance_parent",
        "CREATE TABLE public.people (id uuid, gym_id uuid, full_name text, email text);
         ALTER TABLE public.members INHERIT public.people;
         GRANT SELECT ON public.people TO {app}",
        &["world.inheritance"],
    )
    .leak("SELECT count(*) > 0 FROM public.people WHERE gym_id = '{gym_b}'"),
    login_case!(
        "adv_login_server_program",
        "adv3",
        "CREATE ROLE \"{prefix}adv3\" LOGIN PASSWORD 'leak' IN ROLE {app}, pg_execute_server_program; CHECKPOINT",
        &["role.closure-membership"],
        "CREATE TEMP TABLE raw (line text) ON COMMIT DROP;
         DO $$ BEGIN EXECUTE format('COPY raw FROM PROGRAM %L',
           'tr -c \"[:print:]\" \"\\n\" < ' || pg_relation_filepath('public.members')); END $$;
         SELECT count(*) > 0 FROM raw WHERE line LIKE '%m@b.test%'"
    ),
    case(
        "adv_definer_search_path_writable_schema",
        "GRANT CREATE ON SCHEMA public TO PUBLIC;
         CREATE FUNCTION public.normalize_slug(s text) RETURNS text LANGUAGE sql SECURITY DEFINER
           SET search_path = public, pg_catalog AS $$ SELECT lower(trim(s)) $$",
        &["exposure.function"],
    )
    .leak(
        "CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS
           $$ SELECT string_agg(email, ',') FROM public.members WHERE gym_id = '{gym_b}' $$;
         SELECT position('m@b.test' in public.normalize_slug('x')) > 0",
    ),
    login_case!(
        "adv_definer_granted_to_login",
        "adv4",
        "CREATE ROLE \"{prefix}adv4\" LOGIN PASSWORD 'leak' IN ROLE {app};
         CREATE FUNCTION public.support_find_member(e text) RETURNS SETOF public.members LANGUAGE sql STABLE
           SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'SELECT * FROM public.members WHERE email = e';
         REVOKE ALL ON FUNCTION public.support_find_member(text) FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION public.support_find_member(text) TO \"{prefix}adv4\"",
        &["privilege.undeclared"],
        "SELECT count(*) > 0 FROM public.support_find_member('m@b.test') WHERE gym_id = '{gym_b}'"
    ),
    // A cascade runs as the referencing table's owner, outside the policies.
    case(
        "adv_status_lookup_fk_cascade",
        "CREATE TABLE public.member_statuses (status text PRIMARY KEY, label text);
         INSERT INTO public.member_statuses VALUES ('active', 'Active'), ('paused', 'Paused'), ('cancelled', 'Cancelled');
         UPDATE public.members SET status = 'paused' WHERE full_name = 'Second b';
         ALTER TABLE public.members ADD CONSTRAINT members_status_fkey FOREIGN KEY (status)
           REFERENCES public.member_statuses (status) ON UPDATE CASCADE ON DELETE CASCADE;
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.member_statuses TO {app}",
        &["world.constraint"],
    )
    .leak(
        "DELETE FROM public.member_statuses WHERE status = 'paused';
         RESET ROLE; SELECT count(*) = 0 FROM public.members WHERE full_name = 'Second b'",
    ),
    case(
        "adv_login_owns_database",
        "CREATE ROLE \"{prefix}adv5\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER DATABASE {db} OWNER TO \"{prefix}adv5\"",
        &["role.closure-owns"],
    )
    .leak("DROP TABLE public.bookings; RESET ROLE; SELECT to_regclass('public.bookings') IS NULL")
    .login("{prefix}adv5")
    .undo("ALTER DATABASE {db} OWNER TO CURRENT_USER; DROP ROLE \"{prefix}adv5\""),
    // Replica mode on the login: no foreign-key or tenant-id trigger fires.
    login_case!(
        "adv_login_replica_mode",
        "adv6",
        "CREATE ROLE \"{prefix}adv6\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER ROLE \"{prefix}adv6\" IN DATABASE {db} SET session_replication_role = replica",
        &["setting.semantics"],
        "WITH ins AS (INSERT INTO public.bookings (session_id, member_id)
                      VALUES ('30000000-0000-4000-8000-00000000000b', '20000000-0000-4000-8000-00000000000b') RETURNING id)
         SELECT count(*) = 1 FROM ins"
    ),
    login_case!(
        "adv_login_default_context",
        "adv7",
        "CREATE ROLE \"{prefix}adv7\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER ROLE \"{prefix}adv7\" SET tenantctl.gym_id = '{gym_b}'",
        &["config.default-context"],
        "RESET ALL; SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'"
    ),
    case(
        "adv_filtered_view_insert",
        "CREATE VIEW public.member_directory AS
           SELECT id, gym_id, full_name, email, phone, status FROM public.members
           WHERE gym_id = (SELECT tenantctl.current_gym_id());
         GRANT SELECT, INSERT ON public.member_directory TO {app}",
        &["exposure.view"],
    )
    .leak(
        "WITH ins AS (INSERT INTO public.member_directory (gym_id, full_name, email)
                      VALUES ('{gym_b}', 'Planted by gym A', 'planted@example.net') RETURNING gym_id)
         SELECT count(*) = 1 FROM ins WHERE gym_id = '{gym_b}'",
    ),
    case(
        "adv_invite_inbox_definer_trigger",
        "CREATE TABLE public.referral_inbox (target_gym uuid NOT NULL, full_name text NOT NULL, email text NOT NULL);
         CREATE FUNCTION public.apply_referral() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog, pg_temp AS $$
         BEGIN
           INSERT INTO public.members (gym_id, full_name, email) VALUES (NEW.target_gym, NEW.full_name, NEW.email);
           RETURN NULL;
         END $$;
         REVOKE ALL ON FUNCTION public.apply_referral() FROM PUBLIC;
         CREATE TRIGGER apply_referral AFTER INSERT ON public.referral_inbox FOR EACH ROW EXECUTE FUNCTION public.apply_referral();
         GRANT INSERT ON public.referral_inbox TO {app}",
        &["world.relation"],
    )
    .leak(
        "INSERT INTO public.referral_inbox VALUES ('{gym_b}', 'Planted by gym A', 'planted2@example.net');
         RESET ROLE;
         SELECT count(*) = 1 FROM public.members WHERE gym_id = '{gym_b}' AND email = 'planted2@example.net'",
    ),
    case(
        "adv_fk_trigger_disabled",
        "DO $$DECLARE t text; BEGIN
           FOR t IN SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.bookings'::regclass AND tgisinternal
                    AND tgconstraint IN (SELECT oid FROM pg_constraint WHERE conrelid = 'public.bookings'::regclass AND contype = 'f') LOOP
             EXECUTE format('ALTER TABLE public.bookings DISABLE TRIGGER %I', t);
           END LOOP; END $$",
        &["setting.ri-trigger-disabled"],
    )
    .leak(
        "WITH ins AS (INSERT INTO public.bookings (session_id, member_id)
                      VALUES ('30000000-0000-4000-8000-00000000000b', '20000000-0000-4000-8000-00000000000b') RETURNING id)
         SELECT count(*) = 1 FROM ins",
    ),
    // One platform-wide sequence: nextval tells gym A how many members other gyms have.
    case(
        "adv_global_member_number_sequence",
        "ALTER TABLE public.members ADD COLUMN member_no bigserial;
         GRANT USAGE ON SEQUENCE public.members_member_no_seq TO {app}",
        &["world.sequence"],
    )
    .leak("SELECT nextval('public.members_member_no_seq') - 1 > (SELECT count(*) FROM public.members)"),
    // Round 2, against the rebuilt gate (each passed it with exit 0).
    // An aggregate runs its support functions with the aggregate owner's EXECUTE right.
    case(
        "adv2_aggregate_definer_transition",
        "CREATE FUNCTION public.agg_peek(state text, g uuid) RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
           SET search_path = pg_catalog AS
           $$ SELECT coalesce(state, (SELECT string_agg(gym_id::text || ':' || email, ',') FROM public.members WHERE gym_id <> g)) $$;
         REVOKE ALL ON FUNCTION public.agg_peek(text, uuid) FROM PUBLIC;
         CREATE AGGREGATE public.gym_digest(uuid) (SFUNC = public.agg_peek, STYPE = text)",
        &["exposure.function"],
    )
    .leak("SELECT position('{gym_b}:m@b.test' in public.gym_digest(id)) > 0 FROM public.gyms"),
    // PostgreSQL 15+ parameter privileges: the app switches every trigger off itself.
    case(
        "adv2_parameter_acl_replication_role",
        "GRANT SET ON PARAMETER session_replication_role TO {app}",
        &["privilege.undeclared"],
    )
    .leak(
        "SET LOCAL session_replication_role = replica;
         WITH ins AS (INSERT INTO public.bookings (session_id, member_id)
                      VALUES ('30000000-0000-4000-8000-00000000000b', '20000000-0000-4000-8000-00000000000b') RETURNING id)
         SELECT count(*) = 1 FROM ins",
    )
    .undo("REVOKE SET ON PARAMETER session_replication_role FROM {app}"),
    // Round 3, against the gate of round 2 (each passed it with exit 0).
    // An index not led by the tenant column: a LEAKPROOF comparison runs as its index condition
    // before the policy, and EXPLAIN ANALYZE counts the other tenants' rows the policy removed.
    case(
        "adv3_phone_index_range_extraction",
        "UPDATE public.members SET phone = CASE WHEN gym_id = '{gym_a}' THEN '+1 555 0100' ELSE '+1 555 0199' END;
         CREATE INDEX members_phone_idx ON public.members (phone);
         ANALYZE public.members",
        &["world.index-leading"],
    )
    .leak(RANGE_EXTRACTION_PHONE),
    case(
        "adv3_email_index_range_extraction",
        "CREATE INDEX members_email_idx ON public.members (email); ANALYZE public.members",
        &["world.index-leading"],
    )
    .leak(RANGE_EXTRACTION_EMAIL),
    // Round 1's event trigger, folded into an installed extension: extensions' event triggers
    // were exempt.
    case(
        "adv3_extension_event_trigger",
        "CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
         CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql SET search_path = pg_catalog AS
           $$BEGIN PERFORM set_config('tenantctl.gym_id', '{gym_b}', true); END$$;
         CREATE EVENT TRIGGER tc_on_ddl ON ddl_command_end EXECUTE FUNCTION public.on_ddl();
         ALTER EXTENSION pg_trgm ADD FUNCTION public.on_ddl();
         ALTER EXTENSION pg_trgm ADD EVENT TRIGGER tc_on_ddl",
        &["pristine.extension-event-trigger"],
    )
    .leak(
        "CREATE TEMP TABLE scratch (x int);
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
    ),
    // Round 1's dblink reporting server, folded into the dblink extension: ALTER EXTENSION ...
    // ADD records its ACL (USAGE to PUBLIC) in pg_init_privs, the fresh-cluster baseline.
    dblink_reporting_case!(
        "adv3_extension_member_server_init_privs",
        ";\n         ALTER EXTENSION dblink ADD SERVER reporting"
    ),
    // A reporting copy in the same cluster with RLS off and the app's grants revoked, read "by
    // analysts" through SELECT to PUBLIC: pg_shdepend records no grant to PUBLIC. (CONNECT goes
    // to the login here, not to PUBLIC as by default, so that the copy stays out of the other
    // tests' runs on the shared cluster: a grant on a database leaves no pg_shdepend row in it
    // either.)
    case(
        "adv3_sibling_public_grants",
        "CREATE ROLE \"{prefix}adv3_app\" LOGIN PASSWORD 'leak' IN ROLE {app};
         CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public",
        &["privilege.other-database-public"],
    )
    .sibling(
        concat!(
            rls_off_app_revoked!(),
            "ALTER TABLE public.coaches DISABLE ROW LEVEL SECURITY;
         ALTER TABLE public.gyms DISABLE ROW LEVEL SECURITY;
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC;
         REVOKE CONNECT ON DATABASE \"{dbname}_bi\" FROM PUBLIC;
         GRANT CONNECT ON DATABASE \"{dbname}_bi\" TO \"{prefix}adv3_app\""
        ),
    )
    .leak(
        "SELECT count(*) > 0 FROM public.dblink('host=127.0.0.1 port={port} dbname={dbname}_bi user={prefix}adv3_app password=leak',
           'SELECT gym_id::text FROM public.members') AS t(gym_id text)
         WHERE gym_id = '{gym_b}'",
    )
    .login("{prefix}adv3_app")
    .undo("DROP OWNED BY \"{prefix}adv3_app\"; DROP ROLE \"{prefix}adv3_app\""),
    // A text -> uuid cast: the inlined context function's ::uuid calls it (its text unchanged),
    // and it maps gym A's id to gym B's. Only the probes noticed, by luck of the mapping.
    case(
        "adv3_text_uuid_cast_rewrites_context",
        "CREATE FUNCTION public.text_to_uuid(t text) RETURNS uuid LANGUAGE sql IMMUTABLE STRICT AS $$
           SELECT pg_catalog.uuid_in(pg_catalog.textout(
             CASE pg_catalog.btrim(t, ' {}') WHEN '{gym_a}' THEN '{gym_b}' ELSE pg_catalog.btrim(t, ' {}') END))
         $$;
         CREATE CAST (text AS uuid) WITH FUNCTION public.text_to_uuid(text) AS ASSIGNMENT",
        &["pristine.cast"],
    )
    .leak("SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'"),
    // Round 4. The app's login holds pg_read_all_settings (for a /health page): it reads the
    // superuser-only primary_conninfo a promoted standby kept, a superuser's password in it.
    case(
        "adv4_read_all_settings_primary_conninfo",
        "CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public;
         CREATE ROLE \"{prefix}adv4_app\" LOGIN PASSWORD 'leak' IN ROLE {app};
         GRANT pg_read_all_settings TO \"{prefix}adv4_app\";
         CREATE ROLE \"{prefix}adv4_repl\" LOGIN SUPERUSER PASSWORD 'repl_pw'
--;
ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={port} user={prefix}adv4_repl password=repl_pw'
--;
SELECT pg_reload_conf(), pg_sleep(0.5)",
        &["role.closure-membership"],
    )
    .leak(
        "SELECT count(*) > 0 FROM public.dblink(current_setting('primary_conninfo') || ' dbname={dbname}',
           'SELECT 1 FROM public.members WHERE gym_id = ''{gym_b}''') AS t(x int)",
    )
    .login("{prefix}adv4_app")
    .undo(
        "DROP OWNED BY \"{prefix}adv4_app\"; DROP ROLE \"{prefix}adv4_app\"; DROP ROLE \"{prefix}adv4_repl\"
--;
ALTER SYSTEM RESET primary_conninfo
--;
SELECT pg_reload_conf()",
    ),
    // A nightly snapshot with RLS off, kept as a template (IS_TEMPLATE) for fast clones and read
    // by support through SELECT to PUBLIC: it still accepts connections (datallowconn), and the
    // app's login reads it through dblink. (As in adv3_sibling_public_grants, the app's own
    // grants are revoked there: the role template, PUBLIC-connectable, already holds them.)
    case(
        "adv4_template_snapshot_sibling",
        "CREATE ROLE \"{prefix}adv4_tpl\" LOGIN PASSWORD 'leak' IN ROLE {app};
         CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public",
        &["privilege.other-database-public"],
    )
    .sibling(
        concat!(
            rls_off_app_revoked!(),
            "GRANT SELECT ON public.members TO PUBLIC;
         REVOKE CONNECT ON DATABASE \"{dbname}_bi\" FROM PUBLIC;
         GRANT CONNECT ON DATABASE \"{dbname}_bi\" TO \"{prefix}adv4_tpl\";
         ALTER DATABASE \"{dbname}_bi\" IS_TEMPLATE true"
        ),
    )
    .leak(
        "SELECT count(*) > 0 FROM public.dblink('host=127.0.0.1 port={port} dbname={dbname}_bi user={prefix}adv4_tpl password=leak',
           'SELECT gym_id::text FROM public.members') AS t(gym_id text)
         WHERE gym_id = '{gym_b}'",
    )
    .login("{prefix}adv4_tpl")
    .undo("DROP OWNED BY \"{prefix}adv4_tpl\"; DROP ROLE \"{prefix}adv4_tpl\""),
];

/// `pg_temp.others(lo, hi)`: how many rows the policy removed from an index scan of members
/// on `lo <= column < hi` (EXPLAIN ANALYZE, open to every role; the planner switches are the
/// app's to set), NULL when the planner scanned another index (a range too wide for the
/// template's few rows); `pg_temp.enum(prefix)`: other tenants' values, by a prefix search over
/// that count (descending where it is unknown).
macro_rules! range_extraction {
    ($column:literal, $alphabet:literal, $secret:literal) => {
        concat!(
            r#"SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
CREATE FUNCTION pg_temp.others(lo text, hi text) RETURNS int LANGUAGE plpgsql AS $f$
DECLARE l text; used bool := false; BEGIN
  FOR l IN EXECUTE format('EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT 1 FROM public.members WHERE "#,
            $column,
            r#" >= %L AND "#,
            $column,
            r#" < %L', lo, hi) LOOP
    IF l ~ 'Index Cond: \(+"#,
            $column,
            r#"' THEN used := true; END IF;
    IF used AND l ~ 'Rows Removed by Filter' THEN RETURN substring(l from '(\d+)')::int; END IF;
  END LOOP; RETURN CASE WHEN used THEN 0 END; END $f$;
CREATE FUNCTION pg_temp.enum(prefix text) RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE c text; BEGIN
  IF prefix <> '' AND pg_temp.others(prefix, prefix || chr(1)) > 0 THEN RETURN NEXT prefix; END IF;
  FOREACH c IN ARRAY string_to_array('"#,
            $alphabet,
            r#"', NULL) LOOP
    IF coalesce(pg_temp.others(prefix || c, prefix || c || chr(127)) > 0, length(prefix) < 16) THEN
      RETURN QUERY SELECT * FROM pg_temp.enum(prefix || c);
    END IF;
  END LOOP; END $f$;
SELECT EXISTS (SELECT FROM pg_temp.enum('') e WHERE e = '"#,
            $secret,
            r#"')
   AND NOT EXISTS (SELECT FROM public.members WHERE "#,
            $column,
            r#" = '"#,
            $secret,
            "')"
        )
    };
}

/// Gym B's members' phone (gym A's is another), read from gym A's context.
const RANGE_EXTRACTION_PHONE: &str = range_extraction!("phone", " +0123456789", "+1 555 0199");
/// Gym B's member's e-mail, read from gym A's context.
const RANGE_EXTRACTION_EMAIL: &str = range_extraction!("email", ".@2abemst", "m2@b.test");
