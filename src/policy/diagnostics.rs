//! Policy-file problems as `file:line:column: message` with a hint, and the per-file sink that
//! collects them. A leaf: `settings` uses [`toml_error_message`] for `tenantctl.toml` too.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub(crate) const DOCS_HINT: &str = "the policy format is described in docs/policy-format.md";

/// One problem in one input file, located by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl PolicyError {
    /// A problem with a whole file or directory, reported at its start.
    pub(crate) fn at_start(file: &Path, message: String, hint: Option<String>) -> PolicyError {
        PolicyError {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message,
            hint,
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in the policy files (loading does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the policy files",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A TOML syntax or shape error, located, with a hint.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> PolicyError {
    let (line, column) = err.span().map_or((1, 1), |s| line_col(text, s.start));
    let message = err.message().trim().replace('\n', " ");
    let hint = if message.contains("unknown field") {
        format!("remove or rename the key; {DOCS_HINT}")
    } else if message.contains("missing field") {
        format!("add the key; {DOCS_HINT}")
    } else {
        "check the TOML syntax near this position".to_string()
    };
    PolicyError {
        file: path.to_path_buf(),
        line,
        column,
        message,
        hint: Some(hint),
    }
}

/// A TOML syntax or shape error, as `file:line:column: message` with a hint.
pub fn toml_error_message(path: &Path, text: &str, err: &toml::de::Error) -> String {
    toml_error(path, text, err).to_string()
}

/// Where a declaration came from, to report duplicates.
pub(crate) struct Seen {
    file: PathBuf,
    line: usize,
}

/// Collects errors for one file, turning spans into positions.
pub(crate) struct Sink<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) errors: &'a mut Vec<PolicyError>,
}

impl Sink<'_> {
    pub(crate) fn err(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        let hint: String = hint.into();
        self.errors.push(PolicyError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: (!hint.is_empty()).then_some(hint),
        });
    }

    /// How many problems are recorded so far (in all files): a step compares it before and after
    /// to know whether it found any.
    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    /// Record where `key` is first declared; a second declaration is reported with both places
    /// and gives false.
    pub(crate) fn first_declaration<K: Ord>(
        &mut self,
        seen: &mut BTreeMap<K, Seen>,
        key: K,
        span: Range<usize>,
        what: &str,
        hint: &str,
    ) -> bool {
        if let Some(prev) = seen.get(&key) {
            let message = format!(
                "{what} is declared twice (first at {}:{})",
                prev.file.display(),
                prev.line
            );
            self.err(span, message, hint);
            return false;
        }
        let (line, _) = line_col(self.text, span.start);
        seen.insert(
            key,
            Seen {
                file: self.file.to_path_buf(),
                line,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(line_col("a\nbc\nd", 0), (1, 1));
        assert_eq!(line_col("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_col("a\nbc\nd", 5), (3, 1));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }
}
