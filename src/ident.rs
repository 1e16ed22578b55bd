//! Validated Postgres identifiers that always render quoted, and SQL literal quoting.

use std::fmt;

/// Postgres truncates identifiers longer than NAMEDATALEN - 1 bytes; we refuse them instead.
pub const MAX_IDENT_BYTES: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("an identifier cannot be empty")]
    Empty,
    #[error("identifier {0:?} is {1} bytes long; Postgres allows at most 63")]
    TooLong(String, usize),
    #[error("identifier {0:?} contains a NUL byte")]
    Nul(String),
    #[error(
        "name {0:?} may hold only lowercase letters, digits and underscores, and must not start with a digit"
    )]
    NotPlain(String),
}

/// A Postgres identifier: at most 63 bytes, no NUL. It can only be rendered quoted, so any name,
/// however hostile, is inert in generated SQL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

impl Ident {
    pub fn new(name: &str) -> Result<Ident, IdentError> {
        if name.is_empty() {
            return Err(IdentError::Empty);
        }
        if name.contains('\0') {
            return Err(IdentError::Nul(name.to_string()));
        }
        if name.len() > MAX_IDENT_BYTES {
            return Err(IdentError::TooLong(name.to_string(), name.len()));
        }
        Ok(Ident(name.to_string()))
    }

    /// The stricter rule for names written in policy files: lowercase ASCII letters, digits and `_`.
    /// Quoting would make other names safe too, but a quote or semicolon in a table name is far
    /// more often a mistake (or an attack on a careless consumer) than a wish.
    pub fn plain(name: &str) -> Result<Ident, IdentError> {
        let ident = Ident::new(name)?;
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(IdentError::NotPlain(name.to_string()));
        }
        Ok(ident)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Renders as a double-quoted identifier, with embedded quotes doubled.
impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&postgres_protocol::escape::escape_identifier(&self.0))
    }
}

/// Quote a value as an SQL string literal (E'' form when it holds a backslash).
pub fn literal(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}

/// Dollar-quote a body with a tag that does not occur in it, so the body cannot end the quote.
pub fn dollar_quote(body: &str) -> String {
    let mut tag = String::from("$tc$");
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$tc{n}$");
    }
    format!("{tag}{body}{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hostile_names() {
        let cases = [
            ("members", "\"members\""),
            ("Members", "\"Members\""),
            ("a\"b", "\"a\"\"b\""),
            ("x\"; DROP TABLE gyms; --", "\"x\"\"; DROP TABLE gyms; --\""),
            ("ünïcødé", "\"ünïcødé\""),
            ("with space", "\"with space\""),
        ];
        for (raw, quoted) in cases {
            assert_eq!(Ident::new(raw).unwrap().to_string(), quoted, "{raw}");
        }
    }

    #[test]
    fn rejects_empty_nul_and_long() {
        assert_eq!(Ident::new(""), Err(IdentError::Empty));
        assert!(matches!(Ident::new("a\0b"), Err(IdentError::Nul(_))));
        assert!(Ident::new(&"a".repeat(63)).is_ok());
        assert!(matches!(
            Ident::new(&"a".repeat(64)),
            Err(IdentError::TooLong(_, 64))
        ));
        // 32 two-byte characters are 64 bytes: the limit is bytes, not characters.
        assert!(matches!(
            Ident::new(&"é".repeat(32)),
            Err(IdentError::TooLong(_, 64))
        ));
    }

    #[test]
    fn plain_names_only_in_policy_files() {
        assert!(Ident::plain("gym_members2").is_ok());
        assert!(Ident::plain("_x").is_ok());
        for bad in ["2x", "Gyms", "a\"b", "a;b", "a b", "a-b", "a.b", "ä"] {
            assert!(
                matches!(Ident::plain(bad), Err(IdentError::NotPlain(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn literals_and_dollar_quotes_cannot_be_escaped() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), " E'a\\\\b'");
        assert_eq!(dollar_quote("SELECT 1"), "$tc$SELECT 1$tc$");
        let hostile = "x $tc$; DROP TABLE gyms; $tc$";
        let q = dollar_quote(hostile);
        assert!(q.starts_with("$tc1$") && q.ends_with("$tc1$"), "{q}");
    }
}
