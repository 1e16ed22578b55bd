//! The password file (~/.pgpass, `passfile=`, `PGPASSFILE`), read as libpq reads it when no
//! password was given: `hostname:port:database:username:password` lines, `*` matching anything,
//! `\` escaping `:` and `\`, and the file ignored, with a warning, when others may read it.

use std::path::PathBuf;

use super::defaults::{value, Environment, Setting};

/// libpq's DEF_PGPORT_STR.
const DEFAULT_PORT: &str = "5432";
/// Debian's libpq default socket directory (upstream's is /tmp): a connection to it matches the
/// password file's `localhost`, as one with no host at all does.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// A password found in a password file.
pub(super) struct Found {
    pub password: Vec<u8>,
    pub file: PathBuf,
}

/// The password for these settings from their password file, trying each host in turn.
pub(super) fn lookup(settings: &[Setting], env: &dyn Environment) -> Option<Found> {
    let file = match value(settings, "passfile").filter(|f| !f.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => env.home()?.join(".pgpass"),
    };
    let text = read(&file, env)?;
    let user = match value(settings, "user").filter(|u| !u.is_empty()) {
        Some(user) => user.to_string(),
        None => env.user()?,
    };
    let dbname = value(settings, "dbname")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user);
    let list = |key| {
        value(settings, key)
            .unwrap_or("")
            .split(',')
            .collect::<Vec<_>>()
    };
    let (hosts, addrs, ports) = (list("host"), list("hostaddr"), list("port"));
    let count = hosts.len().max(addrs.len());
    (0..count).find_map(|i| {
        let host = hosts.get(i).copied().filter(|h| !h.is_empty());
        let host = host.or(addrs.get(i).copied()).unwrap_or("");
        let port = if ports.len() == 1 {
            ports[0]
        } else {
            ports.get(i).copied().unwrap_or("")
        };
        let password = find(&text, host, port, dbname, &user)?;
        Some(Found {
            password,
            file: file.clone(),
        })
    })
}

/// The file's bytes, or `None` (with libpq's warning) when libpq would not use it.
fn read(path: &std::path::Path, env: &dyn Environment) -> Option<Vec<u8>> {
    const FILE_TYPE: u32 = 0o170_000;
    const REGULAR: u32 = 0o100_000;
    let (bytes, mode) = env.read(path)?;
    let name = path.display();
    if mode & FILE_TYPE != REGULAR {
        env.warn(&format!("password file \"{name}\" is not a plain file"));
        return None;
    }
    if mode & 0o077 != 0 {
        env.warn(&format!(
            "password file \"{name}\" has group or world access; permissions should be u=rw (0600) or less"
        ));
        return None;
    }
    Some(bytes)
}

/// The password of the first line that matches, libpq's `passwordFromFile` for one host.
pub(super) fn find(
    text: &[u8],
    host: &str,
    port: &str,
    dbname: &str,
    user: &str,
) -> Option<Vec<u8>> {
    if dbname.is_empty() || user.is_empty() {
        return None;
    }
    let host = if host.is_empty() || host == DEFAULT_SOCKET_DIR {
        "localhost"
    } else {
        host
    };
    let port = if port.is_empty() { DEFAULT_PORT } else { port };
    text.split(|&b| b == b'\n')
        .filter(|line| !line.starts_with(b"#"))
        .map(strip_crlf)
        .filter(|line| !line.is_empty())
        .find_map(|line| {
            let rest = [host, port, dbname, user]
                .iter()
                .try_fold(line, |rest, field| matches_field(rest, field.as_bytes()))?;
            Some(unescape_password(rest))
        })
}

fn strip_crlf(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// When the field at the start of `line` is `*` or equals `token` (after unescaping), the rest
/// of the line after its `:`. libpq's `pwdfMatchesString`.
fn matches_field<'a>(line: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
    if let Some(rest) = line.strip_prefix(b"*:") {
        return Some(rest);
    }
    let (mut i, mut t) = (0, 0);
    while i < line.len() {
        let escaped = line[i] == b'\\';
        if escaped {
            i += 1;
        }
        let b = *line.get(i)?;
        if b == b':' && !escaped && t == token.len() {
            return Some(&line[i + 1..]);
        }
        // An unescaped `:` still matches a `:` in the token, as in libpq.
        if token.get(t) != Some(&b) {
            return None;
        }
        i += 1;
        t += 1;
    }
    None
}

/// The password field: up to the first unescaped `:`, each `\` dropped and the byte after it
/// kept.
fn unescape_password(field: &[u8]) -> Vec<u8> {
    let mut password = Vec::new();
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b':' => break,
            b'\\' => match bytes.next() {
                Some(&next) => password.push(next),
                None => password.push(b'\\'),
            },
            _ => password.push(b),
        }
    }
    password
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::defaults::{pairs, with_defaults, Fixed};

    fn pw(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
        find(text.as_bytes(), host, port, db, user).map(|p| String::from_utf8(p).unwrap())
    }

    #[test]
    fn matching_lines_wildcards_and_escapes() {
        let file = "# comment: h:5432:d:u:commented\n\
            db.example.com:5432:app:alice:first\n\
            db.example.com:*:*:alice:second\n\
            *:*:*:bob:b\\:o\\\\b:ignored\r\n\
            we\\:ird:5432:d:u:escaped-host\n\
            localhost:5432:*:carol:local\n\
            \n";
        let cases = [
            (("db.example.com", "5432", "app", "alice"), Some("first")),
            // The first matching line wins, not the most specific one.
            (("db.example.com", "6543", "app", "alice"), Some("second")),
            (("other", "1", "x", "bob"), Some("b:o\\b")),
            (("we:ird", "5432", "d", "u"), Some("escaped-host")),
            // No host, or the default socket directory, is `localhost`; no port is 5432.
            (("", "", "x", "carol"), Some("local")),
            (("/var/run/postgresql", "", "x", "carol"), Some("local")),
            (("/tmp", "", "x", "carol"), None),
            (("h", "5432", "d", "u"), None),
            (("db.example.com", "5432", "app", "alic"), None),
        ];
        for ((host, port, db, user), expected) in cases {
            let got = pw(file, host, port, db, user);
            assert_eq!(got.as_deref(), expected, "{host}:{port}:{db}:{user}");
        }
        // A `*` only as a whole field: `db*` is literal.
        assert_eq!(pw("db*:*:*:*:x\n", "db1", "1", "d", "u"), None);
        // A line with too few fields matches nothing.
        assert_eq!(pw("h:5432:d:u\n", "h", "5432", "d", "u"), None);
        assert_eq!(
            pw("h:5432:d:u:\n", "h", "5432", "d", "u").as_deref(),
            Some("")
        );
    }

    fn lookup_in(conninfo: &[(&str, &str)], env: &Fixed) -> Option<String> {
        let settings = with_defaults(pairs(conninfo), env).unwrap();
        lookup(&settings, env).map(|f| String::from_utf8(f.password).unwrap())
    }

    #[test]
    fn which_file_and_which_connection() {
        let env = Fixed {
            home: Some("/home/u".into()),
            user: Some("osuser".into()),
            ..Fixed::default()
        }
        .file(
            "/home/u/.pgpass",
            0o600,
            "h2:5433:osuser:osuser:from-home\n",
        )
        .file("/elsewhere", 0o600, "*:*:app:*:from-passfile\n");
        // Defaults: the OS user, the database named after it; the second host's port.
        let kv = [("host", "h1,h2"), ("port", "5432,5433")];
        assert_eq!(lookup_in(&kv, &env).as_deref(), Some("from-home"));
        assert_eq!(lookup_in(&[("host", "h1")], &env), None);
        let named = [("host", "h"), ("dbname", "app"), ("passfile", "/elsewhere")];
        assert_eq!(lookup_in(&named, &env).as_deref(), Some("from-passfile"));
        let env = env.var("PGPASSFILE", "/elsewhere").var("PGDATABASE", "app");
        assert_eq!(
            lookup_in(&[("host", "h")], &env).as_deref(),
            Some("from-passfile")
        );
    }

    #[test]
    fn a_file_others_can_read_is_ignored_with_libpq_s_warning() {
        let env = Fixed {
            home: Some("/home/u".into()),
            ..Fixed::default()
        }
        .file("/home/u/.pgpass", 0o640, "*:*:*:*:secret\n");
        assert_eq!(lookup_in(&[("host", "h"), ("user", "u")], &env), None);
        let warnings = env.warnings.borrow();
        assert_eq!(
            warnings.as_slice(),
            ["password file \"/home/u/.pgpass\" has group or world access; permissions should be u=rw (0600) or less"]
        );
    }
}
