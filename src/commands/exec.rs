//! `tenantctl exec`: one SQL statement as a tenant or as the platform admin, printed as a table.

use anyhow::Result;
use serde_json::json;

use crate::output::{self, Format};
use crate::pg::Target;
use crate::settings::Project;
use crate::tenants::{self, ExecAs};
use crate::Outcome;

/// What to run, and as whom.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tenant's slug; `None` runs as the platform admin.
    pub tenant: Option<String>,
    /// One SQL statement.
    pub sql: String,
    /// Commit; otherwise the transaction is read-only and rolled back.
    pub write: bool,
    pub format: Format,
}

pub async fn run(project: &Project, target: &Target, settings: &Settings) -> Result<Outcome> {
    let who = match &settings.tenant {
        Some(slug) => {
            tenants::validate_slug(slug)?;
            ExecAs::Tenant(slug.clone())
        }
        None => ExecAs::Admin,
    };
    let schema = project.schema()?;
    let result = tenants::exec(target, &schema, &who, &settings.sql, settings.write).await?;
    let context = match &result.tenant {
        Some(g) => format!("as {} in tenant {} ({})", result.role, g.slug, g.id),
        None => format!("as {}", result.role),
    };
    match settings.format {
        Format::Json => output::print_json(&json!(result)),
        Format::Table => {
            if !result.columns.is_empty() {
                let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
                let mut t = output::table(&header);
                for row in &result.rows {
                    t.add_row(
                        row.iter()
                            .map(|v| v.clone().unwrap_or_else(|| "NULL".to_string())),
                    );
                }
                println!("{t}");
            }
        }
    }
    // On stderr in both formats: stdout stays the result; a rollback is never silent.
    let rows = if result.columns.is_empty() {
        format!("{} rows affected", result.row_count)
    } else {
        format!("{} rows", result.rows.len())
    };
    if result.committed {
        eprintln!("({rows} {context}; committed)");
    } else {
        eprintln!(
            "({rows} {context}; read-only transaction rolled back: pass --write to change data)"
        );
    }
    Ok(Outcome::Clean)
}
