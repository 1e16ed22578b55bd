//! A connection target: a connection string parsed once into tokio-postgres's `Config` (filled
//! through its setters) plus what tenantctl enforces itself, because tokio-postgres only knows
//! `sslmode=disable|prefer|require`: libpq's six sslmodes, `sslrootcert`, the per-host timeout.
//! What the string leaves unset comes from a service file, the `PG*` environment variables and
//! the password file, as in libpq. Its `Display` and `Debug` never show the password.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::config::{
    ChannelBinding, Host, LoadBalanceHosts, SslNegotiation, TargetSessionAttrs,
};
use tokio_postgres::Config;

use super::conninfo::{parse_pairs, printable, url_scheme_len};
use super::defaults::{with_defaults, Environment, Origin, Process, Setting};
use super::passfile;
use super::redact::{redact, redact_text};

/// libpq waits forever by default; a CLI (and a CI gate) should not.
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
const DEFAULT_APPLICATION_NAME: &str = "tenantctl";

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
    fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            Self::Disable => Wire::Disable,
            Self::Allow | Self::Prefer => Wire::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Wire::Require,
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

/// A parsed connection string: the tokio-postgres configuration plus what tenantctl enforces
/// itself. Built only by parsing, so it is always one that `connect` can try.
#[derive(Clone)]
pub struct Target {
    pub(super) config: Config,
    pub(super) ssl_mode: SslMode,
    pub(super) root_cert: Option<RootCert>,
    pub(super) verification: Verification,
    /// Per-host timeout; `None` when the caller asked for `connect_timeout=0` (wait forever).
    pub(super) connect_timeout: Option<Duration>,
    /// The password file the password came from, if it did (libpq names it when it is wrong).
    pub(super) password_file: Option<PathBuf>,
    /// The text it was parsed from, password included. Private: it leaves this type only
    /// redacted (`Display`, `Debug`) or through the explicitly named methods below.
    conninfo: String,
}

impl Target {
    /// Parse a libpq connection string (URL or key=value form). The error, like every error
    /// here, names parameters and positions, never values.
    /// Parameters it leaves unset come from the process's environment and files, as in libpq.
    pub fn parse(conn: &str) -> Result<Target> {
        parse_in(conn, &Process)
            .map_err(|e| anyhow!(redact_text(&format!("{e:#}"))))
            .context("invalid connection string")
    }

    /// The same target pointed at another database (the demo's own database in the cluster).
    pub fn with_dbname(&self, dbname: &str) -> Result<Target> {
        let conninfo = if url_scheme_len(&self.conninfo).is_some() {
            let mut url = url::Url::parse(&self.conninfo)
                .map_err(|e| anyhow!("the connection URL does not parse: {e}"))?;
            url.set_path(dbname);
            url.to_string()
        } else {
            // libpq: a later key wins.
            format!("{} dbname='{}'", self.conninfo, quote_value(dbname))
        };
        Target::parse(&conninfo)
    }

    /// The connection string with its password, for the one place that must hand it on
    /// verbatim (`dev url --show-password`). Never for messages.
    pub fn expose_url_with_password(&self) -> &str {
        &self.conninfo
    }

    /// The Neon pooler host and its direct host, when this target goes through Neon's pooler
    /// (wherever the host name came from: the string, a service file or `PGHOST`).
    pub fn neon_pooler(&self) -> Option<(String, String)> {
        super::neon::pooler_among(self.config.get_hosts().iter().filter_map(|h| match h {
            Host::Tcp(name) => Some(name.as_str()),
            Host::Unix(_) => None,
        }))
    }

    /// `host:port,host:port/db as user u`, for error messages.
    pub fn describe(&self) -> String {
        describe_target(&self.config)
    }

    pub(super) fn channel_binding_required(&self) -> bool {
        self.config.get_channel_binding() == ChannelBinding::Require
    }

    /// libpq retries without TLS when the handshake fails in `prefer` (and `allow`) mode; not
    /// when channel binding is required, which a plaintext connection can never give.
    pub(super) fn falls_back_to_plaintext(&self) -> bool {
        matches!(self.ssl_mode, SslMode::Prefer | SslMode::Allow)
            && !self.channel_binding_required()
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Target> {
        Target::parse(s)
    }
}

/// The connection string with its password replaced by `***`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.conninfo))
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: `conninfo` holds the password. tokio-postgres's `Config` hides its own.
        f.debug_struct("Target")
            .field("conninfo", &redact(&self.conninfo))
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .field("verification", &self.verification)
            .field("connect_timeout", &self.connect_timeout)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// What `connect` takes: a parsed `Target`, or connection-string text parsed on the spot. Not
/// implemented for `String`: a `Target`'s `to_string()` is redacted, and must not type-check
/// as something to connect to.
pub trait ToTarget {
    fn to_target(&self) -> Result<Cow<'_, Target>>;
}

impl ToTarget for Target {
    fn to_target(&self) -> Result<Cow<'_, Target>> {
        Ok(Cow::Borrowed(self))
    }
}

impl ToTarget for str {
    fn to_target(&self) -> Result<Cow<'_, Target>> {
        Target::parse(self).map(Cow::Owned)
    }
}

fn quote_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Parse a libpq connection string (URL or key=value form): the pairs are read once and
/// completed from `env` (service file, environment variables), tenantctl's own keys kept here,
/// every other key handed to its tokio-postgres setter; then the password file, when no
/// password was given.
///
/// Errors never contain parameter values, only names, positions and where a setting came from:
/// a mistyped password must not end up in an error message.
pub(super) fn parse_in(conn: &str, env: &dyn Environment) -> Result<Target> {
    let settings = with_defaults(parse_pairs(conn)?, env)?;
    let mut config = Config::new();
    let mut own = OwnKeys::default();
    // A value tokio-postgres refuses is reported after tenantctl's own checks, as it was when
    // tokio-postgres parsed the string after them.
    let mut refused = None;
    for Setting { key, value, origin } in &settings {
        let located = |e: anyhow::Error| match origin {
            Origin::Conninfo => e,
            _ => e.context(origin.to_string()),
        };
        if own.take(key, value).map_err(located)? {
            continue;
        }
        match set(&mut config, key, value) {
            Ok(true) => own.observe(key, value),
            Err(e) => {
                own.observe(key, value);
                refused.get_or_insert(located(e));
            }
            Ok(false) if UNSUPPORTED.contains(&key.as_str()) => Err(located(anyhow!(
                "connection parameter `{key}` is not supported by tenantctl"
            )))?,
            Ok(false) => Err(located(anyhow!(
                "unknown connection parameter `{}`",
                printable(key)
            )))?,
        }
    }
    let ssl_mode = own.check()?;
    if let Some(e) = refused {
        return Err(e);
    }
    config.ssl_mode(ssl_mode.wire());
    if let Some(timeout) = own.connect_timeout {
        config.connect_timeout(timeout);
    }
    if !own.application_name {
        let name = own.fallback_application_name.as_deref();
        config.application_name(name.unwrap_or(DEFAULT_APPLICATION_NAME));
    }
    let mut password_file = None;
    if config.get_password().is_none_or(<[u8]>::is_empty) {
        if let Some(found) = passfile::lookup(&settings, env) {
            config.password(found.password);
            password_file = Some(found.file);
        }
    }
    Ok(Target {
        config,
        ssl_mode,
        verification: verification(ssl_mode, own.root_cert.as_ref()),
        root_cert: own.root_cert,
        connect_timeout: own.connect_timeout,
        password_file,
        conninfo: conn.to_string(),
    })
}

/// The keys tenantctl reads itself, and what it needs to know of some of tokio-postgres's.
struct OwnKeys {
    ssl_mode: Option<SslMode>,
    root_cert: Option<RootCert>,
    connect_timeout: Option<Duration>,
    fallback_application_name: Option<String>,
    application_name: bool,
    channel_binding_required: bool,
    has_host: bool,
}

impl Default for OwnKeys {
    fn default() -> Self {
        OwnKeys {
            ssl_mode: None,
            root_cert: None,
            connect_timeout: Some(Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS)),
            fallback_application_name: None,
            application_name: false,
            channel_binding_required: false,
            has_host: false,
        }
    }
}

impl OwnKeys {
    /// Read `key` when it is one that tokio-postgres lacks; false leaves it to tokio-postgres.
    fn take(&mut self, key: &str, value: &str) -> Result<bool> {
        match key {
            "sslmode" => self.ssl_mode = Some(SslMode::parse(value)?),
            "sslrootcert" => {
                self.root_cert = match value {
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
                self.connect_timeout = u64::try_from(secs)
                    .ok()
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs);
            }
            "fallback_application_name" => self.fallback_application_name = Some(value.into()),
            // Read after the other keys, by `passfile::lookup`, when no password was given.
            "passfile" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Note what the cross-key checks need from a key tokio-postgres took.
    fn observe(&mut self, key: &str, value: &str) {
        match key {
            "application_name" => self.application_name = true,
            "channel_binding" => self.channel_binding_required = value == "require",
            "host" | "hostaddr" => self.has_host |= !value.is_empty(),
            _ => {}
        }
    }

    /// The rules that span keys; the sslmode in effect.
    fn check(&self) -> Result<SslMode> {
        if !self.has_host {
            bail!("the connection string names no host (set host=... or postgres://HOST/...)");
        }
        let ssl_mode = match (self.ssl_mode, &self.root_cert) {
            (Some(mode), _) => mode,
            // libpq 16: sslrootcert=system makes verify-full the default.
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
        };
        if self.root_cert == Some(RootCert::System) && ssl_mode != SslMode::VerifyFull {
            // Same refusal as libpq: trusting every public CA without checking the host name is
            // trusting anyone who can buy a certificate.
            bail!("sslrootcert=system needs sslmode=verify-full (a weaker sslmode would accept any publicly trusted certificate)");
        }
        if self.channel_binding_required && ssl_mode == SslMode::Disable {
            bail!("channel_binding=require needs TLS, but sslmode=disable");
        }
        Ok(ssl_mode)
    }
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

/// One key for tokio-postgres, through its setter; `Ok(false)` when it has no such key. Values
/// are validated as tokio-postgres's own parser (`Config::param`, 0.7) validates them, with its
/// message, so that a connection string is accepted and refused as it was when it parsed them.
fn set(config: &mut Config, key: &str, value: &str) -> Result<bool> {
    let refused = || anyhow!("invalid connection string: invalid value for option `{key}`");
    // Whole seconds; zero or negative leaves tokio-postgres's default.
    let secs = |v: &str| -> Result<Option<Duration>> {
        let s = v.parse::<i64>().map_err(|_| refused())?;
        Ok(u64::try_from(s)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs))
    };
    match key {
        "user" => {
            config.user(value);
        }
        "password" => {
            config.password(value);
        }
        "dbname" => {
            config.dbname(value);
        }
        "options" => {
            config.options(value);
        }
        "application_name" => {
            config.application_name(value);
        }
        "sslnegotiation" => {
            config.ssl_negotiation(match value {
                "postgres" => SslNegotiation::Postgres,
                "direct" => SslNegotiation::Direct,
                _ => return Err(refused()),
            });
        }
        "host" => {
            for host in value.split(',') {
                config.host(host);
            }
        }
        "hostaddr" => {
            for addr in value.split(',') {
                config.hostaddr(addr.parse().map_err(|_| refused())?);
            }
        }
        "port" => {
            for port in value.split(',') {
                config.port(match port {
                    "" => 5432,
                    p => p.parse().map_err(|_| refused())?,
                });
            }
        }
        "tcp_user_timeout" => {
            if let Some(t) = secs(value)? {
                config.tcp_user_timeout(t);
            }
        }
        "keepalives" => {
            let on: u64 = value.parse().map_err(|_| refused())?;
            config.keepalives(on != 0);
        }
        "keepalives_idle" => {
            if let Some(t) = secs(value)? {
                config.keepalives_idle(t);
            }
        }
        "keepalives_interval" => {
            if let Some(t) = secs(value)? {
                config.keepalives_interval(t);
            }
        }
        "keepalives_retries" => {
            config.keepalives_retries(value.parse().map_err(|_| refused())?);
        }
        "target_session_attrs" => {
            config.target_session_attrs(match value {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                "read-only" => TargetSessionAttrs::ReadOnly,
                _ => return Err(refused()),
            });
        }
        "channel_binding" => {
            config.channel_binding(match value {
                "disable" => ChannelBinding::Disable,
                "prefer" => ChannelBinding::Prefer,
                "require" => ChannelBinding::Require,
                _ => return Err(refused()),
            });
        }
        "load_balance_hosts" => {
            config.load_balance_hosts(match value {
                "disable" => LoadBalanceHosts::Disable,
                "random" => LoadBalanceHosts::Random,
                _ => return Err(refused()),
            });
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `host:port,host:port/db as user u`, for error messages. No password, by construction.
pub(super) fn describe_target(config: &Config) -> String {
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

/// Parse with nothing from the environment: what tests of the syntax want.
#[cfg(test)]
pub(crate) fn parse(conn: &str) -> Result<Target> {
    parse_in(conn, &super::defaults::Fixed::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::defaults::Fixed;
    use crate::pg::tls::tls_config;
    use crate::pg::{neon_pooler, redact, redact_text};

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
    fn display_and_debug_never_show_the_password() {
        for conn in [
            "postgres://u:s3cret@h/db",
            "host=h user=u password=s3cret",
            "postgres://u@h/db?password=s3cret",
        ] {
            let target = Target::parse(conn).unwrap();
            assert!(!target.to_string().contains("s3cret"), "{target}");
            assert!(!format!("{target:?}").contains("s3cret"), "{target:?}");
            assert!(!format!("{target:#?}").contains("s3cret"), "{target:#?}");
            assert_eq!(target.expose_url_with_password(), conn);
        }
        let target = Target::parse("postgres://u:s3cret@h/db").unwrap();
        assert_eq!(target.to_string(), "postgres://u:***@h/db");
    }

    #[test]
    fn with_dbname_points_at_another_database() {
        let cluster = Target::parse("postgres://su:pw@127.0.0.1:5432/postgres").unwrap();
        let demo = cluster.with_dbname("tenantctl_demo").unwrap();
        assert_eq!(
            demo.to_string(),
            "postgres://su:***@127.0.0.1:5432/tenantctl_demo"
        );
        assert_eq!(demo.config.get_dbname(), Some("tenantctl_demo"));
        assert_eq!(demo.config.get_password(), Some(&b"pw"[..]));
        let kv = Target::parse("host=h dbname=a password='x y'").unwrap();
        let other = kv.with_dbname("it's").unwrap();
        assert_eq!(other.config.get_dbname(), Some("it's"));
        assert_eq!(other.config.get_password(), Some(&b"x y"[..]));
    }

    fn home_env() -> Fixed {
        Fixed {
            home: Some("/home/u".into()),
            user: Some("osuser".into()),
            ..Fixed::default()
        }
    }

    #[test]
    fn unset_parameters_come_from_service_then_environment() {
        let env = home_env()
            .var("PGHOST", "ep-x-1-pooler.us-east-2.aws.neon.tech")
            .var("PGPORT", "6543")
            .var("PGUSER", "env-user")
            .var("PGSSLMODE", "disable")
            .var("PGCONNECT_TIMEOUT", "3")
            .var("PGAPPNAME", "from-env")
            .file(
                "/home/u/.pg_service.conf",
                0o644,
                "[s]\nport=7000\ndbname=svc\n",
            );
        let spec = parse_in("postgres:///explicit?sslmode=require", &env).unwrap();
        let c = &spec.config;
        assert_eq!(c.get_dbname(), Some("explicit"));
        assert_eq!(c.get_user(), Some("env-user"));
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(spec.ssl_mode, SslMode::Require);
        assert_eq!(spec.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.get_application_name(), Some("from-env"));
        // The pooler is recognised whichever way its host name came.
        assert!(spec.neon_pooler().is_some());
        let spec = parse_in("service=s", &env).unwrap();
        assert_eq!(spec.config.get_ports(), &[7000]);
        assert_eq!(spec.config.get_dbname(), Some("svc"));
        assert_eq!(spec.ssl_mode, SslMode::Disable);
    }

    #[test]
    fn errors_name_where_a_bad_setting_came_from() {
        let msg = |conn: &str, env: &Fixed| format!("{:#}", parse_in(conn, env).unwrap_err());
        let env = home_env().var("PGSSLMODE", "verify_full");
        let m = msg("host=h", &env);
        assert!(m.contains("environment variable PGSSLMODE"), "{m}");
        let env = home_env().file("/home/u/.pg_service.conf", 0o644, "[s]\nsslcert=/c\n");
        let m = msg("host=h service=s", &env);
        assert!(
            m.contains("not supported") && m.contains(".pg_service.conf\", line 2"),
            "{m}"
        );
        // Variables of parameters tenantctl does not implement are not read.
        parse_in(
            "host=h",
            &home_env()
                .var("PGSSLCERT", "/c")
                .var("PGGSSENCMODE", "disable"),
        )
        .unwrap();
    }

    #[test]
    fn passwords_from_the_environment_or_a_password_file_stay_hidden() {
        let env = home_env().var("PGPASSWORD", "env-s3cret").file(
            "/home/u/.pgpass",
            0o600,
            "*:*:*:*:file-s3cret\n",
        );
        // An explicit password beats PGPASSWORD, which beats the password file.
        let spec = parse_in("host=h password=given", &env).unwrap();
        assert_eq!(spec.config.get_password(), Some(&b"given"[..]));
        let spec = parse_in("host=h", &env).unwrap();
        assert_eq!(spec.config.get_password(), Some(&b"env-s3cret"[..]));
        assert_eq!(spec.password_file, None);
        let env = home_env().file("/home/u/.pgpass", 0o600, "*:*:*:*:file-s3cret\n");
        // An empty password counts as none, as in libpq.
        let spec = parse_in("host=h password=''", &env).unwrap();
        assert_eq!(spec.config.get_password(), Some(&b"file-s3cret"[..]));
        assert_eq!(spec.password_file, Some(PathBuf::from("/home/u/.pgpass")));
        for shown in [spec.to_string(), format!("{spec:?}"), format!("{spec:#?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn only_prefer_and_allow_retry_without_tls() {
        for (conn, retries) in [
            ("host=h", true),
            ("host=h sslmode=allow", true),
            ("host=h sslmode=prefer channel_binding=require", false),
            ("host=h sslmode=require", false),
            ("host=h sslmode=verify-full", false),
            ("host=h sslmode=disable", false),
        ] {
            assert_eq!(
                parse(conn).unwrap().falls_back_to_plaintext(),
                retries,
                "{conn}"
            );
        }
    }
}
