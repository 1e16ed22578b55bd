//! The isolation gate: static checks of the catalog and probes that impersonate tenants, each
//! result a [`Finding`] with a stable check id. Nothing here prints; `commands::verify` renders.

#[macro_use]
mod row;
mod catalog;
mod citus;
mod pooled;
mod preflight;
mod probe;
pub mod render;
pub mod sarif;
mod tx;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::model::Schema;
use crate::pg;

pub use probe::{probe_single_tenant, ProbeSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One check that every verify run can report: its stable id, severity, meaning and fix.
#[derive(Debug, Clone, Copy)]
pub struct CheckDef {
    pub id: &'static str,
    pub severity: Severity,
    pub what: &'static str,
    pub hint: &'static str,
}

const fn check(
    id: &'static str,
    severity: Severity,
    what: &'static str,
    hint: &'static str,
) -> CheckDef {
    CheckDef {
        id,
        severity,
        what,
        hint,
    }
}

use Severity::{Error as E, Warning as W};

/// A drift hint that names both sides that can be ahead: the policy files (changed, not yet
/// generated or migrated; `tenantctl status` says so) or the database (changed by hand).
macro_rules! files_or_db {
    ($by_hand:literal) => {
        concat!(
            "if policies/ changed, run `tenantctl generate` and `tenantctl migrate`; ",
            "if the database was changed by hand, ",
            $by_hand
        )
    };
}

/// Every check id, in report order. docs/verify.md documents each; ids never change meaning.
pub const CHECKS: &[CheckDef] = &[
    check("drift.unmigrated", E, "the database was never migrated (no migration history and no tenant table): nothing else can be checked", "run `tenantctl migrate`, then `tenantctl verify` again"),
    check("drift.table", E, "a declared table is missing", "run `tenantctl migrate` (after `tenantctl generate` if policies/ changed); if the migrations are applied, the table was dropped by hand: restore it as declared"),
    check("drift.column", E, "a declared column is missing or differs (type, NOT NULL, default)", files_or_db!("restore the column as declared")),
    check("drift.constraint", E, "a declared key, CHECK or foreign key is missing or differs", files_or_db!("restore the constraint as declared (composite keys keep tenants apart)")),
    check("drift.index", E, "a declared index is missing or differs", files_or_db!("recreate the index as declared")),
    check("drift.policy", E, "a declared policy is missing, or differs in command, kind, roles or expression", files_or_db!("restore the policy as declared (change policies only through policies/)")),
    check("drift.policy-undeclared", E, "a tenant table carries a policy that no policy file declares", files_or_db!("drop the policy, or declare it under [[policies]]")),
    check("drift.role", E, "a declared role is missing or its LOGIN/BYPASSRLS attributes differ", files_or_db!("ALTER ROLE back to the declaration (tenancy roles are NOLOGIN)")),
    check("drift.grant", E, "a role's privileges on a tenant table differ from the declaration", files_or_db!("REVOKE the extra privileges / GRANT the missing ones, as declared")),
    check("drift.trigger", E, "the tenant-id immutability trigger is missing, disabled or changed", "recreate the trigger as in the first migration; without it a tenant id can change"),
    check("drift.function", E, "the context or trigger function is missing or differs from the generated one (body, volatility, SECURITY DEFINER, or settings other than tenantctl's)", "recreate the function as generated (`tenantctl generate` and `tenantctl migrate`; fail closed: NULLIF(pg_catalog.current_setting(..., true), '')::pg_catalog.uuid)"),
    check("drift.owner", E, "a declared table, the helper schema or a helper function is not owned by the owner role", "ALTER TABLE/SCHEMA/FUNCTION ... OWNER TO <owner>"),
    check("drift.rule", E, "a tenant table carries a rule (its actions run with the table owner's rights, outside the policies)", "DROP RULE <rule> ON <table>"),
    check("drift.trigger-late", E, "an undeclared enabled BEFORE INSERT/UPDATE row trigger on a tenant table fires after the immutability trigger (it can change the tenant id after the check)", "DROP TRIGGER <trigger> ON <table>"),
    check("rls.disabled", E, "row-level security is not enabled on a tenant table", "ALTER TABLE ... ENABLE ROW LEVEL SECURITY"),
    check("rls.not-forced", E, "row-level security is not forced on a tenant table (its owner bypasses it)", "ALTER TABLE ... FORCE ROW LEVEL SECURITY"),
    check("exposure.table", E, "a table the app role can reach carries the tenant column but row-level security is off", "declare the table in policies/ (it gets RLS), or enable and force RLS with a tenant policy, or revoke the app role's access"),
    check("exposure.materialized-view", E, "a materialized view the app role can read holds tenant data (RLS never applies to it)", "revoke the app role's SELECT, or replace it with a security_invoker view or a tenant table"),
    check("exposure.foreign-table", E, "a foreign table the app role can reach carries tenant data without row-level security", "revoke the app role's access, or enable RLS with a tenant policy on it"),
    check("exposure.view", E, "a view the app role can read reads tenant data with its owner's rights (no security_invoker)", "ALTER VIEW ... SET (security_invoker = true), or revoke the app role's SELECT"),
    check("exposure.function", E, "a SECURITY DEFINER function the app role (or PUBLIC) can execute reads tenant tables, or runs as a superuser, a BYPASSRLS role, a tenant-table owner, the owner or the admin role (whatever its body: dynamic SQL hides what it reads)", "make it SECURITY INVOKER, or REVOKE EXECUTE ... FROM PUBLIC and from the app role"),
    check("exposure.function-search-path", E, "a SECURITY DEFINER function the app role can execute has no pinned search_path", "ALTER FUNCTION ... SET search_path = pg_catalog, pg_temp (and qualify names), or revoke EXECUTE"),
    check("exposure.undeclared", E, "a table, view, materialized view or foreign table the app role can reach is not declared in policies/ and carries the tenant column or is derived from tenant tables (security_invoker views over security_invoker views only are exempt)", "declare the table in policies/, or revoke the app role's access (and PUBLIC's)"),
    // world: everything attached to a tenant table, or reachable by the app, is declared (or allow-listed).
    check("world.relation", E, "a table, view, materialized view or foreign table the app role can reach is not declared in policies/ (no tenant column or tenant dependency seen: a renamed copy of tenant data looks like this; unknown means unsafe)", "declare it, or `REVOKE ALL ON <relation> FROM <app>, PUBLIC`, or allow-list it: [[verify.allow]] object = \"table <schema>.<name>\" reason = \"...\""),
    check("world.column", E, "an undeclared column on a declared table computes its value with a function outside pg_catalog (a generated column, or a default): the function can read other tenants' rows into this tenant's row", "drop the column (ALTER TABLE ... DROP COLUMN), or declare it in policies/"),
    check("world.column-extra", W, "an undeclared column on a declared table (plain: no function outside pg_catalog computes it)", "declare it in policies/, or drop it"),
    check("world.unique", E, "a UNIQUE or EXCLUDE constraint, or a unique index, on a tenant table does not include the tenant column: a unique violation tells a tenant that another tenant holds the value (a cross-tenant side channel)", "include the tenant column: UNIQUE (<tenant column>, ...); declare it as unique = [[...]] in policies/"),
    check("world.constraint", E, "an undeclared CHECK, foreign key or unique constraint (with the tenant column) on a declared table", "declare it in policies/, or `ALTER TABLE ... DROP CONSTRAINT <name>`"),
    check("world.index", E, "an undeclared index on a tenant table evaluates a function outside pg_catalog (an expression or predicate): it runs on every write, with the writer's data", "drop the index, or declare an index on plain columns"),
    check("world.index-extra", W, "an undeclared, non-unique (or unique with the tenant column) index on a declared table: it cannot break isolation", "declare it in policies/ (indexes = [...]), or drop it"),
    check("world.trigger", E, "a tenant table carries a trigger that tenantctl does not generate: it fires whatever EXECUTE grants say, and a SECURITY DEFINER trigger function runs as its owner (it can copy or change other tenants' rows)", "`DROP TRIGGER <trigger> ON <table>`, or allow-list it after review: [[verify.allow]] object = \"trigger <schema>.<table>.<name>\""),
    check("world.rule", E, "a rule on a relation that is not a tenant table (those are `drift.rule`): its actions run with the relation owner's rights, outside the app role's policies", "`DROP RULE <rule> ON <relation>`"),
    check("world.inheritance", E, "a tenant table inherits from, or is inherited by, an undeclared table: a SELECT on the parent shows the children's rows under the parent's policies only", "`ALTER TABLE <child> NO INHERIT <parent>` (or DETACH PARTITION), or declare both"),
    check("world.sequence", E, "a sequence backs a tenant table (owned by its column, an identity, or its default): one counter shared by every tenant tells each how many rows the others write", "use uuid keys (gen_random_uuid()), or allow-list the sequence with the reason its values are not secret"),
    check("world.publication", E, "a publication ships a tenant table (FOR ALL TABLES, a schema, or the table): every tenant's rows go to the subscriber, whatever RLS says", "`ALTER PUBLICATION <pub> DROP TABLE <table>` / `DROP PUBLICATION <pub>`, or allow-list it (a replica of the whole database)"),
    check("world.helper-schema", E, "the helper schema holds an object tenantctl does not generate (a table, function, type, operator or extension): the app and admin roles have USAGE on it, and a role named like it (the embedded superuser `tenantctl`) creates unqualified objects there by accident", "move it (ALTER ... SET SCHEMA <schema>) or drop it; an extension meant to live there is declared under [extensions] with that schema"),
    check("world.subscription", E, "a subscription writes into this database: its apply worker inserts what the publisher sends into the tables as its owner, outside row-level security, whichever tenant the rows name", "`DROP SUBSCRIPTION <sub>`, or allow-list it (a replica fed from a trusted primary)"),
    check("world.foreign-key", E, "an undeclared table the app role can write has a foreign key into a tenant table: the key check ignores RLS, so an insert tells whether another tenant's row exists", "drop the foreign key, or reference the tenant table by (<tenant column>, id) from a declared tenant table"),
    check("verify.allow-unused", W, "a [[verify.allow]] entry matches no finding (the object was fixed or renamed: the entry is stale)", "remove the entry from the policy file"),
    check("role.app-superuser", E, "the app role is a superuser (RLS never applies)", "ALTER ROLE <app> NOSUPERUSER"),
    check("role.app-bypassrls", E, "the app role has BYPASSRLS", "ALTER ROLE <app> NOBYPASSRLS"),
    check("role.app-owns", E, "the app role owns a database object (owners can disable RLS, drop policies)", "ALTER ... OWNER TO the owner role"),
    check("role.app-membership", E, "the app role is a member (directly or transitively) of the owner, admin, a superuser or a BYPASSRLS role, or of pg_read_all_data, pg_write_all_data, pg_read_server_files, pg_write_server_files or pg_execute_server_program", "REVOKE <role> FROM <app>"),
    check("role.app-createrole", E, "the app role, or a role it is a member of, has CREATEROLE (it can grant itself the admin role)", "ALTER ROLE <role> NOCREATEROLE, or REVOKE <role> FROM <app>"),
    check("role.app-grantee", E, "a role granted the app role (the application's login roles) is a superuser, has BYPASSRLS, or is also a member of the admin or owner role", "ALTER ROLE <role> NOSUPERUSER NOBYPASSRLS, and REVOKE <admin/owner> FROM <role>"),
    check("role.admin-bypass", E, "the platform admin's bypass is missing (BYPASSRLS, or the USING (true) policy)", "ALTER ROLE <admin> BYPASSRLS, or use admin_bypass = \"policy\""),
    check("grant.dangerous", E, "TRUNCATE, REFERENCES or TRIGGER on a tenant table is granted to the app role or PUBLIC (RLS does not cover them)", "REVOKE TRUNCATE, REFERENCES, TRIGGER ON ... FROM <app>, PUBLIC"),
    check("grant.tenant-column-update", E, "the app role may UPDATE the tenant column", "REVOKE UPDATE (<tenant column>) ON ... FROM <app>; grant UPDATE per column instead"),
    check("policy.always-true", E, "a permissive policy for the app role is always true", "drop the policy or give it the tenant condition"),
    check("policy.fail-open", E, "a policy for the app role has a fail-open branch (IS NULL, COALESCE, OR true): a missing context would show rows", "remove the escape: gym_id = (SELECT <context function>()) fails closed by itself"),
    check("policy.missing-with-check", E, "a permissive policy for the app role that allows writes has no WITH CHECK", "add WITH CHECK (the tenant condition) so rows cannot be written into another tenant"),
    check("policy.context", E, "a permissive policy for the app role does not read the tenant context through the fail-closed context function", "compare the tenant column with (SELECT <context function>()), not current_setting() or a constant"),
    check("policy.multiple-permissive", W, "several permissive policies apply to the app role for one command (they OR together and are each evaluated)", "merge them, or make the extra conditions RESTRICTIVE"),
    check("policy.context-per-row", W, "the context function is called per row, not wrapped as an InitPlan", "wrap it: gym_id = (SELECT <context function>())"),
    check("config.default-context", E, "a database or role default sets the tenant context (a missing context would not fail closed)", "ALTER DATABASE/ROLE ... RESET <context setting>"),
    // reach: the closure of roles that can act as the application, what they hold, the pristine
    // comparison outside the declared world, settings that change semantics.
    check("role.closure-attribute", E, "a role the application's logins can become (directly, by SET ROLE or inheritance) has SUPERUSER, BYPASSRLS, CREATEROLE or REPLICATION (not already reported by role.app-*)", "ALTER ROLE <role> NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOREPLICATION, or REVOKE the membership that leads to it"),
    check("role.closure-createdb", W, "a role the application can become has CREATEDB", "ALTER ROLE <role> NOCREATEDB"),
    check("role.closure-membership", E, "a login that can act as the application can become an operator role or a predefined role that reaches past the policies, the server's files or other sessions (every pg_* role but a harmless few)", "REVOKE <role> FROM <login> (and the memberships that lead to it)"),
    check("role.closure-owns", E, "a role the application can become (other than the app role: role.app-owns) owns a database object", "ALTER ... OWNER TO the owner role, or REVOKE the membership"),
    check("privilege.undeclared", E, "a role the application can become, or PUBLIC, holds a privilege on a relation, column, sequence, function, schema, large object, type, language, foreign server or wrapper, the database or a tablespace that neither policies/ declares nor a fresh cluster (pg_init_privs, the built-in defaults) has", "REVOKE <privilege> ON <object> FROM <grantee>, or allow-list it with a reason"),
    check("privilege.other-database", E, "the application's roles can connect to another database of the same cluster in which they hold privileges or own objects (a BI or staging copy made from this one): verify checks one database, so that data is reachable unchecked", "run verify against that database too (and fix it), or REVOKE CONNECT ON DATABASE <db> FROM PUBLIC and from the application's roles; allow-list `database <name>` when it holds no tenant data"),
    check("privilege.leakproof", E, "a function outside pg_catalog marked LEAKPROOF can be run by the application: the planner may call it on other tenants' rows before the policy filters them", "ALTER FUNCTION <function> NOT LEAKPROOF"),
    check("pristine.catalog-object", E, "an object was added to pg_catalog or information_schema after initdb by no extension (it is found before any object of its name)", "DROP it, or move it to a schema of its own"),
    check("pristine.event-trigger", E, "an event trigger that no extension installed runs its function on every role's DDL, the application's included", "DROP EVENT TRIGGER <name>, or allow-list it with a reason"),
    check("pristine.default-privileges", E, "default privileges grant a role the application can become (or PUBLIC) privileges on objects created in future", "ALTER DEFAULT PRIVILEGES FOR ROLE <role> REVOKE ... FROM <grantee>"),
    check("setting.semantics", E, "a database- or role-level setting for a role the application can become changes what policies or triggers do: session_replication_role, row_security, lo_compat_privileges, role, session_authorization, or a search_path naming a schema the application can create objects in", "ALTER DATABASE/ROLE ... RESET <setting>"),
    check("setting.unknown", E, "a database- or role-level setting for a role the application can become is not on the list of settings known to be harmless (unknown means unsafe)", "ALTER DATABASE/ROLE ... RESET <setting>, or allow-list it with a reason"),
    check("setting.cluster", E, "session_replication_role, row_security or lo_compat_privileges is changed for the whole cluster", "ALTER SYSTEM RESET <setting> (or remove it from postgresql.conf) and reload"),
    check("setting.ri-trigger-disabled", E, "the internal triggers of a foreign key on a tenant table are disabled (ALTER TABLE ... DISABLE TRIGGER ALL): rows can reference another tenant's", "ALTER TABLE <table> ENABLE TRIGGER ALL"),
    check("setting.cluster-custom", E, "a custom setting no loaded library registered (a placeholder) is set for the whole cluster in postgresql.conf or by ALTER SYSTEM: every role, the application's logins included, reads it", "remove it from postgresql.conf (ALTER SYSTEM RESET <setting>) and reload; keep secrets out of settings, or allow-list it with a reason"),
    check("setting.two-phase-commit", E, "max_prepared_transactions is above 0: any session of the application's login can COMMIT or ROLLBACK PREPARED another tenant's prepared transaction", "set max_prepared_transactions = 0 (a restart), or give each tenant a login of its own"),
    check("privilege.stat-statements", E, "a role of the application may read pg_stat_statements (its view or functions; PUBLIC's by default): every statement of the same login, other tenants' included, utility statements with their literals", "REVOKE SELECT ON pg_stat_statements, pg_stat_statements_info FROM PUBLIC; REVOKE EXECUTE ON FUNCTION pg_stat_statements(boolean), pg_stat_statements_info() FROM PUBLIC; GRANT them to pg_read_all_stats"),
    check("perf.tenant-index", W, "no index on a tenant table is led by the tenant column (every tenant query scans the table)", "CREATE INDEX ON ... (<tenant column>, ...); declared tables get one from their tenant key"),
    check("perf.plan-tenant-index", W, "a tenant query on a tenant table cannot use an index led by the tenant column (planned as the app role in a tenant context, sequential scans priced out)", "CREATE INDEX ... ON <table> (<tenant column>, ...): every unique or index declared in policies/ is led by it"),
    check("perf.context-once", W, "the tenant condition of a tenant query is evaluated per row (a function call in the filter), not once per statement", "wrap the context in a scalar subquery, (SELECT <context function>()), and keep the context function inlinable (LANGUAGE sql, STABLE, no settings)"),
    check("perf.context-function", W, "the context function carries settings (SET search_path, ...), so Postgres cannot inline it and every statement of the app role calls it", "run `tenantctl generate` and `tenantctl migrate` (they re-create it without settings), or ALTER FUNCTION <context function>() RESET ALL"),
    check("probe.foreign-rows", E, "a tenant saw rows of another tenant", "find the policy that lets them through (`drift.policy`, `policy.*` findings say which)"),
    check("probe.count", E, "a tenant's visible row count differs from the admin's count for that tenant", "check the policies: the app role must see exactly its own rows"),
    check("probe.cross-lookup", E, "another tenant's row was visible when looked up by id", "check the table's policies and RLS"),
    check("probe.cross-update", E, "an UPDATE of another tenant's row affected it", "check the table's policies (USING)"),
    check("probe.cross-delete", E, "a DELETE of another tenant's row affected it", "check the table's policies (USING)"),
    check("probe.cross-insert", E, "an INSERT carrying another tenant's id was not rejected by row-level security", "give the table's app-role policies WITH CHECK (the tenant condition)"),
    check("probe.tenant-id-change", E, "a row's tenant id could be changed", "restore the immutability trigger and revoke UPDATE of the tenant column"),
    check("probe.no-context", E, "with no tenant context set, the app role saw rows", "policies must fail closed: no `IS NULL OR`, no default context"),
    check("probe.empty-context", E, "with an empty tenant context, the app role saw rows", "the context function must map '' to NULL (NULLIF)"),
    check("probe.garbage-context", E, "with a malformed tenant context, the app role saw rows", "the context function must cast to uuid and fail"),
    check("probe.context-leak", E, "a tenant context set in one transaction was still set in the next on the same connection", "set the context with set_config(<setting>, $1, true), never session-level SET"),
    check("probe.view", E, "a view the app role can read returned another tenant's rows", "make the view security_invoker, or revoke it"),
    check("probe.function", E, "a function the app role can call returned another tenant's rows", "make the function SECURITY INVOKER, or revoke EXECUTE"),
    check("probe.pooler-leak", E, "through the pooler, as the application's login, a transaction in one tenant's context saw another tenant's rows, or a transaction without a context saw rows or found a context set", "set the context with set_config(<setting>, $1, true) inside each transaction, never with SET or ALTER ROLE/DATABASE ... SET; the application's login must be granted the app role only (no BYPASSRLS, no admin role)"),
    check("probe.admin-sees-all", E, "the platform admin does not see the sum of every tenant's rows", "restore the admin bypass (BYPASSRLS or the USING (true) policy)"),
    // The declared objects beyond tenant tables (global tables, views, partitions, extensions).
    check("grant.global-write", E, "the app role (directly, through a role it is a member of, or PUBLIC) may write a declared global table (INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER): a write there changes what every tenant sees, and a cascading foreign key carries it into other tenants' rows", "REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON <table> FROM <app>, PUBLIC; only the owner or admin role writes a global table"),
    check("drift.view", E, "a declared view is missing, or its definition differs from the declared query (as Postgres renders both)", files_or_db!("re-create the view as declared")),
    check("drift.view-invoker", E, "a declared view is not both security_invoker and security_barrier: it reads with its owner's rights, outside the reader's row-level security", "ALTER VIEW <view> SET (security_invoker = true, security_barrier = true)"),
    check("drift.partition", E, "a declared partition is missing, or is not attached to its declared table", files_or_db!("re-create or re-attach the partition as declared")),
    check("drift.extension", E, "a declared extension is not installed, or is in another schema than declared", files_or_db!("CREATE EXTENSION <name> WITH SCHEMA <schema>, or ALTER EXTENSION <name> SET SCHEMA <schema>")),
    check("probe.error", E, "a probe failed because of the database's own objects (a policy, function or trigger raising an error, infinite recursion in a policy, a missing object): what it was to prove is unproven", "fix the object the error names (the message carries the server's error and SQLSTATE); run the failing statement as the app role in a tenant's context to see it"),
    check("probe.timeout", E, "a probe was cancelled by the probes' statement timeout (--probe-timeout, [verify] probe_timeout): what it was to prove is unproven", "find what makes the statement slow (a policy or function doing per-row work, a lock held by another session), or raise --probe-timeout"),
    check("probe.real-login-skipped", W, "--app-url was given but there are fewer than two tenants: the probes as the application's login were skipped (synthetic tenants never leave verify's own transaction)", "run verify against a database with at least two tenants (a CI branch with seeded tenants) to probe as the real login"),
    // Citus (`[target] kind = "citus"`, src/verify/citus.rs).
    check("citus.local-table", E, "a declared table is a local table on the Citus coordinator (not distributed, not a reference table)", "run `tenantctl migrate` with [target] kind = \"citus\", or SELECT create_distributed_table('<table>', '<tenant column>', colocate_with => '<another tenant table>')"),
    check("citus.distribution-column", E, "a tenant table is distributed by another column than the tenant column (the tenant table: not a reference table nor distributed by its key)", "SELECT undistribute_table('<table>') and distribute it again by the tenant column"),
    check("citus.colocation", E, "the distributed tenant tables are not all in one co-location group", "SELECT update_distributed_table_colocation('<table>', colocate_with => '<another tenant table>')"),
    check("citus.shard-policy", E, "a shard placement on a worker lacks forced row-level security or the coordinator's policies", "re-create the policy on the coordinator (Citus propagates it to every shard), or ALTER TABLE ... FORCE ROW LEVEL SECURITY there"),
    check("citus.probe-foreign-rows", E, "on Citus, the app role in one tenant's context reads rows of other tenants", "check the table's policies and that the app connects as its LOGIN role with SET LOCAL context (docs/citus.md)"),
    check("citus.probe-own-rows", E, "on Citus, the app role in a tenant's context does not read all of that tenant's rows (the context does not reach the workers)", "set the context with SET LOCAL after SET LOCAL citus.propagate_set_commands = 'local' (set_config is not propagated); docs/citus.md"),
    check("citus.probe-foreign-insert", E, "on Citus, the app role in one tenant's context can insert a row for another tenant", "give the table's policy WITH CHECK (the tenant condition)"),
    check("citus.probe-no-context", E, "on Citus, the app role without a tenant context reads rows", "policies must compare the tenant column with the fail-closed context function"),
    // Round 3 of the adversarial review (src/verify/catalog/leading.rs, ...).
    check("world.index-leading", E, "an index on a tenant table that policies/ does not declare is not led by the tenant column: LEAKPROOF comparisons (text, uuid, numbers, dates) may run as its index condition before the policy, and EXPLAIN ANALYZE's \"Rows Removed by Filter\" (or pg_stat_xact_user_tables) then counts other tenants' rows in any range of its leading column: a prefix search reads their values", "CREATE INDEX ... ON <table> (<tenant column>, ...) and drop this one, or declare it in policies/ (indexes = [...]: the generator leads it with the tenant column); allow: object = \"index <schema>.<name>\""),
    check("pristine.extension-event-trigger", E, "an enabled event trigger belongs to an extension whose install script does not create it (ALTER EXTENSION ... ADD EVENT TRIGGER makes any event trigger an extension's): it runs its function on every role's DDL, the application's CREATE TEMP TABLE included", "DROP EVENT TRIGGER <name> (after ALTER EXTENSION <extension> DROP EVENT TRIGGER <name>), or ALTER EVENT TRIGGER <name> DISABLE, or allow-list event trigger <name> with a reason"),
    check("privilege.other-database-public", E, "a login of the closure can connect to another database of the same cluster (CONNECT is PUBLIC's by default) where PUBLIC or a role of the closure may use a relation, column, SECURITY DEFINER function, large object or foreign server, read by connecting to it: pg_shdepend records no grant to PUBLIC, and verify checks one database", "run verify against that database too (and fix it), or REVOKE CONNECT ON DATABASE <db> FROM PUBLIC (and from the application's roles), or revoke PUBLIC's grants there; allow-list database <name> when it holds no tenant data"),
    check("privilege.other-database-uninspected", E, "a login of the closure can connect to another database of the same cluster that verify could not connect to or read (its role lacks CONNECT there, or pg_hba refuses it): unknown means unsafe", "GRANT CONNECT ON DATABASE <db> TO <the role verify connects as>, or REVOKE CONNECT ON DATABASE <db> FROM PUBLIC and from the application's roles; allow-list database <name> when it holds no tenant data"),
    check("pristine.cast", E, "a cast created after initdb by no extension: pg_cast is not per-schema, so it changes what every :: of its types does, the inlined context function's NULLIF(...)::uuid included (its text unchanged)", "DROP CAST (<source> AS <target>), or allow-list cast (<source> AS <target>) with a reason"),
];

pub fn check_def(id: &str) -> &'static CheckDef {
    CHECKS
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("unknown check id {id}"))
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    /// The object it concerns: `table public.members`, `policy members_x on public.members`, `role gym_app`.
    pub object: String,
    /// The tenant id, for probe findings.
    pub tenant: Option<String>,
    /// That tenant's slug, when the tenant table has one (what the human output shows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_slug: Option<String>,
    pub message: String,
    pub hint: String,
    /// The reason of the `[[verify.allow]]` entry that accepts it (then it never fails the gate).
    pub allowed: Option<String>,
}

impl Finding {
    pub fn new(id: &'static str, object: impl Into<String>, message: impl Into<String>) -> Finding {
        let def = check_def(id);
        Finding {
            id: def.id,
            severity: def.severity,
            object: object.into(),
            tenant: None,
            tenant_slug: None,
            message: message.into(),
            hint: def.hint.to_string(),
            allowed: None,
        }
    }

    pub fn tenant(mut self, tenant: impl ToString) -> Finding {
        self.tenant = Some(tenant.to_string());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Finding {
        self.hint = hint.into();
        self
    }
}

/// Findings and how many checks ran, per check id.
#[derive(Debug, Default)]
pub struct Tally {
    pub findings: Vec<Finding>,
    pub runs: BTreeMap<&'static str, usize>,
}

impl Tally {
    /// Count one run of check `id`; record `finding` when it failed.
    pub fn record(&mut self, id: &'static str, finding: Option<Finding>) {
        debug_assert!(finding.as_ref().is_none_or(|f| f.id == id));
        *self.runs.entry(check_def(id).id).or_default() += 1;
        if let Some(f) = finding {
            self.findings.push(f);
        }
    }

    /// Count one run of check `id`; when it `failed`, record a finding on `object` with the
    /// message `message` builds.
    pub fn fail_if(
        &mut self,
        id: &'static str,
        failed: bool,
        object: impl Into<String>,
        message: impl FnOnce() -> String,
    ) {
        self.record(id, failed.then(|| Finding::new(id, object, message())));
    }

    pub fn fail(&mut self, f: Finding) {
        let id = f.id;
        self.record(id, Some(f));
    }

    pub fn pass(&mut self, id: &'static str) {
        self.record(id, None);
    }

    pub fn merge(&mut self, other: Tally) {
        for (id, n) in other.runs {
            *self.runs.entry(id).or_default() += n;
        }
        self.findings.extend(other.findings);
    }

    pub fn checks(&self) -> usize {
        self.runs.values().sum()
    }

    /// Apply the allow-list: a finding whose object (and id, when the entry names one) an entry
    /// names is kept, marked allowed with the entry's reason; an entry that matches nothing is a
    /// `verify.allow-unused` warning, except an entry for a probe check when no probe ran.
    pub fn allow(&mut self, entries: &[crate::model::Allow], probed: bool) {
        for a in entries {
            let mut used = false;
            for f in self
                .findings
                .iter_mut()
                .filter(|f| f.object == a.object && a.check.as_deref().is_none_or(|c| c == f.id))
            {
                f.allowed = Some(format!("{} ({})", a.reason, a.at));
                used = true;
            }
            let check = a
                .check
                .as_deref()
                .map(|c| format!(" check = {c:?}"))
                .unwrap_or_default();
            let unprobed = !probed && a.check.as_deref().is_some_and(|c| c.starts_with("probe."));
            self.fail_if("verify.allow-unused", !used && !unprobed, &a.object, || {
                format!(
                    "[[verify.allow]] at {} (object = {:?}{check}) matches no finding",
                    a.at, a.object
                )
            });
        }
    }
}

/// Which tenants to probe.
#[derive(Debug, Clone, Default)]
pub enum TenantSelection {
    #[default]
    All,
    /// A random sample of this many tenants.
    Sample(u64),
    /// Tenants named by id or slug.
    Named(Vec<String>),
}

/// What a verify run does (plain values; the command parses flags into this).
#[derive(Debug, Clone)]
pub struct Settings {
    pub tenants: TenantSelection,
    /// Connections probing tenants in parallel.
    pub connections: usize,
    /// Skip the dynamic probes (static checks only).
    pub static_only: bool,
    /// Show a progress bar over tenants (the caller decides: stderr must be a terminal).
    pub progress: bool,
    /// The application's login through a transaction pooler: run the pooler leak probe there.
    pub pooled: Option<pg::Target>,
    /// The application's own login (`--app-url`): the probes log in as it, no SET ROLE.
    pub app: Option<pg::Target>,
    /// No write probes (they take row locks and fire triggers on live rows).
    pub read_only: bool,
    /// The statement timeout of every probe transaction.
    pub probe_timeout: Duration,
    /// The reachability closure's settings: declared operator roles and the platform profile.
    pub reach: Reach,
}

/// `[verify] operators` and `platform`: who sits outside the application's reach.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// Declared operator roles (the connecting role is always one).
    pub operators: Vec<String>,
    /// `Some(true)`: Neon's profile; `Some(false)`: plain Postgres; `None`: detect it.
    pub neon: Option<bool>,
}

/// The default of `--probe-timeout`.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tenants: TenantSelection::All,
            connections: 2,
            static_only: false,
            progress: false,
            pooled: None,
            app: None,
            read_only: false,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            reach: Reach::default(),
        }
    }
}

/// How the probes ran: as whom, with which limits, what they could not prove, and why they
/// could not run (when they could not: the static findings are reported all the same).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeInfo {
    /// The role the probes acted as: the application's login, or the app role.
    pub acted_as: Option<String>,
    /// Whether they logged in as the application's login (`--app-url`).
    pub real_login: bool,
    /// Without `--app-url`: the login roles granted the app role (not probed as).
    pub logins: Vec<String>,
    pub read_only: bool,
    pub statement_timeout_ms: u64,
    pub notes: Vec<String>,
    /// Why the probes could not run (verify then exits 2).
    pub error: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub tenants_probed: u64,
    pub synthetic_tenants: bool,
    pub checks: usize,
    pub errors: usize,
    pub warnings: usize,
    /// Findings accepted by `[[verify.allow]]` (counted in neither errors nor warnings).
    #[serde(skip_serializing_if = "is_zero")]
    pub allowed: usize,
    pub seconds: f64,
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    pub database: String,
    pub tally: Tally,
    pub tenants_probed: u64,
    pub synthetic_tenants: bool,
    pub elapsed: Duration,
    pub probes: ProbeInfo,
}

impl Report {
    pub fn stats(&self) -> Stats {
        Stats {
            tenants_probed: self.tenants_probed,
            synthetic_tenants: self.synthetic_tenants,
            checks: self.tally.checks(),
            errors: self.count(Severity::Error),
            warnings: self.count(Severity::Warning),
            allowed: self
                .tally
                .findings
                .iter()
                .filter(|f| f.allowed.is_some())
                .count(),
            seconds: (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        }
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.tally
            .findings
            .iter()
            .filter(|f| f.severity == severity && f.allowed.is_none())
            .count()
    }

    /// The gate: no finding at or above `fail_on`, allow-listed findings aside.
    pub fn passed(&self, fail_on: Severity) -> bool {
        self.tally
            .findings
            .iter()
            .all(|f| f.severity < fail_on || f.allowed.is_some())
    }
}

/// The `perf.*` plan checks of every tenant table (shared with `bench`): warnings, since a plan
/// that cannot use the tenant index is slow, not leaky.
async fn plan_checks(client: &mut tokio_postgres::Client, schema: &Schema) -> Result<Tally> {
    let mut tally = Tally::default();
    let checks =
        match crate::bench::plans::check_tables(client, schema, &schema.tenancy.table_schema).await
        {
            Ok(checks) => checks,
            // The connection lives: the database's own objects refused the app role's statement
            // (a policy raising, or recursing), a finding as for every probe. A lost connection
            // stops the run.
            Err(e) if !client.is_closed() => {
                let what = format!("the plan checks as {}", schema.tenancy.app_role);
                tally.fail(Finding::new(
                    "probe.error",
                    format!("role {}", schema.tenancy.app_role),
                    format!("{what} failed: {e:#}"),
                ));
                return Ok(tally);
            }
            Err(e) => return Err(e).context("the plan checks failed to run"),
        };
    for c in checks {
        // bench calls it perf.tenant-index; here that id is the catalog check (no such index).
        let id = match c.name {
            crate::bench::plans::TENANT_INDEX => "perf.plan-tenant-index",
            other => other,
        };
        let finding = (!c.ok).then(|| Finding::new(id, &c.table, &c.detail));
        tally.record(id, finding);
    }
    Ok(tally)
}

/// Give the findings about a tenant that tenant's slug, read as the admin role in a transaction
/// that is rolled back. Best effort: a tenant table without a `slug` column (or any error)
/// leaves the ids alone, which every output shows anyway.
async fn name_tenants(client: &mut tokio_postgres::Client, schema: &Schema, tally: &mut Tally) {
    let ids: Vec<String> = tally
        .findings
        .iter()
        .filter_map(|f| f.tenant.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return;
    }
    let t = &schema.tenancy;
    let Ok(tx) = client.transaction().await else {
        return;
    };
    if pg::tx::set_role(&tx, &t.admin_role).await.is_err() {
        return;
    }
    let sql = crate::sqlgen::tenant_slugs(&t.table_schema, &t.tenant_table, &t.tenant_key);
    let Ok(rows) = tx.query_typed(&sql, crate::pg::unnamed::typed![&ids]).await else {
        return;
    };
    let slugs: BTreeMap<String, String> = rows
        .iter()
        .map(|r| (r.get::<_, String>("id"), r.get::<_, String>("slug")))
        .collect();
    for f in &mut tally.findings {
        if let Some(slug) = f.tenant.as_ref().and_then(|id| slugs.get(id)) {
            f.tenant_slug = Some(slug.clone());
        }
    }
}

/// Run the whole gate against `url`. Connecting, reading the catalog or switching roles
/// failing is an `Err` (never a pass); the probes failing to run is the report's
/// `probes.error` (the static findings are reported with it, and the command exits 2).
pub async fn run(url: &pg::Target, schema: &Schema, settings: &Settings) -> Result<Report> {
    if schema.target == crate::model::Backend::Citus {
        return citus::run(url, schema, settings).await;
    }
    let started = Instant::now();
    let mut client = pg::connect(url).await?;
    preflight::check_set_role(&client, schema).await?;
    let mut info = ProbeInfo::default();

    // The static checks (a connection of their own) and the probes run at the same time: the
    // checks are many small catalog queries, mostly waiting on round trips.
    let (statics, probes) = if settings.static_only {
        (
            catalog::check(&client, url, schema, &settings.reach).await,
            None,
        )
    } else {
        let statics =
            async { catalog::check(&pg::connect(url).await?, url, schema, &settings.reach).await };
        let probes = probe::run(url, &client, schema, settings, &mut info);
        let (s, p) = tokio::join!(statics, probes);
        (s, Some(p))
    };
    let mut tally = statics.context("static checks failed to run")?;
    let mut probe_error = None;
    if let (Some(pooled), false) = (&settings.pooled, settings.static_only) {
        match pooled::run(pooled, &client, schema).await {
            Ok(leaks) => tally.merge(leaks),
            Err(e) => probe_error = Some(format!("the pooler leak probe failed to run: {e:#}")),
        }
    }
    tally.merge(plan_checks(&mut client, schema).await?);
    let (tenants_probed, synthetic_tenants) = match probes {
        None => (0, false),
        Some(Ok(outcome)) => {
            tally.merge(outcome.tally);
            (outcome.tenants_probed, outcome.synthetic)
        }
        Some(Err(e)) => {
            probe_error = Some(format!("probes failed to run: {e:#}"));
            (0, false)
        }
    };
    info.error = probe_error;
    name_tenants(&mut client, schema, &mut tally).await;
    tally.allow(&schema.allow, !settings.static_only);
    // Sorted so that runs over the same database give the same report.
    tally.findings.sort_by(|a, b| {
        let order = |id: &str| CHECKS.iter().position(|c| c.id == id);
        (order(a.id), &a.object, &a.tenant, &a.message).cmp(&(
            order(b.id),
            &b.object,
            &b.tenant,
            &b.message,
        ))
    });
    Ok(Report {
        database: url.to_string(),
        tally,
        tenants_probed,
        synthetic_tenants,
        elapsed: started.elapsed(),
        probes: info,
    })
}

#[cfg(test)]
mod tests {
    use super::{Finding, Tally, CHECKS};
    use crate::model::Allow;

    fn entry(object: &str, check: Option<&str>) -> Allow {
        Allow {
            object: object.into(),
            check: check.map(Into::into),
            reason: "reviewed".into(),
            at: "policies/a.toml:3:1".into(),
        }
    }

    #[test]
    fn the_allow_list_marks_exact_matches_and_reports_stale_entries() {
        let mut tally = Tally::default();
        tally.fail(Finding::new(
            "world.trigger",
            "trigger public.members.audit",
            "m",
        ));
        tally.fail(Finding::new("world.sequence", "sequence public.s", "m"));
        tally.allow(
            &[
                entry("trigger public.members.audit", None),
                // Another check's id, and a prefix of the object: neither matches.
                entry("sequence public.s", Some("world.trigger")),
                entry("trigger public.members", None),
                // A probe check when no probe ran: not stale.
                entry("table public.members", Some("probe.count")),
            ],
            false,
        );
        let allowed: Vec<_> = tally.findings.iter().map(|f| f.allowed.is_some()).collect();
        assert_eq!(allowed[..2], [true, false]);
        assert_eq!(
            tally.findings[0].allowed.as_deref(),
            Some("reviewed (policies/a.toml:3:1)")
        );
        let unused: Vec<&str> = tally
            .findings
            .iter()
            .filter(|f| f.id == "verify.allow-unused")
            .map(|f| f.object.as_str())
            .collect();
        assert_eq!(unused, ["sequence public.s", "trigger public.members"]);
    }

    #[test]
    fn every_check_id_is_unique_and_documented() {
        let doc = include_str!("../../docs/verify.md");
        for (i, c) in CHECKS.iter().enumerate() {
            assert!(
                !CHECKS[..i].iter().any(|d| d.id == c.id),
                "duplicate id {}",
                c.id
            );
            assert!(
                doc.contains(&format!("| `{}` |", c.id)),
                "{} is missing from docs/verify.md",
                c.id
            );
        }
    }
}
