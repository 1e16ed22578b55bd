//! `tenantctl adopt`: baseline a database whose objects already exist and that has no tenantctl
//! history. The migrations are replayed in a scratch database (as `migrate --dry-run` does) and
//! compared with the database after each; the longest prefix V1..Vk that matches is marked as
//! applied, so that the next `migrate` brings only what is missing. Exit 1, with nothing marked,
//! when the database matches no prefix or a version named with `--applied` is beyond it.

use anyhow::{bail, Result};
use serde_json::json;

use crate::migrate::adopt::{self, Replay, Stop};
use crate::migrate::adopt_catalog::{self, Difference};
use crate::migrate::{self, Place};
use crate::output::Format;
use crate::settings::Project;
use crate::{output, pg, Outcome};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Hand-written migrations the user says the database has had.
    pub applied: Vec<i32>,
    /// Report, mark nothing.
    pub dry_run: bool,
    pub format: Format,
}

/// What a run found.
struct Found {
    replay: Replay,
    /// How many migrations the database has applied (V1..Vk).
    count: usize,
    stop: Option<Stop>,
    /// Versions named with `--applied` beyond the baseline.
    beyond: Vec<i32>,
    scratch: String,
}

pub async fn run(project: &Project, url: &pg::Target, settings: &Settings) -> Result<Outcome> {
    let migrations = migrate::load_migrations(project)?;
    for v in &settings.applied {
        if !migrations.iter().any(|m| m.version() == *v) {
            bail!("--applied V{v}: there is no migration V{v} in {}\n  hint: name a migration file's version (`tenantctl status` lists them)", project.migrations_dir().display());
        }
    }
    let mut client = pg::connect(url).await?;
    if let Some(found) = migrate::pooler::detect(url, &client).await? {
        bail!("{url} goes through a transaction pooler ({}): adopt needs one server session for the migration lock\n  hint: run adopt through the database's direct host and port", found.evidence);
    }
    migrate::prepare(&client, project).await?;
    let place = migrate::history_place(project)?;
    refuse_history(&mut client, &place).await?;
    let schemas = vec![place.legacy_schema.clone(), place.helper_schema.clone()];
    let live = adopt_catalog::read(&client, &schemas).await?;
    let (server, on) = super::migrate::scratch_server(project, url, &client).await?;
    let scratch = format!("{} of {on}", migrate::scratch::name("adopt"));
    let after = format!("; in scratch database {scratch} (dropped): nothing was marked in {url}");
    let (dir, path) = (project.migrations_dir(), migrate::search_path(project)?);
    let all: Vec<&refinery::Migration> = migrations.iter().collect();
    let replay = migrate::scratch::in_scratch(&server, "adopt", async |c| {
        adopt::replay(c, &dir, &path, &all, &live, &schemas, &after).await
    })
    .await?;
    if let (Some(f), true) = (&replay.failure, replay.steps.is_empty()) {
        bail!("{}", f.text);
    }
    let (count, stop) = adopt::baseline(&replay.steps, &settings.applied);
    let newest = count.checked_sub(1).map_or(0, |i| migrations[i].version());
    let beyond: Vec<i32> = settings
        .applied
        .iter()
        .copied()
        .filter(|v| *v > newest)
        .collect();
    let found = Found {
        replay,
        count,
        stop,
        beyond,
        scratch,
    };
    let unnamed = matches!(found.stop, Some(Stop::Unnamed(_)));
    let adopted = found.count > 0 && found.beyond.is_empty() && !unnamed;
    if adopted && !settings.dry_run {
        adopt::record(&mut client, &place, &migrations[..found.count]).await?;
    }
    render(&found, &place, settings, adopted);
    Ok(if adopted {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// Adopt is for a database without tenantctl history: one that has some is migrated, not adopted.
async fn refuse_history(client: &mut tokio_postgres::Client, place: &Place) -> Result<()> {
    let applied = migrate::applied_migrations(client, place).await?;
    if let Some(newest) = applied.iter().map(|m| m.version()).max() {
        bail!("this database already has a tenantctl migration history (V{newest} applied); adopt is for a database without one, so nothing was marked\n  hint: run `tenantctl status` to see where it stands, then `tenantctl migrate`");
    }
    Ok(())
}

fn render(found: &Found, place: &Place, settings: &Settings, adopted: bool) {
    let steps = &found.replay.steps;
    let baseline = found
        .count
        .checked_sub(1)
        .map(|i| steps[i].migration.clone());
    let next = steps.get(found.count);
    let marked: Vec<&str> = if adopted && !settings.dry_run {
        steps[..found.count]
            .iter()
            .map(|s| s.migration.as_str())
            .collect()
    } else {
        Vec::new()
    };
    if settings.format == Format::Json {
        output::print_json(&json!({
            "adopted": adopted,
            "dry_run": settings.dry_run,
            "baseline": baseline,
            "marked": marked,
            "compared_with": next.map(|s| s.migration.clone()),
            "differences": next.map_or(Vec::new(), |s| s.differences.iter().map(difference_json).collect()),
            "not_visible": found.stop.as_ref().map(|s| match s {
                Stop::Pending(m) | Stop::Unnamed(m) => m.clone(),
            }),
            "applied_beyond_baseline": found.beyond,
            "replay_failure": found.replay.failure.as_ref().map(|f| f.text.clone()),
            "scratch": found.scratch,
        }));
        return;
    }
    say(&format!(
        "Replayed the migrations in scratch database {} (dropped) and compared.",
        found.scratch
    ));
    match &baseline {
        Some(b) => eprintln!("The database matches {b}."),
        None => eprintln!("The database matches no migration: it differs from the first one."),
    }
    if let Some(next) = next {
        print_differences(&next.migration, &next.differences);
    } else if found.replay.failure.is_none() {
        eprintln!("Nothing is missing: it matches the newest migration.");
    }
    notes(found);
    conclude(
        adopted,
        settings.dry_run,
        &marked,
        place,
        next.map(|s| s.migration.as_str()),
    );
}

fn notes(found: &Found) {
    if let Some(Stop::Pending(m) | Stop::Unnamed(m)) = &found.stop {
        let v = m.split("__").next().unwrap_or(m);
        say(&format!("{m} changes no object adopt compares (a data migration?): whether it ran cannot be seen.\n  hint: if it ran, pass --applied {v}"));
    }
    if let Some(f) = &found.replay.failure {
        say(&format!("The replay stopped: {}", f.text));
    }
    for v in &found.beyond {
        say(&format!(
            "--applied V{v}: the database does not match the migrations up to V{v}."
        ));
    }
}

fn conclude(adopted: bool, dry_run: bool, marked: &[&str], place: &Place, next: Option<&str>) {
    let then = next.map_or(String::new(), |n| {
        format!("; `tenantctl migrate` then applies {n} onwards")
    });
    match (adopted, dry_run) {
        (false, _) => say("Nothing was marked as applied.\n  hint: make the database match (or fix the differences above by hand), then run `tenantctl adopt` again"),
        (true, true) => say(&format!("Dry run: nothing was marked{then}.")),
        (true, false) => say(&format!("Marked {} as applied in {}{then}.", marked.join(", "), place.relation())),
    }
}

fn print_differences(migration: &str, differences: &[Difference]) {
    eprintln!(
        "It differs from the result of {migration} in {} object(s):",
        differences.len()
    );
    let version = migration.split("__").next().unwrap_or(migration);
    for d in differences {
        eprintln!("  {:<8} {}", d.kind(), d.object());
        match d {
            Difference::Extra { database, .. } => eprintln!("{}", shown("database", database, "")),
            Difference::Missing { expected, .. } => eprintln!("{}", shown(version, expected, "")),
            Difference::Changed {
                database, expected, ..
            } => {
                eprintln!("{}", shown("database", database, expected));
                eprintln!("{}", shown(version, expected, database));
            }
        }
    }
}

/// `    label: value` on one line: whitespace collapsed, starting a little before where it
/// differs from `other`, cut to fit 100 columns.
fn shown(label: &str, value: &str, other: &str) -> String {
    const WIDTH: usize = 76;
    let value: Vec<char> = value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    let other: Vec<char> = other
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    let same = value.iter().zip(&other).take_while(|(a, b)| a == b).count();
    let start = if value.len() > WIDTH {
        same.saturating_sub(20)
    } else {
        0
    };
    let text: String = value[start..].iter().take(WIDTH).collect();
    let (head, tail) = (
        if start > 0 { "..." } else { "" },
        if value.len() - start > WIDTH {
            "..."
        } else {
            ""
        },
    );
    format!("      {label:<9} {head}{text}{tail}")
}

fn difference_json(d: &Difference) -> serde_json::Value {
    match d {
        Difference::Extra { object, database } => {
            json!({"kind": "extra", "object": object, "database": database})
        }
        Difference::Missing { object, expected } => {
            json!({"kind": "missing", "object": object, "expected": expected})
        }
        Difference::Changed {
            object,
            database,
            expected,
        } => {
            json!({"kind": "changed", "object": object, "database": database, "expected": expected})
        }
    }
}

/// A line of prose on stderr, wrapped to fit 100 columns.
fn say(text: &str) {
    eprintln!("{}", output::wrap(text));
}
