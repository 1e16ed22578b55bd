//! The statements that take a database from one compiled model to another (from nothing, for
//! the first migration), in a fixed order of phases.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::diff_policies::{alter_policy, create_policy, needs_recreate, same_policy};
use super::*;
use crate::ident::{dollar_quote, literal};
use crate::model::{Backend, Column, Constraint, Grant, OnDelete, Schema, Table, Tenancy};

#[derive(Default)]
struct Out {
    stmts: Vec<Statement>,
}

impl Out {
    fn push(&mut self, provenance: impl Into<String>, sql: impl Into<String>) {
        self.push_in(Part::Main, provenance, sql);
    }
    /// A statement for another of the change's migrations (see `Part`).
    fn push_in(&mut self, part: Part, provenance: impl Into<String>, sql: impl Into<String>) {
        self.stmts.push(Statement {
            provenance: provenance.into(),
            sql: sql.into(),
            destructive: false,
            part,
        });
    }
    fn later(&mut self, provenance: impl Into<String>, sql: impl Into<String>) {
        self.push_in(Part::Validate, provenance, sql);
    }
    fn destructive(&mut self, provenance: impl Into<String>, sql: impl Into<String>) {
        self.push(provenance, sql);
        if let Some(last) = self.stmts.last_mut() {
            last.destructive = true;
        }
    }
}

/// The statements that converge a database at `old` (None: an empty database) to `new`;
/// `refresh_helpers` re-creates the helper objects even when the tenancy is unchanged (the
/// database holds those of an older tenantctl).
pub fn diff(old: Option<&Schema>, new: &Schema, refresh_helpers: bool) -> Vec<Statement> {
    // The Citus back end: the models adapted to what Citus accepts (sqlgen/citus.rs).
    let adapted;
    let (old, new) = if new.target == Backend::Citus {
        adapted = (old.map(super::citus::adapt), super::citus::adapt(new));
        (adapted.0.as_ref(), &adapted.1)
    } else {
        (old, new)
    };
    let empty = Schema::empty(new.tenancy.clone());
    let old_tenancy = old.map(|o| &o.tenancy);
    let tn = &new.tenancy;
    // Global tables go through the same phases as tenant tables (create_table knows them apart).
    let (old, new) = (with_globals(old.unwrap_or(&empty)), with_globals(new));
    let mut d = Diff {
        old: &old,
        new: &new,
        s: &tn.table_schema,
        out: Out::default(),
    };
    d.require_security_invoker();
    d.refuse_repartitioning();
    // The phases run in this order so that each finds what it needs: roles before anything is
    // granted to them, drops before the changes they make room for, tables before their
    // columns, keys before the foreign keys that use them.
    d.roles();
    if refresh_helpers || old_tenancy.is_none_or(|t| !same_tenancy(t, tn)) {
        helper_objects(&mut d.out, tn, new.roles.keys());
    }
    objects::extensions(&mut d.out, tn, &d.old.extensions, &d.new.extensions);
    d.drop_views();
    let recreate_policies = d.drops();
    d.drop_tables();
    d.create_tables();
    if new.target == Backend::Citus {
        let distribute = super::citus::distribute(d.old, d.new);
        d.out.stmts.extend(distribute);
    }
    d.columns();
    d.constraints();
    d.indexes();
    d.policies(&recreate_policies);
    d.grants();
    d.new_partitions();
    d.views();
    if let Some(ot) = old_tenancy {
        d.drop_old_helpers(ot);
    }
    if new.target == Backend::Citus {
        return super::citus::one_command_per_query(d.out.stmts);
    }
    d.out.stmts
}

/// The model with its global tables among the tables (borrowed as it is when it has none: a
/// copy of a 200-table model is a good part of what `generate` costs).
fn with_globals(s: &Schema) -> Cow<'_, Schema> {
    if s.globals.is_empty() {
        return Cow::Borrowed(s);
    }
    let mut s = s.clone();
    let globals = std::mem::take(&mut s.globals);
    s.tables.extend(globals);
    Cow::Owned(s)
}

/// The table and its partitions that both models have: what a policy or grant change applies to.
fn targets<'t>(tname: &'t String, ot: Option<&Table>, nt: &'t Table) -> Vec<&'t String> {
    std::iter::once(tname)
        .chain(objects::kept_partitions(ot, nt))
        .collect()
}

/// One diff in progress: the two models, the tables' schema and the statements so far.
struct Diff<'a> {
    old: &'a Schema,
    new: &'a Schema,
    /// The schema that holds the tables.
    s: &'a str,
    out: Out,
}

/// Policies that are dropped and created again (Postgres cannot ALTER them into the new form).
type Recreate = BTreeSet<(String, String)>;

impl<'a> Diff<'a> {
    /// Tables in both models: (name, old, new).
    fn kept(&self) -> impl Iterator<Item = (&'a String, &'a Table, &'a Table)> + 'a {
        let old = self.old;
        self.new
            .tables
            .iter()
            .filter_map(move |(n, nt)| old.tables.get(n).map(|ot| (n, ot, nt)))
    }

    /// Tables of the new model with their old version, if any.
    fn tables(&self) -> impl Iterator<Item = (&'a String, Option<&'a Table>, &'a Table)> + 'a {
        let old = self.old;
        self.new
            .tables
            .iter()
            .map(move |(n, nt)| (n, old.tables.get(n), nt))
    }

    /// 1. Roles: created idempotently (roles are cluster-wide and Neon branches share them).
    fn roles(&mut self) {
        for (name, role) in &self.new.roles {
            let prov = format!("{}: role {name}", role.source);
            let changed = self
                .old
                .roles
                .get(name)
                .is_none_or(|o| o.login != role.login || o.bypassrls != role.bypassrls);
            if changed {
                let attributes = Some((role.login, role.bypassrls));
                self.out.push(&prov, ensure_role(name, attributes));
            }
        }
        for name in self.old.roles.keys() {
            if !self.new.roles.contains_key(name) {
                self.out.push(
                    format!("role {name}"),
                    format!("-- role {} is no longer declared; roles are cluster-wide, so it is left in place: drop it by hand once no database uses it", q(name)),
                );
            }
        }
    }

    /// 3. Removals and changes that must drop first (policies, foreign keys, constraints,
    ///    indexes, privileges), so that columns and tables can then change; table by table.
    fn drops(&mut self) -> Recreate {
        let mut recreate = Recreate::new();
        for (tname, ot, nt) in self.kept() {
            self.drop_policies(tname, ot, nt, &mut recreate);
            self.drop_constraints(tname, ot, nt);
            self.drop_indexes(ot, nt);
            for target in targets(tname, Some(ot), nt) {
                for (role, og) in &ot.grants {
                    let ng = nt.grants.get(role).cloned().unwrap_or_default();
                    self.revoke(target, nt, role, og, &ng);
                }
            }
        }
        recreate
    }

    fn drop_policies(&mut self, tname: &str, ot: &Table, nt: &Table, recreate: &mut Recreate) {
        for (pname, op) in &ot.policies {
            let np = nt.policies.get(pname);
            if np.is_some_and(|np| !needs_recreate(op, np)) {
                continue;
            }
            for target in targets(&tname.to_string(), Some(ot), nt) {
                self.out.push(
                    format!("{}: policy {pname} on {target}", nt.source),
                    format!("DROP POLICY {} ON {};", q(pname), rel(self.s, target)),
                );
            }
            if np.is_some() {
                recreate.insert((tname.to_string(), pname.clone()));
            }
        }
    }

    fn drop_constraints(&mut self, tname: &str, ot: &Table, nt: &Table) {
        let mut dropped: Vec<(&String, &Constraint)> = ot
            .constraints
            .iter()
            .filter(|(n, c)| nt.constraints.get(*n) != Some(*c))
            .collect();
        // Foreign keys first: they depend on the other constraints' unique indexes.
        dropped.sort_by_key(|(n, c)| (!c.is_foreign_key(), (*n).clone()));
        for (cname, _) in dropped {
            self.out.push(
                format!("{}: constraint {cname} on {tname}", nt.source),
                format!(
                    "ALTER TABLE {} DROP CONSTRAINT {};",
                    rel(self.s, tname),
                    q(cname)
                ),
            );
        }
    }

    fn drop_indexes(&mut self, ot: &Table, nt: &Table) {
        for (iname, oi) in &ot.indexes {
            if nt.indexes.get(iname) != Some(oi) {
                let prov = format!("{}: index {iname}", nt.source);
                // The table exists and has rows: dropped without blocking its reads (Postgres
                // cannot drop a partitioned table's index CONCURRENTLY).
                if nt.partitioning.is_none() {
                    let sql = drop_index_concurrently(self.s, iname);
                    self.out.push_in(Part::Index, prov, sql);
                } else {
                    self.out
                        .push(prov, format!("DROP INDEX {};", rel(self.s, iname)));
                }
            }
        }
    }

    /// What `og` grants and `ng` does not; UPDATE on a dropped column goes with the column.
    fn revoke(&mut self, tname: &str, nt: &Table, role: &str, og: &Grant, ng: &Grant) {
        let prov = format!("{}: grants on {tname}", nt.source);
        let (privs, cols) = privileges_beyond(og, ng);
        let cols: Vec<&String> = cols
            .into_iter()
            .filter(|c| nt.column(c).is_some())
            .collect();
        let (table, role) = (rel(self.s, tname), q(role));
        if !privs.is_empty() {
            let privs = privs.join(", ");
            let sql = format!("REVOKE {privs} ON TABLE {table} FROM {role};");
            self.out.push(&prov, sql);
        }
        if !cols.is_empty() {
            let sql = format!(
                "REVOKE UPDATE ({}) ON TABLE {table} FROM {role};",
                qlist(cols)
            );
            self.out.push(&prov, sql);
        }
    }

    /// Foreign keys of kept tables that point at dropped tables were dropped above (their
    /// declarations changed); the dropped tables go together so their own keys don't matter.
    fn drop_tables(&mut self) {
        let dropped: Vec<(&String, &Table)> = self
            .old
            .tables
            .iter()
            .filter(|(n, _)| !self.new.tables.contains_key(*n))
            .collect();
        self.drop_partitions();
        if dropped.is_empty() {
            return;
        }
        let sources: BTreeSet<&str> = dropped.iter().map(|(_, t)| t.source.as_str()).collect();
        let sources: Vec<&str> = sources.into_iter().collect();
        let names: Vec<String> = dropped.iter().map(|(n, _)| rel(self.s, n)).collect();
        self.out.destructive(
            format!("{}: dropped tables", sources.join(", ")),
            format!("DROP TABLE {};", names.join(", ")),
        );
    }

    /// 4. New tables, each with RLS enabled and forced in the same migration as its creation.
    fn create_tables(&mut self) {
        for (tname, nt) in &self.new.tables {
            let ot = self.old.tables.get(tname);
            if ot.is_none() {
                create_table(&mut self.out, self.new, tname, nt);
            }
            for (part, bound) in objects::new_partitions(ot, nt) {
                objects::create_partition(&mut self.out, &self.new.tenancy, tname, nt, part, bound);
            }
        }
    }

    /// 5. Column changes of kept tables.
    fn columns(&mut self) {
        for (tname, ot, nt) in self.kept() {
            let prov = |c: &str| format!("{}: column {tname}.{c}", nt.source);
            for nc in &nt.columns {
                match ot.column(&nc.name) {
                    None => self.out.push(
                        prov(&nc.name),
                        format!(
                            "ALTER TABLE {} ADD COLUMN {};",
                            rel(self.s, tname),
                            column_def(nc)
                        ),
                    ),
                    Some(oc) => self.alter_column(&prov(&nc.name), tname, oc, nc),
                }
            }
            for oc in &ot.columns {
                if nt.column(&oc.name).is_none() {
                    self.out.destructive(
                        prov(&oc.name),
                        format!(
                            "ALTER TABLE {} DROP COLUMN {};",
                            rel(self.s, tname),
                            q(&oc.name)
                        ),
                    );
                }
            }
        }
    }

    fn alter_column(&mut self, prov: &str, tname: &str, oc: &Column, nc: &Column) {
        let at = format!(
            "ALTER TABLE {} ALTER COLUMN {}",
            rel(self.s, tname),
            q(&nc.name)
        );
        if oc.ty != nc.ty {
            self.out.push(
                prov,
                format!("{at} TYPE {} USING {}::{};", nc.ty, q(&nc.name), nc.ty),
            );
        }
        if oc.default != nc.default {
            match &nc.default {
                Some(d) => self.out.push(prov, format!("{at} SET DEFAULT {d};")),
                None => self.out.push(prov, format!("{at} DROP DEFAULT;")),
            }
        }
        if oc.nullable != nc.nullable && nc.nullable {
            self.out.push(prov, format!("{at} DROP NOT NULL;"));
        } else if oc.nullable != nc.nullable {
            // Without a full scan under ACCESS EXCLUSIVE: a NOT VALID check now, validated in the
            // next migration (reads and writes go on), which Postgres then trusts for SET NOT NULL.
            let table = format!("ALTER TABLE {}", rel(self.s, tname));
            let check = q(&format!("{}_not_null", nc.name));
            let expr = format!("{} IS NOT NULL", q(&nc.name));
            let add = format!("{table} ADD CONSTRAINT {check} CHECK ({expr}) NOT VALID;");
            self.out.push(prov, add);
            self.out
                .later(prov, format!("{table} VALIDATE CONSTRAINT {check};"));
            self.out.later(prov, format!("{at} SET NOT NULL;"));
            self.out
                .later(prov, format!("{table} DROP CONSTRAINT {check};"));
        }
    }

    /// 6. Constraints that are new or changed: keys and checks first, then foreign keys (which
    ///    need the referenced keys), across all tables.
    fn constraints(&mut self) {
        let keys = super::diff_live::referenced_keys(self.old, self.new);
        for fk_pass in [false, true] {
            for (tname, ot, nt) in self.tables() {
                for (cname, c) in &nt.constraints {
                    if c.is_foreign_key() != fk_pass {
                        continue;
                    }
                    let changed = ot.is_some_and(|ot| ot.constraints.get(cname) != Some(c));
                    // Non-FK constraints of new tables are inline in CREATE TABLE.
                    if (ot.is_none() && fk_pass) || changed {
                        let prov = format!("{}: constraint {cname} on {tname}", nt.source);
                        if ot.is_some() && self.unique_by_index(&prov, tname, nt, cname, c, &keys) {
                            continue;
                        }
                        let at = format!("ALTER TABLE {}", rel(self.s, tname));
                        let def = constraint_def(self.s, c);
                        // On a table that exists (and has rows): added NOT VALID, a brief lock;
                        // every row checked by VALIDATE in the next migration, under a lock
                        // that lets reads and writes through.
                        let checked = c.is_foreign_key() || matches!(c, Constraint::Check { .. });
                        let live = ot.is_some() && checked;
                        if live {
                            let add = format!("{at} ADD CONSTRAINT {} {def} NOT VALID;", q(cname));
                            self.out.push(&prov, add);
                            let check = format!("{at} VALIDATE CONSTRAINT {};", q(cname));
                            self.out.later(prov, check);
                        } else {
                            let add = format!("{at} ADD CONSTRAINT {} {def};", q(cname));
                            self.out.push(prov, add);
                        }
                    }
                }
            }
        }
    }

    /// A unique constraint added to a table that exists (and has rows): its index built
    /// CONCURRENTLY in the non-transactional migration, then attached as the constraint
    /// (`USING INDEX`) in the one after; false (added in the main migration) when a foreign key
    /// of the change needs it, on a partitioned table (no CONCURRENTLY there), or on Citus.
    fn unique_by_index(
        &mut self,
        prov: &str,
        tname: &str,
        nt: &Table,
        cname: &str,
        c: &Constraint,
        keys: &BTreeSet<(String, Vec<String>)>,
    ) -> bool {
        let Constraint::Unique { columns } = c else {
            return false;
        };
        let needed = keys.contains(&(tname.to_string(), columns.clone()));
        if needed || nt.partitioning.is_some() || self.new.target == Backend::Citus {
            return false;
        }
        let table = rel(self.s, tname);
        let ix = crate::model::Index {
            columns: columns.clone(),
            unique: true,
        };
        let build = create_index_concurrently(&table, cname, &ix);
        self.out.push_in(Part::Index, prov, build);
        let attach = attach_unique(&table, cname);
        self.out.push_in(Part::Attach, prov, attach);
        true
    }

    /// 7. Indexes, led by the tenant column.
    fn indexes(&mut self) {
        for (tname, ot, nt) in self.tables() {
            for (iname, ix) in &nt.indexes {
                if ot.and_then(|t| t.indexes.get(iname)) != Some(ix) {
                    let prov = format!("{}: index {iname}", nt.source);
                    let table = rel(self.s, tname);
                    // A table that exists (and has rows): built while writes go on (Postgres
                    // cannot build a partitioned table's index CONCURRENTLY).
                    if ot.is_some() && nt.partitioning.is_none() {
                        let sql = create_index_concurrently(&table, iname, ix);
                        self.out.push_in(Part::Index, prov, sql);
                    } else {
                        self.out.push(prov, index_def(&table, iname, ix));
                    }
                }
            }
        }
    }

    /// 8. Policies: ALTER POLICY where Postgres allows it, else the drop above and a create here.
    fn policies(&mut self, recreate: &Recreate) {
        for (tname, ot, nt) in self.tables() {
            for target in targets(tname, ot, nt) {
                let table = rel(self.s, target);
                for (pname, np) in &nt.policies {
                    let prov = format!("{}: policy {pname} on {target}", np.source);
                    match ot.and_then(|t| t.policies.get(pname)) {
                        Some(op) if same_policy(op, np) => {}
                        Some(op) if !recreate.contains(&(tname.clone(), pname.clone())) => {
                            self.out.push(prov, alter_policy(&table, pname, op, np));
                        }
                        _ => self.out.push(prov, create_policy(&table, pname, np)),
                    }
                }
            }
        }
    }

    /// 9. Privileges.
    fn grants(&mut self) {
        for (tname, ot, nt) in self.tables() {
            for target in targets(tname, ot, nt) {
                let prov = format!("{}: grants on {target}", nt.source);
                let table = rel(self.s, target);
                for (role, ng) in &nt.grants {
                    let og = ot
                        .and_then(|t| t.grants.get(role))
                        .cloned()
                        .unwrap_or_default();
                    grant(&mut self.out, &prov, &table, role, &og, ng);
                }
            }
        }
    }

    /// 9b. New partitions get the table's policies and grants, all of them.
    fn new_partitions(&mut self) {
        for (_, ot, nt) in self.tables() {
            for (part, _) in objects::new_partitions(ot, nt) {
                objects::secure_partition(&mut self.out, &self.new.tenancy, nt, part);
            }
        }
    }

    /// Partitions gone from a kept table, or whose bound changed (they are created again).
    fn drop_partitions(&mut self) {
        for (tname, ot, nt) in self.kept() {
            for part in objects::gone_partitions(ot, nt) {
                self.out.destructive(
                    format!("{}: partition {part} of {tname}", nt.source),
                    format!("DROP TABLE {};", rel(self.s, part)),
                );
            }
        }
    }

    /// 0. Views need PostgreSQL 15+: the migration that creates one fails first on PG 14.
    fn require_security_invoker(&mut self) {
        let created = self
            .new
            .views
            .iter()
            .find(|(n, v)| self.old.views.get(*n).is_none_or(|o| o.query != v.query));
        if let Some((_, v)) = created {
            objects::require_security_invoker(&mut self.out, &v.source);
        }
    }

    /// 0. A kept table whose partitioning changed: Postgres cannot alter that, so the migration
    ///    fails first, with what to do.
    fn refuse_repartitioning(&mut self) {
        for (tname, ot, nt) in self.kept() {
            if objects::repartitioned(ot, nt) {
                let prov = format!("{}: table {tname}", nt.source);
                self.out
                    .push(prov, objects::refuse_repartition(self.s, tname));
            }
        }
    }

    /// 2b. Views removed or whose query changed, before the tables they read change.
    fn drop_views(&mut self) {
        for (name, ov) in &self.old.views {
            if objects::view_changed(Some(ov), self.new.views.get(name)) {
                let source = self.new.views.get(name).unwrap_or(ov).source.clone();
                objects::drop_view(&mut self.out, self.s, name, &source);
            }
        }
    }

    /// 9c. Views new or re-created, and their grants.
    fn views(&mut self) {
        let none = BTreeMap::new();
        for (name, v) in &self.new.views {
            let ov = self.old.views.get(name);
            let recreated = ov.is_none() || objects::view_changed(ov, Some(v));
            if recreated {
                objects::create_view(&mut self.out, &self.new.tenancy, name, v);
            }
            let old = ov.filter(|_| !recreated).map_or(&none, |o| &o.grants);
            objects::view_grants(&mut self.out, &self.new.tenancy, name, old, v);
        }
    }

    /// 10. A renamed helper function or schema: the old ones go once nothing uses them.
    fn drop_old_helpers(&mut self, ot: &Tenancy) {
        let tn = &self.new.tenancy;
        if ot.helper_schema != tn.helper_schema || ot.context_function != tn.context_function {
            self.out.push(
                format!("{}: tenancy", tn.source),
                format!("DROP FUNCTION IF EXISTS {}();", context_function(ot)),
            );
        }
    }
}

/// The privileges and UPDATE columns that `a` has and `b` has not.
fn privileges_beyond<'g>(a: &'g Grant, b: &'g Grant) -> (Vec<&'static str>, Vec<&'g String>) {
    let privs = a.privileges.difference(&b.privileges).map(|p| p.sql());
    let cols = a.update_columns.difference(&b.update_columns);
    (privs.collect(), cols.collect())
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

fn helper_objects<'a>(out: &mut Out, t: &Tenancy, roles: impl Iterator<Item = &'a String>) {
    let prov = format!("{}: tenancy", t.source);
    let owner = q(&t.owner_role);
    out.push(
        &prov,
        migrator_memberships(&t.owner_role, &[&t.app_role, &t.admin_role]),
    );
    out.push(&prov, owner_schema_create(&t.table_schema, &t.owner_role));
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

fn create_table(out: &mut Out, schema: &Schema, name: &str, table: &Table) {
    let t = &schema.tenancy;
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
            "CREATE TABLE {} (\n    {}\n){};",
            rel(&t.table_schema, name),
            lines.join(",\n    "),
            objects::partition_clause(table.partitioning.as_ref())
        ),
    );
    out.push(
        &prov,
        format!(
            "{};",
            alter_table_owner(&t.table_schema, name, &t.owner_role)
        ),
    );
    if table.global {
        // Shared by every tenant: no RLS; the app role's grants are read-only (compile checks).
        let sql = format!(
            "REVOKE ALL ON TABLE {} FROM PUBLIC;",
            rel(&t.table_schema, name)
        );
        out.push(&prov, sql);
        return;
    }
    objects::secure_table(out, &prov, &rel(&t.table_schema, name));
    // On Citus the trigger comes after distribution (sqlgen/citus.rs).
    if schema.target == Backend::Postgres {
        out.push(&prov, immutability_trigger(t, name, table));
    }
}

/// The trigger that refuses a change of `table`'s tenant column.
pub(super) fn immutability_trigger(t: &Tenancy, name: &str, table: &Table) -> String {
    format!(
        "CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}({});",
        q(IMMUTABILITY_TRIGGER),
        rel(&t.table_schema, name),
        trigger_function(t),
        literal(&table.tenant_column)
    )
}

fn grant(out: &mut Out, prov: &str, table: &str, role: &str, old: &Grant, new: &Grant) {
    let (privs, cols) = privileges_beyond(new, old);
    let role = q(role);
    if !privs.is_empty() {
        let privs = privs.join(", ");
        out.push(prov, format!("GRANT {privs} ON TABLE {table} TO {role};"));
    }
    if !cols.is_empty() {
        let sql = format!("GRANT UPDATE ({}) ON TABLE {table} TO {role};", qlist(cols));
        out.push(prov, sql);
    }
}

#[path = "objects.rs"]
mod objects;

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
