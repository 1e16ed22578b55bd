//! `tenantctl completions SHELL` and `tenantctl man`: both are generated from the clap definition
//! in `cli.rs`, so they never fall behind the commands.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::Outcome;

/// Print the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<Outcome> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut out);
    write_stdout(&out)
}

/// Print the manual page, in roff, on stdout.
pub fn man() -> Result<Outcome> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("cannot render the manual page")?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<Outcome> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(Outcome::Clean)
}
