//! Leaks that only the application's own login shows: its role-level settings, its own
//! memberships and privileges. `verify --app-url` (the probes log in as it) must catch each.

use super::{case, Case};

const MEMBERS_B: &str = "SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'";

pub const CASES: &[Case] = &[
    // A request that does not set its context (RESET: the login's default) reads gym B.
    case(
        "login_default_context",
        "CREATE ROLE \"{prefix}pl_ctx\" LOGIN PASSWORD 'leak' IN ROLE {app};
         ALTER ROLE \"{prefix}pl_ctx\" SET tenantctl.gym_id = '{gym_b}'",
        &["probe.no-context"],
    )
    .leak("RESET tenantctl.gym_id; SELECT count(*) > 0 FROM public.members WHERE gym_id = '{gym_b}'")
    .login("{prefix}pl_ctx")
    .probe_as_login()
    .undo("DROP OWNED BY \"{prefix}pl_ctx\"; DROP ROLE \"{prefix}pl_ctx\""),
    case(
        "login_own_policy",
        "CREATE ROLE \"{prefix}pl_pol\" LOGIN PASSWORD 'leak' IN ROLE {app};
         CREATE POLICY login_reads_all ON public.members FOR SELECT TO \"{prefix}pl_pol\" USING (true)",
        &["probe.foreign-rows"],
    )
    .leak(MEMBERS_B)
    .login("{prefix}pl_pol")
    .probe_as_login()
    .undo("DROP OWNED BY \"{prefix}pl_pol\"; DROP ROLE \"{prefix}pl_pol\""),
    // The login is also in a reporting role whose policy shows every gym's coaches.
    case(
        "login_reporting_role_policy",
        "CREATE ROLE \"{prefix}pl_reporting\" NOLOGIN;
         CREATE ROLE \"{prefix}pl_rep\" LOGIN PASSWORD 'leak' IN ROLE {app}, \"{prefix}pl_reporting\";
         CREATE POLICY reporting_all ON public.coaches FOR SELECT TO \"{prefix}pl_reporting\" USING (true)",
        &["probe.foreign-rows"],
    )
    .leak("SELECT count(*) > 0 FROM public.coaches WHERE gym_id = '{gym_b}'")
    .login("{prefix}pl_rep")
    .probe_as_login()
    .undo(
        "DROP OWNED BY \"{prefix}pl_rep\", \"{prefix}pl_reporting\";
         DROP ROLE \"{prefix}pl_rep\"; DROP ROLE \"{prefix}pl_reporting\"",
    ),
    // A view owned by the superuser (RLS skipped), granted to the login only.
    case(
        "login_granted_definer_view",
        "CREATE ROLE \"{prefix}pl_view\" LOGIN PASSWORD 'leak' IN ROLE {app};
         CREATE VIEW public.member_directory AS SELECT gym_id, email FROM public.members;
         GRANT SELECT ON public.member_directory TO \"{prefix}pl_view\"",
        &["probe.view"],
    )
    .leak("SELECT count(*) > 0 FROM public.member_directory WHERE gym_id = '{gym_b}'")
    .login("{prefix}pl_view")
    .probe_as_login()
    .undo("DROP OWNED BY \"{prefix}pl_view\"; DROP ROLE \"{prefix}pl_view\""),
    // A SECURITY DEFINER function of the superuser, executable by the login only.
    case(
        "login_granted_definer_function",
        "CREATE ROLE \"{prefix}pl_fn\" LOGIN PASSWORD 'leak' IN ROLE {app};
         CREATE FUNCTION public.every_member() RETURNS SETOF public.members
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
           AS 'SELECT * FROM public.members';
         REVOKE EXECUTE ON FUNCTION public.every_member() FROM PUBLIC;
         GRANT EXECUTE ON FUNCTION public.every_member() TO \"{prefix}pl_fn\"",
        &["probe.function"],
    )
    .leak("SELECT count(*) > 0 FROM public.every_member() WHERE gym_id = '{gym_b}'")
    .login("{prefix}pl_fn")
    .probe_as_login()
    .undo("DROP OWNED BY \"{prefix}pl_fn\"; DROP ROLE \"{prefix}pl_fn\""),
    // The login's role-level `role` setting makes every session of it the admin.
    case(
        "login_sessions_start_as_admin",
        "CREATE ROLE \"{prefix}pl_adm\" LOGIN PASSWORD 'leak' IN ROLE {app}, {admin};
         ALTER ROLE \"{prefix}pl_adm\" SET role = {admin}",
        &["probe.foreign-rows"],
    )
    .leak(MEMBERS_B)
    .login("{prefix}pl_adm")
    .probe_as_login()
    .undo("DROP OWNED BY \"{prefix}pl_adm\"; DROP ROLE \"{prefix}pl_adm\""),
];
