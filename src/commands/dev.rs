//! `tenantctl dev`: start, stop, show, open and reset the embedded local cluster.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::output::{self, Format};
use crate::pg::Target;
use crate::{embedded, Outcome};

/// Which cluster, and what to do with it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster's directory; `None`: `.tenantctl/` beside tenantctl.toml.
    pub dir: Option<PathBuf>,
    pub action: Action,
    pub format: Format,
}

/// One `dev` subcommand.
#[derive(Debug, Clone)]
pub enum Action {
    /// Start (initialising on first use); `None`: a free port, kept across restarts.
    Up {
        port: Option<u16>,
    },
    Down,
    Url {
        show_password: bool,
    },
    /// Extra arguments go to psql.
    Psql {
        args: Vec<String>,
    },
    /// `yes`: without asking.
    Reset {
        yes: bool,
    },
}

pub async fn run(project: &crate::settings::Project, settings: Settings) -> Result<Outcome> {
    let dir = settings.dir.unwrap_or_else(|| project.dev_dir());
    let format = settings.format;
    match settings.action {
        Action::Up { port } => {
            let info = blocking({
                let dir = dir.clone();
                move || embedded::up(&dir, port)
            })
            .await?;
            print_url(&info.url, info.port, &info.data_dir, format, false)?;
            if format == Format::Table && !info.was_running {
                eprintln!(
                    "note: `tenantctl dev url --show-password` prints the URL with its password"
                );
            }
        }
        Action::Down => {
            let was_running = blocking({
                let dir = dir.clone();
                move || embedded::down(&dir)
            })
            .await?;
            match format {
                Format::Json => output::print_json(&json!({
                    "was_running": was_running,
                    "data_dir": dir.join("data"),
                })),
                Format::Table if was_running => {
                    println!("stopped the local cluster in {}", dir.display())
                }
                Format::Table => {
                    println!("the local cluster in {} was not running", dir.display())
                }
            }
        }
        Action::Url { show_password } => {
            let (url, running) = blocking({
                let dir = dir.clone();
                move || Ok((embedded::url(&dir)?, embedded::is_running(&dir)?))
            })
            .await?;
            let url = url.ok_or_else(|| no_cluster(&dir))?;
            let port = url_port(&url)?;
            print_url(&url, port, &dir.join("data"), format, show_password)?;
            if !show_password {
                // `psql "$(tenantctl dev url)"` would fail on the redacted password, silently.
                eprintln!(
                    "note: the password is hidden: `tenantctl dev url --show-password`, or `tenantctl dev psql`"
                );
            }
            if !running {
                eprintln!(
                    "note: the local cluster is not running; start it with `tenantctl dev up`"
                );
            }
        }
        Action::Psql { args } => {
            let (info, bindir) = blocking({
                let dir = dir.clone();
                move || Ok((embedded::up(&dir, None)?, embedded::recorded_bindir(&dir)?))
            })
            .await?;
            return exec_psql(&info, bindir.as_deref(), &args);
        }
        Action::Reset { yes } => {
            confirm_reset(&dir, yes)?;
            let info = blocking({
                let dir = dir.clone();
                move || embedded::reset(&dir, None)
            })
            .await?;
            print_url(&info.url, info.port, &info.data_dir, format, false)?;
        }
    }
    Ok(Outcome::Clean)
}

/// `dev reset` deletes the cluster's data: asked on a terminal, refused elsewhere without --yes.
fn confirm_reset(dir: &std::path::Path, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !crate::output::interactive() {
        anyhow::bail!(
            "refusing to delete the local cluster's data in {} without confirmation: there is no terminal to ask on\n  hint: pass --yes",
            dir.display()
        );
    }
    let prompt = format!(
        "Delete the local cluster's data in {} and start a fresh one?\nType 'reset' to confirm: ",
        dir.display()
    );
    if !super::render::confirm(&prompt, "reset")? {
        anyhow::bail!("not confirmed; nothing was deleted");
    }
    Ok(())
}

/// The embedded functions run processes and sleep: keep them off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("the dev task panicked")?
}

fn print_url(
    url: &str,
    port: u16,
    data_dir: &Path,
    format: Format,
    show_password: bool,
) -> Result<()> {
    let target = Target::parse(url)?;
    let url = if show_password {
        target.expose_url_with_password().to_string()
    } else {
        target.to_string()
    };
    match format {
        Format::Json => {
            output::print_json(&json!({ "url": url, "port": port, "data_dir": data_dir }))
        }
        Format::Table => println!("{url}"),
    }
    Ok(())
}

fn url_port(url: &str) -> Result<u16> {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .ok_or_else(|| anyhow!("the local cluster's state holds a URL without a port"))
}

fn no_cluster(dir: &Path) -> anyhow::Error {
    anyhow!(
        "no local cluster in {}\n  hint: run `tenantctl dev up` to create and start one",
        dir.display()
    )
}

/// Replace this process with psql, so that it owns the terminal and its signals. The password goes
/// through PGPASSWORD, never argv (visible to every user in `ps`).
fn exec_psql(info: &embedded::Info, bindir: Option<&Path>, args: &[String]) -> Result<Outcome> {
    use std::os::unix::process::CommandExt;

    let url = url::Url::parse(&info.url).context("the local cluster's URL does not parse")?;
    let password = url.password().unwrap_or_default().to_string();
    let psql: PathBuf = embedded::psql_path(bindir);
    let err = std::process::Command::new(&psql)
        .env("PGPASSWORD", password)
        .args(["-h", "127.0.0.1", "-p", &info.port.to_string()])
        .args(["-U", embedded::SUPERUSER, "-d", embedded::DATABASE])
        .args(args)
        .exec();
    Err(err).with_context(|| {
        format!(
            "cannot run {}\n  hint: install the PostgreSQL client (e.g. `apt-get install postgresql-client`)",
            psql.display()
        )
    })
}
