//! What a migration changes, in one line for its header ("+1 table, +3 policies, ~1 policy
//! widened for gym_app"), and the changes that widen what a role can see or write: a new
//! permissive policy on an existing table, a changed permissive policy (tenantctl cannot prove an
//! expression narrower, so a change counts as widening), a restrictive policy dropped or changed,
//! privileges granted on an existing table.

use std::collections::BTreeMap;

use crate::model::{Policy, Schema, Table};

/// The change between two models, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `+1 table`, `-2 columns`, `~1 policy`..., in a fixed order; empty when nothing changed.
    pub counts: Vec<String>,
    /// Role → the objects (kind, name) whose change widens what it can see or write.
    pub widened: BTreeMap<String, Vec<(&'static str, String)>>,
}

impl Summary {
    /// The header lines of a migration (none when nothing changed).
    pub fn header(&self) -> Vec<String> {
        let mut parts = self.counts.clone();
        for (role, objects) in &self.widened {
            for kind in ["policy", "grant"] {
                let n = objects.iter().filter(|(k, _)| *k == kind).count();
                if n > 0 {
                    parts.push(format!("~{} widened for {role}", plural(n, kind)));
                }
            }
        }
        let mut lines = Vec::new();
        if !parts.is_empty() {
            lines.push(format!("-- Summary: {}", parts.join(", ")));
        }
        for (role, objects) in &self.widened {
            lines.push(format!(
                "-- RISK widening: {role} may see or write more: {}",
                objects
                    .iter()
                    .map(|(_, o)| o.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        lines
    }
}

fn plural(n: usize, what: &str) -> String {
    match (n, what.strip_suffix('y')) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {what}s"),
    }
}

/// Added, dropped and changed counts of one kind of object.
#[derive(Default)]
struct Tally {
    added: usize,
    dropped: usize,
    changed: usize,
}

impl Tally {
    fn of<'a, T: PartialEq + 'a>(
        old: impl IntoIterator<Item = (&'a String, &'a T)>,
        new: &'a BTreeMap<String, T>,
    ) -> Tally {
        let old: BTreeMap<&String, &T> = old.into_iter().collect();
        let mut t = Tally {
            added: new.keys().filter(|k| !old.contains_key(k)).count(),
            ..Tally::default()
        };
        for (k, v) in &old {
            match new.get(*k) {
                None => t.dropped += 1,
                Some(n) if n != *v => t.changed += 1,
                Some(_) => {}
            }
        }
        t
    }

    fn add(&mut self, other: Tally) {
        self.added += other.added;
        self.dropped += other.dropped;
        self.changed += other.changed;
    }

    fn push(&self, what: &str, out: &mut Vec<String>) {
        for (sign, n) in [("+", self.added), ("-", self.dropped), ("~", self.changed)] {
            if n > 0 {
                out.push(format!("{sign}{}", plural(n, what)));
            }
        }
    }
}

/// Count what changes from `old` (nothing: the first migration) to `new`.
pub fn summarize(old: Option<&Schema>, new: &Schema) -> Summary {
    let empty = BTreeMap::new();
    let old_tables = old.map_or(&empty, |o| &o.tables);
    let mut s = Summary::default();
    Tally::of(old_tables, &new.tables).push("table", &mut s.counts);
    let (mut columns, mut policies, mut grants) =
        (Tally::default(), Tally::default(), Tally::default());
    for (name, nt) in &new.tables {
        let Some(ot) = old_tables.get(name) else {
            policies.added += nt.policies.len();
            continue;
        };
        columns.add(Tally::of(
            ot.columns.iter().map(|c| (&c.name, c)),
            &nt.columns
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect(),
        ));
        policies.add(Tally::of(&ot.policies, &nt.policies));
        grants.add(Tally::of(&ot.grants, &nt.grants));
        widenings(name, ot, nt, &mut s.widened);
    }
    for (name, ot) in old_tables {
        if !new.tables.contains_key(name) {
            policies.dropped += ot.policies.len();
        }
    }
    columns.push("column", &mut s.counts);
    policies.push("policy", &mut s.counts);
    grants.push("grant", &mut s.counts);
    s
}

/// The policies and grants of a kept table whose change widens what a role can see or write.
fn widenings(
    name: &str,
    old: &Table,
    new: &Table,
    out: &mut BTreeMap<String, Vec<(&'static str, String)>>,
) {
    let mut note = |roles: &[String], kind: &'static str, what: String| {
        for r in roles {
            out.entry(r.clone()).or_default().push((kind, what.clone()));
        }
    };
    for (pname, np) in &new.policies {
        let op = old.policies.get(pname);
        let roles = widened_roles(op, np);
        note(&roles, "policy", format!("policy {name}.{pname}"));
    }
    for (pname, op) in &old.policies {
        if !op.permissive && !new.policies.contains_key(pname) {
            note(
                &op.roles,
                "policy",
                format!("policy {name}.{pname} (restrictive, dropped)"),
            );
        }
    }
    for (role, ng) in &new.grants {
        let og = old.grants.get(role).cloned().unwrap_or_default();
        let more = ng.privileges.difference(&og.privileges).next().is_some()
            || ng
                .update_columns
                .difference(&og.update_columns)
                .next()
                .is_some();
        if more {
            note(
                std::slice::from_ref(role),
                "grant",
                format!("grant on {name}"),
            );
        }
    }
}

/// The roles a new or changed policy may let see or write more: every role of a new or changed
/// permissive policy, every role of a changed restrictive one.
fn widened_roles(old: Option<&Policy>, new: &Policy) -> Vec<String> {
    match old {
        None if new.permissive => new.roles.clone(),
        None => Vec::new(),
        Some(o) if o == new => Vec::new(),
        Some(o) if o.permissive || new.permissive => {
            let mut roles = new.roles.clone();
            roles.extend(o.roles.iter().filter(|r| !new.roles.contains(r)).cloned());
            roles
        }
        Some(o) => o.roles.clone(),
    }
}
