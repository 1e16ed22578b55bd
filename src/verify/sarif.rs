//! A verify report as SARIF 2.1.0 for GitHub code scanning: one rule per check id, one result
//! per finding, located at the policy-file line that declares the object it concerns (an
//! undeclared object at its table's policy file, anything else at `tenantctl.toml`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::render::{status, SCHEMA_VERSION};
use super::{Finding, Report, Severity, CHECKS};
use crate::model::Schema;

const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// Where findings are located: each declared table's policy file (relative to the project
/// root) with its text, and the configuration file for what belongs to no table.
pub struct Sources {
    tables: BTreeMap<String, (String, String)>,
    config: String,
}

impl Sources {
    /// Read the policy file of every declared table under `root`; `config` is the configuration
    /// file's path relative to it. A file that cannot be read locates at its line 1.
    pub fn read(root: &Path, config: &str, schema: &Schema) -> Sources {
        let tables = schema
            .tables
            .iter()
            .map(|(name, t)| {
                let text = std::fs::read_to_string(root.join(&t.source)).unwrap_or_default();
                (name.clone(), (t.source.clone(), text))
            })
            .collect();
        Sources {
            tables,
            config: config.to_string(),
        }
    }

    /// The file and line an object (`table public.members`, `policy public.members.p`,
    /// `column public.members.email`, `function public.f(uuid)`) is declared at.
    fn locate(&self, object: &str, table_schema: &str) -> (String, usize) {
        let name = object.rsplit(' ').next().unwrap_or(object);
        let rest = name
            .strip_prefix(&format!("{table_schema}."))
            .unwrap_or(name);
        let mut parts = rest.splitn(2, '.');
        let table = parts.next().unwrap_or_default();
        let Some((file, text)) = self.tables.get(table) else {
            return (self.config.clone(), 1);
        };
        let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|i| i + 1);
        let declared = parts
            .next()
            .and_then(|member| line_of(&format!("\"{member}\"")))
            .or_else(|| line_of(&format!("[tables.{table}]")))
            .or_else(|| line_of(&format!("tables.{table}")))
            .unwrap_or(1);
        (file.clone(), declared)
    }
}

fn rule(def: &super::CheckDef) -> Value {
    json!({
        "id": def.id,
        "name": def.id,
        "shortDescription": {"text": def.what},
        "fullDescription": {"text": def.what},
        "help": {"text": format!("fix: {}", def.hint)},
        "defaultConfiguration": {"level": level(def.severity)},
    })
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn result(f: &Finding, rule_index: usize, fail_on: Severity, at: (String, usize)) -> Value {
    let text = match &f.tenant {
        Some(t) => format!("{} [{}, tenant {t}]\nfix: {}", f.message, f.object, f.hint),
        None => format!("{} [{}]\nfix: {}", f.message, f.object, f.hint),
    };
    json!({
        "ruleId": f.id,
        "ruleIndex": rule_index,
        "level": if status(f, fail_on) == "fail" { "error" } else { "warning" },
        "message": {"text": text},
        "locations": [{
            "physicalLocation": {
                "artifactLocation": {"uri": at.0},
                "region": {"startLine": at.1},
            },
            "logicalLocations": [{"fullyQualifiedName": f.object}],
        }],
    })
}

/// The SARIF log of a report.
pub fn sarif(report: &Report, fail_on: Severity, schema: &Schema, sources: &Sources) -> Value {
    let results: Vec<Value> = report
        .tally
        .findings
        .iter()
        .map(|f| {
            let index = CHECKS.iter().position(|c| c.id == f.id).unwrap_or(0);
            let at = sources.locate(&f.object, &schema.tenancy.table_schema);
            result(f, index, fail_on, at)
        })
        .collect();
    json!({
        "version": "2.1.0",
        "$schema": SARIF_SCHEMA,
        "runs": [{
            "tool": {"driver": {
                "name": "tenantctl",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": CHECKS.iter().map(rule).collect::<Vec<_>>(),
            }},
            "results": results,
            "properties": {
                "schema_version": SCHEMA_VERSION,
                "passed": report.passed(fail_on),
                "database": report.database,
                "stats": report.stats(),
                "probes": report.probes,
            },
        }],
    })
}
