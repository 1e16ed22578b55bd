//! Changes that weaken a defence without a leak a single query can show (the defence behind it
//! still holds, or the attack needs something the app role lacks), and performance traps.
//! verify reports them all the same: the next change would leak.

use super::{case, Case};

pub const CASES: &[Case] = &[
    // USAGE on a schema of extensions' objects passes only while nothing else is in it and
    // nobody of the closure may CREATE there (the realistic database passes with it).
    case(
        "extensions_schema_with_a_function_of_its_own",
        "CREATE SCHEMA extensions; CREATE EXTENSION citext SCHEMA extensions;
         CREATE FUNCTION extensions.normalize(t text) RETURNS text LANGUAGE sql AS 'SELECT lower(t)';
         GRANT USAGE ON SCHEMA extensions TO {app}",
        &["privilege.undeclared"],
    ),
    case(
        "extensions_schema_writable",
        "CREATE SCHEMA extensions; CREATE EXTENSION citext SCHEMA extensions;
         GRANT USAGE, CREATE ON SCHEMA extensions TO PUBLIC",
        &["privilege.undeclared"],
    ),
    case("rls_not_forced", "ALTER TABLE public.members NO FORCE ROW LEVEL SECURITY", &["rls.not-forced"]),
    case(
        "missing_with_check",
        "DROP POLICY members_tenant_isolation ON public.members;
         CREATE POLICY members_tenant_isolation ON public.members FOR ALL TO {app}
           USING (gym_id = (SELECT tenantctl.current_gym_id()))",
        &["policy.missing-with-check"],
    ),
    Case {
        undo: "ALTER ROLE {admin} BYPASSRLS",
        ..case("admin_bypass_missing", "ALTER ROLE {admin} NOBYPASSRLS", &["role.admin-bypass"])
    },
    case(
        "definer_function_search_path",
        "CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'",
        &["exposure.function-search-path"],
    ),
    case("references_to_public", "GRANT REFERENCES, TRIGGER ON public.sessions TO PUBLIC", &["grant.dangerous"]),
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
        "context_not_via_function",
        "ALTER POLICY members_tenant_isolation ON public.members
           USING (gym_id = current_setting('tenantctl.gym_id', true)::uuid)
           WITH CHECK (gym_id = current_setting('tenantctl.gym_id', true)::uuid)",
        &["policy.context", "drift.policy"],
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
        "undeclared_trigger",
        "CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
         CREATE TRIGGER audit AFTER INSERT ON public.coaches FOR EACH ROW EXECUTE FUNCTION public.audit()",
        &["world.trigger"],
    ),
    Case {
        undo: "REVOKE pg_read_server_files FROM {app}",
        ..case("app_member_of_predefined", "GRANT pg_read_server_files TO {app}", &["role.app-membership"])
    },
    // A rule's action runs with the table owner's rights, but FORCE leaves the owner no policy:
    // no leak (its DELETE of gym B's rows finds none); the BEFORE trigger after the immutability
    // check meets WITH CHECK.
    case(
        "rule_on_tenant_table",
        "CREATE RULE wipe AS ON INSERT TO public.members
           DO ALSO DELETE FROM public.bookings WHERE gym_id <> NEW.gym_id",
        &["drift.rule"],
    ),
    case(
        "trigger_after_immutability",
        "CREATE FUNCTION public.mv() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN NEW.gym_id := (SELECT id FROM public.gyms WHERE slug = 'gym-b'); RETURN NEW; END$$;
         CREATE TRIGGER zzzz_move BEFORE UPDATE ON public.members FOR EACH ROW EXECUTE FUNCTION public.mv()",
        &["drift.trigger-late"],
    ),
    // Objects in the helper schema, where the app has USAGE (the embedded superuser `tenantctl`
    // creates unqualified objects there: its "$user" search_path entry names it).
    case(
        "helper_schema_stray_objects",
        "CREATE TABLE tenantctl.scratch (id int);
         CREATE EXTENSION dblink SCHEMA tenantctl",
        &["world.helper-schema"],
    ),
];
