//! SQL text for verify's probes: the temporary probe function (created in each batch's transaction) and the scratch copies
//! used to compare policy expressions.

use super::diff::column_def;
use super::*;
use crate::ident::{dollar_quote, literal};
use crate::model::{Constraint, Policy, Table};

/// A temporary copy of a declared table (columns, defaults, CHECK constraints) under `scratch`,
/// for `verify` to let Postgres normalise the declared expressions inside a transaction that is
/// rolled back. Keys and foreign keys are left out: they are compared structurally, and a
/// foreign key would lock the referenced table.
pub fn scratch_table(scratch: &str, table: &Table) -> String {
    let mut lines: Vec<String> = table.columns.iter().map(column_def).collect();
    for (cname, c) in &table.constraints {
        if let Constraint::Check { expr } = c {
            lines.push(format!("CONSTRAINT {} CHECK ({expr})", q(cname)));
        }
    }
    format!(
        "CREATE TEMPORARY TABLE {} (\n    {}\n) ON COMMIT DROP",
        rel("pg_temp", scratch),
        lines.join(",\n    ")
    )
}

/// A declared policy's expressions on a scratch table (see [`scratch_table`]). Always `FOR ALL`
/// to `PUBLIC`, which accepts both clauses: only the normalised expressions are read back.
pub fn scratch_policy(scratch: &str, name: &str, p: &Policy) -> String {
    let mut s = format!(
        "CREATE POLICY {} ON {} FOR ALL",
        q(name),
        rel("pg_temp", scratch)
    );
    if let Some(u) = &p.using {
        s.push_str(&format!(" USING ({u})"));
    }
    if let Some(c) = &p.with_check {
        s.push_str(&format!(" WITH CHECK ({c})"));
    }
    s
}

/// Name of `verify`'s temporary probe function (see [`probe_function`]).
pub const PROBE_FUNCTION: &str = "pg_temp.tenantctl_probe_tenants";
/// Its signature, for `regprocedure`.
pub const PROBE_SIGNATURE: &str =
    "pg_temp.tenantctl_probe_tenants(uuid[], uuid[], text[], boolean[])";
/// Prefix of every name the probe function declares. `verify` uses the function only when no
/// probed relation has a column with this prefix, and the function refuses (42702) any name
/// that is both a column and one of its variables (`#variable_conflict error`).
pub const PROBE_NAME_PREFIX: &str = "tc_probe_";

/// One table in [`probe_function`]: raw names, quoted here.
pub struct ProbeTable {
    pub schema: String,
    pub table: String,
    pub tenant_column: String,
    pub key: String,
    /// The key column's type as `format_type` prints it (quoted where it must be), so that a
    /// look-up by key is an index look-up.
    pub key_type: String,
    /// A column the app role may update (the UPDATE of another tenant's row sets it to itself).
    pub update_column: Option<String>,
    /// Whether the app role may DELETE (the DELETE of another tenant's row is probed).
    pub delete: bool,
    /// Whether the app role may INSERT (the INSERT with another tenant's id is probed).
    pub insert: bool,
}

/// A view, or a function without arguments, that the app role can read in [`probe_function`].
pub struct ProbeReadable {
    pub schema: String,
    pub name: String,
    pub function: bool,
    /// The tenant column it returns.
    pub tenant_column: String,
}

/// `verify`'s probes of a batch of tenants as one statement: a temporary PL/pgSQL
/// function, `SECURITY INVOKER` (it runs as the app role that calls it), called with the tenants
/// (`$1`), per tenant another tenant's id (`$2`), and per tenant and table another tenant's key
/// (`$3`, NULL: none) and whether to move one of the tenant's rows (`$4`), both indexed
/// `(tenant - 1) * tables + table`. For each tenant in turn it sets the context with
/// `set_config(<setting>, tenant, true)`, as the application does, then:
///
/// - per table, one statement: the visible rows, those of other tenants, and the look-up of
///   another tenant's row by its key;
/// - one statement of data-modifying CTEs: the UPDATE and the DELETE of that row in every table
///   (in a block);
/// - per table the app role may insert into, the INSERT with another tenant's id (a block);
/// - per table, moving one of the tenant's rows to another tenant (a block);
/// - per view and function over the tenant column, the rows of other tenants it returns (a block).
///
/// Every block ends in an exception, so nothing it wrote survives, not even into the next
/// tenant's probes (the transaction is rolled back as well). It returns one row per tenant and
/// table (`tc_probe_target` the table's index), then per view or function (index `tables + k`):
/// the counts, the rows the UPDATE and DELETE touched, `tc_probe_attack` the SQLSTATE if that
/// statement failed, `tc_probe_insert` `accepted` or the INSERT's SQLSTATE, `tc_probe_change`
/// `moved`, `none` or the change's SQLSTATE; for a view or function, its foreign rows in
/// `tc_probe_foreign` and its SQLSTATE, if it refused, in `tc_probe_insert`. NULL means not
/// probed. The statements are those the client-side probes send (`RETURNING 1` included, which
/// applies the SELECT policies to a written row too); values are only ever the function's
/// arguments; names are quoted here. The plans are generic (`plan_cache_mode`): the values
/// change with every tenant, the plans do not.
pub fn probe_function(setting: &str, tables: &[ProbeTable], readables: &[ProbeReadable]) -> String {
    let n = tables.len();
    let (vars, mut body) = table_reads(tables);
    body.push_str(&cross_writes(tables));
    body.push_str(&inserts_and_moves(tables));
    body.push_str(&table_rows(n));
    body.push_str(&readable_rows(n, readables));
    let body = format!(
        "\n#variable_conflict error\nDECLARE\n    tc_probe_tenant uuid;\n    tc_probe_other uuid;\n    \
         tc_probe_stage integer;\n    tc_probe_rows bigint;\n{vars}BEGIN\n    \
         FOR tc_probe_i IN 1 .. coalesce(pg_catalog.array_length($1, 1), 0) LOOP\n        \
         tc_probe_tenant := $1[tc_probe_i]; tc_probe_other := $2[tc_probe_i]; tc_probe_tenant_no := tc_probe_i;\n        \
         PERFORM pg_catalog.set_config({}, tc_probe_tenant::text, true);\n{body}    END LOOP;\nEND\n",
        literal(setting)
    );
    format!(
        "CREATE FUNCTION {PROBE_SIGNATURE}\n\
         RETURNS TABLE (tc_probe_tenant_no integer, tc_probe_target integer, tc_probe_visible bigint,\n    \
         tc_probe_foreign bigint, tc_probe_looked_up bigint, tc_probe_updated bigint, tc_probe_deleted bigint,\n    \
         tc_probe_attack text, tc_probe_insert text, tc_probe_change text)\n\
         LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET plan_cache_mode = force_generic_plan AS {}",
        dollar_quote(&body)
    )
}

/// The index of table `j` (of `n`) for the current tenant in the `$3` and `$4` arrays.
fn at(n: usize, j: usize) -> String {
    format!("(tc_probe_i - 1) * {n} + {}", j + 1)
}

/// Another tenant's key in table `j` (of `n`), as the key's type.
fn key(n: usize, j: usize, t: &ProbeTable) -> String {
    format!("$3[{}]::{}", at(n, j), t.key_type)
}

/// The variables per table, and the reads: one statement per table.
fn table_reads(tables: &[ProbeTable]) -> (String, String) {
    let n = tables.len();
    let mut vars = String::new();
    let mut body = String::new();
    for (j, t) in tables.iter().enumerate() {
        let (r, tc, pk) = (rel(&t.schema, &t.table), q(&t.tenant_column), q(&t.key));
        vars.push_str(&format!(
            "    tc_probe_visible_{j} bigint;\n    tc_probe_foreign_{j} bigint;\n    tc_probe_looked_up_{j} bigint;\n    \
             tc_probe_updated_{j} bigint;\n    tc_probe_deleted_{j} bigint;\n    tc_probe_insert_{j} text;\n    tc_probe_change_{j} text;\n"
        ));
        body.push_str(&format!(
            "        SELECT count(*), count(*) FILTER (WHERE {tc} IS DISTINCT FROM tc_probe_tenant),\n               \
             (SELECT count(*) FROM {r} WHERE {pk} = {})\n            \
             INTO tc_probe_visible_{j}, tc_probe_foreign_{j}, tc_probe_looked_up_{j} FROM {r};\n",
            key(n, j, t)
        ));
    }
    (vars, body)
}

/// The UPDATE and DELETE of another tenant's row, every table in one statement (in a block).
fn cross_writes(tables: &[ProbeTable]) -> String {
    let n = tables.len();
    let mut body = String::new();
    let mut ctes = Vec::new();
    let mut outs = Vec::new();
    let mut into = Vec::new();
    for (j, t) in tables.iter().enumerate() {
        let (r, pk) = (rel(&t.schema, &t.table), q(&t.key));
        if let Some(c) = &t.update_column {
            let c = q(c);
            ctes.push(format!(
                "u{j} AS (UPDATE {r} SET {c} = {c} WHERE {pk} = {} RETURNING 1)",
                key(n, j, t)
            ));
            outs.push(format!("(SELECT count(*) FROM u{j})"));
            into.push(format!("tc_probe_updated_{j}"));
        }
        if t.delete {
            ctes.push(format!(
                "d{j} AS (DELETE FROM {r} WHERE {pk} = {} RETURNING 1)",
                key(n, j, t)
            ));
            outs.push(format!("(SELECT count(*) FROM d{j})"));
            into.push(format!("tc_probe_deleted_{j}"));
        }
    }
    body.push_str("        tc_probe_attack := NULL;\n");
    if !ctes.is_empty() {
        body.push_str(&format!(
            "        BEGIN\n            tc_probe_stage := 0;\n            WITH {}\n            SELECT {}\n            INTO {};\n            \
             tc_probe_stage := 1;\n            RAISE SQLSTATE 'TCP00';\n        EXCEPTION WHEN OTHERS THEN\n            \
             IF tc_probe_stage = 0 THEN\n                tc_probe_attack := SQLSTATE;\n            END IF;\n        END;\n",
            ctes.join(",\n                 "),
            outs.join(", "),
            into.join(", ")
        ));
    }
    body
}

/// The INSERT with another tenant's id; moving one of the tenant's rows to another tenant.
fn inserts_and_moves(tables: &[ProbeTable]) -> String {
    let n = tables.len();
    let mut body = String::new();
    for (j, t) in tables.iter().enumerate() {
        let (r, tc, pk) = (rel(&t.schema, &t.table), q(&t.tenant_column), q(&t.key));
        if t.insert {
            body.push_str(&format!(
                "        IF tc_probe_other IS NOT NULL THEN\n        BEGIN\n            tc_probe_stage := 0;\n            \
                 WITH w AS (INSERT INTO {r} ({tc}) VALUES (tc_probe_other) RETURNING 1)\n            \
                 SELECT count(*) INTO tc_probe_rows FROM w;\n            \
                 tc_probe_stage := 1;\n            RAISE SQLSTATE 'TCP00';\n        \
                 EXCEPTION WHEN OTHERS THEN\n            \
                 tc_probe_insert_{j} := CASE WHEN tc_probe_stage = 0 THEN SQLSTATE ELSE 'accepted' END;\n        \
                 END;\n        END IF;\n"
            ));
        }
        body.push_str(&format!(
            "        IF tc_probe_other IS NOT NULL AND $4[{}] THEN\n        BEGIN\n            \
             tc_probe_stage := 0;\n            \
             WITH w AS (UPDATE {r} SET {tc} = tc_probe_other\n                       \
             WHERE {pk} = (SELECT {pk} FROM {r} WHERE {tc} = tc_probe_tenant LIMIT 1) RETURNING 1)\n            \
             SELECT count(*) INTO tc_probe_rows FROM w;\n            \
             tc_probe_stage := 1;\n            RAISE SQLSTATE 'TCP00';\n        \
             EXCEPTION WHEN OTHERS THEN\n            \
             tc_probe_change_{j} := CASE WHEN tc_probe_stage = 0 THEN SQLSTATE WHEN tc_probe_rows > 0 THEN 'moved' ELSE 'none' END;\n        \
             END;\n        END IF;\n",
            at(n, j)
        ));
    }
    body
}

/// One row per table. (No comments naming the objects: a name may hold a line break, which
/// would end the comment and make the rest of the name code.)
fn table_rows(n: usize) -> String {
    let mut body = String::new();
    for j in 0..n {
        body.push_str(&format!(
            "        tc_probe_target := {j};\n        \
             tc_probe_visible := tc_probe_visible_{j}; tc_probe_foreign := tc_probe_foreign_{j}; tc_probe_looked_up := tc_probe_looked_up_{j};\n        \
             tc_probe_updated := tc_probe_updated_{j}; tc_probe_deleted := tc_probe_deleted_{j};\n        \
             tc_probe_insert := tc_probe_insert_{j}; tc_probe_change := tc_probe_change_{j};\n        \
             RETURN NEXT;\n        \
             tc_probe_updated_{j} := NULL; tc_probe_deleted_{j} := NULL; tc_probe_insert_{j} := NULL; tc_probe_change_{j} := NULL;\n"
        ));
    }
    body
}

/// Views and functions (numbered after the `n` tables), one row each.
fn readable_rows(n: usize, readables: &[ProbeReadable]) -> String {
    let mut body = String::new();
    for (k, v) in readables.iter().enumerate() {
        let from = if v.function {
            format!("{}()", rel(&v.schema, &v.name))
        } else {
            rel(&v.schema, &v.name)
        };
        body.push_str(&format!(
            "        tc_probe_target := {};\n        \
             tc_probe_visible := NULL; tc_probe_looked_up := NULL; tc_probe_updated := NULL; tc_probe_deleted := NULL;\n        \
             tc_probe_attack := NULL; tc_probe_insert := NULL; tc_probe_change := NULL;\n        \
             BEGIN\n            tc_probe_stage := 0;\n            \
             SELECT count(*) FILTER (WHERE {tc}::text IS DISTINCT FROM tc_probe_tenant::text)\n                \
             INTO tc_probe_foreign FROM {from};\n            \
             tc_probe_stage := 1;\n            RAISE SQLSTATE 'TCP00';\n        \
             EXCEPTION WHEN OTHERS THEN\n            \
             IF tc_probe_stage = 0 THEN\n                tc_probe_foreign := NULL;\n                \
             tc_probe_insert := SQLSTATE;\n            END IF;\n        END;\n        RETURN NEXT;\n",
            n + k,
            tc = q(&v.tenant_column),
        ));
    }
    body
}
