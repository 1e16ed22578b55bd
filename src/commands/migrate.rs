//! stub
use crate::{cli::{Format, MigrateArgs}, config::Project, Outcome};
pub async fn run(_p: &Project, _u: &str, _a: &MigrateArgs, _f: Format) -> anyhow::Result<Outcome> { anyhow::bail!("todo") }
