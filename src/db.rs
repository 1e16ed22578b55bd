//! Connections: URL resolution details, TLS (rustls) for every sslmode, and password redaction.
// OWNED BY HELPER B — stub.

/// Replace any password in a URL or key=value connection string with `***`.
pub fn redact(url: &str) -> String {
    url.to_string()
}

/// Redact every postgres URL found inside free text (error chains, log lines).
pub fn redact_text(text: &str) -> String {
    text.to_string()
}

/// Connect and spawn the connection task on the current tokio runtime.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// For a Neon pooler host (`ep-x-123-pooler.region.aws.neon.tech`), the pooler host and its direct host.
pub fn neon_pooler(url: &str) -> Option<(String, String)> {
    let _ = url;
    None
}
