//! The checks on what a policy file writes as text: names, SQL expressions, column types, and
//! the names tenantctl derives from them.

use std::ops::Range;

use toml::Spanned;

use crate::ident::{Ident, IdentError};
use crate::policy::diagnostics::Sink;

impl Sink<'_> {
    /// Validate a name written in a policy file; on error, record it and return None.
    pub(crate) fn name(&mut self, name: &Spanned<String>, what: &str) -> Option<String> {
        match Ident::plain(name.get_ref()) {
            Ok(ident) => Some(ident.as_str().to_string()),
            Err(e) => {
                let hint = match e {
                    IdentError::TooLong(..) => {
                        "shorten the name: Postgres would silently truncate it"
                    }
                    IdentError::Empty => "give it a name",
                    _ => "use lowercase letters, digits and underscores, e.g. gym_members",
                };
                self.err(name.span(), format!("invalid {what} name: {e}"), hint);
                None
            }
        }
    }

    /// Check a raw SQL expression written in a policy file (USING, WITH CHECK, DEFAULT, CHECK).
    pub(crate) fn expr(&mut self, expr: &Spanned<String>, what: &str) -> Option<String> {
        match check_expression(expr.get_ref()) {
            Ok(()) => Some(expr.get_ref().trim().to_string()),
            Err(why) => {
                self.err(
                    expr.span(),
                    format!("invalid {what} expression: {why}"),
                    "write a single SQL expression, without `;` or comments",
                );
                None
            }
        }
    }
}

impl Sink<'_> {
    /// Check a view's query: one SELECT (or WITH ... SELECT), scanned like an expression.
    pub(crate) fn query(&mut self, query: &Spanned<String>) -> Option<String> {
        let text = query.get_ref().trim();
        let first = text.split_whitespace().next().unwrap_or("");
        let why = if !first.eq_ignore_ascii_case("select") && !first.eq_ignore_ascii_case("with") {
            Err("it does not start with SELECT or WITH".to_string())
        } else {
            check_expression(text)
        };
        match why {
            Ok(()) => Some(text.to_string()),
            Err(why) => {
                self.err(
                    query.span(),
                    format!("invalid view query: {why}"),
                    "write one SELECT statement, without `;` or comments",
                );
                None
            }
        }
    }
}

/// A policy expression is one SQL expression: no statement separator and no comment outside
/// string literals or quoted identifiers, balanced quotes and parentheses.
fn check_expression(expr: &str) -> Result<(), String> {
    if expr.trim().is_empty() {
        return Err("it is empty".into());
    }
    if expr.contains('\0') {
        return Err("it contains a NUL byte".into());
    }
    // In E'...' strings (and with standard_conforming_strings off) a backslash escapes the
    // quote, so the string would end where the scan below thinks it goes on.
    if expr.contains('\\') {
        return Err("it contains a backslash (escape strings are not allowed)".into());
    }
    let mut chars = expr.chars().peekable();
    let mut depth = 0i32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let mut closed = false;
                while let Some(d) = chars.next() {
                    if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            continue;
                        }
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(format!("unterminated {c} quote"));
                }
            }
            ';' => return Err("it contains `;`".into()),
            '-' if chars.peek() == Some(&'-') => return Err("it contains a `--` comment".into()),
            '/' if chars.peek() == Some(&'*') => return Err("it contains a `/*` comment".into()),
            '$' if chars.peek().is_some_and(|d| *d == '$' || d.is_alphabetic()) => {
                return Err("dollar quoting is not allowed in an expression".into())
            }

            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced `)`".into());
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced `(`".into());
    }
    Ok(())
}

/// Multi-word type names Postgres knows; any other type is a single word.
const MULTI_WORD_TYPES: &[&str] = &[
    "double precision",
    "character varying",
    "bit varying",
    "timestamp with time zone",
    "timestamp without time zone",
    "time with time zone",
    "time without time zone",
];

/// A column type, and nothing else: one type name (or a known multi-word one), an optional
/// `(n)` or `(n, m)` modifier, and optional `[]`. Anything more (`uuid references gyms(id)`,
/// `text default ...`, `int generated always as ...`) would smuggle a column constraint past the
/// compiler, so it is refused rather than quoted.
pub(crate) fn check_type(ty: &str) -> Result<String, String> {
    let refuse = || format!("{ty:?} is not a type name");
    let mut t = ty.trim().to_ascii_lowercase();
    let mut arrays = String::new();
    while let Some(rest) = t.strip_suffix("[]") {
        arrays.push_str("[]");
        t = rest.trim_end().to_string();
    }
    // The modifier may sit after the first word (`timestamp(3) with time zone`) or at the end.
    let mut modifier = String::new();
    if let Some(open) = t.find('(') {
        let close = t[open..].find(')').map(|c| open + c).ok_or_else(refuse)?;
        let inner: Vec<&str> = t[open + 1..close].split(',').map(str::trim).collect();
        let numeric =
            |p: &&str| !p.is_empty() && p.len() <= 6 && p.chars().all(|c| c.is_ascii_digit());
        if inner.is_empty() || inner.len() > 2 || !inner.iter().all(numeric) {
            return Err(refuse());
        }
        modifier = format!("({})", inner.join(","));
        t = format!("{} {}", &t[..open], &t[close + 1..]);
    }
    let words: Vec<&str> = t.split_whitespace().collect();
    let name = words.join(" ");
    let word_ok = |w: &str| {
        w.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let known = match words.len() {
        0 => false,
        1 => word_ok(words[0]),
        _ => MULTI_WORD_TYPES.contains(&name.as_str()),
    };
    if !known || t.contains('(') || t.contains(')') {
        return Err(refuse());
    }
    Ok(match (words.first(), modifier.is_empty()) {
        (_, true) => format!("{name}{arrays}"),
        // `timestamp(3) with time zone`: the modifier goes after the first word.
        (Some(first), false) if words.len() > 1 && name.starts_with("time") => {
            format!("{first}{modifier}{}{arrays}", &name[first.len()..])
        }
        _ => format!("{name}{modifier}{arrays}"),
    })
}

/// A name tenantctl derives (`<table>_<column>_fkey`) must still be a valid identifier.
pub(crate) fn generated_name_ok(sink: &mut Sink<'_>, name: &str, span: Range<usize>) -> bool {
    match Ident::new(name) {
        Ok(_) => true,
        Err(e) => {
            sink.err(
                span,
                format!("generated name is invalid: {e}"),
                "shorten the table or column name",
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert!(check_expression("gym_id = (SELECT tenantctl.current_gym_id())").is_ok());
        assert!(check_expression("status IN ('a;b', 'it''s')").is_ok());
        assert!(check_expression("\"weird;name\" = 1").is_ok());
        for bad in [
            "true; DROP TABLE gyms",
            "true -- x",
            "true /* x */",
            "(true",
            "true)",
            "'open",
            "",
            "$$x$$",
        ] {
            assert!(check_expression(bad).is_err(), "{bad}");
        }
        // In E'' strings `\'` does not end the string, so a scan that thinks it does would let
        // `;` through (found in review): backslashes are refused outright.
        for bad in [
            r#"E'\' ' IS NOT NULL); GRANT "platform_admin" TO "gym_app"; --'"#,
            r#"'\' ' IS NOT NULL); SELECT 1; --'"#,
            r#"name = E'a\nb'"#,
        ] {
            let err = check_expression(bad).unwrap_err();
            assert!(err.contains("backslash"), "{bad}: {err}");
        }
    }

    #[test]
    fn types() {
        assert_eq!(check_type("NUMERIC(10, 2)").unwrap(), "numeric(10,2)");
        assert_eq!(
            check_type("character varying(20)").unwrap(),
            "character varying(20)"
        );
        assert_eq!(
            check_type("timestamp(3) with time zone").unwrap(),
            "timestamp(3) with time zone"
        );
        assert_eq!(check_type("int[][]").unwrap(), "int[][]");
        assert_eq!(
            check_type("timestamp  with time zone").unwrap(),
            "timestamp with time zone"
        );
        assert_eq!(check_type("text[]").unwrap(), "text[]");
        for bad in [
            "text; drop",
            "1x",
            "text)",
            "int4 -- x",
            "",
            "uuid references coaches(id) on delete cascade",
            "uuid references coaches",
            "text default 'x'",
            "int generated always as (1) stored",
            "text check (true)",
            "numeric(a)",
            "numeric(1,2,3)",
            "text collate \"C\"",
            "public.text",
        ] {
            assert!(check_type(bad).is_err(), "{bad}");
        }
    }
}
