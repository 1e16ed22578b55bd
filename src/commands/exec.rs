//! `tenantctl exec`: one SQL statement as a tenant or as the platform admin, printed as a table.

use anyhow::Result;
use serde_json::json;

use crate::cli::{ExecArgs, Format};
use crate::settings::Project;
use crate::tenants::{self, ExecAs};
use crate::{output, policy, Outcome};

pub async fn run(project: &Project, url: &str, args: &ExecArgs, format: Format) -> Result<Outcome> {
    let who = match &args.tenant {
        Some(slug) if !args.admin => {
            tenants::validate_slug(slug)?;
            ExecAs::Tenant(slug.clone())
        }
        _ => ExecAs::Admin,
    };
    let schema = policy::load(
        &project.policies_dir(),
        &project.config.paths.policies,
        &project.config.role_names,
    )?;
    let result = tenants::exec(url, &schema, &who, &args.sql, args.write).await?;
    let context = match &result.tenant {
        Some(g) => format!("as {} in tenant {} ({})", result.role, g.slug, g.id),
        None => format!("as {}", result.role),
    };
    match format {
        Format::Json => output::print_json(&json!(result)),
        Format::Table | Format::Junit => {
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
