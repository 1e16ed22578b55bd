//! One file per subcommand; `run` turns the command line into settings, loads the project,
//! resolves the database and dispatches.

pub mod demo;
pub mod dev;
pub mod exec;
pub mod generate;
pub mod init;
pub mod migrate;
pub mod status;
pub mod tenant;
pub mod verify;

use anyhow::Result;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::output::Format;
use crate::pg::Target;
use crate::settings::{Database, Project};
use crate::{embedded, Outcome};

pub async fn run(cli: Cli) -> Result<Outcome> {
    let global = cli.global;
    match cli.command {
        Command::Init(args) => init::run(&args.dir),
        Command::Verify(args) => {
            let settings = args.settings(global.format);
            let project = Project::load(&global.config)?;
            project.require()?;
            let target = connect_to(&project, &global)?;
            verify::run(&project, &target, &settings).await
        }
        command => {
            let format = global.format.plain()?;
            let project = Project::load(&global.config)?;
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
        Command::Init(_) | Command::Verify(_) => unreachable!("dispatched by `run`"),
        Command::Dev(args) => dev::run(project, args.settings(format)).await,
        Command::Plan(args) => {
            project.require()?;
            generate::plan(project, args.allow_destructive, global.format)
        }
        Command::Generate(args) => {
            project.require()?;
            generate::generate(
                project,
                args.name.as_deref(),
                args.allow_destructive,
                global.format,
            )
        }
        Command::Migrate(args) => {
            project.require()?;
            let target = connect_to(project, global)?;
            migrate::run(project, &target, &args, global.format).await
        }
        Command::Status(args) => {
            project.require()?;
            let target = connect_to(project, global)?;
            status::run(project, &target, args.check, global.format).await
        }
        Command::Demo(args) => {
            demo::run(
                project,
                &args,
                global.database_url.as_deref(),
                global.format,
            )
            .await
        }
        Command::Exec(args) => {
            project.require()?;
            let target = connect_to(project, global)?;
            exec::run(project, &target, &args.settings(format)).await
        }
        Command::Tenant(args) => {
            project.require()?;
            let action = tenant::Action::from(args.command);
            // Bad input fails before any connection (or embedded cluster start).
            if let Some(slug) = action.slug() {
                crate::tenants::validate_slug(slug)?;
            }
            let target = connect_to(project, global)?;
            tenant::run(project, &target, &action, format).await
        }
    }
}

/// The database to work on, as the settings resolved it. When none was given, this is where the
/// embedded local cluster is announced and started (settings only say which one).
fn connect_to(project: &Project, global: &GlobalArgs) -> Result<Target> {
    match project.database(global.database_url.as_deref())? {
        Database::Target(target) => Ok(*target),
        Database::Embedded(dir) => {
            eprintln!(
                "note: no database URL given; using the embedded local database in {}",
                dir.display()
            );
            Target::parse(&embedded::ensure_running(&dir)?)
        }
    }
}
