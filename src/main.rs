//! Thin edge: parse the command line, run one command, print the error chain, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: generate and plan on a large policy set allocate and free a few hundred thousand
/// small strings; glibc malloc spent a fifth of their time there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tenantctl::{cli::Cli, Outcome};

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader goes away (`tenantctl plan | head`)
    // instead of panicking on the failed write. Any open transaction dies with the connection.
    #[cfg(unix)]
    // SAFETY: called first thing, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(tenantctl::commands::run(cli)) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", tenantctl::pg::redact_text(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}
