//! `tenantctl dev`: the embedded local cluster.
// OWNED BY HELPER A — stub.

use crate::{cli::DevArgs, Outcome};

pub async fn run(project: &crate::config::Project, args: DevArgs) -> anyhow::Result<Outcome> {
    let _ = (project, args);
    anyhow::bail!("not built yet")
}
