//! Connections: libpq-style connection strings, TLS (rustls) for every sslmode, and password redaction.
//!
//! tokio-postgres only knows `sslmode=disable|prefer|require`, so the connection string is parsed
//! here, the libpq modes are translated, and certificate verification is enforced in the rustls
//! configuration instead. The crypto provider (ring) is always passed explicitly, so rustls never
//! looks for a process-level default provider and cannot panic for lack of one.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::Host;

pub mod error;
pub mod tx;

/// libpq waits forever by default; a CLI (and a CI gate) should not.
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
const DEFAULT_APPLICATION_NAME: &str = "tenantctl";

/// Parameters handed to tokio-postgres unchanged (it validates their values).
const PASSTHROUGH: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

/// Real libpq parameters that tenantctl does not implement: say so rather than "unknown".
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
    "passfile",
    "service",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "requirepeer",
    "require_auth",
    "client_encoding",
    "replication",
];

/// libpq's `sslmode`, all six of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => bail!(
                "invalid sslmode `{other}` (expected disable, allow, prefer, require, verify-ca or verify-full)"
            ),
        })
    }

    /// The nearest mode tokio-postgres understands. `allow` (plaintext first, TLS as a fallback)
    /// has no tokio-postgres equivalent; `prefer` is the stricter neighbour.
    fn wire(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow | Self::Prefer => "prefer",
            Self::Require | Self::VerifyCa | Self::VerifyFull => "require",
        }
    }
}

/// Where the trust anchors for certificate verification come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's store.
    System,
}

/// What the rustls verifier enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Encryption only, as libpq does for `require`/`prefer`/`allow` without a root certificate.
    /// Handshake signatures are still checked, so channel binding stays meaningful.
    None,
    /// Certificate chain up to a trusted root, host name not checked (`verify-ca`).
    Chain,
    /// Chain and host name (`verify-full`).
    Full,
}

/// A parsed connection string: tokio-postgres configuration plus what tenantctl enforces itself.
#[derive(Debug)]
pub struct ConnSpec {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub verification: Verification,
    /// Per-host timeout; `None` when the caller asked for `connect_timeout=0` (wait forever).
    pub connect_timeout: Option<Duration>,
}

/// Parse a libpq connection string (URL or key=value form).
///
/// Errors never contain parameter values, only names and positions: a mistyped password must not
/// end up in an error message.
pub fn parse(conn: &str) -> Result<ConnSpec> {
    let pairs = parse_pairs(conn)?;
    let mut ssl_mode = None;
    let mut root_cert = None;
    let mut connect_timeout = Some(Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS));
    let mut application_name = None;
    let mut fallback_application_name = None;
    let mut channel_binding_required = false;
    let mut has_host = false;
    let mut passthrough: Vec<(String, String)> = Vec::new();

    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => ssl_mode = Some(SslMode::parse(&value)?),
            "sslrootcert" => {
                root_cert = match value.as_str() {
                    "" => None,
                    "system" => Some(RootCert::System),
                    path => Some(RootCert::File(PathBuf::from(path))),
                }
            }
            "connect_timeout" => {
                let secs: i64 = value.trim().parse().map_err(|_| {
                    anyhow!("invalid connect_timeout `{value}` (expected whole seconds)")
                })?;
                // libpq: zero or negative means wait indefinitely.
                connect_timeout = u64::try_from(secs)
                    .ok()
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs);
            }
            "fallback_application_name" => fallback_application_name = Some(value),
            k if PASSTHROUGH.contains(&k) => {
                match k {
                    "application_name" => application_name = Some(value.clone()),
                    "channel_binding" => channel_binding_required = value == "require",
                    "host" | "hostaddr" => has_host |= !value.is_empty(),
                    _ => {}
                }
                passthrough.push((key, value));
            }
            k if UNSUPPORTED.contains(&k) => {
                bail!("connection parameter `{k}` is not supported by tenantctl")
            }
            k => bail!("unknown connection parameter `{}`", printable(k)),
        }
    }

    if !has_host {
        bail!("the connection string names no host (set host=... or postgres://HOST/...)");
    }
    let ssl_mode = match (ssl_mode, &root_cert) {
        (Some(mode), _) => mode,
        // libpq 16: sslrootcert=system makes verify-full the default.
        (None, Some(RootCert::System)) => SslMode::VerifyFull,
        (None, _) => SslMode::Prefer,
    };
    if root_cert == Some(RootCert::System) && ssl_mode != SslMode::VerifyFull {
        // Same refusal as libpq: trusting every public CA without checking the host name is
        // trusting anyone who can buy a certificate.
        bail!("sslrootcert=system needs sslmode=verify-full (a weaker sslmode would accept any publicly trusted certificate)");
    }
    if channel_binding_required && ssl_mode == SslMode::Disable {
        bail!("channel_binding=require needs TLS, but sslmode=disable");
    }
    let verification = verification(ssl_mode, root_cert.as_ref());

    let mut kv = String::new();
    for (key, value) in &passthrough {
        push_kv(&mut kv, key, value);
    }
    push_kv(&mut kv, "sslmode", ssl_mode.wire());
    if let Some(timeout) = connect_timeout {
        push_kv(&mut kv, "connect_timeout", &timeout.as_secs().to_string());
    }
    if application_name.is_none() {
        let name = fallback_application_name.unwrap_or_else(|| DEFAULT_APPLICATION_NAME.into());
        push_kv(&mut kv, "application_name", &name);
    }
    let config: tokio_postgres::Config = kv.parse().map_err(|e| anyhow!(error_chain(&e, None)))?;

    Ok(ConnSpec {
        config,
        ssl_mode,
        root_cert,
        verification,
        connect_timeout,
    })
}

/// libpq semantics: verify-* verify; a root certificate given explicitly makes the weaker modes
/// verify the chain too (libpq does this for any mode that ends up using TLS).
fn verification(mode: SslMode, root_cert: Option<&RootCert>) -> Verification {
    match mode {
        SslMode::VerifyFull => Verification::Full,
        SslMode::VerifyCa => Verification::Chain,
        SslMode::Require | SslMode::Prefer | SslMode::Allow if root_cert.is_some() => {
            Verification::Chain
        }
        _ => Verification::None,
    }
}

fn push_kv(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(key);
    out.push_str("='");
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
}

/// Parameter names come from user input; keep them short and printable in messages.
fn printable(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
    clean
}

fn url_scheme_len(s: &str) -> Option<usize> {
    ["postgresql://", "postgres://"]
        .into_iter()
        .find_map(|scheme| {
            s.get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| scheme.len())
        })
}

/// The (key, value) pairs of a connection string, in order, later ones winning as in libpq.
fn parse_pairs(conn: &str) -> Result<Vec<(String, String)>> {
    match url_scheme_len(conn) {
        Some(n) => parse_url(&conn[n..]),
        None => parse_keyvalue(conn),
    }
}

fn decode(s: &str, what: &str) -> Result<String> {
    let bytes: Vec<u8> = percent_decode_str(s).collect();
    if bytes.contains(&0) {
        bail!("the {what} in the connection URL contains a NUL byte");
    }
    String::from_utf8(bytes).map_err(|_| {
        anyhow!("the {what} in the connection URL is not valid UTF-8 after percent-decoding")
    })
}

/// `postgres://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, split the way
/// libpq splits it. Percent-decoding only: unlike HTML forms, `+` stays `+`.
fn parse_url(body: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();

    // libpq: credentials end at the first '@' that comes before any '/'.
    let stop = body.find(['@', '/']).unwrap_or(body.len());
    let rest = if body[stop..].starts_with('@') {
        let userinfo = &body[..stop];
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            pairs.push(("user".to_string(), decode(user, "user name")?));
        }
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            pairs.push(("password".to_string(), decode(p, "password")?));
        }
        &body[stop + 1..]
    } else {
        body
    };

    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (hostspec, rest) = rest.split_at(end);
    // A second '@' means a password with an unencoded '@': the "host" would hold its tail,
    // and error messages name the host. Refuse without echoing any of it.
    if hostspec.contains('@') {
        bail!(
            "the connection URL has more than one '@' before the host\n  hint: percent-encode '@' in the user name or password as %40"
        );
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    if !hostspec.is_empty() {
        for item in hostspec.split(',') {
            let (host, port) = if let Some(inner) = item.strip_prefix('[') {
                let close = inner
                    .find(']')
                    .ok_or_else(|| anyhow!("connection URL: unterminated `[` in an IPv6 host"))?;
                let after = &inner[close + 1..];
                let port = match after.strip_prefix(':') {
                    Some(p) => p,
                    None if after.is_empty() => "",
                    None => bail!("connection URL: unexpected text after `]` in an IPv6 host"),
                };
                (&inner[..close], port)
            } else {
                item.split_once(':').unwrap_or((item, ""))
            };
            hosts.push(decode(host, "host")?);
            ports.push(decode(port, "port")?);
        }
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        pairs.push(("host".to_string(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        pairs.push(("port".to_string(), ports.join(",")));
    }

    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if let Some(db) = path.strip_prefix('/').filter(|d| !d.is_empty()) {
        pairs.push(("dbname".to_string(), decode(db, "database name")?));
    }
    for item in query.into_iter().flat_map(|q| q.split('&')) {
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("connection URL: query parameter without `=`"))?;
        let key = decode(k, "parameter name")?;
        let value = decode(v, "parameter value")?;
        if key == "ssl" {
            // libpq's JDBC compatibility: ssl=true means sslmode=require.
            if value != "true" {
                bail!("connection URL: only ssl=true is accepted (or use sslmode=...)");
            }
            pairs.push(("sslmode".to_string(), "require".to_string()));
        } else {
            pairs.push((key, value));
        }
    }
    Ok(pairs)
}

/// `key=value key='quoted \' value'`, libpq's conninfo syntax.
fn parse_keyvalue(conn: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut it = conn.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_ws(&mut it);
        // Only the position: a stray word here is often the tail of an unquoted password.
        if it.next_if(|(_, c)| *c == '=').is_none() || key.is_empty() {
            bail!(
                "invalid connection string: expected key=value at character {} (quote values that contain spaces: key='a b')",
                start + 1
            );
        }
        skip_ws(&mut it);
        let mut value = String::new();
        if it.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match it.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => {
                        if let Some((_, c)) = it.next() {
                            value.push(c);
                        }
                    }
                    Some((_, c)) => value.push(c),
                    None => bail!(
                        "invalid connection string: unterminated quoted value (parameter at character {})",
                        start + 1
                    ),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, c)) = it.next() {
                        value.push(c);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

// ---------------------------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------------------------

/// Replace any password in a URL or key=value connection string with `***`.
pub fn redact(url: &str) -> String {
    redact_text(url)
}

/// Redact every postgres URL found inside free text (error chains, log lines), and every
/// `password=...` (which also covers `sslpassword=` and `PGPASSWORD=`).
///
/// Deliberately generous: when in doubt, more is hidden than libpq would treat as the password.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if let Some(scheme) = url_scheme_len(rest) {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push_str(&redact_url_token(&rest[..end], scheme));
            i += end;
        } else if let Some((keep, consumed)) = password_assignment(rest) {
            out.push_str(&rest[..keep]);
            out.push_str("***");
            i += consumed;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// For `password = 'x y'` at the start of `s`: (bytes to keep before `***`, bytes consumed).
fn password_assignment(s: &str) -> Option<(usize, usize)> {
    const KEY: &str = "password";
    if !s.get(..KEY.len())?.eq_ignore_ascii_case(KEY) {
        return None;
    }
    let after_key = &s[KEY.len()..];
    let ws1 = after_key.len() - after_key.trim_start().len();
    let after_eq = after_key[ws1..].strip_prefix('=')?;
    let ws2 = after_eq.len() - after_eq.trim_start().len();
    let keep = KEY.len() + ws1 + 1 + ws2;
    let value = &s[keep..];
    let mut chars = value.char_indices();
    let len = match value.chars().next() {
        Some(q @ ('\'' | '"')) => {
            chars.next();
            let mut end = value.len();
            let mut escaped = false;
            for (j, c) in chars {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    end = j + c.len_utf8();
                    break;
                }
            }
            end
        }
        Some(_) => value.find(char::is_whitespace).unwrap_or(value.len()),
        None => 0,
    };
    if len == 0 {
        return None;
    }
    Some((keep, keep + len))
}

fn redact_url_token(token: &str, scheme_len: usize) -> String {
    let body = &token[scheme_len..];
    let mut out = String::with_capacity(token.len());
    out.push_str(&token[..scheme_len]);

    let first_slash = body.find('/').unwrap_or(body.len());
    let authority = &body[..first_slash];
    // No '@' but `x:y` where y cannot be a port: a password (perhaps with an unencoded '/', or
    // a URL cut short). Hide it rather than guess.
    let colon_not_port = !authority.contains('@')
        && !authority.starts_with('[')
        && authority.split_once(':').is_some_and(|(_, after)| {
            let port = after.split(',').next().unwrap_or("");
            !port.bytes().all(|b| b.is_ascii_digit())
        });
    let at = authority
        .rfind('@')
        .or_else(|| body.find('@').filter(|_| colon_not_port));
    let rest = match at {
        Some(at) => {
            let userinfo = &body[..at];
            match userinfo.find(':') {
                Some(colon) if colon + 1 < at => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str("***");
                }
                _ => out.push_str(userinfo),
            }
            out.push('@');
            &body[at + 1..]
        }
        None if colon_not_port => {
            let colon = authority.find(':').unwrap_or(0);
            out.push_str(&authority[..=colon]);
            out.push_str("***");
            &body[first_slash..]
        }
        None => body,
    };

    match rest.split_once('?') {
        None => out.push_str(rest),
        Some((before, query)) => {
            out.push_str(before);
            out.push('?');
            for (n, item) in query.split('&').enumerate() {
                if n > 0 {
                    out.push('&');
                }
                match item.split_once('=') {
                    Some((k, _)) if is_password_key(k) => {
                        out.push_str(k);
                        out.push_str("=***");
                    }
                    _ => out.push_str(item),
                }
            }
        }
    }
    out
}

fn is_password_key(raw: &str) -> bool {
    let key = percent_decode_str(raw)
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    key.ends_with("password")
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

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

/// The rustls configuration for a parsed connection string.
pub fn tls_config(spec: &ConnSpec) -> Result<ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match spec.verification {
        Verification::None => Arc::new(EncryptOnly(provider.signature_verification_algorithms)),
        level => {
            let roots = root_store(spec.root_cert.as_ref())?;
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
    Ok(config)
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

/// require/prefer/allow without a root certificate: any certificate, but the server must still
/// prove it holds the certificate's key, so SCRAM channel binding protects against a relay.
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------------

/// `host:port,host:port/db as user u`, for error messages. No password, by construction.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port_at = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut names: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if names.is_empty() {
        names = config
            .get_hostaddrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
    }
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if name.contains(':') && !name.starts_with('/') {
            let _ = write!(out, "[{name}]:{}", port_at(i));
        } else {
            let _ = write!(out, "{name}:{}", port_at(i));
        }
    }
    let user = config
        .get_user()
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "(default)".into());
    let db = config.get_dbname().unwrap_or(&user);
    format!("{out}/{db} as user {user}")
}

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
fn overall_timeout(spec: &ConnSpec) -> Option<Duration> {
    let per_host = spec.connect_timeout?;
    let config = &spec.config;
    let hosts = config
        .get_hosts()
        .len()
        .max(config.get_hostaddrs().len())
        .max(1);
    // Absurd connect_timeout values must not overflow; they mean "no deadline".
    per_host.checked_mul(u32::try_from(hosts + 1).ok()?)
}

/// Connect and spawn the connection task on the current tokio runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let spec = parse(url)
        .map_err(|e| anyhow!(redact_text(&format!("{e:#}"))))
        .context("invalid connection string")?;
    let target = describe_target(&spec.config);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        tls_config(&spec).with_context(|| format!("cannot connect to {target}"))?,
    );

    let attempt = spec.config.connect(tls);
    let describe =
        |e: tokio_postgres::Error| anyhow!(redact_text(&error_chain(&e, spec.root_cert.as_ref())));
    let result = match overall_timeout(&spec) {
        Some(total) => match tokio::time::timeout(total, attempt).await {
            Ok(result) => result.map_err(describe),
            Err(_) => Err(anyhow!("timed out after {} s", total.as_secs())),
        },
        None => attempt.await.map_err(describe),
    };
    let (client, connection) = result.with_context(|| format!("cannot connect to {target}"))?;
    tokio::spawn(async move {
        // A broken connection surfaces as an error on the client's next call; nothing to add.
        let _ = connection.await;
    });
    Ok(client)
}

/// For a Neon pooler host (`ep-x-123-pooler.region.aws.neon.tech`), the pooler host and its direct host.
pub fn neon_pooler(url: &str) -> Option<(String, String)> {
    let pairs = parse_pairs(url).ok()?;
    let hosts = pairs.iter().rev().find(|(k, _)| k == "host")?.1.clone();
    hosts.split(',').find_map(|host| {
        let lower = host.to_ascii_lowercase();
        let (label, domain) = lower.split_once('.')?;
        let endpoint = label.strip_suffix("-pooler")?;
        if endpoint.len() <= "ep-".len() || !endpoint.starts_with("ep-") {
            return None;
        }
        if !(domain == "neon.tech" || domain.ends_with(".neon.tech")) {
            return None;
        }
        let direct = format!("{}{}", &host[..endpoint.len()], &host[label.len()..]);
        Some((host.to_string(), direct))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_password() {
        assert_eq!(
            redact("postgres://alice:s3cret@db.example.com:5432/app?sslmode=require"),
            "postgres://alice:***@db.example.com:5432/app?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://alice:s3cret@h/app"),
            "postgresql://alice:***@h/app"
        );
    }

    #[test]
    fn leaves_url_without_password_alone() {
        for url in [
            "postgres://alice@db.example.com/app",
            "postgres://db.example.com:5432/app?sslmode=verify-full",
            "postgres://[::1]:5432/app",
            "postgres://h1:5432,h2:5433/app",
            "postgres:///app",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn redacts_percent_encoded_and_awkward_passwords() {
        let r = redact("postgres://u:p%40ss%2Fw%3Ard@h/db");
        assert_eq!(r, "postgres://u:***@h/db");
        // Unencoded '@' and '/' are invalid but happen; hide the lot rather than a part.
        let r = redact("postgres://u:p@ss@h/db");
        assert_eq!(r, "postgres://u:***@h/db");
        let r = redact("postgres://u:pa/ss@h/db");
        assert!(!r.contains("pa/ss") && !r.contains("ss@"), "{r}");
        let r = redact("postgres://u:pa?ss@h/db");
        assert_eq!(r, "postgres://u:***@h/db");
        let r = redact("postgres://u@h/db?password=s3cret&sslmode=require");
        assert_eq!(r, "postgres://u@h/db?password=***&sslmode=require");
        let r = redact("postgres://u@h/db?pass%77ord=s3cret");
        assert!(!r.contains("s3cret"), "{r}");
        let r = redact("postgres://u@h/db?sslpassword=s3cret");
        assert!(!r.contains("s3cret"), "{r}");
    }

    #[test]
    fn redacts_keyvalue_form() {
        assert_eq!(
            redact("host=h user=u password=s3cret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact("host=h password = 'with \\' quote and space' dbname=d"),
            "host=h password = *** dbname=d"
        );
        assert_eq!(redact("PGPASSWORD=s3cret psql"), "PGPASSWORD=*** psql");
        assert_eq!(redact("password='unterminated"), "password=***");
    }

    #[test]
    fn redacts_every_url_in_text() {
        let text = "cannot connect to postgres://a:one@h1/db: failed; also tried \
                    postgresql://b:two@h2/db and POSTGRES://c:three@h3 (password=four)";
        let r = redact_text(text);
        for secret in ["one", "two", "three", "four"] {
            assert!(!r.contains(&format!(":{secret}@")), "{r}");
        }
        assert!(!r.contains("four"), "{r}");
        assert!(r.contains("postgres://a:***@h1/db:"), "{r}");
        assert!(r.contains("postgresql://b:***@h2/db"), "{r}");
        assert!(r.contains("POSTGRES://c:***@h3"), "{r}");
        assert!(r.starts_with("cannot connect to "), "{r}");
    }

    #[test]
    fn parses_url_form() {
        let spec = parse(
            "postgres://alice:p%40ss+w@ep-x-1.us-east-2.aws.neon.tech:6543/neondb?options=endpoint%3Dep-x-1&sslmode=require&channel_binding=require",
        )
        .unwrap();
        let c = &spec.config;
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_password(), Some(&b"p@ss+w"[..]));
        assert_eq!(c.get_dbname(), Some("neondb"));
        assert_eq!(c.get_options(), Some("endpoint=ep-x-1"));
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_application_name(), Some("tenantctl"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(
            c.get_channel_binding(),
            tokio_postgres::config::ChannelBinding::Require
        );
        assert_eq!(spec.ssl_mode, SslMode::Require);
    }

    #[test]
    fn parses_keyvalue_form_and_keeps_explicit_settings() {
        let spec = parse(
            "host=localhost port=5433 user=u password='a b\\'c' dbname=d application_name=me connect_timeout=3",
        )
        .unwrap();
        let c = &spec.config;
        assert_eq!(c.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(c.get_application_name(), Some("me"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(spec.ssl_mode, SslMode::Prefer);
        let spec = parse("host=h fallback_application_name=ci").unwrap();
        assert_eq!(spec.config.get_application_name(), Some("ci"));
        let spec = parse("host=h connect_timeout=0").unwrap();
        assert_eq!(spec.connect_timeout, None);
        assert_eq!(spec.config.get_connect_timeout(), None);
    }

    #[test]
    fn multi_host_and_ipv6_urls() {
        let spec = parse("postgres://u@h1:5432,[::1]:5433/db").unwrap();
        assert_eq!(spec.config.get_hosts().len(), 2);
        assert_eq!(spec.config.get_ports(), &[5432, 5433]);
        assert_eq!(
            describe_target(&spec.config),
            "h1:5432,[::1]:5433/db as user u"
        );
    }

    #[test]
    fn sslmode_each_mode() {
        use tokio_postgres::config::SslMode as Wire;
        let cases = [
            (
                "disable",
                SslMode::Disable,
                Wire::Disable,
                Verification::None,
            ),
            ("allow", SslMode::Allow, Wire::Prefer, Verification::None),
            ("prefer", SslMode::Prefer, Wire::Prefer, Verification::None),
            (
                "require",
                SslMode::Require,
                Wire::Require,
                Verification::None,
            ),
            (
                "verify-ca",
                SslMode::VerifyCa,
                Wire::Require,
                Verification::Chain,
            ),
            (
                "verify-full",
                SslMode::VerifyFull,
                Wire::Require,
                Verification::Full,
            ),
        ];
        for (text, mode, wire, verification) in cases {
            for conn in [
                format!("postgres://u@h/db?sslmode={text}"),
                format!("host=h user=u sslmode={text}"),
            ] {
                let spec = parse(&conn).unwrap();
                assert_eq!(spec.ssl_mode, mode, "{conn}");
                assert_eq!(spec.config.get_ssl_mode(), wire, "{conn}");
                assert_eq!(spec.verification, verification, "{conn}");
                // Building the TLS configuration must never need a process-level provider.
                tls_config(&spec).unwrap();
            }
        }
        let err = parse("host=h sslmode=verify_full").unwrap_err();
        assert!(format!("{err:#}").contains("invalid sslmode `verify_full`"));
    }

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
    fn sslrootcert_rules() {
        let spec = parse("host=h sslmode=require sslrootcert=/ca.pem").unwrap();
        assert_eq!(spec.verification, Verification::Chain);
        assert_eq!(spec.root_cert, Some(RootCert::File("/ca.pem".into())));
        let spec = parse("postgres://h/db?sslrootcert=system").unwrap();
        assert_eq!(spec.ssl_mode, SslMode::VerifyFull);
        assert_eq!(spec.root_cert, Some(RootCert::System));
        assert!(parse("host=h sslrootcert=system sslmode=require").is_err());
        let spec = parse("postgres://h/db?ssl=true").unwrap();
        assert_eq!(spec.ssl_mode, SslMode::Require);
        let err =
            tls_config(&parse("host=h sslmode=verify-ca sslrootcert=/nonexistent/ca.pem").unwrap())
                .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
    }

    #[test]
    fn clear_errors_for_bad_parameters() {
        let msg = |s: &str| format!("{:#}", parse(s).unwrap_err());
        assert!(msg("host=h foo=bar").contains("unknown connection parameter `foo`"));
        assert!(msg("postgres://h/db?foo=bar").contains("unknown connection parameter `foo`"));
        assert!(msg("host=h sslcert=/x").contains("not supported"));
        assert!(msg("host=h sslmode=disable channel_binding=require").contains("channel_binding"));
        assert!(msg("user=u").contains("no host"));
        assert!(msg("host=h connect_timeout=soon").contains("connect_timeout"));
        // A password with an unquoted space must not leak its second half.
        let m = msg("host=h password=first second");
        assert!(!m.contains("second") && !m.contains("first"), "{m}");
        let m = msg("postgres://u:p%zz@h:notaport/db");
        assert!(!m.contains("p%zz"), "{m}");
    }

    #[test]
    fn neon_pooler_detection() {
        assert_eq!(
            neon_pooler("postgres://u:pw@ep-cool-name-123456-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require"),
            Some((
                "ep-cool-name-123456-pooler.us-east-2.aws.neon.tech".to_string(),
                "ep-cool-name-123456.us-east-2.aws.neon.tech".to_string()
            ))
        );
        assert_eq!(
            neon_pooler("host=ep-a-1-pooler.eu-central-1.aws.neon.tech user=u"),
            Some((
                "ep-a-1-pooler.eu-central-1.aws.neon.tech".to_string(),
                "ep-a-1.eu-central-1.aws.neon.tech".to_string()
            ))
        );
        for not_pooler in [
            "postgres://u@ep-cool-name-123456.us-east-2.aws.neon.tech/db",
            "postgres://u@my-pooler.example.com/db",
            "postgres://u@ep-x-pooler.neon.tech.evil.com/db",
            "postgres://u@ep--pooler.neon.tech/db",
            "host=localhost",
            "",
            "postgres://",
        ] {
            assert_eq!(neon_pooler(not_pooler), None, "{not_pooler}");
        }
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let inputs = [
            "",
            " ",
            "=",
            "==",
            "'",
            "\\",
            "password",
            "password=",
            "password='",
            "password=\\",
            "host='a",
            "postgres://",
            "postgres://@",
            "postgres://:@",
            "postgres://[",
            "postgres://[::1",
            "postgres://[::1]x",
            "postgres://h:99999999/db",
            "postgres://h:-1/db",
            "postgres://%",
            "postgres://u:%zz@h",
            "postgres://u:%00@h",
            "postgres://u:%ff@h",
            "postgres://h/db?",
            "postgres://h/db?&&",
            "postgres://h/db?=",
            "postgres://h/db?a",
            "postgres://h/%",
            "postgres://ü:ö@ä/ß?ä=ö",
            "postgresql://\u{0}",
            "host=a\u{0}b",
            "host=h port=,,,",
            "host=h,h2 port=1,2,3",
            "postgres://h?options=%",
            "ＰＯＳＴＧＲＥＳ://x",
            "postgres:/\u{10ffff}",
            "p\u{301}assword=x",
            "passwordé=x",
        ];
        for input in inputs {
            let _ = parse(input);
            let _ = neon_pooler(input);
            let _ = redact(input);
            let _ = redact_text(input);
        }
        // Every prefix of a tricky string: char boundaries everywhere.
        let tricky =
            "postgres://ü:pässwörd@[::1]:5432,h/db?password=x&sslmode=verify-full password='ä b'";
        for (i, _) in tricky.char_indices() {
            let _ = parse(&tricky[..i]);
            let r = redact_text(&tricky[..i]);
            assert!(!r.contains("pässwörd"), "{r}");
        }
    }

    #[test]
    fn an_unencoded_at_in_the_password_is_refused_without_echoing_it() {
        let err = parse_url("u:S3cret@PW@127.0.0.1:1/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("%40"), "{err}");
        assert!(!err.contains("S3cret") && !err.contains("PW"), "{err}");
    }
}
