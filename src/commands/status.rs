//! `tenantctl status`: applied, pending, divergent and missing migrations.

use anyhow::Result;
use serde_json::json;

use crate::cli::Format;
use crate::commands::migrate::{
    applied_migrations, compare, load_migrations, pin_search_path, State,
};
use crate::settings::Project;
use crate::{output, pg, Outcome};

pub async fn run(
    project: &Project,
    url: &pg::Target,
    check: bool,
    format: Format,
) -> Result<Outcome> {
    let local = load_migrations(project)?;
    let mut client = pg::connect(url).await?;
    pin_search_path(&client, project).await?;
    let applied = applied_migrations(&mut client).await?;
    let entries = compare(&local, &applied);
    let count = |s: State| entries.iter().filter(|e| e.state == s).count();
    let (pending, divergent, missing) = (
        count(State::Pending),
        count(State::Divergent),
        count(State::Missing),
    );
    let current = applied.iter().map(|m| m.version()).max();
    match format {
        Format::Json => output::print_json(&json!({
            "database": url.to_string(),
            "current": current,
            "migrations": entries.iter().map(|e| json!({
                "version": e.version, "name": e.name, "state": e.state.as_str(), "applied_on": e.applied_on,
            })).collect::<Vec<_>>(),
            "summary": {"applied": count(State::Applied), "pending": pending, "divergent": divergent, "missing": missing},
        })),
        Format::Table | Format::Junit => {
            let mut t = output::table(&["version", "name", "state", "applied on"]);
            for e in &entries {
                t.add_row(vec![
                    format!("V{}", e.version),
                    e.name.clone(),
                    e.state.as_str().to_string(),
                    e.applied_on.clone().unwrap_or_default(),
                ]);
            }
            println!("{t}");
            println!(
                "{}: at V{}; {} applied, {pending} pending, {divergent} divergent, {missing} missing",
                url,
                current.unwrap_or(0),
                count(State::Applied)
            );
        }
    }
    // Divergent or missing migrations are drift, always a finding; pending ones only under --check.
    let problem = divergent + missing > 0 || (check && pending > 0);
    Ok(if problem {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}
