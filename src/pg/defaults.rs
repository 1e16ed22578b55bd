//! What a connection string leaves unset, filled as libpq fills it: from the entry of the
//! service file it names (`service=` or `PGSERVICE`), then from the `PG*` environment
//! variables. The password file is `passfile`'s business; built-in defaults are `target`'s.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Result};

/// libpq's environment variables for the parameters tenantctl implements, as libpq's
/// `PQconninfoOptions` pairs them. The variables of parameters tenantctl does not implement
/// (`PGSSLCERT`, `PGGSSENCMODE`, `PGCLIENTENCODING`, ...) are not read.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("PGSERVICE", "service"),
    ("PGSERVICEFILE", "servicefile"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGPASSFILE", "passfile"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGDATABASE", "dbname"),
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGOPTIONS", "options"),
    ("PGAPPNAME", "application_name"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLNEGOTIATION", "sslnegotiation"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
];

/// Debian's libpq (the `psql` of Debian and Ubuntu) looks for pg_service.conf here when
/// `PGSYSCONFDIR` is not set; other builds use their own compiled-in directory.
const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// Where libpq's defaults come from: the process for real connections, fixed values in tests.
pub(super) trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
    /// The operating-system user name, libpq's (and tokio-postgres's) default user.
    fn user(&self) -> Option<String>;
    /// A file's bytes and its mode (with the file-type bits); `None` when it is not there.
    fn read(&self, path: &Path) -> Option<(Vec<u8>, u32)>;
    /// A warning for stderr, as libpq prints them.
    fn warn(&self, message: &str);
}

/// The running process's environment, home directory and files.
pub(super) struct Process;

impl Environment for Process {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn home(&self) -> Option<PathBuf> {
        // $HOME, else the password database: what libpq's pqGetHomeDirectory does.
        std::env::home_dir()
    }

    fn user(&self) -> Option<String> {
        whoami::username().ok()
    }

    fn read(&self, path: &Path) -> Option<(Vec<u8>, u32)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return Some((Vec::new(), meta.mode()));
        }
        std::fs::read(path).ok().map(|bytes| (bytes, meta.mode()))
    }

    fn warn(&self, message: &str) {
        // Once per process: `verify` opens many connections with the same settings.
        static SAID: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
        let mut said = SAID
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if said.insert(message.to_string()) {
            eprintln!("WARNING: {message}");
        }
    }
}

/// Where a setting came from, for error messages (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    Conninfo,
    Service { file: PathBuf, line: usize },
    Environment(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Conninfo => f.write_str("the connection string"),
            Origin::Service { file, line } => {
                write!(f, "service file \"{}\", line {line}", file.display())
            }
            Origin::Environment(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// One connection parameter and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setting {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// The value in effect for `key`: the last one given, as libpq takes it.
pub(super) fn value<'a>(settings: &'a [Setting], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .rev()
        .find(|s| s.key == key)
        .map(|s| s.value.as_str())
}

/// The connection string's pairs, then for each key they leave unset the service file entry's
/// value, then the environment's: libpq's precedence. `service` and `servicefile` are used up.
pub(super) fn with_defaults(
    explicit: Vec<(String, String)>,
    env: &dyn Environment,
) -> Result<Vec<Setting>> {
    let mut settings: Vec<Setting> = explicit
        .into_iter()
        .map(|(key, value)| Setting {
            key,
            value,
            origin: Origin::Conninfo,
        })
        .collect();
    let service = value(&settings, "service")
        .map(str::to_string)
        .or_else(|| env.var("PGSERVICE"))
        .filter(|s| !s.is_empty());
    if let Some(service) = service {
        let file = value(&settings, "servicefile").map(PathBuf::from);
        add_unset(&mut settings, service_entry(&service, file, env)?);
    }
    let from_env = ENVIRONMENT.iter().filter_map(|&(var, key)| {
        env.var(var).map(|value| Setting {
            key: key.to_string(),
            value,
            origin: Origin::Environment(var),
        })
    });
    add_unset(&mut settings, from_env.collect());
    settings.retain(|s| s.key != "service" && s.key != "servicefile");
    Ok(settings)
}

/// Add each default whose key is not set yet; the first of two defaults for one key wins.
fn add_unset(settings: &mut Vec<Setting>, defaults: Vec<Setting>) {
    for default in defaults {
        if !settings.iter().any(|s| s.key == default.key) {
            settings.push(default);
        }
    }
}

/// The service's entry: from `servicefile` / `PGSERVICEFILE` (which must exist) or else
/// ~/.pg_service.conf; when not there, from `PGSYSCONFDIR`'s pg_service.conf.
fn service_entry(
    service: &str,
    file: Option<PathBuf>,
    env: &dyn Environment,
) -> Result<Vec<Setting>> {
    let named = file.or_else(|| env.var("PGSERVICEFILE").map(PathBuf::from));
    let user_file = match named {
        Some(path) => match env.read(&path) {
            Some((text, _)) => Some((path, text)),
            None => bail!("service file \"{}\" not found", path.display()),
        },
        None => env
            .home()
            .map(|home| home.join(".pg_service.conf"))
            .and_then(|path| env.read(&path).map(|(text, _)| (path, text))),
    };
    if let Some((path, text)) = user_file {
        if let Some(entry) = parse_service_file(&text, &path, service)? {
            return Ok(entry);
        }
    }
    let sysconfdir = env
        .var("PGSYSCONFDIR")
        .unwrap_or_else(|| DEFAULT_SYSCONFDIR.to_string());
    let path = Path::new(&sysconfdir).join("pg_service.conf");
    if let Some((text, _)) = env.read(&path) {
        if let Some(entry) = parse_service_file(&text, &path, service)? {
            return Ok(entry);
        }
    }
    bail!("definition of service \"{service}\" not found")
}

/// The `[service]` group of a pg_service.conf, read as libpq reads it: lines trimmed, `#`
/// comments, `key=value` with nothing trimmed around `=`. `None` when the group is not there.
fn parse_service_file(text: &[u8], path: &Path, service: &str) -> Result<Option<Vec<Setting>>> {
    let Ok(text) = std::str::from_utf8(text) else {
        bail!("service file \"{}\" is not valid UTF-8", path.display());
    };
    let mut entry: Option<Vec<Setting>> = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(group) = line.strip_prefix('[') {
            if entry.is_some() {
                break;
            }
            let matches = group
                .strip_prefix(service)
                .is_some_and(|rest| rest.starts_with(']'));
            entry = matches.then(Vec::new);
            continue;
        }
        let Some(settings) = entry.as_mut() else {
            continue;
        };
        let origin = Origin::Service {
            file: path.to_path_buf(),
            line: index + 1,
        };
        let Some((key, value)) = line.split_once('=') else {
            bail!("syntax error in {origin}");
        };
        if key == "service" {
            bail!("nested service specifications not supported in {origin}");
        }
        settings.push(Setting {
            key: key.to_string(),
            value: value.to_string(),
            origin,
        });
    }
    Ok(entry)
}

/// Owned pairs, as the conninfo parser gives them, for tests.
#[cfg(test)]
pub(super) fn pairs(conninfo: &[(&str, &str)]) -> Vec<(String, String)> {
    conninfo
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A fixed environment for tests: variables, files (with modes), home and user as given.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Fixed {
    pub vars: std::collections::HashMap<String, String>,
    pub files: std::collections::HashMap<PathBuf, (Vec<u8>, u32)>,
    pub home: Option<PathBuf>,
    pub user: Option<String>,
    pub warnings: std::cell::RefCell<Vec<String>>,
}

#[cfg(test)]
impl Fixed {
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// A regular file with this mode.
    pub fn file(mut self, path: &str, mode: u32, text: &str) -> Self {
        self.files
            .insert(path.into(), (text.as_bytes().to_vec(), 0o100_000 | mode));
        self
    }
}

#[cfg(test)]
impl Environment for Fixed {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn home(&self) -> Option<PathBuf> {
        self.home.clone()
    }

    fn user(&self) -> Option<String> {
        self.user.clone()
    }

    fn read(&self, path: &Path) -> Option<(Vec<u8>, u32)> {
        self.files.get(path).cloned()
    }

    fn warn(&self, message: &str) {
        self.warnings.borrow_mut().push(message.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(conninfo: &[(&str, &str)], env: &Fixed) -> Vec<(String, String, Origin)> {
        with_defaults(pairs(conninfo), env)
            .unwrap()
            .into_iter()
            .map(|s| (s.key, s.value, s.origin))
            .collect()
    }

    const SERVICES: &str = "# comment\n\
        [other]\nhost=wrong\n\
        [prod]\n  host=svc-host  \nport=6543\nuser=svc-user\nuser=second-is-ignored\n\
        \n[later]\nhost=wrong\n";

    #[test]
    fn conninfo_beats_service_beats_environment() {
        let env = Fixed::default()
            .file("/home/u/.pg_service.conf", 0o644, SERVICES)
            .var("PGHOST", "env-host")
            .var("PGPORT", "1111")
            .var("PGUSER", "env-user")
            .var("PGDATABASE", "env-db")
            .var("PGSSLMODE", "require")
            .var("PGSSLCERT", "/not/read");
        let env = Fixed {
            home: Some("/home/u".into()),
            ..env
        };
        let got = resolve(&[("service", "prod"), ("user", "mine")], &env);
        let file = PathBuf::from("/home/u/.pg_service.conf");
        let service = |line| Origin::Service {
            file: file.clone(),
            line,
        };
        assert_eq!(
            got,
            vec![
                ("user".into(), "mine".into(), Origin::Conninfo),
                ("host".into(), "svc-host".into(), service(5)),
                ("port".into(), "6543".into(), service(6)),
                (
                    "dbname".into(),
                    "env-db".into(),
                    Origin::Environment("PGDATABASE")
                ),
                (
                    "sslmode".into(),
                    "require".into(),
                    Origin::Environment("PGSSLMODE")
                ),
            ]
        );
    }

    #[test]
    fn service_from_the_environment_and_the_system_file() {
        let env = Fixed::default()
            .var("PGSERVICE", "prod")
            .var("PGSYSCONFDIR", "/etc/pg")
            .file("/etc/pg/pg_service.conf", 0o644, SERVICES);
        let got = resolve(&[], &env);
        assert_eq!(got[0].1, "svc-host");
        // The user's file first; the system file only when the user's lacks the service.
        let env = env.file("/home/u/.pg_service.conf", 0o600, "[prod]\nhost=mine\n");
        let env = Fixed {
            home: Some("/home/u".into()),
            ..env
        };
        assert_eq!(resolve(&[], &env)[0].1, "mine");
        let env = env.file("/home/u/.pg_service.conf", 0o600, "[dev]\nhost=dev\n");
        assert_eq!(resolve(&[], &env)[0].1, "svc-host");
    }

    #[test]
    fn service_errors_as_libpq_words_them() {
        let msg = |conninfo: &[(&str, &str)], env: &Fixed| {
            format!("{:#}", with_defaults(pairs(conninfo), env).unwrap_err())
        };
        let env = Fixed::default();
        assert!(msg(&[("service", "x")], &env).contains("definition of service \"x\" not found"));
        let env = Fixed::default().var("PGSERVICEFILE", "/nope");
        assert!(msg(&[("service", "x")], &env).contains("service file \"/nope\" not found"));
        let env = Fixed::default().file("/s", 0o644, "[x]\nhost\n");
        let m = msg(&[("service", "x"), ("servicefile", "/s")], &env);
        assert!(
            m.contains("syntax error in service file \"/s\", line 2"),
            "{m}"
        );
        let env = Fixed::default().file("/s", 0o644, "[x]\nservice=y\n");
        let m = msg(&[("service", "x"), ("servicefile", "/s")], &env);
        assert!(m.contains("nested service"), "{m}");
    }
}
