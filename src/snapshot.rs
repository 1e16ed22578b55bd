//! The model recorded at the last `generate`, committed beside the migrations, and the list of
//! migration files: together they say what the next migration must change.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::Schema;

pub const FILE: &str = "tenantctl.snapshot.json";
const FORMAT: u32 = 1;
/// Revision of the helper objects (schema, context and trigger functions) that `generate`
/// writes. A snapshot of an older revision makes the next migration re-create them. 2: the
/// context function carries no `SET search_path`, so that Postgres inlines it into every
/// statement instead of calling it.
pub const HELPERS: u32 = 2;

fn first_helpers() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: u32,
    /// The migration version this model corresponds to.
    pub version: u32,
    /// The [`HELPERS`] revision the migrations create (1 when absent: older snapshots).
    #[serde(default = "first_helpers")]
    pub helpers: u32,
    pub schema: Schema,
}

/// A migration file in the directory: `V<version>__<name>.sql`.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    pub version: u32,
    pub name: String,
    pub path: PathBuf,
}

/// Migration files sorted by version; other files are ignored (as refinery ignores them).
pub fn migration_files(dir: &Path) -> Result<Vec<MigrationFile>> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_prefix('V').and_then(|f| f.strip_suffix(".sql")) else {
            continue;
        };
        let Some((v, name)) = stem.split_once("__") else {
            continue;
        };
        let Ok(version) = v.parse::<u32>() else {
            continue;
        };
        files.push(MigrationFile {
            version,
            name: name.to_string(),
            path,
        });
    }
    files.sort_by_key(|f| f.version);
    for pair in files.windows(2) {
        if pair[0].version == pair[1].version {
            bail!(
                "two migrations have version {}: {} and {}\n  hint: keep one; versions must be unique",
                pair[0].version,
                pair[0].path.display(),
                pair[1].path.display()
            );
        }
    }
    Ok(files)
}

pub fn load(dir: &Path) -> Result<Option<Snapshot>> {
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let snap: Snapshot = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a tenantctl snapshot: {e}\n  hint: restore it from version control; it is written by `tenantctl generate`",
            path.display()
        )
    })?;
    if snap.format != FORMAT {
        bail!(
            "{} has format {}, this tenantctl reads format {FORMAT}",
            path.display(),
            snap.format
        );
    }
    Ok(Some(snap))
}

/// Write the snapshot atomically (temp file + rename), so a crash never leaves half a file.
pub fn save(dir: &Path, version: u32, schema: &Schema) -> Result<()> {
    let snap = Snapshot {
        format: FORMAT,
        version,
        helpers: HELPERS,
        schema: schema.clone(),
    };
    let mut text = serde_json::to_string_pretty(&snap)?;
    text.push('\n');
    write_atomic(&dir.join(FILE), &text)
}

pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The version of the last generated snapshot when the policies no longer compile to the model
/// it records, that is when `generate` would write a migration for them (the same comparison,
/// `sqlgen::diff` against the snapshot, non-empty); None when they match or nothing was generated
/// yet. A helper revision of an older tenantctl does not count: only the policies do.
pub fn stale_since(dir: &Path, policies: &Schema) -> Result<Option<u32>> {
    let Some(snap) = load(dir)? else {
        return Ok(None);
    };
    let changed = !crate::sqlgen::diff(Some(&snap.schema), policies, false).is_empty();
    Ok(changed.then_some(snap.version))
}

/// The sentence `status` prints and `migrate` refuses with for stale policies.
pub fn stale_message(version: u32) -> String {
    format!("policies changed since V{version}: run `tenantctl generate`")
}
