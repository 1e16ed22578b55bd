//! The one module that writes SQL text: the statements that take a database from one compiled
//! model to another (from nothing, for the first migration). Identifiers are always quoted,
//! literals always escaped, and iteration is sorted, so equal models give equal bytes.

use std::collections::{BTreeMap, BTreeSet};

use postgres_protocol::escape::escape_identifier;

use crate::ident::{dollar_quote, literal};
use crate::model::{
    Column, Constraint, Grant, Index, OnDelete, Policy, Role, Schema, Table, Tenancy,
};

/// SQLSTATE raised when a row's tenant id is changed.
pub const TENANT_IMMUTABLE_SQLSTATE: &str = "TC001";

/// One SQL statement and the policy file (and object) it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// `policies/members.toml: table members`
    pub provenance: String,
    pub sql: String,
    /// Loses data (DROP TABLE, DROP COLUMN): needs --allow-destructive.
    pub destructive: bool,
}

fn q(name: &str) -> String {
    escape_identifier(name)
}

/// A table name qualified with the tables' schema, so that no search_path decides where it lives.
fn rel(schema: &str, table: &str) -> String {
    format!("{}.{}", q(schema), q(table))
}

fn qlist<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|n| q(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Name of the trigger that keeps the tenant id immutable. It sorts last among BEFORE triggers
/// (which fire in name order), so no other trigger can change the tenant id after the check.
pub const IMMUTABILITY_TRIGGER: &str = "zzz_tenantctl_tenant_immutable";

pub fn context_function(t: &Tenancy) -> String {
    format!("{}.{}", q(&t.helper_schema), q(&t.context_function))
}

pub fn trigger_function(t: &Tenancy) -> String {
    format!("{}.{}", q(&t.helper_schema), q("forbid_tenant_change"))
}

/// The context function's body. `verify` compares the live function's source with it: any
/// other body (a COALESCE, a default tenant) may fail open.
pub fn context_function_body(t: &Tenancy) -> String {
    // The cast names pg_catalog: the function is inlined, so its body is parsed with the
    // caller's search_path, where an unqualified `uuid` would find a type of the caller's own
    // first (pg_temp is searched first for types). NULLIF's `=` is the caller's to choose too,
    // and can only make the result NULL (no rows) or the setting itself.
    context_body_casting_to(t, "pg_catalog.uuid")
}

/// The context function's body before helpers revision 2, safe only with its pinned
/// `search_path` (which kept it from being inlined); `verify` accepts it only so.
pub fn context_function_body_v1(t: &Tenancy) -> String {
    context_body_casting_to(t, "uuid")
}

fn context_body_casting_to(t: &Tenancy, ty: &str) -> String {
    format!(
        " SELECT NULLIF(pg_catalog.current_setting({}, true), '')::{ty} ",
        literal(&t.context_setting)
    )
}

/// The immutability trigger function's body (compared by `verify` like the context function's).
pub fn trigger_function_body() -> String {
    format!(
        "\nBEGIN\n    IF to_jsonb(NEW) -> TG_ARGV[0] IS DISTINCT FROM to_jsonb(OLD) -> TG_ARGV[0] THEN\n        RAISE EXCEPTION 'tenant id is immutable: %.% cannot change', TG_TABLE_NAME, TG_ARGV[0]\n            USING ERRCODE = {}, HINT = 'rows never move between tenants: insert a new row for the other tenant instead';\n    END IF;\n    RETURN NEW;\nEND\n",
        literal(TENANT_IMMUTABLE_SQLSTATE)
    )
}

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

/// Name of `verify`'s session-temporary probe function (see [`probe_function`]).
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

/// `verify`'s probes of a batch of tenants as one statement: a session-temporary PL/pgSQL
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
    let at = |j: usize| format!("(tc_probe_i - 1) * {n} + {}", j + 1);
    let key = |j: usize, t: &ProbeTable| format!("$3[{}]::{}", at(j), t.key_type);
    let mut vars = String::new();
    let mut body = String::new();
    // Reads, one statement per table.
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
            key(j, t)
        ));
    }
    // The UPDATE and DELETE of another tenant's row, every table in one statement.
    let mut ctes = Vec::new();
    let mut outs = Vec::new();
    let mut into = Vec::new();
    for (j, t) in tables.iter().enumerate() {
        let (r, pk) = (rel(&t.schema, &t.table), q(&t.key));
        if let Some(c) = &t.update_column {
            let c = q(c);
            ctes.push(format!(
                "u{j} AS (UPDATE {r} SET {c} = {c} WHERE {pk} = {} RETURNING 1)",
                key(j, t)
            ));
            outs.push(format!("(SELECT count(*) FROM u{j})"));
            into.push(format!("tc_probe_updated_{j}"));
        }
        if t.delete {
            ctes.push(format!(
                "d{j} AS (DELETE FROM {r} WHERE {pk} = {} RETURNING 1)",
                key(j, t)
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
    // The INSERT with another tenant's id; moving one of the tenant's rows to another tenant.
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
            at(j)
        ));
    }
    // One row per table. (No comments naming the objects: a name may hold a line break, which
    // would end the comment and make the rest of the name code.)
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
    // Views and functions, one row each.
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

struct Out {
    stmts: Vec<Statement>,
}

impl Out {
    fn push(&mut self, provenance: impl Into<String>, sql: impl Into<String>) {
        self.stmts.push(Statement {
            provenance: provenance.into(),
            sql: sql.into(),
            destructive: false,
        });
    }
    fn destructive(&mut self, provenance: impl Into<String>, sql: impl Into<String>) {
        self.stmts.push(Statement {
            provenance: provenance.into(),
            sql: sql.into(),
            destructive: true,
        });
    }
}

/// The statements that converge a database at `old` (None: an empty database) to `new`;
/// `refresh_helpers` re-creates the helper objects even when the tenancy is unchanged (the
/// database holds those of an older tenantctl).
pub fn diff(old: Option<&Schema>, new: &Schema, refresh_helpers: bool) -> Vec<Statement> {
    let empty = Schema {
        tenancy: new.tenancy.clone(),
        roles: BTreeMap::new(),
        tables: BTreeMap::new(),
    };
    let old_tenancy = old.map(|o| &o.tenancy);
    let old = old.unwrap_or(&empty);
    let tn = &new.tenancy;
    let s = tn.table_schema.as_str();
    let mut out = Out { stmts: Vec::new() };
    let tenancy_changed = refresh_helpers || old_tenancy.is_none_or(|t| !same_tenancy(t, tn));

    // 1. Roles: created idempotently (roles are cluster-wide and Neon branches share them).
    for (name, role) in &new.roles {
        let prov = format!("{}: role {name}", role.source);
        match old.roles.get(name) {
            None => create_role(&mut out, &prov, name, role),
            Some(o) if o.login != role.login || o.bypassrls != role.bypassrls => {
                // Dropping BYPASSRLS must be said: ALTER ROLE leaves unnamed attributes as they are.
                let mut attrs = role_attributes(role);
                if o.bypassrls && !role.bypassrls {
                    attrs.push_str(" NOBYPASSRLS");
                }
                out.push(&prov, format!("ALTER ROLE {} {attrs};", q(name)));
            }
            Some(_) => {}
        }
    }
    for name in old.roles.keys().filter(|n| !new.roles.contains_key(*n)) {
        out.push(
            format!("role {name}"),
            format!("-- role {} is no longer declared; roles are cluster-wide, so it is left in place: drop it by hand once no database uses it", q(name)),
        );
    }

    // 2. Helper schema and functions.
    if tenancy_changed {
        helper_objects(&mut out, tn, new.roles.keys());
    }

    // 3. Removals and changes that must drop first (policies, foreign keys, constraints, indexes,
    //    privileges), so that columns and tables can then change.
    let mut recreate_policies: BTreeSet<(String, String)> = BTreeSet::new();
    for (tname, nt) in &new.tables {
        let Some(ot) = old.tables.get(tname) else {
            continue;
        };
        let prov = |what: &str| format!("{}: {what}", nt.source);
        for (pname, op) in &ot.policies {
            let drop = match nt.policies.get(pname) {
                None => true,
                Some(np) => needs_recreate(op, np),
            };
            if drop {
                out.push(
                    prov(&format!("policy {pname} on {tname}")),
                    format!("DROP POLICY {} ON {};", q(pname), rel(s, tname)),
                );
                if nt.policies.contains_key(pname) {
                    recreate_policies.insert((tname.clone(), pname.clone()));
                }
            }
        }
        let mut dropped: Vec<(&String, &Constraint)> = ot
            .constraints
            .iter()
            .filter(|(n, c)| nt.constraints.get(*n) != Some(*c))
            .collect();
        // Foreign keys first: they depend on the other constraints' unique indexes.
        dropped.sort_by_key(|(n, c)| (!c.is_foreign_key(), (*n).clone()));
        for (cname, _) in dropped {
            out.push(
                prov(&format!("constraint {cname} on {tname}")),
                format!(
                    "ALTER TABLE {} DROP CONSTRAINT {};",
                    rel(s, tname),
                    q(cname)
                ),
            );
        }
        for (iname, oi) in &ot.indexes {
            if nt.indexes.get(iname) != Some(oi) {
                out.push(
                    prov(&format!("index {iname}")),
                    format!("DROP INDEX {};", rel(s, iname)),
                );
            }
        }
        for (role, og) in &ot.grants {
            let ng = nt.grants.get(role).cloned().unwrap_or_default();
            let privs: Vec<&str> = og
                .privileges
                .difference(&ng.privileges)
                .map(|p| p.sql())
                .collect();
            if !privs.is_empty() {
                out.push(
                    prov(&format!("grants on {tname}")),
                    format!(
                        "REVOKE {} ON TABLE {} FROM {};",
                        privs.join(", "),
                        rel(s, tname),
                        q(role)
                    ),
                );
            }
            let cols: Vec<&String> = og
                .update_columns
                .difference(&ng.update_columns)
                .filter(|c| nt.column(c).is_some())
                .collect();
            if !cols.is_empty() {
                out.push(
                    prov(&format!("grants on {tname}")),
                    format!(
                        "REVOKE UPDATE ({}) ON TABLE {} FROM {};",
                        qlist(cols),
                        rel(s, tname),
                        q(role)
                    ),
                );
            }
        }
    }
    // Foreign keys of kept tables that point at dropped tables were dropped above (their
    // declarations changed); the dropped tables go together so their own keys don't matter.
    let dropped_tables: Vec<(&String, &Table)> = old
        .tables
        .iter()
        .filter(|(n, _)| !new.tables.contains_key(*n))
        .collect();
    if !dropped_tables.is_empty() {
        let names: Vec<&String> = dropped_tables.iter().map(|(n, _)| *n).collect();
        let sources: BTreeSet<&str> = dropped_tables
            .iter()
            .map(|(_, t)| t.source.as_str())
            .collect();
        out.destructive(
            format!(
                "{}: dropped tables",
                sources.into_iter().collect::<Vec<_>>().join(", ")
            ),
            format!(
                "DROP TABLE {};",
                names
                    .iter()
                    .map(|n| rel(s, n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    // 4. New tables, each with RLS enabled and forced in the same migration as its creation.
    for (tname, nt) in &new.tables {
        if !old.tables.contains_key(tname) {
            create_table(&mut out, tn, tname, nt);
        }
    }

    // 5. Column changes of kept tables.
    for (tname, nt) in &new.tables {
        let Some(ot) = old.tables.get(tname) else {
            continue;
        };
        let prov = |c: &str| format!("{}: column {tname}.{c}", nt.source);
        for nc in &nt.columns {
            match ot.column(&nc.name) {
                None => out.push(
                    prov(&nc.name),
                    format!(
                        "ALTER TABLE {} ADD COLUMN {};",
                        rel(s, tname),
                        column_def(nc)
                    ),
                ),
                Some(oc) => {
                    let at = format!("ALTER TABLE {} ALTER COLUMN {}", rel(s, tname), q(&nc.name));
                    if oc.ty != nc.ty {
                        out.push(
                            prov(&nc.name),
                            format!("{at} TYPE {} USING {}::{};", nc.ty, q(&nc.name), nc.ty),
                        );
                    }
                    if oc.default != nc.default {
                        match &nc.default {
                            Some(d) => out.push(prov(&nc.name), format!("{at} SET DEFAULT {d};")),
                            None => out.push(prov(&nc.name), format!("{at} DROP DEFAULT;")),
                        }
                    }
                    if oc.nullable != nc.nullable {
                        let verb = if nc.nullable { "DROP" } else { "SET" };
                        out.push(prov(&nc.name), format!("{at} {verb} NOT NULL;"));
                    }
                }
            }
        }
        for oc in &ot.columns {
            if nt.column(&oc.name).is_none() {
                out.destructive(
                    prov(&oc.name),
                    format!("ALTER TABLE {} DROP COLUMN {};", rel(s, tname), q(&oc.name)),
                );
            }
        }
    }

    // 6. Constraints that are new or changed: keys and checks first, then foreign keys (which
    //    need the referenced keys), across all tables.
    for fk_pass in [false, true] {
        for (tname, nt) in &new.tables {
            let ot = old.tables.get(tname);
            for (cname, c) in &nt.constraints {
                if c.is_foreign_key() != fk_pass {
                    continue;
                }
                let is_new_table = ot.is_none();
                let changed = ot.is_some_and(|ot| ot.constraints.get(cname) != Some(c));
                // Non-FK constraints of new tables are inline in CREATE TABLE.
                if (is_new_table && fk_pass) || changed {
                    out.push(
                        format!("{}: constraint {cname} on {tname}", nt.source),
                        format!(
                            "ALTER TABLE {} ADD CONSTRAINT {} {};",
                            rel(s, tname),
                            q(cname),
                            constraint_def(s, c)
                        ),
                    );
                }
            }
        }
    }

    // 7. Indexes, led by the tenant column.
    for (tname, nt) in &new.tables {
        let ot = old.tables.get(tname);
        for (iname, ix) in &nt.indexes {
            if ot.and_then(|t| t.indexes.get(iname)) != Some(ix) {
                out.push(
                    format!("{}: index {iname}", nt.source),
                    index_def(&rel(s, tname), iname, ix),
                );
            }
        }
    }

    // 8. Policies: ALTER POLICY where Postgres allows it, else the drop above and a create here.
    for (tname, nt) in &new.tables {
        let ot = old.tables.get(tname);
        for (pname, np) in &nt.policies {
            let prov = format!("{}: policy {pname} on {tname}", np.source);
            match ot.and_then(|t| t.policies.get(pname)) {
                Some(op) if same_policy(op, np) => {}
                Some(op) if !recreate_policies.contains(&(tname.clone(), pname.clone())) => {
                    out.push(prov, alter_policy(&rel(s, tname), pname, op, np));
                }
                _ => out.push(prov, create_policy(&rel(s, tname), pname, np)),
            }
        }
    }

    // 9. Privileges.
    for (tname, nt) in &new.tables {
        let ot = old.tables.get(tname);
        for (role, ng) in &nt.grants {
            let og = ot
                .and_then(|t| t.grants.get(role))
                .cloned()
                .unwrap_or_default();
            grant(
                &mut out,
                &format!("{}: grants on {tname}", nt.source),
                &rel(s, tname),
                role,
                &og,
                ng,
            );
        }
    }

    // 10. A renamed helper function or schema: the old ones go once nothing uses them.
    if let Some(ot) = old_tenancy {
        if ot.helper_schema != tn.helper_schema || ot.context_function != tn.context_function {
            out.push(
                format!("{}: tenancy", tn.source),
                format!("DROP FUNCTION IF EXISTS {}();", context_function(ot)),
            );
        }
    }
    out.stmts
}

/// Tenancy settings without their provenance.
fn same_tenancy(a: &Tenancy, b: &Tenancy) -> bool {
    Tenancy {
        source: String::new(),
        ..a.clone()
    } == Tenancy {
        source: String::new(),
        ..b.clone()
    }
}

fn role_attributes(role: &Role) -> String {
    let login = if role.login { "LOGIN" } else { "NOLOGIN" };
    if role.bypassrls {
        format!("{login} BYPASSRLS")
    } else {
        login.to_string()
    }
}

fn create_role(out: &mut Out, prov: &str, name: &str, role: &Role) {
    let body = format!(
        "\nBEGIN\n    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {}) THEN\n        CREATE ROLE {} NOLOGIN;\n    END IF;\nEND\n",
        literal(name),
        q(name)
    );
    out.push(prov, format!("DO {};", dollar_quote(&body)));
    out.push(
        prov,
        format!("ALTER ROLE {} {};", q(name), role_attributes(role)),
    );
}

fn helper_objects<'a>(out: &mut Out, t: &Tenancy, roles: impl Iterator<Item = &'a String>) {
    let prov = format!("{}: tenancy", t.source);
    let owner = q(&t.owner_role);
    // The migrating role must be able to hand objects to the owner role.
    out.push(&prov, format!("GRANT {owner} TO CURRENT_USER;"));
    out.push(
        &prov,
        format!("CREATE SCHEMA IF NOT EXISTS {};", q(&t.helper_schema)),
    );
    out.push(
        &prov,
        format!("ALTER SCHEMA {} OWNER TO {owner};", q(&t.helper_schema)),
    );
    let users: Vec<&String> = roles.filter(|r| **r != t.owner_role).collect();
    out.push(
        &prov,
        format!(
            "GRANT USAGE ON SCHEMA {} TO {};",
            q(&t.helper_schema),
            qlist(users)
        ),
    );
    // Fail closed: an unset or empty setting is NULL, and `gym_id = NULL` matches no row.
    // No `SET search_path`: a SQL function with settings is never inlined, and every statement
    // of the app role would call it (measured: about 40 µs a statement on PostgreSQL 15). Inlined,
    // its body is parsed with the caller's search_path, so everything in it that a caller could
    // shadow is qualified (the function, the cast's type: see context_function_body); NULLIF's
    // `=` can at most make the result NULL (no rows) or the setting itself.
    let body = context_function_body(t);
    out.push(
        &prov,
        format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS uuid\n    LANGUAGE sql STABLE PARALLEL SAFE\n    AS {};",
            context_function(t),
            dollar_quote(&body)
        ),
    );
    out.push(
        &prov,
        format!("ALTER FUNCTION {}() OWNER TO {owner};", context_function(t)),
    );
    let body = trigger_function_body();
    out.push(
        &prov,
        format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger\n    LANGUAGE plpgsql\n    SET search_path = pg_catalog, pg_temp\n    AS {};",
            trigger_function(t),
            dollar_quote(&body)
        ),
    );
    out.push(
        &prov,
        format!("ALTER FUNCTION {}() OWNER TO {owner};", trigger_function(t)),
    );
}

fn column_def(c: &Column) -> String {
    let mut s = format!("{} {}", q(&c.name), c.ty);
    if !c.nullable {
        s.push_str(" NOT NULL");
    }
    if let Some(d) = &c.default {
        s.push_str(" DEFAULT ");
        s.push_str(d);
    }
    s
}

fn constraint_def(schema: &str, c: &Constraint) -> String {
    match c {
        Constraint::PrimaryKey { columns } => format!("PRIMARY KEY ({})", qlist(columns)),
        Constraint::Unique { columns } => format!("UNIQUE ({})", qlist(columns)),
        Constraint::Check { expr } => format!("CHECK ({expr})"),
        Constraint::ForeignKey {
            columns,
            table,
            ref_columns,
            on_delete,
        } => {
            let action = match on_delete {
                OnDelete::NoAction => "NO ACTION",
                OnDelete::Restrict => "RESTRICT",
                OnDelete::Cascade => "CASCADE",
            };
            format!(
                "FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {action}",
                qlist(columns),
                rel(schema, table),
                qlist(ref_columns)
            )
        }
    }
}

fn index_def(table: &str, name: &str, ix: &Index) -> String {
    let unique = if ix.unique { "UNIQUE " } else { "" };
    format!(
        "CREATE {unique}INDEX {} ON {} ({});",
        q(name),
        table,
        qlist(&ix.columns)
    )
}

fn create_table(out: &mut Out, t: &Tenancy, name: &str, table: &Table) {
    let prov = format!("{}: table {name}", table.source);
    let mut lines: Vec<String> = table.columns.iter().map(column_def).collect();
    for (cname, c) in table
        .constraints
        .iter()
        .filter(|(_, c)| !c.is_foreign_key())
    {
        lines.push(format!(
            "CONSTRAINT {} {}",
            q(cname),
            constraint_def(&t.table_schema, c)
        ));
    }
    out.push(
        &prov,
        format!(
            "CREATE TABLE {} (\n    {}\n);",
            rel(&t.table_schema, name),
            lines.join(",\n    ")
        ),
    );
    out.push(
        &prov,
        format!(
            "ALTER TABLE {} OWNER TO {};",
            rel(&t.table_schema, name),
            q(&t.owner_role)
        ),
    );
    out.push(
        &prov,
        format!(
            "REVOKE ALL ON TABLE {} FROM PUBLIC;",
            rel(&t.table_schema, name)
        ),
    );
    out.push(
        &prov,
        format!(
            "ALTER TABLE {} ENABLE ROW LEVEL SECURITY;",
            rel(&t.table_schema, name)
        ),
    );
    out.push(
        &prov,
        format!(
            "ALTER TABLE {} FORCE ROW LEVEL SECURITY;",
            rel(&t.table_schema, name)
        ),
    );
    out.push(
        &prov,
        format!(
            "CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}({});",
            q(IMMUTABILITY_TRIGGER),
            rel(&t.table_schema, name),
            trigger_function(t),
            literal(&table.tenant_column)
        ),
    );
}

/// Equal apart from provenance (moving a policy to another file changes no SQL).
fn same_policy(a: &Policy, b: &Policy) -> bool {
    Policy {
        source: String::new(),
        ..a.clone()
    } == Policy {
        source: String::new(),
        ..b.clone()
    }
}

/// Postgres cannot change a policy's command or kind, nor remove a clause, with ALTER POLICY.
fn needs_recreate(old: &Policy, new: &Policy) -> bool {
    old.command != new.command
        || old.permissive != new.permissive
        || (old.using.is_some() && new.using.is_none())
        || (old.with_check.is_some() && new.with_check.is_none())
}

fn create_policy(table: &str, name: &str, p: &Policy) -> String {
    let kind = if p.permissive {
        "PERMISSIVE"
    } else {
        "RESTRICTIVE"
    };
    let mut s = format!(
        "CREATE POLICY {} ON {}\n    AS {kind} FOR {}\n    TO {}",
        q(name),
        table,
        p.command.sql(),
        qlist(&p.roles)
    );
    if let Some(u) = &p.using {
        s.push_str(&format!("\n    USING ({u})"));
    }
    if let Some(c) = &p.with_check {
        s.push_str(&format!("\n    WITH CHECK ({c})"));
    }
    s.push(';');
    s
}

fn alter_policy(table: &str, name: &str, old: &Policy, new: &Policy) -> String {
    let mut s = format!("ALTER POLICY {} ON {}", q(name), table);
    if old.roles != new.roles {
        s.push_str(&format!("\n    TO {}", qlist(&new.roles)));
    }
    if old.using != new.using {
        if let Some(u) = &new.using {
            s.push_str(&format!("\n    USING ({u})"));
        }
    }
    if old.with_check != new.with_check {
        if let Some(c) = &new.with_check {
            s.push_str(&format!("\n    WITH CHECK ({c})"));
        }
    }
    s.push(';');
    s
}

fn grant(out: &mut Out, prov: &str, table: &str, role: &str, old: &Grant, new: &Grant) {
    let privs: Vec<&str> = new
        .privileges
        .difference(&old.privileges)
        .map(|p| p.sql())
        .collect();
    if !privs.is_empty() {
        out.push(
            prov,
            format!(
                "GRANT {} ON TABLE {} TO {};",
                privs.join(", "),
                table,
                q(role)
            ),
        );
    }
    let cols: Vec<&String> = new.update_columns.difference(&old.update_columns).collect();
    if !cols.is_empty() {
        out.push(
            prov,
            format!(
                "GRANT UPDATE ({}) ON TABLE {} TO {};",
                qlist(cols),
                table,
                q(role)
            ),
        );
    }
}

/// The migration file's text: a header, then each statement under its provenance comment.
pub fn render(version: u32, name: &str, stmts: &[Statement]) -> String {
    let mut s = format!(
        "-- V{version}__{name}.sql: generated by tenantctl from the policy files.\n\
         -- Do not edit: change policies/ and run `tenantctl generate`.\n"
    );
    let mut last: Option<&str> = None;
    for st in stmts {
        if last != Some(st.provenance.as_str()) {
            // A file name is not trusted to be free of line breaks: they would end the comment.
            let prov: String = st
                .provenance
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            s.push_str(&format!("\n-- {prov}\n"));
            last = Some(&st.provenance);
        }
        s.push_str(&st.sql);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_function_quotes_names_and_takes_values_as_arguments() {
        let tables = [
            ProbeTable {
                schema: "public".into(),
                table: "we\"ird".into(),
                tenant_column: "gym_id".into(),
                key: "id".into(),
                key_type: "uuid".into(),
                update_column: Some("full_name".into()),
                delete: true,
                insert: true,
            },
            ProbeTable {
                schema: "public".into(),
                table: "gyms".into(),
                tenant_column: "id".into(),
                key: "id".into(),
                key_type: "uuid".into(),
                update_column: None,
                delete: false,
                insert: false,
            },
        ];
        let readables = [
            ProbeReadable {
                schema: "public".into(),
                name: "v'iew".into(),
                function: false,
                tenant_column: "gym_id".into(),
            },
            // A line break in a name must not end a comment and make the rest code.
            ProbeReadable {
                schema: "public".into(),
                name: "f\nRAISE 'injected';--".into(),
                function: true,
                tenant_column: "gym_id".into(),
            },
        ];
        let sql = probe_function("tenantctl.gym'id", &tables, &readables);
        assert!(sql.starts_with(
            "CREATE FUNCTION pg_temp.tenantctl_probe_tenants(uuid[], uuid[], text[], boolean[])"
        ));
        assert!(sql.contains("SECURITY INVOKER"));
        assert!(sql.contains("#variable_conflict error"));
        assert!(sql.contains("set_config('tenantctl.gym''id', tc_probe_tenant::text, true)"));
        assert!(sql.contains(
            "INSERT INTO \"public\".\"we\"\"ird\" (\"gym_id\") VALUES (tc_probe_other) RETURNING 1"
        ));
        assert!(sql.contains("d0 AS (DELETE FROM \"public\".\"we\"\"ird\" WHERE \"id\" = $3[(tc_probe_i - 1) * 2 + 1]::uuid RETURNING 1)"));
        assert!(sql.contains("FROM \"public\".\"v'iew\""));
        // The second table is neither inserted into nor deleted from, only read, looked up and
        // its tenant id changed.
        assert_eq!(sql.matches("INSERT INTO").count(), 1);
        assert_eq!(sql.matches("DELETE FROM").count(), 1);
        assert_eq!(
            sql.matches("UPDATE \"public\".\"we\"\"ird\" SET \"full_name\"")
                .count(),
            1
        );
        assert_eq!(sql.matches("SET \"id\" = tc_probe_other").count(), 1);
        assert_eq!(sql.matches("RETURN NEXT").count(), 4);
        let unnamed = sql.replace("\"f\nRAISE 'injected';--\"", "\"f\"");
        assert!(!unnamed.contains("--"), "no comments: {unnamed}");
        assert_eq!(
            sql.matches("RAISE 'injected'").count(),
            sql.matches("\"f\nRAISE 'injected';--\"()").count()
        );
        // Values only ever come in as the four arguments.
        let body = &sql[sql.find("$tc$").unwrap() + 4..sql.rfind("$tc$").unwrap()];
        let dollars: Vec<&str> = body
            .match_indices('$')
            .map(|(i, _)| body.get(i..i + 2).unwrap_or("$"))
            .collect();
        assert!(
            dollars.iter().all(|d| ["$1", "$2", "$3", "$4"].contains(d)),
            "{dollars:?}"
        );
        // Every block that writes ends in an exception: nothing it did survives.
        assert_eq!(
            sql.matches("RAISE SQLSTATE 'TCP00'").count(),
            sql.matches("EXCEPTION WHEN OTHERS").count()
        );
    }
}
