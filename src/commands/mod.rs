//! One file per subcommand; `run` turns the command line into settings, loads the project,
//! resolves the database and dispatches.

pub mod adopt;
pub mod bench;
pub mod completions;
pub mod demo;
pub mod dev;
pub mod exec;
pub mod generate;
pub mod init;
pub mod lint;
pub mod migrate;
pub mod new;
mod render;
pub mod status;
pub mod tenant;
pub mod verify;

use anyhow::{bail, Result};

use crate::cli::{self, Cli, Command, GlobalArgs};
use crate::output::{Format, ReportFormat};
use crate::pg::Target;
use crate::settings::{Database, Project};
use crate::verify::{Severity, TenantSelection};
use crate::{embedded, Outcome};

pub async fn run(cli: Cli) -> Result<Outcome> {
    let global = cli.global;
    match cli.command {
        Command::Init(args) => init::run(&args.dir),
        // Neither needs a project: they describe the command line itself.
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
        Command::Verify(args) => {
            // Describes a check id: needs neither a project nor a database.
            if let Some(id) = &args.explain {
                return verify::explain(id);
            }
            let settings = verify_settings(args, global.format);
            let project = Project::find(global.config.as_deref())?;
            project.require()?;
            let target = connect_to(&project, &global)?;
            verify::run(&project, &target, &settings).await
        }
        command => {
            let format = plain(global.format)?;
            let project = Project::find(global.config.as_deref())?;
            dispatch(command, &project, &global, format).await
        }
    }
}

/// Every command but `init` and `verify`: the ones whose output is a table or JSON.
async fn dispatch(
    command: Command,
    project: &Project,
    global: &GlobalArgs,
    format: Format,
) -> Result<Outcome> {
    match command {
        Command::Init(_) | Command::Verify(_) | Command::Completions { .. } | Command::Man => {
            unreachable!("dispatched by `run`")
        }
        Command::Dev(args) => dev::run(project, dev_settings(args, format)).await,
        Command::Plan(args) => {
            project.require()?;
            let settings = generate::PlanSettings {
                allow_destructive: args.allow_destructive,
                format,
            };
            generate::plan(project, &settings)
        }
        Command::Generate(args) => {
            project.require()?;
            generate::generate(project, &generate_settings(project, args, format)?).await
        }
        Command::New(args) => {
            project.require()?;
            let settings = new::Settings {
                name: args.name,
                no_transaction: args.no_transaction,
                format,
            };
            new::run(project, &settings)
        }
        Command::Lint(args) => {
            let files = if args.files.is_empty() {
                project.require()?;
                lint::Files::Pending(Box::new(connect_to(project, global)?))
            } else {
                lint::Files::Given(args.files)
            };
            lint::run(project, &lint::Settings { files, format }).await
        }
        Command::Migrate(args) => {
            project.require()?;
            let target = connect_to(project, global)?;
            migrate::run(project, &target, &migrate_settings(args, format)).await
        }
        Command::Adopt(args) => {
            project.require()?;
            let settings = adopt::Settings {
                applied: args.applied,
                dry_run: args.dry_run,
                format,
            };
            adopt::run(project, &connect_to(project, global)?, &settings).await
        }
        Command::Status(args) => {
            project.require()?;
            let target = connect_to(project, global)?;
            let settings = status::Settings {
                check: args.check,
                format,
            };
            status::run(project, &target, &settings).await
        }
        Command::Demo(args) => {
            let settings = demo::Settings {
                members: args.members,
                format,
            };
            demo::run(project, &settings, global.database_url.as_deref()).await
        }
        Command::Bench(args) => {
            project.require()?;
            let place = bench_place(project, global, &args)?;
            bench::run(project, &place, &bench_settings(args, format)).await
        }
        Command::Exec(args) => {
            project.require()?;
            let target = connect_to(project, global)?;
            exec::run(project, &target, &exec_settings(args, format)).await
        }
        Command::Tenant(args) => {
            project.require()?;
            let action = tenant_action(args.command);
            // Bad input fails before any connection (or embedded cluster start).
            if let Some(slug) = action.slug() {
                crate::tenants::validate_slug(slug)?;
            }
            let target = connect_to(project, global)?;
            tenant::run(project, &target, &action, format).await
        }
    }
}

fn generate_settings(
    project: &Project,
    args: crate::cli::GenerateArgs,
    format: Format,
) -> Result<generate::Settings> {
    Ok(generate::Settings {
        name: args.name,
        allow_destructive: args.allow_destructive,
        allow_widening: args.allow_widening,
        allow_rewrite: args.allow_rewrite,
        ci: std::env::var_os("CI").is_some_and(|v| !v.is_empty()),
        test_apply: test_apply_server(project, args.offline)?,
        format,
    })
}

/// The database to work on, as the settings resolved it. When none was given, this is where the
/// embedded local cluster is started, and announced when this command started it (settings only
/// say which one).
fn connect_to(project: &Project, global: &GlobalArgs) -> Result<Target> {
    match project.database(global.database_url.as_deref())? {
        Database::Target(target) => Ok(*target),
        Database::Embedded(dir) => embedded_server(&dir, "no database URL given; using"),
    }
}

/// Where `generate` test-applies: $TENANTCTL_SCRATCH_URL's server, else the embedded cluster
/// (started by `generate` when it has something to test); nowhere with --offline, on the Citus
/// target, or when no server binaries can be found.
fn test_apply_server(project: &Project, offline: bool) -> Result<generate::TestApply> {
    use generate::TestApply;
    if offline {
        return Ok(TestApply::Skipped("--offline".to_string()));
    }
    if project.config.target.kind == crate::model::Backend::Citus {
        // A scratch database of a plain server cannot distribute tables.
        return Ok(TestApply::Skipped(
            "the Citus target: a scratch database would need a Citus cluster".to_string(),
        ));
    }
    if let Some(url) = std::env::var("TENANTCTL_SCRATCH_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Ok(TestApply::On(Box::new(Target::parse(&url)?)));
    }
    let dir = project.dev_dir();
    if embedded::recorded_bindir(&dir)?.is_none() && embedded::find_bindir().is_err() {
        return Ok(TestApply::Skipped(
            "no PostgreSQL server binaries found".to_string(),
        ));
    }
    Ok(TestApply::Embedded(dir))
}

/// The embedded local cluster in `dir`, started if need be (then announced: `why` says what it
/// is used for).
pub(crate) fn embedded_server(dir: &std::path::Path, why: &str) -> Result<Target> {
    let info = embedded::up(dir, None)?;
    // Once per cluster start, not on every command run against a running cluster.
    if !info.was_running {
        eprintln!(
            "note: {why} the embedded local database in {}",
            dir.display()
        );
    }
    Target::parse(&info.url)
}

// From the command line to the commands' settings: clap's types go no further than this file.

/// The format of every command but `verify`. `--format` is global (accepted before or after the
/// subcommand), so clap cannot refuse JUnit per command: this is the one check.
fn plain(format: cli::Format) -> Result<Format> {
    match format {
        cli::Format::Table => Ok(Format::Table),
        cli::Format::Json => Ok(Format::Json),
        cli::Format::Junit | cli::Format::Sarif => bail!(
            "--format {} is only for `tenantctl verify`\n  hint: use --format table or --format json",
            if format == cli::Format::Junit { "junit" } else { "sarif" }
        ),
    }
}

fn verify_settings(args: cli::VerifyArgs, format: cli::Format) -> verify::Settings {
    let tenants = match (args.sample, args.tenant.is_empty()) {
        (Some(n), _) => TenantSelection::Sample(n),
        (None, false) => TenantSelection::Named(args.tenant),
        (None, true) => TenantSelection::All,
    };
    verify::Settings {
        gate: crate::verify::Settings {
            tenants,
            connections: args.connections,
            static_only: args.static_only,
            progress: false,
            pooled: None,
            app: None,
            read_only: args.read_only,
            probe_timeout: crate::verify::DEFAULT_PROBE_TIMEOUT,
            reach: Default::default(),
        },
        pooled_url: args.pooled_url,
        app_url: args.app_url,
        probe_timeout: args.probe_timeout,
        fail_on: match args.fail_on {
            cli::FailOn::Error => Severity::Error,
            cli::FailOn::Warning => Severity::Warning,
        },
        format: match format {
            cli::Format::Table => ReportFormat::Table,
            cli::Format::Json => ReportFormat::Json,
            cli::Format::Junit => ReportFormat::Junit,
            cli::Format::Sarif => ReportFormat::Sarif,
        },
    }
}

fn dev_settings(args: cli::DevArgs, format: Format) -> dev::Settings {
    use cli::DevCommand as C;
    let action = match args.command {
        C::Up { port } => dev::Action::Up { port },
        C::Down => dev::Action::Down,
        C::Url { show_password } => dev::Action::Url { show_password },
        C::Psql { args } => dev::Action::Psql { args },
        C::Reset { yes } => dev::Action::Reset { yes },
    };
    dev::Settings {
        dir: args.dir,
        action,
        format,
    }
}

fn migrate_settings(args: cli::MigrateArgs, format: Format) -> migrate::Settings {
    migrate::Settings {
        dry_run: args.dry_run,
        target: args.target,
        allow_pooler: args.allow_pooler,
        allow_stale: args.allow_stale,
        format,
    }
}

/// A scratch database of the embedded cluster when no URL was given (or with --scratch);
/// otherwise the given database's own data.
fn bench_place(
    project: &Project,
    global: &GlobalArgs,
    args: &cli::BenchArgs,
) -> Result<crate::bench::Place> {
    use crate::bench::{Place, Size};
    let size = Size {
        gyms: args.gyms,
        coaches: args.coaches,
        members: args.members,
    };
    let embedded = matches!(
        project.database(global.database_url.as_deref())?,
        Database::Embedded(_)
    );
    let target = connect_to(project, global)?;
    Ok(if embedded || args.scratch {
        Place::Scratch {
            server: target,
            size,
        }
    } else {
        Place::Given(target)
    })
}

fn bench_settings(args: cli::BenchArgs, format: Format) -> bench::Settings {
    bench::Settings {
        run: crate::bench::Settings {
            rounds: args.rounds as usize,
            iterations: args.iterations as usize,
            naive: !args.no_naive,
            progress: format == Format::Table,
        },
        chart: args.chart,
        format,
    }
}

fn exec_settings(args: cli::ExecArgs, format: Format) -> exec::Settings {
    exec::Settings {
        // clap makes --tenant and --admin exclusive; --admin wins should both ever arrive.
        tenant: args.tenant.filter(|_| !args.admin),
        sql: args.sql,
        write: args.write,
        format,
    }
}

fn tenant_action(command: cli::TenantCommand) -> tenant::Action {
    use cli::TenantCommand as C;
    match command {
        C::Create(a) => tenant::Action::Create(tenant::CreateSettings {
            slug: a.slug,
            name: a.name,
            coaches: a.coaches,
            members: a.members,
            seed: a.seed,
            if_not_exists: a.if_not_exists,
        }),
        C::List => tenant::Action::List,
        C::Show { slug } => tenant::Action::Show { slug },
        C::Isolate { slug } => tenant::Action::Isolate { slug },
        C::Delete { slug, yes } => tenant::Action::Delete { slug, yes },
    }
}
