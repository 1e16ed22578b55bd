//! stub
use crate::{cli::Format, config::Project, Outcome};
pub fn plan(_p: &Project, _d: bool, _f: Format) -> anyhow::Result<Outcome> { anyhow::bail!("todo") }
pub fn generate(_p: &Project, _n: Option<&str>, _d: bool, _f: Format) -> anyhow::Result<Outcome> { anyhow::bail!("todo") }
