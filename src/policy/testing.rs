//! Small policy projects for unit tests (of the compiler and of `sqlgen::diff`): a base of
//! tenancy, gyms and members, and edits of it.

use std::collections::BTreeMap;
use std::path::Path;

use super::PolicyErrors;
use crate::model::Schema;

pub(crate) const TENANCY: &str = r#"
[tenancy]
tenant_table = "gyms"
"#;

pub(crate) const GYMS: &str = r#"
[tables.gyms]
columns = [
  { name = "id", type = "uuid", default = "gen_random_uuid()" },
  { name = "name", type = "text" },
]
grants.gym_app = ["select"]
"#;

pub(crate) const MEMBERS: &str = r#"
[tables.members]
columns = [
  { name = "id", type = "uuid", default = "gen_random_uuid()" },
  { name = "gym_id", type = "uuid" },
  { name = "full_name", type = "text", check = "length(full_name) > 0" },
]
unique = [["full_name"]]
grants.gym_app = ["select", "insert"]

[[policies]]
name = "members_named"
table = "members"
command = "select"
roles = ["gym_app"]
using = "full_name <> ''"
kind = "restrictive"
"#;

pub(crate) const COACHES: &str = r#"
[tables.coaches]
columns = [
  { name = "id", type = "uuid" },
  { name = "gym_id", type = "uuid" },
  { name = "email", type = "text", nullable = true },
]
indexes = [{ columns = ["email"] }]
grants.gym_app = ["select"]
"#;

/// A global table, a list-partitioned tenant table that references it, a view, an extension.
pub(crate) const MODEL: &str = r#"
[extensions]
pgcrypto = { schema = "extensions", usage = ["gym_app"] }

[tables.plans]
global = true
columns = [
  { name = "id", type = "text" },
  { name = "title", type = "text" },
]
grants.gym_app = ["select"]
grants.platform_admin = ["select", "insert", "update", "delete"]

[tables.visits]
columns = [
  { name = "id", type = "uuid" },
  { name = "gym_id", type = "uuid" },
  { name = "plan_id", type = "text" },
]
references = [{ column = "plan_id", table = "plans" }]
partition_by = { method = "list", column = "gym_id" }
partitions = [{ name = "visits_rest", default = true }]
grants.gym_app = ["select", "insert"]

[views.visit_plans]
query = "SELECT v.gym_id, p.title FROM public.visits v JOIN public.plans p ON p.id = v.plan_id"
grants.gym_app = ["select"]
"#;

/// The base project with [`MODEL`] edited (`from` → `to`), as model.toml.
pub(crate) fn with_model(from: &str, to: &str) -> Vec<(&'static str, String)> {
    assert!(MODEL.contains(from), "MODEL has no {from:?}");
    with("model.toml", &MODEL.replace(from, to))
}

pub(crate) const AUDITOR: &str = r#"
[roles.auditor]
login = true
"#;

/// Compile a policy directory holding these files (name, text), as `generate` does. Problems
/// name the temporary directory `policies`, as they would in a project.
pub(crate) fn load(files: &[(&str, String)]) -> Result<Schema, PolicyErrors> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let shown = Path::new("policies");
    super::load(dir.path(), shown, &BTreeMap::new()).map_err(|mut errors| {
        let temp = dir.path().display().to_string();
        for e in &mut errors.0 {
            e.file = shown.join(e.file.strip_prefix(dir.path()).unwrap_or(&e.file));
            e.message = e.message.replace(&temp, "policies");
        }
        errors
    })
}

/// The model of these files, which must compile.
pub(crate) fn model(files: &[(&str, String)]) -> Schema {
    load(files).unwrap_or_else(|e| panic!("{e}"))
}

/// The base project: tenancy, gyms and members, one file each.
pub(crate) fn base() -> Vec<(&'static str, String)> {
    vec![
        ("tenancy.toml", TENANCY.to_string()),
        ("gyms.toml", GYMS.to_string()),
        ("members.toml", MEMBERS.to_string()),
    ]
}

/// The base project with `from` replaced by `to` in one file (which must contain it).
pub(crate) fn edited(file: &str, from: &str, to: &str) -> Vec<(&'static str, String)> {
    let mut files = base();
    let (_, text) = files.iter_mut().find(|(n, _)| *n == file).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    *text = text.replace(from, to);
    files
}

/// The base project with one more file.
pub(crate) fn with(name: &'static str, text: &str) -> Vec<(&'static str, String)> {
    let mut files = base();
    files.push((name, text.to_string()));
    files
}
