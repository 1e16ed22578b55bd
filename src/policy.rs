//! stub
pub fn toml_error_message(path: &std::path::Path, _text: &str, e: &toml::de::Error) -> String { format!("{}: {e}", path.display()) }
