//! A verify report as a terminal table, as stable JSON, or as JUnit XML for CI systems (SARIF:
//! `sarif.rs`); and one check described (`verify --explain`).

use serde_json::{json, Value};

use super::{CheckDef, Finding, Report, Severity, CHECKS};

/// The version of the JSON and SARIF output's shape: raised when a field changes meaning or
/// goes away (added fields keep it).
pub const SCHEMA_VERSION: u32 = 1;

/// `pass`, `fail` (fails the gate), `warn` (a warning that does not) or `allowed` (accepted by
/// `[[verify.allow]]`).
pub(super) fn status(f: &Finding, fail_on: Severity) -> &'static str {
    if f.allowed.is_some() {
        "allowed"
    } else if f.severity >= fail_on {
        "fail"
    } else {
        "warn"
    }
}

/// The findings of one check id, and how many times it ran.
fn of_check<'a>(report: &'a Report, id: &str) -> (Vec<&'a Finding>, usize) {
    let findings = report
        .tally
        .findings
        .iter()
        .filter(|f| f.id == id)
        .collect();
    let runs = report.tally.runs.get(id).copied().unwrap_or(0);
    (findings, runs)
}

/// One entry per finding, and one `pass` entry per check id that ran and found nothing.
fn entries(report: &Report, fail_on: Severity) -> Vec<Value> {
    let mut out = Vec::new();
    for def in CHECKS {
        let (findings, runs) = of_check(report, def.id);
        if findings.is_empty() {
            if runs > 0 {
                out.push(json!({
                    "id": def.id,
                    "severity": def.severity,
                    "status": "pass",
                    "object": null,
                    "tenant": null,
                    "message": format!("{runs} checked: {}", def.what),
                    "hint": null,
                }));
            }
            continue;
        }
        for f in findings {
            let mut entry = json!({
                "id": f.id,
                "severity": f.severity,
                "status": status(f, fail_on),
                "object": f.object,
                "tenant": f.tenant,
                "message": f.message,
                "hint": f.hint,
            });
            if let Some(reason) = &f.allowed {
                entry["allowed"] = json!(reason);
            }
            if let Some(slug) = &f.tenant_slug {
                entry["tenant_slug"] = json!(slug);
            }
            out.push(entry);
        }
    }
    out
}

pub fn json(report: &Report, fail_on: Severity) -> Value {
    json!({
        "schema_version": SCHEMA_VERSION,
        "passed": report.passed(fail_on),
        "database": report.database,
        "fail_on": fail_on,
        "checks": entries(report, fail_on),
        "stats": report.stats(),
        "probes": report.probes,
    })
}

/// `verify --explain ID`: what the check looks for, how to fix it, how to allow-list it.
pub fn explain(def: &CheckDef) -> String {
    format!(
        "{id} ({severity}{gate})\n\nWhat it looks for:\n  {what}\n\nHow to fix it:\n  {hint}\n\n\
         How to allow-list it (only when the object is intended and cannot break isolation), in a\n\
         policy file, with the object exactly as verify reports it:\n  \
         [[verify.allow]]\n  object = \"<the finding's object, e.g. table public.members>\"\n  \
         check = \"{id}\"\n  reason = \"<why it is safe>\"\n\n\
         More: docs/verify.md, the row of `{id}`.",
        id = def.id,
        severity = def.severity.as_str(),
        gate = match def.severity {
            Severity::Error => ": fails the gate",
            Severity::Warning => ": fails the gate with --fail-on warning",
        },
        what = def.what,
        hint = def.hint,
    )
}

/// The one line that ends the human output.
pub fn summary(report: &Report, fail_on: Severity) -> String {
    let s = report.stats();
    format!(
        "verify {}: {} tenant(s) probed{}, {} checks, {} error(s), {} warning(s), {:.2} s",
        if report.passed(fail_on) {
            "PASSED"
        } else {
            "FAILED"
        },
        s.tenants_probed,
        if s.synthetic_tenants {
            " (with synthetic tenants)"
        } else {
            ""
        },
        s.checks,
        s.errors,
        s.warnings,
        s.seconds
    )
}

pub fn table(report: &Report, fail_on: Severity) -> String {
    let mut out = String::new();
    if !report.tally.findings.is_empty() {
        let mut t = crate::output::table(&["", "check", "object", "tenant", "finding and fix"]);
        for f in &report.tally.findings {
            t.add_row(vec![
                status(f, fail_on).to_uppercase(),
                f.id.to_string(),
                f.object.clone(),
                f.tenant_slug
                    .clone()
                    .or_else(|| f.tenant.clone())
                    .unwrap_or_default(),
                match &f.allowed {
                    Some(reason) => format!("{}\nallowed: {reason}", f.message),
                    None => format!("{}\nfix: {}", f.message, f.hint),
                },
            ]);
        }
        out.push_str(&crate::output::fit(t).to_string());
        out.push('\n');
    }
    for note in &report.probes.notes {
        out.push_str(&crate::output::wrap(&format!("note: {note}")));
        out.push('\n');
    }
    out.push_str(&summary(report, fail_on));
    out
}

/// Characters XML 1.0 allows, escaped for text and attribute values.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' => o.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: one suite per group (static checks, probes); a test case per check id that
/// passed and one per finding. Warnings that do not fail the gate are passing cases with output.
pub fn junit(report: &Report, fail_on: Severity) -> String {
    let stats = report.stats();
    let mut suites = Vec::new();
    for (suite, is_probe) in [("static", false), ("probes", true)] {
        let mut cases = Vec::new();
        let mut failures = 0;
        for def in CHECKS
            .iter()
            .filter(|d| d.id.starts_with("probe.") == is_probe)
        {
            let (findings, runs) = of_check(report, def.id);
            if findings.is_empty() {
                if runs > 0 {
                    cases.push(format!(
                        "    <testcase classname=\"tenantctl.verify.{suite}\" name=\"{}\" />\n",
                        xml(def.id)
                    ));
                }
                continue;
            }
            for f in findings {
                let name = match &f.tenant {
                    Some(t) => format!("{} {} tenant {t}", f.id, f.object),
                    None => format!("{} {}", f.id, f.object),
                };
                let body = format!("{}\nfix: {}", f.message, f.hint);
                let note = match &f.allowed {
                    Some(reason) => format!("allowed: {}\nreason: {reason}", f.message),
                    None => format!("warning: {body}"),
                };
                if status(f, fail_on) == "fail" {
                    failures += 1;
                    cases.push(format!(
                        "    <testcase classname=\"tenantctl.verify.{suite}\" name=\"{}\">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                        xml(&name),
                        xml(f.id),
                        xml(&f.message),
                        xml(&body)
                    ));
                } else {
                    cases.push(format!(
                        "    <testcase classname=\"tenantctl.verify.{suite}\" name=\"{}\">\n      <system-out>{}</system-out>\n    </testcase>\n",
                        xml(&name),
                        xml(&note)
                    ));
                }
            }
        }
        suites.push((suite, cases, failures));
    }
    let tests: usize = suites.iter().map(|s| s.1.len()).sum();
    let failures: usize = suites.iter().map(|s| s.2).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"tenantctl verify\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">\n",
        stats.seconds
    ));
    for (suite, cases, failures) in suites {
        out.push_str(&format!(
            "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">\n",
            cases.len()
        ));
        for c in cases {
            out.push_str(&c);
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn xml_escapes_markup_and_drops_control_characters() {
        assert_eq!(
            super::xml("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;?"
        );
    }
}
