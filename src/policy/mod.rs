//! Load and validate the TOML files in `policies/` into the compiled model, with file:line:column
//! errors. The caller says where the files are and how roles are named; policy knows no config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::Schema;

mod allow;
mod compile;
pub mod diagnostics;
mod raw;
#[cfg(test)]
pub(crate) mod testing;

pub use diagnostics::{toml_error_message, PolicyError, PolicyErrors};

use compile::RoleNames;
use diagnostics::DOCS_HINT;
use raw::{Parsed, RawFile};

/// Load every `*.toml` file in `dir`, sorted by name, into a model. `shown_dir` is how
/// provenance comments name the directory (the configured `[paths].policies`, relative to the
/// project); `role_names` maps the roles the policies declare to physical names.
pub fn load(
    dir: &Path,
    shown_dir: &Path,
    role_names: &BTreeMap<String, String>,
) -> Result<Schema, PolicyErrors> {
    let paths = policy_files(dir)?;
    let shown_dir = shown_dir.to_string_lossy().replace('\\', "/");
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for result in parse_all(paths, &shown_dir) {
        match result {
            Ok(p) => parsed.push(p),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    match compile::compile(&parsed, &RoleNames(role_names), &mut errors) {
        Some(s) if errors.is_empty() => Ok(s),
        _ => Err(PolicyErrors(errors)),
    }
}

/// The `*.toml` files of the directory, sorted; at least one.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyErrors> {
    let fail = |message: String, hint: &str| {
        PolicyErrors(vec![PolicyError::at_start(
            dir,
            message,
            Some(hint.to_string()),
        )])
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        fail(
            format!("cannot read the policies directory: {e}"),
            "run `tenantctl init`, or set [paths].policies in tenantctl.toml",
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(fail(
            "no .toml files in the policies directory".into(),
            DOCS_HINT,
        ));
    }
    Ok(paths)
}

/// Parse the files on every core, results in the files' order. TOML parsing is most of the
/// time `plan` and `generate` take on a large policy set (200 tables: about 10 of 20 ms).
fn parse_all(paths: Vec<PathBuf>, shown_dir: &str) -> Vec<Result<Parsed, PolicyError>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below a few files a thread costs more than it saves.
    let chunk = paths.len().div_ceil(threads).max(16);
    if paths.len() <= chunk {
        return paths.into_iter().map(|p| parse(p, shown_dir)).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|p| parse(p.clone(), shown_dir))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a policy parser thread panicked"))
            .collect()
    })
}

/// Read and parse one file; its provenance name is `<shown_dir>/<file name>`.
fn parse(path: PathBuf, shown_dir: &str) -> Result<Parsed, PolicyError> {
    let text = std::fs::read_to_string(&path)
        .map_err(|e| PolicyError::at_start(&path, format!("cannot read: {e}"), None))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = format!("{}/{}", shown_dir.trim_end_matches('/'), name);
    match toml::from_str::<RawFile>(&text) {
        Ok(file) => Ok(Parsed {
            path,
            source,
            text,
            file,
        }),
        Err(e) => Err(diagnostics::toml_error(&path, &text, &e)),
    }
}
