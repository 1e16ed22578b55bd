//! One file per subcommand; `run` loads the project and dispatches.

pub mod demo;
pub mod dev;
pub mod exec;
pub mod generate;
pub mod init;
pub mod migrate;
pub mod status;
pub mod tenant;
pub mod verify;

use anyhow::{bail, Result};

use crate::cli::{Cli, Command, Format, TenantCommand};
use crate::settings::Project;
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
            generate::plan(&project, &(args, global.format).into())
        }
        Command::Generate(args) => {
            project.require()?;
            generate::generate(&project, &(args, global.format).into())
        }
        Command::Migrate(args) => {
            project.require()?;
            let url = project.database_url(global.database_url.as_deref())?;
            migrate::run(&project, &url, &(args, global.format).into()).await
        }
        Command::Status(args) => {
            project.require()?;
            let url = project.database_url(global.database_url.as_deref())?;
            status::run(&project, &url, &(args, global.format).into()).await
        }
        Command::Demo(args) => {
            demo::run(
                &project,
                &(args, global.format).into(),
                global.database_url.as_deref(),
            )
            .await
        }
        Command::Exec(args) => {
            project.require()?;
            let url = project.database_url(global.database_url.as_deref())?;
            exec::run(&project, &url, &args, global.format).await
        }
        Command::Tenant(args) => {
            project.require()?;
            // Bad input fails before any connection (or embedded cluster start).
            match &args.command {
                TenantCommand::Create(a) => crate::tenants::validate_slug(&a.slug)?,
                TenantCommand::Show { slug } | TenantCommand::Delete { slug, .. } => {
                    crate::tenants::validate_slug(slug)?
                }
                TenantCommand::List => {}
            }
            let url = project.database_url(global.database_url.as_deref())?;
            let format = global.format;
            match &args.command {
                TenantCommand::Create(a) => tenant::create(&project, &url, a, format).await,
                TenantCommand::List => tenant::list(&project, &url, format).await,
                TenantCommand::Show { slug } => tenant::show(&project, &url, slug, format).await,
                TenantCommand::Delete { slug, yes } => {
                    tenant::delete(&project, &url, slug, *yes, format).await
                }
            }
        }
        Command::Verify(args) => {
            project.require()?;
            let url = project.database_url(global.database_url.as_deref())?;
            verify::run(&project, &url, &args, global.format).await
        }
    }
}
