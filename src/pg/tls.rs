//! TLS for every sslmode: the rustls client configuration and the two verifiers libpq's weaker
//! modes need. The crypto provider (ring) is always passed explicitly, so rustls never looks for
//! a process-level default provider and cannot panic for lack of one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::target::{RootCert, Target, Verification};

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Mozilla's roots (webpki-roots) plus the operating system's: Neon's certificates chain to a
/// public CA, and a corporate proxy CA would be in the system store.
fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            roots.add_parsable_certificates(native_roots());
            Arc::new(roots)
        })
        .clone()
}

fn native_roots() -> Vec<CertificateDer<'static>> {
    static NATIVE: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    // Unreadable entries in the system store are skipped, as OpenSSL does.
    NATIVE
        .get_or_init(|| rustls_native_certs::load_native_certs().certs)
        .clone()
}

fn root_store(root_cert: Option<&RootCert>) -> Result<Arc<RootCertStore>> {
    match root_cert {
        None => Ok(default_roots()),
        Some(RootCert::System) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(native_roots());
            if roots.is_empty() {
                bail!("sslrootcert=system: no certificates found in the system store");
            }
            Ok(Arc::new(roots))
        }
        Some(RootCert::File(path)) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("cannot read sslrootcert {}", path.display()))?;
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                bail!(
                    "sslrootcert {}: no usable PEM certificate in the file",
                    path.display()
                );
            }
            Ok(Arc::new(roots))
        }
    }
}

/// Set by the encrypt-only verifier when it accepted a certificate that it could not parse (an
/// X.509 version 1 certificate, say), and so could not check the handshake signature with: the
/// session is encrypted, but nothing shows that the server holds the certificate's key, so
/// channel binding, which hashes that certificate, would prove nothing. One per handshake.
#[derive(Debug, Clone, Default)]
pub(super) struct Unproven(Arc<AtomicBool>);

impl Unproven {
    pub(super) fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The rustls configuration for a parsed connection string.
pub fn tls_config(target: &Target) -> Result<ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match target.verification {
        Verification::None => encrypt_only(Unproven::default()),
        level => {
            let roots = root_store(target.root_cert.as_ref())?;
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .context("cannot build the certificate verifier")?;
            if level == Verification::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // libpq 17 sends this ALPN; servers 17+ require it for sslnegotiation=direct.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    // Every session gets a full handshake, as with libpq: a resumed one would skip the verifier,
    // and with it the record of whether the server's key was checked.
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// The verifier for require/prefer/allow without a root certificate, reporting to `unproven`.
pub(super) fn encrypt_only(unproven: Unproven) -> Arc<dyn ServerCertVerifier> {
    Arc::new(EncryptOnly {
        algorithms: provider().signature_verification_algorithms,
        unproven,
    })
}

/// verify-ca: the full webpki chain check, forgiving only a host-name mismatch. webpki checks
/// the name last, after the chain has been accepted, so this error means "chain is fine".
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// require/prefer/allow without a root certificate, as libpq: any certificate, not even parsed.
/// When it parses, the server must still prove it holds the certificate's key (the handshake
/// signature), so SCRAM channel binding protects against a relay. When it does not, the
/// signature cannot be checked either; the handshake goes on and `unproven` says so, so that
/// channel binding is not offered on that session.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
    unproven: Unproven,
}

impl EncryptOnly {
    /// Whether the signature can be checked against this certificate; records it when not.
    fn checkable(&self, cert: &CertificateDer<'_>) -> bool {
        let parses = ParsedCertificate::try_from(cert).is_ok();
        if !parses {
            self.unproven.set();
        }
        parses
    }

    /// The handshake signature checked by `verify` (TLS 1.2's or 1.3's), when the certificate
    /// parses; accepted unchecked (and recorded) when it does not.
    fn verify_if_checkable(
        &self,
        verify: fn(
            &[u8],
            &CertificateDer<'_>,
            &DigitallySignedStruct,
            &WebPkiSupportedAlgorithms,
        ) -> Result<HandshakeSignatureValid, rustls::Error>,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.checkable(cert) {
            return Ok(HandshakeSignatureValid::assertion());
        }
        verify(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_if_checkable(rustls::crypto::verify_tls12_signature, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_if_checkable(rustls::crypto::verify_tls13_signature, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::target::parse;

    #[test]
    fn tls_never_relies_on_a_process_default_provider() {
        for conn in [
            "host=h sslmode=require",
            "host=h sslmode=verify-ca",
            "host=h sslmode=verify-full",
        ] {
            tls_config(&parse(conn).unwrap()).unwrap();
        }
        // Had any of these used rustls' process-level default, it would now be installed.
        assert!(CryptoProvider::get_default().is_none());
    }

    #[test]
    fn an_unparsable_certificate_is_recorded_as_unproven() {
        let unproven = Unproven::default();
        let verifier = EncryptOnly {
            algorithms: provider().signature_verification_algorithms,
            unproven: unproven.clone(),
        };
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(!unproven.get());
        // The signature checks skip what `checkable` refuses (the real handshake: tests/it/tls.rs).
        assert!(!verifier.checkable(&garbage));
        assert!(unproven.get());
    }
}
