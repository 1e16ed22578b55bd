//! `tenantctl migrate`: apply pending migrations with refinery, one transaction each, under an
//! advisory lock so that concurrent runs apply each migration once.
//!
//! One rule: whenever migrate refuses to apply (stale policies, a transaction pooler, a missing
//! privilege, a `--target` below the database's version, migration files that diverge from the
//! history), it exits 2 having applied nothing: every refusal is checked before the first
//! migration runs. `status` reports the stale policies and divergent files as findings (stale
//! ones under `--check`); it works through a pooler and checks no privileges.

use anyhow::{bail, Result};
use serde_json::json;

use crate::migrate::{self, Plan, Report};
use crate::output::Format;
use crate::settings::Project;
use crate::{output, pg, Outcome};

/// What `migrate` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// List the migrations that would run, and run none.
    pub dry_run: bool,
    /// Migrate up to and including this version only.
    pub target: Option<i32>,
    /// Run through a transaction pooler anyway.
    pub allow_pooler: bool,
    /// Apply the migration files even though the policies changed since the last `generate`.
    pub allow_stale: bool,
    pub format: Format,
}

pub async fn run(project: &Project, url: &pg::Target, settings: &Settings) -> Result<Outcome> {
    if let Some((pooler, direct)) = url.neon_pooler() {
        if !settings.allow_pooler {
            bail!(
                "{pooler} is a Neon pooler endpoint (PgBouncer in transaction mode): it cannot hold the advisory lock that keeps two migrate runs from applying the same migration\n  \
                 hint: migrate through the direct host {direct}, or pass --allow-pooler if nothing else can migrate concurrently"
            );
        }
        eprintln!(
            "warning: migrating through the pooler {pooler}: the advisory lock does not hold there"
        );
    }
    let migrations = migrate::load_migrations(project)?;
    refuse_stale(project, settings)?;
    let mut client = pg::connect(url).await?;
    // Before any session state: the lock and the settings are taken only on a direct connection,
    // where they die with the backend when the run ends or is killed.
    if refuse_pooler(url, &client, settings).await? {
        eprintln!(
            "warning: migrating through a transaction pooler (--allow-pooler): no advisory lock, no lock_timeout or statement_timeout, the server's default search_path"
        );
    } else {
        migrate::prepare(&client, project).await?;
    }
    let place = migrate::history_place(project)?;
    let dir = project.migrations_dir();
    let snapshot = crate::snapshot::load(&dir)?;
    let tenancy = snapshot.map(|s| s.schema.tenancy);
    let plan = read_plan(&mut client, migrations, settings, &place, tenancy.as_ref()).await?;
    // A non-transactional migration holding another statement: refused before anything runs.
    migrate::concurrent::check(&dir, &plan.pending)?;
    migrate::preflight::check(&client, &plan.pending, &place.helper_schema).await?;
    if settings.dry_run {
        return dry_run(project, url, &client, &plan, settings.format).await;
    }
    if let Some(tenancy) = &tenancy {
        let pending = !plan.pending.is_empty();
        migrate::preflight::grant_needs(&mut client, tenancy, pending).await?;
    }
    // The last step before refinery, after every refusal: nothing changes on a refused run.
    if migrate::settle(&mut client, &place, !plan.pending.is_empty()).await? {
        eprintln!(
            "Moved the migration history to {} (out of the tables' schema).",
            place.relation()
        );
    }
    let bar = output::progress(plan.pending.len() as u64, "migrating");
    let report = migrate::apply(
        &mut client,
        &dir,
        &plan,
        &bar,
        settings.format == Format::Table,
    )
    .await;
    bar.finish_and_clear();
    let report = report?;
    migrate::mark(&client, &place).await?;
    render(&report, settings.format);
    Ok(Outcome::Clean)
}

/// The plan, from the history in the helper schema. A role that may not read it there (the
/// history a superuser applied and handed over, in a schema the owner role owns) is first given
/// the memberships it needs to migrate, which it would be given before applying anyway.
async fn read_plan(
    client: &mut tokio_postgres::Client,
    migrations: Vec<refinery::Migration>,
    settings: &Settings,
    place: &migrate::Place,
    tenancy: Option<&crate::model::Tenancy>,
) -> Result<Plan> {
    let first = migrate::plan(client, migrations.clone(), settings.target, place).await;
    match (first, tenancy) {
        (Err(e), Some(tenancy)) if migrate::permission_denied(&e) => {
            migrate::preflight::grant_needs(client, tenancy, true).await?;
            migrate::plan(client, migrations, settings.target, place).await
        }
        (first, _) => first,
    }
}

/// Refuse (exit 2, before connecting) when the policies changed since the last `generate`: the
/// migrations would not bring what the policy files declare. `--allow-stale` applies anyway.
fn refuse_stale(project: &Project, settings: &Settings) -> Result<()> {
    if settings.allow_stale {
        return Ok(());
    }
    let schema = project.schema()?;
    if let Some(version) = crate::snapshot::stale_since(&project.migrations_dir(), &schema)? {
        bail!(
            "{}; nothing was applied\n  \
             hint: `tenantctl generate` writes the migration for the change, then run `tenantctl migrate`; pass --allow-stale to apply the existing migrations without it",
            crate::snapshot::stale_message(version)
        );
    }
    Ok(())
}

/// Refuse a connection that goes through a transaction pooler (exit 2, naming the direct URL
/// when it can be told), unless `--allow-pooler`; true when migrating through one anyway.
async fn refuse_pooler(
    url: &pg::Target,
    client: &tokio_postgres::Client,
    settings: &Settings,
) -> Result<bool> {
    let Some(found) = migrate::pooler::detect(url, client).await? else {
        return Ok(false);
    };
    if settings.allow_pooler {
        return Ok(true);
    }
    let direct = match (url.neon_pooler(), &found.server) {
        (Some((_, host)), _) => format!("the direct host {host}"),
        (None, Some(server)) => format!(
            "the direct URL {}",
            migrate::pooler::direct_url(url, server)
        ),
        (None, None) => "the database's direct host and port (not the pooler's)".to_string(),
    };
    bail!(
        "{url} goes through a transaction pooler ({}): migrate needs one server session for its advisory lock and settings, and a pooler would leave them on a server connection other clients get\n  \
         hint: migrate through {direct}, or pass --allow-pooler if nothing else can migrate concurrently",
        found.evidence
    )
}

/// Print the SQL of the pending migrations, then test-apply them on top of the migrations the
/// database has applied, in a scratch database (of the same server when the migrating role may
/// create one, else of the embedded cluster) that is always dropped: never in the database itself,
/// where they would take locks. The first failure is an error naming `file:line:column`.
async fn dry_run(
    project: &Project,
    url: &pg::Target,
    client: &tokio_postgres::Client,
    plan: &Plan,
    format: Format,
) -> Result<Outcome> {
    let Some(last) = plan.pending.last().map(|m| m.version()) else {
        render_dry_run(plan, format, "");
        return Ok(Outcome::Clean);
    };
    if format == Format::Table {
        for m in &plan.pending {
            println!("-- {m}.sql\n{}", m.sql().unwrap_or_default().trim_end());
        }
    }
    let (server, place) = scratch_server(project, url, client).await?;
    let replay: Vec<&refinery::Migration> = plan
        .migrations
        .iter()
        .filter(|m| m.version() <= last)
        .collect();
    let dir = project.migrations_dir();
    let path = migrate::search_path(project)?;
    let scratch = migrate::scratch::name("dry_run");
    let after = format!(
        "; in scratch database {scratch} of {place} (dropped): nothing was applied to {url}"
    );
    let failure = migrate::scratch::in_scratch(&server, "dry_run", async |c| {
        migrate::scratch::test_apply(c, &dir, &path, &replay, &after).await
    })
    .await?;
    if let Some(f) = failure {
        bail!("{}", f.text);
    }
    render_dry_run(plan, format, &format!("{scratch} of {place}"));
    Ok(Outcome::Clean)
}

/// Where to replay migrations: a scratch database of the same server when the connected role may
/// create one, else of the embedded cluster; and which of the two, said as such.
pub(crate) async fn scratch_server(
    project: &Project,
    url: &pg::Target,
    client: &tokio_postgres::Client,
) -> Result<(pg::Target, &'static str)> {
    if migrate::scratch::can_create_database(client).await? {
        return Ok((url.clone(), "the same server"));
    }
    let dir = project.dev_dir();
    let why = "the migrating role cannot create a database; test-applying in";
    Ok((super::embedded_server(&dir, why)?, "the embedded cluster"))
}

/// What a dry run would apply; `tested_on` names where it was test-applied (empty: nothing to).
fn render_dry_run(plan: &Plan, format: Format, tested_on: &str) {
    let pending = &plan.pending;
    match format {
        Format::Json => output::print_json(&json!({
            "dry_run": true,
            "current": plan.current,
            "pending": pending.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "sql": pending.iter().map(|m| json!({"migration": m.to_string(), "sql": m.sql()})).collect::<Vec<_>>(),
            "test_applied_on": (!tested_on.is_empty()).then_some(tested_on),
        })),
        Format::Table if pending.is_empty() => {
            eprintln!("Nothing to apply: the database is up to date.")
        }
        Format::Table => eprintln!(
            "Would apply {} migration(s): {}.\nTest-applied on top of V{} in scratch database \
             {tested_on} (dropped): they apply. Nothing was applied.",
            pending.len(),
            pending
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            plan.current.unwrap_or(0)
        ),
    }
}

fn render(report: &Report, format: Format) {
    match format {
        Format::Json => output::print_json(&json!({
            "dry_run": false,
            "applied": report.applied.iter().map(|a| json!({"migration": a.migration, "seconds": a.elapsed.as_secs_f64()})).collect::<Vec<_>>(),
            "version": report.version,
        })),
        Format::Table if report.applied.is_empty() => {
            eprintln!("Nothing to apply: the database is up to date.")
        }
        Format::Table => {
            eprintln!("Database is at V{}.", report.version.unwrap_or(0))
        }
    }
}
