//! `[[verify.allow]]`: verify findings accepted on purpose, each with the reason, in any policy
//! file. verify matches an entry's `object` exactly against a finding's object (and its `check`,
//! when given, against the finding's id); an entry that matches nothing is reported.

use serde::Deserialize;
use toml::Spanned;

use super::diagnostics::{line_col, PolicyError};
use super::raw::Parsed;
use crate::model::Allow;

const HINT: &str = "an entry reads [[verify.allow]] object = \"trigger public.members.audit\" reason = \"why it is safe\" (check = \"id\" optional); see docs/policy-format.md";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVerify {
    #[serde(default)]
    pub(crate) allow: Vec<Spanned<RawAllow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllow {
    pub(crate) object: Option<Spanned<String>>,
    pub(crate) check: Option<Spanned<String>>,
    pub(crate) reason: Option<Spanned<String>>,
}

/// Every file's entries, in file order; problems (a missing or empty object or reason, an unknown
/// check id) go to `errors`.
pub(crate) fn compile(files: &[Parsed], errors: &mut Vec<PolicyError>) -> Vec<Allow> {
    let mut out = Vec::new();
    for file in files {
        let Some(verify) = &file.file.verify else {
            continue;
        };
        let mut sink = file.sink(errors);
        for entry in &verify.allow {
            let span = entry.span();
            let (line, column) = line_col(&file.text, span.start);
            let raw = entry.get_ref();
            let object = text_of(&raw.object);
            let reason = text_of(&raw.reason);
            if object.is_none() {
                sink.err(span.clone(), "[[verify.allow]] needs an object", HINT);
            }
            if reason.is_none() {
                sink.err(
                    span.clone(),
                    "[[verify.allow]] needs a reason: say why the finding is safe",
                    HINT,
                );
            }
            if let Some(c) = &raw.check {
                if !crate::verify::CHECKS.iter().any(|d| d.id == c.get_ref()) {
                    let message = format!("unknown check id {:?}", c.get_ref());
                    sink.err(
                        c.span(),
                        message,
                        "`tenantctl verify --help` and docs/verify.md list the check ids",
                    );
                }
            }
            if let (Some(object), Some(reason)) = (object, reason) {
                out.push(Allow {
                    object,
                    check: raw.check.as_ref().map(|c| c.get_ref().clone()),
                    reason,
                    at: format!("{}:{line}:{column}", file.source),
                });
            }
        }
    }
    out
}

/// The trimmed value, if there is one and it is not blank.
fn text_of(v: &Option<Spanned<String>>) -> Option<String> {
    v.as_ref()
        .map(|s| s.get_ref().trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::policy::testing::{load, model};

    fn with(extra: &str) -> Vec<(&'static str, String)> {
        crate::policy::testing::with("allow.toml", extra)
    }

    #[test]
    fn entries_are_read_with_their_place() {
        let m = model(&with(
            "# accepted\n[[verify.allow]]\nobject = \"trigger public.members.audit\"\nreason = \"writes the audit log only\"\ncheck = \"world.trigger\"\n",
        ));
        assert_eq!(m.allow.len(), 1);
        let a = &m.allow[0];
        assert_eq!(a.object, "trigger public.members.audit");
        assert_eq!(a.check.as_deref(), Some("world.trigger"));
        assert_eq!(a.reason, "writes the audit log only");
        assert!(a.at.ends_with("allow.toml:2:1"), "{}", a.at);
    }

    #[test]
    fn a_missing_reason_or_object_or_an_unknown_check_is_an_error_at_its_place() {
        let e = load(&with("\n[[verify.allow]]\nobject = \"table public.x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("allow.toml:2:1: [[verify.allow]] needs a reason"),
            "{e}"
        );
        let e = load(&with("[[verify.allow]]\nreason = \"  \"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs an object") && e.contains("needs a reason"),
            "{e}"
        );
        let e = load(&with(
            "[[verify.allow]]\nobject = \"table public.x\"\nreason = \"r\"\ncheck = \"no.such\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("allow.toml:4:9: unknown check id \"no.such\""),
            "{e}"
        );
        let e = load(&with(
            "[[verify.allow]]\nobject = \"x\"\nreason = \"r\"\nwhy = 1\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `why`"), "{e}");
    }
}
