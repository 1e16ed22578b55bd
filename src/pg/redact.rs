//! Scrubbing free text that may carry a secret: a connection string echoed in a server error,
//! a log line, an error chain. A parsed `Target` needs none of this to print itself safely.

use percent_encoding::percent_decode_str;

use super::conninfo::url_scheme_len;

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
}
