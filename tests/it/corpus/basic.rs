//! The first corpus: policies, RLS switches, grants, roles, views and functions, each a leak
//! shown as the app in gym A's context.

use super::{case, Case};

const MEMBERS_B: &str = "SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'";

pub const CASES: &[Case] = &[
    case("rls_disabled", "ALTER TABLE public.coaches DISABLE ROW LEVEL SECURITY", &["rls.disabled"])
        .leak("SELECT count(*) > 0 FROM public.coaches WHERE gym_id = '{gym_b}'"),
    case(
        "uncovered_table",
        "CREATE TABLE public.notes (id uuid PRIMARY KEY, gym_id uuid NOT NULL, body text);
         INSERT INTO public.notes VALUES (gen_random_uuid(), '{gym_b}', 'x');
         GRANT SELECT, INSERT ON public.notes TO {app}",
        &["exposure.table"],
    )
    .leak("SELECT count(*) > 0 FROM public.notes WHERE gym_id = '{gym_b}'"),
    case(
        "always_true_policy",
        "CREATE POLICY leak ON public.members FOR SELECT TO {app} USING (true)",
        &["policy.always-true", "probe.foreign-rows", "probe.no-context"],
    )
    .leak(MEMBERS_B),
    // The next two leak to a request that set an empty context (a missing header, say).
    case(
        "fail_open_disjunct",
        "ALTER POLICY members_tenant_isolation ON public.members
           USING (gym_id = (SELECT tenantctl.current_gym_id()) OR (SELECT tenantctl.current_gym_id()) IS NULL)",
        &["policy.fail-open", "drift.policy", "probe.no-context", "probe.empty-context"],
    )
    .leak(
        "SELECT set_config('tenantctl.gym_id', '', true);
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
    ),
    case(
        "coalesce_fail_open",
        "ALTER POLICY coaches_tenant_isolation ON public.coaches
           USING (COALESCE(gym_id = (SELECT tenantctl.current_gym_id()), true))",
        &["policy.fail-open", "probe.no-context"],
    )
    .leak(
        "SELECT set_config('tenantctl.gym_id', '', true);
         SELECT count(*) > 0 FROM public.coaches WHERE gym_id = '{gym_b}'",
    ),
    case(
        "insert_without_isolation",
        "CREATE POLICY open_insert ON public.members FOR INSERT TO {app} WITH CHECK (true)",
        &["policy.always-true", "probe.cross-insert"],
    )
    .leak(
        "INSERT INTO public.members (gym_id, full_name, email) VALUES ('{gym_b}', 'Planted', 'p@b.test');
         SELECT true",
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
    )
    .leak(
        "WITH moved AS (UPDATE public.bookings SET gym_id = '{gym_b}' WHERE gym_id = '{gym_a}' RETURNING 1)
         SELECT count(*) > 0 FROM moved",
    ),
    // An owner can switch FORCE off for itself.
    case("app_owns_table", "ALTER TABLE public.coaches OWNER TO {app}", &["role.app-owns"]).leak(
        "ALTER TABLE public.coaches NO FORCE ROW LEVEL SECURITY;
         SELECT count(*) > 0 FROM public.coaches WHERE gym_id = '{gym_b}'",
    ),
    case("app_bypassrls", "ALTER ROLE {app} BYPASSRLS", &["role.app-bypassrls", "probe.foreign-rows"])
        .leak(MEMBERS_B)
        .undo("ALTER ROLE {app} NOBYPASSRLS"),
    case("app_member_of_admin", "GRANT {admin} TO {app}", &["role.app-membership"])
        .leak("SET LOCAL ROLE {admin}; SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'")
        .undo("REVOKE {admin} FROM {app}"),
    case("app_member_of_owner", "GRANT {owner} TO {app}", &["role.app-membership"])
        .leak(
            "SET LOCAL ROLE {owner}; ALTER TABLE public.members NO FORCE ROW LEVEL SECURITY;
             SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
        )
        .undo("REVOKE {owner} FROM {app}"),
    case(
        "definer_view",
        "CREATE VIEW public.member_emails AS SELECT gym_id, email FROM public.members;
         GRANT SELECT ON public.member_emails TO {app}",
        &["exposure.view", "probe.view"],
    )
    .leak("SELECT count(*) > 0 FROM public.member_emails WHERE gym_id = '{gym_b}'"),
    case(
        "definer_function",
        "CREATE FUNCTION public.all_members() RETURNS SETOF public.members LANGUAGE sql STABLE
           SECURITY DEFINER SET search_path = pg_catalog AS 'SELECT * FROM public.members'",
        &["exposure.function", "probe.function"],
    )
    .leak("SELECT count(*) > 0 FROM public.all_members() WHERE gym_id = '{gym_b}'"),
    case(
        "truncate_grant",
        "GRANT TRUNCATE ON public.bookings TO {app}",
        &["grant.dangerous", "drift.grant"],
    )
    .leak("TRUNCATE public.bookings; SELECT true"),
    case(
        "materialized_view",
        "CREATE MATERIALIZED VIEW public.member_counts AS SELECT gym_id, count(*) FROM public.members GROUP BY gym_id;
         GRANT SELECT ON public.member_counts TO {app}",
        &["exposure.materialized-view", "probe.view"],
    )
    .leak("SELECT count(*) > 0 FROM public.member_counts WHERE gym_id = '{gym_b}'"),
    // A database default context: a request that reset its context reads gym B's rows.
    case(
        "default_context",
        "ALTER DATABASE {db} SET tenantctl.gym_id = '{gym_b}'",
        &["config.default-context", "probe.no-context"],
    )
    .leak("RESET tenantctl.gym_id; SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'"),
    case(
        "context_function_fails_open",
        "CREATE OR REPLACE FUNCTION tenantctl.current_gym_id() RETURNS uuid LANGUAGE sql STABLE
           AS $$ SELECT COALESCE(NULLIF(current_setting('tenantctl.gym_id', true), '')::uuid, '{gym_b}') $$",
        &["drift.function", "probe.no-context"],
    )
    .leak(
        "SELECT set_config('tenantctl.gym_id', '', true);
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
    ),
    // A setting on the context function overrides the request's context.
    case(
        "context_function_default_tenant",
        "ALTER FUNCTION tenantctl.current_gym_id() SET tenantctl.gym_id = '{gym_b}'",
        &["drift.function"],
    )
    .leak(MEMBERS_B),
    case(
        "definer_function_dynamic_sql",
        "CREATE FUNCTION public.count_all(t text) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog AS
           $$DECLARE n bigint; BEGIN EXECUTE 'select count(*) from public.' || t INTO n; RETURN n; END$$",
        &["exposure.function"],
    )
    .leak("SELECT public.count_all('members') > (SELECT count(*) FROM public.members)"),
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
    )
    .leak("SELECT count(*) > 0 FROM shadow.members WHERE gym_id = '{gym_b}'"),
    // A copy with the tenant column renamed: nothing in the catalog ties it to tenant data.
    case(
        "renamed_tenant_copy",
        "CREATE SCHEMA shadow;
         CREATE TABLE shadow.people AS SELECT full_name, email, gym_id AS tenant FROM public.members;
         GRANT USAGE ON SCHEMA shadow TO {app};
         GRANT SELECT ON shadow.people TO {app}",
        &["world.relation"],
    )
    .leak("SELECT count(*) > 0 FROM shadow.people WHERE tenant = '{gym_b}'"),
    // CREATEROLE lets a role grant itself any non-superuser role (PostgreSQL 15).
    case("app_createrole", "ALTER ROLE {app} CREATEROLE", &["role.app-createrole"])
        .leak(
            "GRANT {admin} TO {app}; SET LOCAL ROLE {admin};
             SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
        )
        .undo("ALTER ROLE {app} NOCREATEROLE"),
    case(
        "app_createrole_via_membership",
        "CREATE ROLE \"{prefix}creator\" NOLOGIN CREATEROLE; GRANT \"{prefix}creator\" TO {app}",
        &["role.app-createrole"],
    )
    .leak(
        "SET LOCAL ROLE \"{prefix}creator\"; GRANT {admin} TO {app}; SET LOCAL ROLE {admin};
         SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'",
    )
    .undo("DROP ROLE \"{prefix}creator\""),
    case(
        "login_role_bypassrls",
        "CREATE ROLE \"{prefix}applogin2\" LOGIN BYPASSRLS PASSWORD 'leak' IN ROLE {app}",
        &["role.app-grantee"],
    )
    .leak(MEMBERS_B)
    .login("{prefix}applogin2")
    .undo("DROP ROLE \"{prefix}applogin2\""),
    case(
        "login_role_also_admin",
        "CREATE ROLE \"{prefix}applogin3\" LOGIN PASSWORD 'leak' IN ROLE {app}, {admin}",
        &["role.app-grantee"],
    )
    .leak("SET LOCAL ROLE {admin}; SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'")
    .login("{prefix}applogin3")
    .undo("DROP ROLE \"{prefix}applogin3\""),
];
