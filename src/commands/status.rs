//! stub
use crate::{cli::Format, config::Project, Outcome};
pub async fn run(_p: &Project, _u: &str, _c: bool, _f: Format) -> anyhow::Result<Outcome> { anyhow::bail!("todo") }
