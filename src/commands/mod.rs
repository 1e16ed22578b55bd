//! One file per subcommand; `run` loads the project and dispatches.

pub mod dev;
pub mod generate;
pub mod init;
pub mod migrate;
pub mod status;
pub mod verify;

use anyhow::{bail, Result};

use crate::cli::{Cli, Command, Format};
use crate::config::Project;
use crate::Outcome;

pub async fn run(cli: Cli) -> Result<Outcome> {
    let global = cli.global;
    if let Command::Init(args) = cli.command {
        return init::run(&args.dir);
    }
    if global.format == Format::Junit && !matches!(cli.command, Command::Verify(_)) {
        bail!("--format junit is only for `tenantctl verify`\n  hint: use --format table or --format json");
    }
    let project = Project::load(&global.config)?;
    match cli.command {
        Command::Init(_) => unreachable!("handled above"),
        Command::Dev(args) => dev::run(&project, args).await,
        Command::Plan(args) => {
            project.require()?;
            generate::plan(&project, args.allow_destructive, global.format)
        }
        Command::Generate(args) => {
            project.require()?;
            generate::generate(
                &project,
                args.name.as_deref(),
                args.allow_destructive,
                global.format,
            )
        }
        Command::Migrate(args) => {
            project.require()?;
            let url = project.database_url(global.database_url.as_deref())?;
            migrate::run(&project, &url, &args, global.format).await
        }
        Command::Status(args) => {
            project.require()?;
            let url = project.database_url(global.database_url.as_deref())?;
            status::run(&project, &url, args.check, global.format).await
        }
        Command::Verify(args) => {
            project.require()?;
            let url = project.database_url(global.database_url.as_deref())?;
            verify::run(&project, &url, &args, global.format).await
        }
    }
}
