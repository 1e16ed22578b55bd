//! The statements that take a database from one compiled model to another (from nothing, for
//! the first migration), in a fixed order of phases.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::ident::{dollar_quote, literal};
use crate::model::{
    Column, Constraint, Grant, Index, OnDelete, Policy, Role, Schema, Table, Tenancy,
};

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

pub(super) fn column_def(c: &Column) -> String {
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
