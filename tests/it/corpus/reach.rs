//! The reachability closure, the pristine comparison and semantics-changing settings: leaks
//! through a login granted the app role and what else it can become, privileges a missing schema
//! USAGE does not stop, catalogs, large objects, default privileges, event triggers, LEAKPROOF
//! functions, role and database settings, disabled foreign keys.

use super::{case, Case};

const MEMBERS_B: &str = "SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'";
/// Reads the operations copy of the members (`ops.people`, the tenant column renamed `tenant`:
/// nothing in the catalog ties it to tenant data).
const OPS_B: &str = "SELECT count(*) > 0 FROM ops.people WHERE tenant = '{gym_b}'";
/// Gym A books gym B's session: a cross-tenant reference the composite foreign key forbids.
const BOOK_B_SESSION: &str = "INSERT INTO public.bookings (gym_id, session_id, member_id)
     VALUES ('{gym_a}', '30000000-0000-4000-8000-00000000000b', '20000000-0000-4000-8000-00000000000a');
     SELECT true";
/// Reads large object 4242, every member's email, which the cases create for its owner only.
const LO_B: &str = "SELECT convert_from(lo_get(4242), 'UTF8') LIKE '%@b.test%'";

pub const CASES: &[Case] = &[
    // A login granted the app role and a BYPASSRLS group: SET ROLE to the group skips every policy.
    case(
        "login_can_become_bypassrls_role",
        "CREATE ROLE \"{prefix}bypass\" NOLOGIN BYPASSRLS;
         GRANT SELECT ON public.members TO \"{prefix}bypass\";
         CREATE ROLE \"{prefix}login1\" LOGIN PASSWORD 'leak' IN ROLE {app}, \"{prefix}bypass\"",
        &["role.closure-attribute"],
    )
    .leak("SET LOCAL ROLE \"{prefix}bypass\"; SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'")
    .login("{prefix}login1")
    .undo("DROP ROLE \"{prefix}login1\"; DROP OWNED BY \"{prefix}bypass\"; DROP ROLE \"{prefix}bypass\""),
    // pg_read_all_data reads every table and schema: an operations copy the app cannot reach.
    case(
        "login_reads_all_data",
        "CREATE SCHEMA ops;
         CREATE TABLE ops.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
         CREATE ROLE \"{prefix}login2\" LOGIN PASSWORD 'leak' IN ROLE {app}, pg_read_all_data",
        &["role.closure-membership"],
    )
    .leak(OPS_B)
    .login("{prefix}login2")
    .undo("DROP ROLE \"{prefix}login2\""),
    case(
        "app_member_of_read_all_data",
        "CREATE SCHEMA ops;
         CREATE TABLE ops.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
         GRANT pg_read_all_data TO {app}",
        &["role.app-membership"],
    )
    .leak(OPS_B)
    .undo("REVOKE pg_read_all_data FROM {app}"),
    // A login that can become the role verify connects as (an operator, here a superuser).
    case(
        "login_can_become_operator",
        "CREATE ROLE \"{prefix}login3\" LOGIN PASSWORD 'leak' IN ROLE {app};
         DO $$BEGIN EXECUTE format('GRANT %I TO %I', current_user, '{prefix}login3'); END$$",
        &["role.closure-membership", "role.closure-attribute"],
    )
    .leak(
        "SELECT set_config('role', (SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.roleid = r.oid
                                    JOIN pg_roles l ON l.oid = m.member
                                    WHERE l.rolname = '{prefix}login3' AND r.rolsuper), true);
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
    )
    .login("{prefix}login3")
    .undo("DROP ROLE \"{prefix}login3\""),
    // An owner can switch FORCE off for itself.
    case(
        "login_owns_table",
        "CREATE ROLE \"{prefix}login4\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER TABLE public.coaches OWNER TO \"{prefix}login4\"",
        &["role.closure-owns"],
    )
    .leak(
        "ALTER TABLE public.coaches NO FORCE ROW LEVEL SECURITY;
         SELECT count(*) > 0 FROM public.coaches WHERE gym_id = '{gym_b}'",
    )
    .login("{prefix}login4")
    .undo("ALTER TABLE public.coaches OWNER TO {owner}; DROP ROLE \"{prefix}login4\""),
    // CREATEROLE through a group only the login is in (not the app role): grants itself admin.
    case(
        "login_can_become_createrole_role",
        "CREATE ROLE \"{prefix}creator2\" NOLOGIN CREATEROLE;
         CREATE ROLE \"{prefix}login5\" LOGIN PASSWORD 'leak' IN ROLE {app}, \"{prefix}creator2\"",
        &["role.closure-attribute"],
    )
    .leak(
        "SET LOCAL ROLE \"{prefix}creator2\"; GRANT {admin} TO \"{prefix}login5\"; SET LOCAL ROLE {admin};
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
    )
    .login("{prefix}login5")
    .undo("DROP ROLE \"{prefix}login5\"; DROP ROLE \"{prefix}creator2\""),
    // A group role with a privilege of its own on the operations copy.
    case(
        "login_in_group_with_privilege",
        "CREATE SCHEMA ops;
         CREATE TABLE ops.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
         CREATE ROLE \"{prefix}reporting\" NOLOGIN;
         GRANT USAGE ON SCHEMA ops TO \"{prefix}reporting\";
         GRANT SELECT ON ops.people TO \"{prefix}reporting\";
         CREATE ROLE \"{prefix}login6\" LOGIN PASSWORD 'leak' IN ROLE {app}, \"{prefix}reporting\"",
        &["privilege.undeclared"],
    )
    .leak(OPS_B)
    .login("{prefix}login6")
    .undo("DROP ROLE \"{prefix}login6\"; DROP OWNED BY \"{prefix}reporting\"; DROP ROLE \"{prefix}reporting\""),
    // A role-level default context on a login (config.default-context for every closure role).
    case(
        "reach_login_default_context",
        "CREATE ROLE \"{prefix}login7\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER ROLE \"{prefix}login7\" SET tenantctl.gym_id = '{gym_b}'",
        &["config.default-context"],
    )
    .leak("RESET tenantctl.gym_id; SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'")
    .login("{prefix}login7")
    .undo("DROP ROLE \"{prefix}login7\""),
    // No trigger fires in replica mode: the composite foreign key stops checking.
    case(
        "login_session_replication_role",
        "CREATE ROLE \"{prefix}login8\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER ROLE \"{prefix}login8\" SET session_replication_role = replica",
        &["setting.semantics"],
    )
    .leak(BOOK_B_SESSION)
    .login("{prefix}login8")
    .undo("DROP ROLE \"{prefix}login8\""),
    case(
        "login_lo_compat_privileges",
        "SELECT lo_from_bytea(4242, convert_to((SELECT string_agg(email, ',') FROM public.members), 'UTF8'));
         CREATE ROLE \"{prefix}login9\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER ROLE \"{prefix}login9\" SET lo_compat_privileges = on",
        &["setting.semantics"],
    )
    .leak(LO_B)
    .login("{prefix}login9")
    .undo("DROP ROLE \"{prefix}login9\""),
    // An unknown setting at role level (here one that also starts sessions as another role).
    case(
        "login_setting_role",
        "CREATE ROLE \"{prefix}bypass2\" NOLOGIN BYPASSRLS;
         GRANT SELECT ON public.members TO \"{prefix}bypass2\";
         CREATE ROLE \"{prefix}login10\" LOGIN PASSWORD 'leak' IN ROLE {app}, \"{prefix}bypass2\";
         ALTER ROLE \"{prefix}login10\" SET role = '{prefix}bypass2'",
        &["setting.semantics", "role.closure-attribute"],
    )
    .leak(MEMBERS_B)
    .login("{prefix}login10")
    .undo("DROP ROLE \"{prefix}login10\"; DROP OWNED BY \"{prefix}bypass2\"; DROP ROLE \"{prefix}bypass2\""),
    // The rest change this database only.
    case(
        "undeclared_privilege_renamed_copy",
        "CREATE SCHEMA ops;
         CREATE TABLE ops.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
         GRANT USAGE ON SCHEMA ops TO {app}; GRANT SELECT ON ops.people TO {app}",
        &["privilege.undeclared"],
    )
    .leak(OPS_B),
    case(
        "undeclared_column_privileges",
        "CREATE SCHEMA ops;
         CREATE TABLE ops.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
         GRANT USAGE ON SCHEMA ops TO {app}; GRANT SELECT (email, tenant) ON ops.people TO {app}",
        &["privilege.undeclared"],
    )
    .leak(OPS_B),
    case(
        "undeclared_privilege_to_public",
        "CREATE SCHEMA ops;
         CREATE TABLE ops.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
         GRANT USAGE ON SCHEMA ops TO PUBLIC; GRANT SELECT ON ops.people TO PUBLIC",
        &["privilege.undeclared"],
    )
    .leak(OPS_B),
    // A definer view in a schema the app has no USAGE on, read through an invoker view.
    case(
        "definer_view_behind_schema_without_usage",
        "CREATE SCHEMA ops;
         CREATE VIEW ops.all_members AS SELECT gym_id, email FROM public.members;
         GRANT SELECT ON ops.all_members TO {app};
         CREATE VIEW public.member_directory WITH (security_invoker = true) AS SELECT * FROM ops.all_members;
         GRANT SELECT ON public.member_directory TO {app}",
        &["privilege.undeclared"],
    )
    .leak("SELECT count(*) > 0 FROM public.member_directory WHERE gym_id = '{gym_b}'"),
    // A definer function in a schema the app has no USAGE on, called through an invoker view.
    case(
        "definer_function_behind_schema_without_usage",
        "CREATE SCHEMA ops;
         CREATE FUNCTION ops.member_emails() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER
           SET search_path = pg_catalog AS 'SELECT email FROM public.members';
         REVOKE EXECUTE ON FUNCTION ops.member_emails() FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION ops.member_emails() TO {app};
         CREATE VIEW public.directory WITH (security_invoker = true) AS SELECT e FROM ops.member_emails() e;
         GRANT SELECT ON public.directory TO {app}",
        &["privilege.undeclared"],
    )
    .leak("SELECT count(*) > 0 FROM public.directory WHERE e LIKE '%@b.test'"),
    // The planner's statistics hold other tenants' values.
    case(
        "statistics_catalog_granted",
        "ANALYZE public.members; GRANT SELECT ON pg_catalog.pg_statistic TO {app}",
        &["privilege.undeclared"],
    )
    .leak(
        "SELECT count(*) > 0 FROM pg_catalog.pg_statistic
         WHERE starelid = 'public.members'::regclass
           AND concat(stavalues1::text, stavalues2::text, stavalues3::text) LIKE '%@b.test%'",
    ),
    case(
        "large_object_granted",
        "SELECT lo_from_bytea(4242, convert_to((SELECT string_agg(email, ',') FROM public.members), 'UTF8'));
         GRANT SELECT ON LARGE OBJECT 4242 TO {app}",
        &["privilege.undeclared"],
    )
    .leak(LO_B),
    case(
        "database_lo_compat_privileges",
        "SELECT lo_from_bytea(4242, convert_to((SELECT string_agg(email, ',') FROM public.members), 'UTF8'));
         ALTER DATABASE {db} SET lo_compat_privileges = on",
        &["setting.semantics"],
    )
    .leak(LO_B),
    case(
        "database_session_replication_role",
        "ALTER DATABASE {db} SET session_replication_role = replica",
        &["setting.semantics"],
    )
    .leak(BOOK_B_SESSION),
    case(
        "foreign_key_triggers_disabled",
        "ALTER TABLE public.bookings DISABLE TRIGGER ALL",
        &["setting.ri-trigger-disabled"],
    )
    .leak(BOOK_B_SESSION),
    // Future tables of the owner role are granted to the app: an archive made later leaks.
    case(
        "default_privileges_to_app",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT SELECT ON TABLES TO {app};
         SET ROLE {owner}; CREATE TABLE public.member_archive (tenant uuid, email text); RESET ROLE;
         INSERT INTO public.member_archive SELECT gym_id, email FROM public.members",
        &["pristine.default-privileges"],
    )
    .leak("SELECT count(*) > 0 FROM public.member_archive WHERE tenant = '{gym_b}'"),
    // An event trigger runs on the app's own DDL (a temporary table) with its owner's rights:
    // here it points the transaction at gym B.
    case(
        "event_trigger",
        "CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog AS
           $$BEGIN
             PERFORM set_config('tenantctl.gym_id', (SELECT id::text FROM public.gyms WHERE slug = 'gym-b'), true);
           END$$;
         CREATE EVENT TRIGGER tc_on_ddl ON ddl_command_end EXECUTE FUNCTION public.on_ddl()",
        &["pristine.event-trigger"],
    )
    .leak("CREATE TEMP TABLE scratch (x int); SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'"),
    // A function added to pg_catalog after initdb, found before any schema on the search path.
    case(
        "catalog_function_added",
        "CREATE FUNCTION pg_catalog.tc_member_emails() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER
           SET search_path = pg_catalog AS 'SELECT email FROM public.members'",
        &["pristine.catalog-object"],
    )
    .leak("SELECT count(*) > 0 FROM tc_member_emails() e WHERE e LIKE '%@b.test'"),
    // A LEAKPROOF function runs before the policy's condition and sees every row (of a scan: the
    // app can switch index scans off for itself).
    case(
        "leakproof_function",
        "CREATE FUNCTION public.peek(text) RETURNS boolean LANGUAGE plpgsql LEAKPROOF COST 0.0001 AS
           $$BEGIN PERFORM set_config('tc.seen', coalesce(current_setting('tc.seen', true), '') || $1 || ',', true);
                   RETURN true; END$$",
        &["privilege.leakproof"],
    )
    .leak(
        "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off;
         SELECT count(*) FROM public.members WHERE public.peek(email);
         SELECT current_setting('tc.seen', true) LIKE '%@b.test%'",
    ),
];
