//! Settings that change what a policy or trigger does, for the database and every role of the
//! closure (`pg_db_role_setting`), and at cluster level where verify can read them; foreign keys
//! whose internal triggers are disabled on tenant tables. A setting not on the documented
//! harmless list is an error: unknown means unsafe.

use crate::pg::unnamed::typed;

use anyhow::Result;
use tokio_postgres::Client;

use super::closure::Closure;
use super::{platform::Platform, query};
use crate::model::Schema;
use crate::verify::{Finding, Tally};

/// Every database-level and closure-role-level setting of this database ($1: the closure).
const SETTINGS: &str = "
SELECT CASE WHEN s.setrole = 0 THEN 'database' ELSE 'role ' || r.rolname::text END AS scope,
       coalesce(r.rolname::text, '') AS role,
       pg_catalog.split_part(c, '=', 1) AS name, pg_catalog.substr(c, pg_catalog.strpos(c, '=') + 1) AS value
FROM pg_catalog.pg_db_role_setting s LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole,
     pg_catalog.unnest(s.setconfig) c
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
  AND (s.setrole = 0 OR s.setrole = ANY($1))
ORDER BY 1, 3";

/// Of the schemas named ($1), those a role of the closure ($2) can create objects in (or can
/// create, where it does not exist).
const WRITABLE_SCHEMAS: &str = "
SELECT s AS name FROM pg_catalog.unnest($1::text[]) s
WHERE EXISTS (SELECT FROM pg_catalog.unnest($2::oid[]) r WHERE r <> 0 AND
      CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = s)
           THEN pg_catalog.has_schema_privilege(r, s, 'CREATE')
           ELSE pg_catalog.has_database_privilege(r, pg_catalog.current_database(), 'CREATE') END)";

/// Semantics-changing settings set for the whole cluster (postgresql.conf, ALTER SYSTEM, the
/// command line) to other than their built-in value.
const CLUSTER: &str = "
SELECT name, setting AS value FROM pg_catalog.pg_settings
WHERE source IN ('configuration file', 'command line', 'environment variable')
  AND ((name = 'session_replication_role' AND setting <> 'origin')
    OR (name = 'row_security' AND setting <> 'on')
    OR (name = 'lo_compat_privileges' AND setting <> 'off'))
ORDER BY 1";

/// Foreign keys touching a tenant table ($1) whose internal triggers do not fire.
const RI_DISABLED: &str = "
SELECT DISTINCT 'constraint ' || n.nspname || '.' || c.relname || '.' || k.conname AS object
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_constraint k ON k.oid = t.tgconstraint AND k.contype = 'f'
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgenabled IN ('D', 'R') AND (k.conrelid = ANY($1) OR k.confrelid = ANY($1))
ORDER BY 1";

typed_row! {
    /// A database or role setting (a row of [`SETTINGS`]).
    struct Setting {
        scope: String,
        role: String,
        name: String,
        value: String,
    }
}

typed_row! {
    /// A cluster-level setting (a row of [`CLUSTER`]).
    struct ClusterSetting {
        name: String,
        value: String,
    }
}

/// Settings that cannot change what a policy, trigger or privilege does: timeouts, logging,
/// memory, planner costs, formatting, statistics. Names are lower case; `*` ends a prefix.
const HARMLESS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "deadlock_timeout",
    "application_name",
    "work_mem",
    "maintenance_work_mem",
    "hash_mem_multiplier",
    "temp_buffers",
    "temp_file_limit",
    "log_*",
    "client_min_messages",
    "datestyle",
    "intervalstyle",
    "timezone",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "extra_float_digits",
    "bytea_output",
    "client_encoding",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
    "jit",
    "jit_*",
    "random_page_cost",
    "seq_page_cost",
    "cpu_*",
    "effective_cache_size",
    "effective_io_concurrency",
    "enable_*",
    "plan_cache_mode",
    "cursor_tuple_fraction",
    "geqo",
    "geqo_*",
    "join_collapse_limit",
    "from_collapse_limit",
    "max_parallel_workers_per_gather",
    "parallel_*",
    "track_*",
    "default_statistics_target",
    "vacuum_*",
    "auto_explain.*",
    "pg_stat_statements.*",
    "synchronous_commit",
    "xmloption",
    "default_text_search_config",
    "gin_fuzzy_search_limit",
    "commit_delay",
    "commit_siblings",
];

fn harmless(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    HARMLESS.iter().any(|h| match h.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *h,
    })
}

pub(super) async fn check(
    client: &Client,
    schema: &Schema,
    closure: &Closure,
    platform: &Platform,
    tenant_tables: &[u32],
    tally: &mut Tally,
) -> Result<()> {
    let oids = closure.grantees();
    let what = "cannot read database and role settings";
    let settings = query(client, SETTINGS, typed![&oids], what, Setting::from_row).await?;
    let writable = writable_schemas(client, closure, &settings).await?;
    tally.pass("setting.semantics");
    tally.pass("setting.unknown");
    let context = &schema.tenancy.context_setting;
    for s in settings
        .iter()
        .filter(|s| !s.name.eq_ignore_ascii_case(context))
    {
        judge(s, &writable, (closure, platform), tally);
    }
    cluster(client, tally).await?;
    ri_disabled(client, tenant_tables, tally).await
}

/// The schemas of every search_path setting that the closure can write to.
async fn writable_schemas(
    client: &Client,
    closure: &Closure,
    settings: &[Setting],
) -> Result<Vec<String>> {
    let names: Vec<String> = settings
        .iter()
        .filter(|s| s.name.eq_ignore_ascii_case("search_path"))
        .flat_map(|s| path_schemas(&s.value, &s.role, closure))
        .collect();
    let what = "cannot read schema privileges";
    let oids = closure.grantees();
    query(client, WRITABLE_SCHEMAS, typed![&names, &oids], what, |r| {
        super::col(r, "name")
    })
    .await
}

/// The schemas a search_path value names (`$user` is the role, or any role of the closure).
fn path_schemas(value: &str, role: &str, closure: &Closure) -> Vec<String> {
    let mut out = Vec::new();
    for part in value.split(',') {
        let p = part.trim().trim_matches('"').to_string();
        match p.as_str() {
            "$user" if role.is_empty() => out.extend(closure.names()),
            "$user" => out.push(role.to_string()),
            "pg_catalog" | "pg_temp" | "" => {}
            _ => out.push(p),
        }
    }
    out
}

/// One setting: semantics-changing, harmless, or unknown (unsafe).
fn judge(s: &Setting, writable: &[String], cx: (&Closure, &Platform), tally: &mut Tally) {
    let (closure, platform) = cx;
    let name = s.name.to_ascii_lowercase();
    let value = s.value.trim().trim_matches('\'').to_ascii_lowercase();
    let why = match name.as_str() {
        "session_replication_role" if value != "origin" => Some(
            "disables triggers and foreign keys (the tenant-id immutability trigger among them)",
        ),
        "row_security" if !matches!(value.as_str(), "on" | "true" | "yes" | "1") => {
            Some("changes how row-level security applies")
        }
        "lo_compat_privileges" if !matches!(value.as_str(), "off" | "false" | "no" | "0") => {
            Some("lets every role read and write every large object")
        }
        "role" | "session_authorization" => Some("starts sessions as another role"),
        "search_path" => {
            let bad: Vec<String> = path_schemas(&s.value, &s.role, closure)
                .into_iter()
                .filter(|p| writable.contains(p))
                .collect();
            (!bad.is_empty()).then_some("names a schema the application can create objects in (they would shadow the ones meant)")
        }
        _ => None,
    };
    let obj = format!("setting {} {}", s.scope, s.name);
    if let Some(why) = why {
        tally.fail(Finding::new(
            "setting.semantics",
            obj,
            format!("{} = {} at {} level {why}", s.name, s.value, s.scope),
        ));
    } else if !matches!(
        name.as_str(),
        "session_replication_role" | "row_security" | "lo_compat_privileges" | "search_path"
    ) && !harmless(&name)
        && !platform.setting(&name)
    {
        tally.fail(Finding::new(
            "setting.unknown",
            obj,
            format!(
                "{} = {} at {} level is not on the list of settings known to be harmless",
                s.name, s.value, s.scope
            ),
        ));
    }
}

/// setting.cluster: the same settings for the whole cluster.
async fn cluster(client: &Client, tally: &mut Tally) -> Result<()> {
    let what = "cannot read the server's settings";
    let rows = query(client, CLUSTER, &[], what, ClusterSetting::from_row).await?;
    tally.pass("setting.cluster");
    for s in rows {
        tally.fail(Finding::new(
            "setting.cluster",
            format!("setting cluster {}", s.name),
            format!(
                "{} = {} for the whole cluster (postgresql.conf, ALTER SYSTEM or the command line)",
                s.name, s.value
            ),
        ));
    }
    Ok(())
}

/// setting.ri-trigger-disabled: a foreign key that is not enforced lets rows reference another
/// tenant's.
async fn ri_disabled(client: &Client, tenant_tables: &[u32], tally: &mut Tally) -> Result<()> {
    let what = "cannot read foreign-key triggers";
    let rows: Vec<String> = query(client, RI_DISABLED, typed![tenant_tables], what, |r| {
        super::col(r, "object")
    })
    .await?;
    tally.pass("setting.ri-trigger-disabled");
    for obj in rows {
        tally.fail(Finding::new(
            "setting.ri-trigger-disabled",
            &obj,
            format!(
                "the internal triggers of {obj} are disabled: rows can reference another tenant's"
            ),
        ));
    }
    Ok(())
}
