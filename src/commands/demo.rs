//! `tenantctl demo`: the whole product on a fresh database of the embedded cluster — migrate,
//! three seeded gyms, verify, and the release note's isolation scenarios shown live.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::model::Schema;
use crate::output::Format;
use crate::settings::Project;
use crate::sqlgen::tenants as sql;
use crate::tenants::scenarios::{self, Scenario};
use crate::tenants::{self, CreateSpec, Created};
use crate::tenants::{seed, Tenant};
use crate::verify::{self, render, Severity};
use crate::{embedded, migrate, output, pg, Outcome};

/// The demo's own database in the local cluster, dropped and recreated on every run so that it
/// never touches the user's data.
pub const DEMO_DATABASE: &str = "tenantctl_demo";

/// The three gyms: slug, name, coaches, share of `--members` (percent), seed.
const GYMS: &[(&str, &str, u64, u64, u64)] = &[
    ("iron-temple", "Iron Temple", 6, 100, 1),
    ("harbor-crossfit", "Harbor CrossFit", 4, 60, 2),
    ("lotus-yoga", "Lotus Yoga Loft", 3, 40, 3),
];

/// What `demo` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Members of the largest gym (the other two get 60% and 40% of it).
    pub members: u64,
    /// JSON also silences the progress lines on stderr.
    pub format: Format,
}

pub async fn run(project: &Project, args: &Settings, url_flag: Option<&str>) -> Result<Outcome> {
    project.require()?;
    // The demo drops and recreates a database: never on a URL the user might care about.
    if url_flag.is_some() {
        bail!("demo runs on the embedded local database only (it recreates a database named {DEMO_DATABASE})\n  hint: drop --database-url; use `tenantctl tenant create` and `tenantctl exec` on other databases");
    }
    let say = |s: &str| {
        if args.format == Format::Table {
            eprintln!("{s}");
        }
    };
    let schema = project.schema()?;

    say("==> Starting the embedded local database");
    let cluster = pg::Target::parse(&embedded::ensure_running(&project.dev_dir())?)?;
    let url = cluster.with_dbname(DEMO_DATABASE)?;
    recreate_database(&cluster).await?;
    say(&format!("==> Fresh database {DEMO_DATABASE}: {}", url));

    say("==> Applying the migrations in migrations/");
    apply_migrations(project, &url).await?;

    say("==> Creating three gyms, each seeded AS ITSELF (app role + tenant context)");
    create_gyms(&url, &schema, args.members, &say).await?;
    let list = tenants::list(&url, &schema).await?;

    say("==> verify: static checks of the catalog, then every gym's probes (rolled back)");
    let verified = verify::run(&url, &schema, &verify::Settings::default()).await?;

    say("==> The release note's scenarios, live");
    let find = |slug: &str| {
        list.iter()
            .find(|t| t.slug == slug)
            .ok_or_else(|| anyhow!("the demo gym {slug} is missing"))
    };
    let (a, b) = (find(GYMS[0].0)?, find(GYMS[1].0)?);
    let all_members: i64 = list
        .iter()
        .map(|t| t.rows.get(seed::MEMBERS).copied().unwrap_or(0))
        .sum();
    let results = scenarios::run(&url, &schema, a, b, all_members).await?;
    let holds = verified.passed(Severity::Error) && results.iter().all(|s| s.holds);

    match args.format {
        Format::Json => output::print_json(&json!({
            "database": url.to_string(),
            "tenants": list,
            "verify": render::json(&verified, Severity::Error),
            "scenarios": results,
            "isolation_holds": holds,
        })),
        Format::Table => print_table(&list, &verified, &results, holds, (a, b)),
    }
    Ok(if holds {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// The three gyms, each created and seeded as itself, then probed.
async fn create_gyms(
    url: &pg::Target,
    schema: &Schema,
    members: u64,
    say: &dyn Fn(&str),
) -> Result<()> {
    for (slug, name, coaches, share, seed_value) in GYMS {
        let members = members * share / 100;
        let spec = CreateSpec {
            slug: slug.to_string(),
            name: name.to_string(),
            counts: seed::Counts {
                coaches: *coaches,
                members,
            },
            seed: *seed_value,
            if_not_exists: false,
        };
        let bar = output::rows_progress(coaches + members, &format!("seeding {slug}"));
        let result = tenants::create(url, schema, &spec, &bar).await;
        bar.finish_and_clear();
        let Created::New { gym, report } = result? else {
            unreachable!("the demo database is fresh");
        };
        let probe = verify::probe_single_tenant(url, schema, gym.id).await?;
        say(&format!(
            "    {slug}: {} rows in {:.2}s, isolation probe {}/{} passed",
            report.total(),
            report.elapsed.as_secs_f64(),
            probe.checks - probe.failures.len(),
            probe.checks
        ));
    }
    Ok(())
}

/// The human report on stdout; `a` and `b` are the gyms the scenarios ran with.
fn print_table(
    list: &[Tenant],
    verified: &verify::Report,
    results: &[Scenario],
    holds: bool,
    (a, b): (&Tenant, &Tenant),
) {
    println!("\nTenants in {DEMO_DATABASE} (counted as the platform admin):");
    println!("{}", super::render::fit(super::render::tenants_table(list)));
    println!("\nverify:");
    println!("{}", render::table(verified, Severity::Error));
    println!("\nThe same data, seen by each role:");
    let mut t = output::table(&["scenario", "acting as", "query", "expected", "outcome", ""]);
    for s in results {
        t.add_row(vec![
            s.scenario.clone(),
            s.acting_as.clone(),
            s.query.clone(),
            s.expected.clone(),
            s.outcome.clone(),
            if s.holds {
                "✓".to_string()
            } else {
                "✗ BROKEN".to_string()
            },
        ]);
    }
    println!("{}", super::render::fit(t));
    if holds {
        println!("\n{}", super::render::wrap("Isolation holds: each gym sees only its own rows, even without WHERE; no context, no rows; the admin sees all."));
    } else {
        println!("\nISOLATION IS BROKEN: see the ✗ rows above.");
    }
    // The demo database stays until the next run; this is how to look around in it.
    println!(
        "\nLook around (the demo database stays until the next demo run):\n  \
         export DATABASE_URL=\"$(cargo run -q -- dev url --show-password | sed 's,/postgres?,/{DEMO_DATABASE}?,')\"\n  \
         cargo run -- exec --tenant {} \"SELECT full_name, email, status FROM members LIMIT 5\"\n  \
         cargo run -- exec --admin \"SELECT gym_id, count(*) FROM members GROUP BY gym_id\"\n  \
         cargo run -- tenant show {}",
        a.slug, b.slug
    );
}

/// Drop the demo database (WITH (FORCE) ends sessions left by a previous run) and create it again.
async fn recreate_database(cluster: &pg::Target) -> Result<()> {
    let admin = pg::connect(cluster).await?;
    // Two statements: a multi-statement string would run as one transaction, which DROP
    // DATABASE refuses.
    for sql in [
        sql::drop_database(DEMO_DATABASE),
        sql::create_database(DEMO_DATABASE),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .map_err(pg::error::pg_error)
            .with_context(|| format!("cannot recreate the demo database {DEMO_DATABASE}"))?;
    }
    Ok(())
}

/// Apply every migration, reported as `tenantctl migrate` reports it in table format: on stderr,
/// leaving stdout to the demo.
async fn apply_migrations(project: &Project, url: &pg::Target) -> Result<()> {
    let mut client = pg::connect(url).await?;
    let bar = output::progress(0, "migrating");
    let report = migrate::apply_pending(&mut client, project, &bar, true).await;
    bar.finish_and_clear();
    let report = report?;
    if report.applied.is_empty() {
        eprintln!("Nothing to apply: the database is up to date.");
    } else {
        eprintln!("Database is at V{}.", report.version.unwrap_or(0));
    }
    Ok(())
}
