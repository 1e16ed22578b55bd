//! `tenantctl tenant create|list|show|delete`: the edge over `crate::tenants`.

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::cli::{Format, TenantCreateArgs};
use crate::settings::Project;
use crate::tenants::seed;
use crate::tenants::{self, CreateSpec, Created, Tenant};
use crate::verify;
use crate::{output, policy, Outcome};

pub async fn create(
    project: &Project,
    url: &str,
    args: &TenantCreateArgs,
    format: Format,
) -> Result<Outcome> {
    tenants::validate_slug(&args.slug)?;
    let schema = policy::load(
        &project.policies_dir(),
        &project.config.paths.policies,
        &project.config.role_names,
    )?;
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
    let created = tenants::create(url, &schema, &spec, &bar).await;
    bar.finish_and_clear();
    let (gym, report) = match created? {
        Created::Existing(gym) => {
            match format {
                Format::Json => output::print_json(&json!({
                    "id": gym.id, "slug": gym.slug, "name": gym.name, "created": false,
                })),
                Format::Table | Format::Junit => {
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
    let probe = verify::probe_single_tenant(url, &schema, gym.id)
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
        Format::Table | Format::Junit => {
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

/// A table of tenants with one count column per tenant table.
pub fn tenants_table(list: &[Tenant]) -> comfy_table::Table {
    let tables: Vec<String> = list
        .first()
        .map(|t| t.rows.keys().cloned().collect())
        .unwrap_or_default();
    let mut header = vec!["slug", "name", "id"];
    header.extend(tables.iter().map(String::as_str));
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
        t.add_row(row);
    }
    t
}

pub async fn list(project: &Project, url: &str, format: Format) -> Result<Outcome> {
    let schema = policy::load(
        &project.policies_dir(),
        &project.config.paths.policies,
        &project.config.role_names,
    )?;
    let list = tenants::list(url, &schema).await?;
    match format {
        Format::Json => output::print_json(&json!({ "tenants": list })),
        Format::Table | Format::Junit if list.is_empty() => {
            eprintln!("No tenants yet.\n  hint: `tenantctl tenant create SLUG --name NAME`")
        }
        Format::Table | Format::Junit => println!("{}", tenants_table(&list)),
    }
    Ok(Outcome::Clean)
}

pub async fn show(project: &Project, url: &str, slug: &str, format: Format) -> Result<Outcome> {
    tenants::validate_slug(slug)?;
    let schema = policy::load(
        &project.policies_dir(),
        &project.config.paths.policies,
        &project.config.role_names,
    )?;
    let (tenant, record) = tenants::show(url, &schema, slug).await?;
    match format {
        Format::Json => output::print_json(&json!({
            "id": tenant.id, "slug": tenant.slug, "name": tenant.name,
            "record": record, "rows": tenant.rows,
        })),
        Format::Table | Format::Junit => {
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

pub async fn delete(
    project: &Project,
    url: &str,
    slug: &str,
    yes: bool,
    format: Format,
) -> Result<Outcome> {
    tenants::validate_slug(slug)?;
    let schema = policy::load(
        &project.policies_dir(),
        &project.config.paths.policies,
        &project.config.role_names,
    )?;
    if !yes && !output::interactive() {
        bail!("refusing to delete tenant {slug} without confirmation: there is no terminal to ask on\n  hint: pass --yes");
    }
    let tenant = tenants::preview_delete(url, &schema, slug).await?;
    if !yes {
        let rows: Vec<String> = tenant
            .rows
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        eprint!(
            "Delete tenant {} ({}, id {}) and all its rows ({})?\nType the slug to confirm: ",
            tenant.slug,
            tenant.name,
            tenant.id,
            rows.join(", ")
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the confirmation")?;
        if answer.trim() != tenant.slug {
            bail!("not confirmed; nothing was deleted");
        }
    }
    let deleted = tenants::delete(url, &schema, &tenant).await?;
    match format {
        Format::Json => output::print_json(&json!({ "deleted": deleted })),
        Format::Table | Format::Junit => {
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
