//! `[views.<name>]`: views over tenant tables, each with its SELECT and read-only grants. They
//! are generated `security_invoker` and `security_barrier`, so the reader's own rights and the
//! tables' row-level security apply beneath them.

use std::collections::{BTreeMap, BTreeSet};

use super::grants::{self, Writes};
use super::DeclaredTables;
use crate::model::{Table, View};
use crate::policy::diagnostics::{PolicyError, Seen};
use crate::policy::raw::Parsed;

pub(super) fn compile(
    files: &[Parsed],
    declared: &DeclaredTables<'_>,
    tables: &BTreeMap<String, Table>,
    ctx: &grants::Ctx<'_>,
    errors: &mut Vec<PolicyError>,
) -> BTreeMap<String, View> {
    let partitions: BTreeSet<&String> = tables
        .values()
        .filter_map(|t| t.partitioning.as_ref())
        .flat_map(|p| p.partitions.keys())
        .collect();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut views = BTreeMap::new();
    for p in files {
        let mut sink = p.sink(errors);
        for (key, raw) in &p.file.views {
            let Some(name) = sink.name(key, "view") else {
                continue;
            };
            if declared.seen.contains_key(&name) || partitions.contains(&name) {
                let message = format!("view {name} has the name of a declared table or partition");
                sink.err(key.span(), message, "give the view a name of its own");
                continue;
            }
            let what = format!("view {name}");
            if !sink.first_declaration(
                &mut seen,
                name.clone(),
                key.span(),
                &what,
                "declare each view once",
            ) {
                continue;
            }
            let r = raw.get_ref();
            let before = sink.count();
            let query = sink.query(&r.query);
            let grants =
                grants::role_grants(&r.grants, &BTreeSet::new(), Writes::Never, ctx, &mut sink);
            if let (Some(query), true) = (query, sink.count() == before) {
                let source = p.source.clone();
                views.insert(
                    name,
                    View {
                        source,
                        query,
                        grants,
                    },
                );
            }
        }
    }
    views
}
