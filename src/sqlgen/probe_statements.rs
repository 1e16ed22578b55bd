//! SQL text for verify's statement-by-statement probes: per table the app role's reads and
//! attacks and the admin's reference reads, per view or function its foreign rows, the admin's
//! per-tenant feed, the tenant look-ups and the synthetic tenants' inserts. Names are quoted
//! here; every value is a bind parameter.

use postgres_protocol::escape::escape_literal;

use super::{q, rel, ProbeReadable, ProbeTable, PROBE_FUNCTION};

/// The statements that probe one table (`$n` as documented on each).
#[derive(Debug)]
pub struct TableProbes {
    /// The app role's visible rows, those of other tenants, and the looked-up row ($1 tenant,
    /// $2 key as text).
    pub count: String,
    /// The admin's count for the tenant, another tenant's row (key as text, tenant) and one of
    /// the tenant's own keys ($1 tenant); None when the admin cannot read the table.
    pub admin: Option<String>,
    /// The admin's count of every row.
    pub admin_total: Option<String>,
    /// One row of the table: (key as text, tenant).
    pub admin_first: Option<String>,
    /// One row of another tenant than $1: (key as text, tenant).
    pub admin_other: Option<String>,
    /// The UPDATE of another tenant's row ($1 key as text), when the app role may update.
    pub update: Option<String>,
    /// The DELETE of another tenant's row ($1 key as text), when the app role may delete.
    pub delete: Option<String>,
    /// The INSERT with another tenant's id ($1), when the app role may insert.
    pub insert: Option<String>,
    /// Moving one of the tenant's rows ($2 key as text) to another tenant ($1).
    pub change: String,
}

/// [`TableProbes`] for `t`; `admin_select`: whether the admin role can read it.
pub fn table_probes(t: &ProbeTable, admin_select: bool) -> TableProbes {
    let (r, tc, pk) = (rel(&t.schema, &t.table), q(&t.tenant_column), q(&t.key));
    TableProbes {
        count: format!(
            "SELECT count(*) AS visible, count(*) FILTER (WHERE {tc} IS DISTINCT FROM $1) AS other_tenants, \
             count(*) FILTER (WHERE {pk}::text = $2) AS looked_up FROM {r}"
        ),
        admin: admin_select.then(|| {
            format!(
                "SELECT (SELECT count(*) FROM {r} WHERE {tc} = $1) AS own_rows, o.pk, o.tenant, \
                 (SELECT {pk}::text FROM {r} WHERE {tc} = $1 LIMIT 1) AS own_pk \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT {pk}::text, {tc} FROM {r} WHERE {tc} <> $1 LIMIT 1) AS o(pk, tenant) ON true"
            )
        }),
        admin_total: admin_select.then(|| format!("SELECT count(*) FROM {r}")),
        admin_first: admin_select
            .then(|| format!("SELECT {pk}::text AS pk, {tc} AS tenant FROM {r} LIMIT 1")),
        admin_other: admin_select.then(|| {
            format!("SELECT {pk}::text AS pk, {tc} AS tenant FROM {r} WHERE {tc} <> $1 LIMIT 1")
        }),
        update: t.update_column.as_ref().map(|c| {
            let c = q(c);
            format!("UPDATE {r} SET {c} = {c} WHERE {pk}::text = $1 RETURNING 1")
        }),
        delete: t
            .delete
            .then(|| format!("DELETE FROM {r} WHERE {pk}::text = $1 RETURNING 1")),
        insert: t
            .insert
            .then(|| format!("INSERT INTO {r} ({tc}) VALUES ($1) RETURNING 1")),
        change: format!("UPDATE {r} SET {tc} = $1 WHERE {pk}::text = $2 RETURNING 1"),
    }
}

/// The rows of other tenants ($1 the tenant, as text) a view or function returns.
pub fn readable_probe(v: &ProbeReadable) -> String {
    let from = if v.function {
        format!("{}()", rel(&v.schema, &v.name))
    } else {
        rel(&v.schema, &v.name)
    };
    format!(
        "SELECT count(*) FILTER (WHERE {}::text IS DISTINCT FROM $1) FROM {from}",
        q(&v.tenant_column)
    )
}

/// The admin's feed of tenants: each tenant id with, per table, the admin's count of its rows
/// (NULL where the admin cannot read the table).
#[derive(Debug)]
pub struct ProbeFeed {
    /// Every tenant.
    pub all: String,
    /// A random sample ($1 how many).
    pub sample: String,
    /// Named tenants ($1 uuid[]).
    pub named: String,
}

/// [`ProbeFeed`] over `tables` (None: the admin cannot read it), the tenants being the `key`
/// column of `tenant_table` in `schema`.
pub fn probe_feed(
    tables: &[Option<&ProbeTable>],
    schema: &str,
    tenant_table: &str,
    key: &str,
) -> ProbeFeed {
    let (tt, key) = (rel(schema, tenant_table), q(key));
    // Correlated counts (index look-ups per tenant), not one GROUP BY per table: rows
    // stream out as they are counted, so the probes start with the first tenant.
    let correlated: String = tables
        .iter()
        .map(|t| match t {
            Some(t) => format!(
                ", (SELECT count(*) FROM {} WHERE {} = g.k)",
                rel(&t.schema, &t.table),
                q(&t.tenant_column)
            ),
            None => ", NULL::bigint".to_string(),
        })
        .collect();
    ProbeFeed {
        all: format!("SELECT g.k{correlated} FROM (SELECT {key} AS k FROM {tt}) AS g"),
        sample: format!(
            "SELECT g.k{correlated} FROM (SELECT {key} AS k FROM {tt} ORDER BY random() LIMIT $1) AS g"
        ),
        named: format!("SELECT g.k{correlated} FROM pg_catalog.unnest($1::uuid[]) AS g(k)"),
    }
}

/// Every tenant id.
pub fn tenant_ids(schema: &str, tenant_table: &str, key: &str) -> String {
    format!("SELECT {} FROM {}", q(key), rel(schema, tenant_table))
}

/// The slugs of the tenants whose ids ($1, text) are given: verify names tenants by them.
pub fn tenant_slugs(schema: &str, tenant_table: &str, key: &str) -> String {
    format!(
        "SELECT {k}::text AS id, slug::text AS slug FROM {} WHERE {k}::text = ANY($1)",
        rel(schema, tenant_table),
        k = q(key)
    )
}

/// How many tenants there are.
pub fn tenant_count(schema: &str, tenant_table: &str) -> String {
    format!("SELECT count(*) FROM {}", rel(schema, tenant_table))
}

/// The tenant id with slug $1.
pub fn tenant_by_slug(schema: &str, tenant_table: &str, key: &str) -> String {
    format!(
        "SELECT {} FROM {} WHERE slug = $1",
        q(key),
        rel(schema, tenant_table)
    )
}

/// A synthetic tenant's row: `columns` (name, declared type) from `$1..`, each bound as text and
/// cast to its declared type (which comes from the policy files, like every type in the
/// migrations).
pub fn synthetic_insert(schema: &str, table: &str, columns: &[(String, String)]) -> String {
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        rel(schema, table),
        columns
            .iter()
            .map(|(c, _)| q(c))
            .collect::<Vec<_>>()
            .join(", "),
        columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${}::text::{ty}", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One key of a global reference table, as text: what a synthetic row's foreign key to it takes.
pub fn any_key(schema: &str, table: &str, key: &str) -> String {
    format!(
        "SELECT {}::text FROM {} LIMIT 1",
        q(key),
        rel(schema, table)
    )
}

/// The call of the probe function (see [`super::probe_function`]).
pub fn probe_function_call() -> String {
    format!("SELECT * FROM {PROBE_FUNCTION}($1, $2, $3, $4)")
}

/// `begin`, then the transaction's snapshot set to the exported snapshot `id` (hex digits and
/// dashes; quoted all the same).
pub fn begin_in_snapshot(begin: &str, id: &str) -> String {
    format!("{begin}; SET TRANSACTION SNAPSHOT {}", escape_literal(id))
}

/// As the application's own login (`verify --app-url`) the probes switch no role: the same
/// parameters as `pg::tx::SET_ROLE_SQL`, the role (`$1`) unused.
pub const STAY_AS_LOGIN: &str = "SELECT $1::text IS NULL AS unused";
/// The same parameters as `pg::tx::SET_TENANT_SQL`: the context (`$2`, `$3`) set, no role switch.
pub const STAY_AS_LOGIN_IN_CONTEXT: &str =
    "SELECT $1::text IS NULL AS unused, pg_catalog.set_config($2, $3, true)";
/// Every probe transaction's statement timeout (`$1`, e.g. `30000ms`), transaction-local.
pub const PROBE_TIMEOUT: &str = "SELECT pg_catalog.set_config('statement_timeout', $1, true)";
