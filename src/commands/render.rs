//! Renderings that more than one command prints (so that no command reaches into another).

use crate::output;
use crate::tenants::Tenant;

/// A table of tenants with one count column per tenant table.
pub fn tenants_table(list: &[Tenant]) -> comfy_table::Table {
    let tables: Vec<String> = list
        .first()
        .map(|t| t.rows.keys().cloned().collect())
        .unwrap_or_default();
    let mut header = vec!["slug", "name", "id"];
    header.extend(tables.iter().map(String::as_str));
    // On Citus: the node that holds each tenant.
    let nodes = list.iter().any(|t| t.node.is_some());
    if nodes {
        header.push("node");
    }
    let mut t = output::table(&header);
    for tenant in list {
        let mut row = vec![
            tenant.slug.clone(),
            tenant.name.clone(),
            tenant.id.to_string(),
        ];
        row.extend(
            tables
                .iter()
                .map(|k| tenant.rows.get(k).copied().unwrap_or(0).to_string()),
        );
        if nodes {
            row.push(tenant.node.clone().unwrap_or_default());
        }
        t.add_row(row);
    }
    t
}

/// A file of the project as the user refers to it: relative to the project's root.
pub fn project_path(project: &crate::settings::Project, file: &std::path::Path) -> String {
    file.strip_prefix(&project.root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Ask on the terminal (stderr) and read a line: true when the answer is `expected`.
pub fn confirm(prompt: &str, expected: &str) -> anyhow::Result<bool> {
    use anyhow::Context;
    use std::io::{BufRead, Write};
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    Ok(answer.trim() == expected)
}

pub use crate::output::{fit, wrap};

/// A lint finding as `lint` prints it and `generate` warns it: where, which rule, what it locks
/// and for how long, and what to write instead (prose wrapped to 100 columns when piped).
pub fn lint_finding(file: &str, f: &crate::migrate::lint::Finding) -> String {
    let head = format!(
        "{file}:{}:{}: {} on {:?}",
        f.line, f.column, f.rule, f.table
    );
    let locks = indented(&format!("locks {}, {}", f.lock, f.held));
    let instead = indented(&format!("instead: {}", f.hint));
    format!("{head}\n{locks}\n{instead}")
}

/// Prose indented by two, wrapped like `output::wrap` (whose continuation lines are indented by
/// two): a one-character word stands in for the indent while wrapping.
fn indented(text: &str) -> String {
    let wrapped = output::wrap(&format!("- {text}"));
    format!(" {}", &wrapped[1..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn prose_wraps_within_the_piped_width() {
        let long = "word ".repeat(60);
        let wrapped = super::wrap(long.trim_end());
        assert!(wrapped.lines().count() > 2);
        assert!(wrapped
            .lines()
            .all(|l| l.chars().count() <= crate::output::PIPED_WIDTH));
        assert_eq!(wrapped.replace("\n  ", " "), long.trim_end());
    }
}
