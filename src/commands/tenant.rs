//! `tenantctl tenant create|list|show|isolate|delete`: the edge over `crate::tenants`.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::output::{self, Format};
use crate::pg::Target;
use crate::settings::Project;
use crate::tenants::seed;
use crate::tenants::{self, CreateSpec, Created};
use crate::verify;
use crate::Outcome;

use super::render;

/// One `tenant` subcommand.
#[derive(Debug, Clone)]
pub enum Action {
    Create(CreateSettings),
    List,
    Show {
        slug: String,
    },
    /// Citus: the tenant on shards of its own.
    Isolate {
        slug: String,
    },
    /// `yes`: delete without asking.
    Delete {
        slug: String,
        yes: bool,
    },
}

impl Action {
    /// The slug the action names, if any: checked before any connection is made.
    pub fn slug(&self) -> Option<&str> {
        match self {
            Action::Create(a) => Some(&a.slug),
            Action::Show { slug } | Action::Isolate { slug } | Action::Delete { slug, .. } => {
                Some(slug)
            }
            Action::List => None,
        }
    }
}

/// `tenant create`: the gym, how much to seed, and with which seed.
#[derive(Debug, Clone)]
pub struct CreateSettings {
    pub slug: String,
    pub name: String,
    pub coaches: u64,
    pub members: u64,
    /// `None`: a random seed, printed so that the run can be reproduced.
    pub seed: Option<u64>,
    /// An existing slug is not an error.
    pub if_not_exists: bool,
}

pub async fn run(
    project: &Project,
    target: &Target,
    action: &Action,
    format: Format,
) -> Result<Outcome> {
    match action {
        Action::Create(a) => create(project, target, a, format).await,
        Action::List => list(project, target, format).await,
        Action::Show { slug } => show(project, target, slug, format).await,
        Action::Isolate { slug } => isolate(project, target, slug, format).await,
        Action::Delete { slug, yes } => delete(project, target, slug, *yes, format).await,
    }
}

async fn create(
    project: &Project,
    target: &Target,
    args: &CreateSettings,
    format: Format,
) -> Result<Outcome> {
    tenants::validate_slug(&args.slug)?;
    let schema = project.schema()?;
    let spec = CreateSpec {
        slug: args.slug.clone(),
        name: args.name.clone(),
        counts: seed::Counts {
            coaches: args.coaches,
            members: args.members,
        },
        seed: args.seed.unwrap_or_else(rand::random),
        if_not_exists: args.if_not_exists,
    };
    let bar = output::rows_progress(
        args.coaches + args.members,
        &format!("seeding {}", args.slug),
    );
    let created = tenants::create(target, &schema, &spec, &bar).await;
    bar.finish_and_clear();
    let (gym, report) = match created? {
        Created::Existing(gym) => {
            match format {
                Format::Json => output::print_json(&json!({
                    "id": gym.id, "slug": gym.slug, "name": gym.name, "created": false,
                })),
                Format::Table => {
                    eprintln!(
                        "Tenant {} already exists; nothing changed (--if-not-exists).",
                        gym.slug
                    );
                    println!("{}", gym.id);
                }
            }
            return Ok(Outcome::Clean);
        }
        Created::New { gym, report } => (gym, report),
    };
    let probe = verify::probe_single_tenant(target, &schema, gym.id)
        .await
        .with_context(|| {
            format!(
                "tenant {} was created, but its isolation probe could not run",
                gym.slug
            )
        })?;
    let secs = report.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        report.total() as f64 / secs
    } else {
        0.0
    };
    match format {
        Format::Json => output::print_json(&json!({
            "id": gym.id,
            "slug": gym.slug,
            "name": gym.name,
            "created": true,
            "seed": spec.seed,
            "rows": report.rows,
            "not_seeded": report.skipped,
            "seed_seconds": secs,
            "rows_per_second": rate.round(),
            "probe": probe,
        })),
        Format::Table => {
            let mut t = output::table(&["table", "rows seeded"]);
            for (table, n) in &report.rows {
                t.add_row(vec![table.clone(), n.to_string()]);
            }
            for (table, why) in &report.skipped {
                t.add_row(vec![table.clone(), format!("0 (not seeded: {why})")]);
            }
            println!(
                "Created tenant {} ({}) with id {}",
                gym.slug, gym.name, gym.id
            );
            println!("{t}");
            println!(
                "Seeded {} rows in {secs:.2}s ({rate:.0} rows/s) as {} in the tenant's context; reproduce with --seed {}",
                report.total(),
                schema.tenancy.app_role,
                spec.seed
            );
            print_probe(&probe);
        }
    }
    Ok(if probe.failures.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// One line when isolation holds; every finding otherwise.
pub fn print_probe(probe: &verify::ProbeSummary) {
    if probe.failures.is_empty() {
        println!("Isolation probe: {} checks, all passed.", probe.checks);
        return;
    }
    println!(
        "Isolation probe: {} checks, {} FAILED:",
        probe.checks,
        probe.failures.len()
    );
    let mut t = output::table(&["finding", "table", "message", "hint"]);
    for f in &probe.failures {
        t.add_row(vec![
            f.id.to_string(),
            f.object.clone(),
            f.message.clone(),
            f.hint.clone(),
        ]);
    }
    println!("{t}");
}

async fn list(project: &Project, target: &Target, format: Format) -> Result<Outcome> {
    let schema = project.schema()?;
    let list = tenants::list(target, &schema).await?;
    match format {
        Format::Json => output::print_json(&json!({ "tenants": list })),
        Format::Table if list.is_empty() => {
            eprintln!("No tenants yet.\n  hint: `tenantctl tenant create SLUG --name NAME`")
        }
        Format::Table => println!("{}", render::tenants_table(&list)),
    }
    Ok(Outcome::Clean)
}

async fn isolate(
    project: &Project,
    target: &Target,
    slug: &str,
    format: Format,
) -> Result<Outcome> {
    tenants::validate_slug(slug)?;
    let schema = project.schema()?;
    let done = tenants::citus::isolate(target, &schema, slug).await?;
    match format {
        Format::Json => output::print_json(&json!(done)),
        Format::Table => println!(
            "Tenant {} is on shard {} of its own, on {}.",
            done.gym.slug, done.shard, done.node
        ),
    }
    Ok(Outcome::Clean)
}

async fn show(project: &Project, target: &Target, slug: &str, format: Format) -> Result<Outcome> {
    tenants::validate_slug(slug)?;
    let schema = project.schema()?;
    let (tenant, record) = tenants::show(target, &schema, slug).await?;
    match format {
        Format::Json => output::print_json(&json!({
            "id": tenant.id, "slug": tenant.slug, "name": tenant.name,
            "record": record, "rows": tenant.rows,
        })),
        Format::Table => {
            let mut t = output::table(&["field", "value"]);
            if let serde_json::Value::Object(fields) = &record {
                for (k, v) in fields {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "NULL".to_string(),
                        other => other.to_string(),
                    };
                    t.add_row(vec![k.clone(), v]);
                }
            }
            for (table, n) in &tenant.rows {
                t.add_row(vec![format!("rows in {table}"), n.to_string()]);
            }
            println!("{t}");
        }
    }
    Ok(Outcome::Clean)
}

async fn delete(
    project: &Project,
    target: &Target,
    slug: &str,
    yes: bool,
    format: Format,
) -> Result<Outcome> {
    tenants::validate_slug(slug)?;
    let schema = project.schema()?;
    if !yes && !output::interactive() {
        bail!("refusing to delete tenant {slug} without confirmation: there is no terminal to ask on\n  hint: pass --yes");
    }
    let tenant = tenants::preview_delete(target, &schema, slug).await?;
    if !yes {
        let rows: Vec<String> = tenant
            .rows
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        let prompt = format!(
            "Delete tenant {} ({}, id {}) and all its rows ({})?\nType the slug to confirm: ",
            tenant.slug,
            tenant.name,
            tenant.id,
            rows.join(", ")
        );
        if !super::render::confirm(&prompt, &tenant.slug)? {
            bail!("not confirmed; nothing was deleted");
        }
    }
    let deleted = tenants::delete(target, &schema, &tenant).await?;
    match format {
        Format::Json => output::print_json(&json!({ "deleted": deleted })),
        Format::Table => {
            let rows: Vec<String> = deleted
                .rows
                .iter()
                .map(|(t, n)| format!("{n} {t}"))
                .collect();
            println!(
                "Deleted tenant {} (id {}) with {}.",
                deleted.slug,
                deleted.id,
                rows.join(", ")
            );
        }
    }
    Ok(Outcome::Clean)
}
