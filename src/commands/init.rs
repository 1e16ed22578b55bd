//! stub
pub fn run(_d: &std::path::Path) -> anyhow::Result<crate::Outcome> { anyhow::bail!("todo") }
