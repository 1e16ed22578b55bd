//! `[extensions]`: each extension, the schema it is created in, and the declared roles that may
//! use that schema (to call the extension's functions).

use std::collections::BTreeMap;

use super::roles::declared_role;
use super::RoleNames;
use crate::model::{Extension, Role};
use crate::policy::diagnostics::{PolicyError, Seen};
use crate::policy::raw::Parsed;

pub(super) fn compile(
    files: &[Parsed],
    roles: &BTreeMap<String, Role>,
    role_names: &RoleNames<'_>,
    errors: &mut Vec<PolicyError>,
) -> BTreeMap<String, Extension> {
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in files {
        let mut sink = p.sink(errors);
        for (key, raw) in &p.file.extensions {
            let name = key.get_ref();
            // Extension names are their control files' names: `uuid-ossp` has a hyphen.
            let valid = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid {
                let hint = "use the extension's name as in pg_available_extensions, e.g. pgcrypto";
                sink.err(key.span(), format!("invalid extension name {name:?}"), hint);
                continue;
            }
            let what = format!("extension {name}");
            let hint = "declare each extension once";
            if !sink.first_declaration(&mut seen, name.clone(), key.span(), &what, hint) {
                continue;
            }
            let r = raw.get_ref();
            let before = sink.count();
            let schema = sink.name(&r.schema, "schema");
            let mut usage: Vec<String> = r
                .usage
                .iter()
                .filter_map(|role| {
                    let message =
                        |n: &str| format!("extension {name} names role {n}, which is not declared");
                    declared_role(&mut sink, role, roles, role_names, message)
                })
                .collect();
            usage.sort();
            usage.dedup();
            if let (Some(schema), true) = (schema, sink.count() == before) {
                let source = p.source.clone();
                out.insert(
                    name.clone(),
                    Extension {
                        source,
                        schema,
                        usage,
                    },
                );
            }
        }
    }
    out
}
