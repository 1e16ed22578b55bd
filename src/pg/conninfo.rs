//! Connection-string syntax: a libpq URL or key=value string split into (key, value) pairs,
//! once, with libpq's rules. What the keys mean is `target`'s business.

use anyhow::{anyhow, bail, Result};
use percent_encoding::percent_decode_str;

/// Parameter names come from user input; keep them short and printable in messages.
pub(super) fn printable(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
    clean
}

pub(super) fn url_scheme_len(s: &str) -> Option<usize> {
    ["postgresql://", "postgres://"]
        .into_iter()
        .find_map(|scheme| {
            s.get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| scheme.len())
        })
}

/// The (key, value) pairs of a connection string, in order, later ones winning as in libpq.
pub(super) fn parse_pairs(conn: &str) -> Result<Vec<(String, String)>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unencoded_at_in_the_password_is_refused_without_echoing_it() {
        let err = parse_url("u:S3cret@PW@127.0.0.1:1/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("%40"), "{err}");
        assert!(!err.contains("S3cret") && !err.contains("PW"), "{err}");
    }
}
