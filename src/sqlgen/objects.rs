//! The diff phases of the objects beyond tenant tables: extensions and their schemas, the
//! partitions of partitioned tenant tables (each with the table's RLS, policies and grants), and
//! security_invoker views (PostgreSQL 15+, checked at run time).

use super::*;
use crate::model::{Extension, Grant, PartitionBound, Partitioning, Table, View};

/// The first server version with `security_invoker` views.
pub const SECURITY_INVOKER_VERSION: i32 = 150_000;

/// The partitions of `nt` that `ot` has with the same bound: they carry over, and follow the
/// table's policy and grant changes.
pub(super) fn kept_partitions<'t>(ot: Option<&Table>, nt: &'t Table) -> Vec<&'t String> {
    let old = ot.and_then(|t| t.partitioning.as_ref());
    let Some(new) = &nt.partitioning else {
        return Vec::new();
    };
    new.partitions
        .iter()
        .filter(|(n, b)| {
            old.is_some_and(|o| same_split(o, new) && o.partitions.get(*n) == Some(*b))
        })
        .map(|(n, _)| n)
        .collect()
}

/// Partitions of `nt` that are new (or whose bound changed): created with everything.
pub(super) fn new_partitions<'t>(
    ot: Option<&Table>,
    nt: &'t Table,
) -> Vec<(&'t String, &'t PartitionBound)> {
    let kept = kept_partitions(ot, nt);
    nt.partitioning
        .iter()
        .flat_map(|p| p.partitions.iter())
        .filter(|(n, _)| !kept.contains(n))
        .collect()
}

/// Partitions of `ot` that `nt` no longer has with the same bound.
pub(super) fn gone_partitions<'t>(ot: &'t Table, nt: &Table) -> Vec<&'t String> {
    let kept = kept_partitions(Some(ot), nt);
    ot.partitioning
        .iter()
        .flat_map(|p| p.partitions.keys())
        .filter(|n| !kept.contains(n))
        .collect()
}

fn same_split(a: &Partitioning, b: &Partitioning) -> bool {
    a.method == b.method && a.column == b.column
}

/// Whether a kept table's partitioning changed in a way Postgres cannot alter (method, column,
/// or partitioned at all).
pub(super) fn repartitioned(ot: &Table, nt: &Table) -> bool {
    match (&ot.partitioning, &nt.partitioning) {
        (None, None) => false,
        (Some(a), Some(b)) => !same_split(a, b),
        _ => true,
    }
}

/// A statement that makes the migration fail with what to do, where Postgres cannot change a
/// table's partitioning in place.
pub(super) fn refuse_repartition(schema: &str, tname: &str) -> String {
    let message = format!(
        "tenantctl cannot change how {schema}.{tname} is partitioned in place: create the new table and move the rows in a hand-written migration (tenantctl new)"
    );
    format!(
        "DO {};",
        dollar_quote(&format!(
            "\nBEGIN\n    RAISE EXCEPTION {};\nEND\n",
            literal(&message)
        ))
    )
}

/// ` PARTITION BY HASH ("gym_id")`, or nothing.
pub(super) fn partition_clause(p: Option<&Partitioning>) -> String {
    p.map(|p| format!(" PARTITION BY {} ({})", p.method.sql(), q(&p.column)))
        .unwrap_or_default()
}

/// `CREATE TABLE partition PARTITION OF table FOR VALUES ...`, owned by the owner role, with
/// PUBLIC's default privileges revoked and row-level security enabled and forced: a partition
/// queried directly uses its own.
pub(super) fn create_partition(
    out: &mut Out,
    t: &Tenancy,
    tname: &str,
    table: &Table,
    part: &str,
    bound: &PartitionBound,
) {
    let prov = format!("{}: partition {part} of {tname}", table.source);
    let s = &t.table_schema;
    let (rel_part, rel_table) = (rel(s, part), rel(s, tname));
    out.push(
        &prov,
        format!(
            "CREATE TABLE {rel_part} PARTITION OF {rel_table} {};",
            bound_sql(bound)
        ),
    );
    out.push(
        &prov,
        format!("{};", alter_table_owner(s, part, &t.owner_role)),
    );
    secure_table(out, &prov, &rel_part);
}

/// REVOKE ALL FROM PUBLIC, ENABLE and FORCE ROW LEVEL SECURITY.
pub(super) fn secure_table(out: &mut Out, prov: &str, table: &str) {
    out.push(prov, format!("REVOKE ALL ON TABLE {table} FROM PUBLIC;"));
    out.push(
        prov,
        format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;"),
    );
    out.push(
        prov,
        format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY;"),
    );
}

fn bound_sql(b: &PartitionBound) -> String {
    match b {
        PartitionBound::Hash { modulus, remainder } => {
            format!("FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})")
        }
        PartitionBound::List { values } => format!("FOR VALUES IN ({})", values.join(", ")),
        PartitionBound::Range { from, to } => {
            format!(
                "FOR VALUES FROM ({}) TO ({})",
                from.join(", "),
                to.join(", ")
            )
        }
        PartitionBound::Default => "DEFAULT".into(),
    }
}

/// The partition's policies and grants, all of them: the table's own.
pub(super) fn secure_partition(out: &mut Out, t: &Tenancy, table: &Table, part: &str) {
    let target = rel(&t.table_schema, part);
    for (pname, p) in &table.policies {
        let prov = format!("{}: policy {pname} on {part}", p.source);
        out.push(prov, create_policy(&target, pname, p));
    }
    let prov = format!("{}: grants on {part}", table.source);
    for (role, g) in &table.grants {
        grant(out, &prov, &target, role, &Grant::default(), g);
    }
}

/// A view is re-created when its query changed (CREATE OR REPLACE cannot drop or reorder
/// columns); views are dropped first, before the tables they read change.
pub(super) fn view_changed(old: Option<&View>, new: Option<&View>) -> bool {
    matches!((old, new), (Some(o), Some(n)) if o.query != n.query)
        || (old.is_some() && new.is_none())
}

pub(super) fn drop_view(out: &mut Out, schema: &str, name: &str, source: &str) {
    out.push(
        format!("{source}: view {name}"),
        format!("DROP VIEW {};", rel(schema, name)),
    );
}

/// A failing statement on servers without `security_invoker` views (PostgreSQL 14): the
/// migration stops there with what to do, instead of leaving a view that reads with its owner's
/// rights.
pub(super) fn require_security_invoker(out: &mut Out, source: &str) {
    let body = format!(
        "\nBEGIN\n    IF pg_catalog.current_setting('server_version_num')::int < {SECURITY_INVOKER_VERSION} THEN\n        RAISE EXCEPTION 'declared views need PostgreSQL 15 or later (security_invoker views); this server is %', pg_catalog.current_setting('server_version')\n            USING HINT = 'upgrade the server, or remove the [views] from the policy files';\n    END IF;\nEND\n"
    );
    out.push(
        format!("{source}: views"),
        format!("DO {};", dollar_quote(&body)),
    );
}

pub(super) fn create_view(out: &mut Out, t: &Tenancy, name: &str, v: &View) {
    let prov = format!("{}: view {name}", v.source);
    let view = rel(&t.table_schema, name);
    out.push(
        &prov,
        format!(
            "CREATE VIEW {view} WITH (security_invoker = true, security_barrier = true) AS\n    {};",
            v.query
        ),
    );
    out.push(
        &prov,
        format!("ALTER VIEW {view} OWNER TO {};", q(&t.owner_role)),
    );
    out.push(&prov, format!("REVOKE ALL ON TABLE {view} FROM PUBLIC;"));
}

/// A view's grants from `old` to `new` (an empty map for a view created now).
pub(super) fn view_grants(
    out: &mut Out,
    t: &Tenancy,
    name: &str,
    old: &BTreeMap<String, Grant>,
    v: &View,
) {
    let prov = format!("{}: grants on {name}", v.source);
    let view = rel(&t.table_schema, name);
    for (role, og) in old {
        let ng = v.grants.get(role).cloned().unwrap_or_default();
        let (privs, _) = privileges_beyond(og, &ng);
        if !privs.is_empty() {
            out.push(
                &prov,
                format!(
                    "REVOKE {} ON TABLE {view} FROM {};",
                    privs.join(", "),
                    q(role)
                ),
            );
        }
    }
    for (role, ng) in &v.grants {
        let og = old.get(role).cloned().unwrap_or_default();
        grant(out, &prov, &view, role, &og, ng);
    }
}

/// Extensions: their schema (created for the owner role if missing), the extension in it, and
/// USAGE for the declared roles. Before the tables, whose defaults may call them.
pub(super) fn extensions(
    out: &mut Out,
    t: &Tenancy,
    old: &BTreeMap<String, Extension>,
    new: &BTreeMap<String, Extension>,
) {
    for (name, e) in new {
        let prov = format!("{}: extension {name}", e.source);
        let before = old.get(name);
        if before.is_some_and(|o| o == e) {
            continue;
        }
        let schema = q(&e.schema);
        out.push(
            &prov,
            format!(
                "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {};",
                q(&t.owner_role)
            ),
        );
        match before {
            None => out.push(
                &prov,
                format!(
                    "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {schema};",
                    q(name)
                ),
            ),
            Some(o) if o.schema != e.schema => out.push(
                &prov,
                format!("ALTER EXTENSION {} SET SCHEMA {schema};", q(name)),
            ),
            Some(_) => {}
        }
        let had: &[String] = before
            .filter(|o| o.schema == e.schema)
            .map_or(&[], |o| &o.usage);
        let gone: Vec<&String> = had.iter().filter(|r| !e.usage.contains(r)).collect();
        let added: Vec<&String> = e.usage.iter().filter(|r| !had.contains(r)).collect();
        if !gone.is_empty() {
            out.push(
                &prov,
                format!("REVOKE USAGE ON SCHEMA {schema} FROM {};", qlist(gone)),
            );
        }
        if !added.is_empty() {
            out.push(
                &prov,
                format!("GRANT USAGE ON SCHEMA {schema} TO {};", qlist(added)),
            );
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(
            format!("extension {name}"),
            format!("-- extension {} is no longer declared; it is left in place (tables may use it): drop it by hand once nothing does", q(name)),
        );
    }
}
