//! Connecting: TLS as the target asks (with `prefer`'s retry without TLS), a deadline over the
//! whole attempt, and an error that says where it tried to connect and why it failed, without
//! the password.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustls::CertificateError;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;

use super::redact::redact_text;
use super::target::{RootCert, Target, ToTarget};
use super::tls_connect::{MakeConnect, Stream};

type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    Stream<<tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>,
>;

/// The whole cause chain of a tokio-postgres error on one line, with a hint for TLS failures.
fn error_chain(e: &(dyn std::error::Error + 'static), root_cert: Option<&RootCert>) -> String {
    let mut text = String::new();
    let mut cert_error = None;
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(db) = err.downcast_ref::<tokio_postgres::error::DbError>() {
            let _ = write!(
                text,
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            break;
        }
        // rustls errors arrive wrapped in an io::Error, whose source() skips the wrapped error.
        let tls_error = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(c)) = tls_error {
            cert_error = Some(c.clone());
        }
        // tokio-postgres prints "db error" before its DbError source; the source says it all.
        let msg = err.to_string();
        if msg != "db error" {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&msg);
        }
        current = err.source();
    }
    match cert_error {
        Some(CertificateError::UnknownIssuer) if root_cert.is_some() => text.push_str(
            " (hint: the server certificate is not signed by a CA in sslrootcert)",
        ),
        Some(CertificateError::UnknownIssuer) => text.push_str(
            " (hint: the server certificate does not chain to a trusted root; pass sslrootcert=PATH to the CA certificate, or sslmode=require to encrypt without verification)",
        ),
        Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => text.push_str(
            " (hint: the certificate is not valid for this host name; connect with the name in the certificate, or use sslmode=verify-ca)",
        ),
        _ => {}
    }
    text
}

/// tokio-postgres's connect_timeout covers only the TCP connect; a server that accepts and then
/// says nothing (wrong port, stuck proxy) would hang the TLS and auth exchange forever. So the
/// whole attempt gets a deadline too: one timeout per host, plus one for the handshakes.
fn overall_timeout(target: &Target) -> Option<Duration> {
    let per_host = target.connect_timeout?;
    let config = &target.config;
    let hosts = config
        .get_hosts()
        .len()
        .max(config.get_hostaddrs().len())
        .max(1);
    // Absurd connect_timeout values must not overflow; they mean "no deadline".
    per_host.checked_mul(u32::try_from(hosts + 1).ok()?)
}

/// Connect and spawn the connection task on the current tokio runtime.
pub async fn connect<T: ToTarget + ?Sized>(target: &T) -> Result<tokio_postgres::Client> {
    let target = target.to_target()?;
    let place = target.describe();
    let tls = MakeConnect::new(&target).with_context(|| format!("cannot connect to {place}"))?;
    let attempt = connect_or_fall_back(&target, tls);
    let result = match overall_timeout(&target) {
        Some(total) => match tokio::time::timeout(total, attempt).await {
            Ok(result) => result,
            Err(_) => Err(anyhow!("timed out after {} s", total.as_secs())),
        },
        None => attempt.await,
    };
    let (client, connection) = result.with_context(|| format!("cannot connect to {place}"))?;
    tokio::spawn(async move {
        // A broken connection surfaces as an error on the client's next call; nothing to add.
        let _ = connection.await;
    });
    Ok(client)
}

/// One attempt as the target says; then, as libpq does in `prefer` mode, one without TLS when a
/// TLS handshake failed. A failed retry reports both failures.
async fn connect_or_fall_back(
    target: &Target,
    tls: MakeConnect,
) -> Result<(tokio_postgres::Client, Connection)> {
    // The server's words and the socket's: free text, scrubbed in case it echoes a conninfo.
    let describe = |e: tokio_postgres::Error| {
        let mut text = redact_text(&error_chain(&e, target.root_cert.as_ref()));
        if let Some(file) = &target.password_file {
            // libpq's pgpassfileWarning: say where a wrong password came from.
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) {
                let _ = write!(
                    text,
                    " (password retrieved from file \"{}\")",
                    file.display()
                );
            }
        }
        text
    };
    let first = match target.config.connect(tls.clone()).await {
        Ok(connected) => return Ok(connected),
        Err(e) => describe(e),
    };
    if !(target.falls_back_to_plaintext() && tls.handshake_failed()) {
        return Err(anyhow!(first));
    }
    let mut plain = target.config.clone();
    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
    plain
        .connect(tls)
        .await
        .map_err(|e| anyhow!("{first}; then without TLS: {}", describe(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::target::parse;

    #[test]
    fn timeouts() {
        let spec = parse("host=a,b").unwrap();
        assert_eq!(overall_timeout(&spec), Some(Duration::from_secs(30)));
        let spec = parse("host=h connect_timeout=0").unwrap();
        assert_eq!(overall_timeout(&spec), None);
        let spec = parse("host=h connect_timeout=-5").unwrap();
        assert_eq!(overall_timeout(&spec), None);
        let spec = parse("host=a,b,c connect_timeout=9223372036854775807").unwrap();
        assert_eq!(overall_timeout(&spec), None);
    }
}
