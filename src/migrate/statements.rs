//! A migration file split into its statements the way Postgres reads them: `;` ends a statement
//! except inside quotes ('...', E'...', "..."), dollar quotes, comments (nested `/* */`), brackets,
//! and the `BEGIN ... END` body of a SQL-standard function (`BEGIN ATOMIC`).

use tokio_postgres::GenericClient;

/// Where the statement of `sql` that fails starts (line, column), found by running the file's
/// statements one by one in a transaction that is then rolled back: Postgres gives no position
/// for errors raised while a statement runs (a permission denied, a failed ALTER inside a DO
/// block), and refinery runs the file as one batch. None when every statement runs.
pub async fn locate_failure(client: &mut impl GenericClient, sql: &str) -> Option<(usize, usize)> {
    let tx = client.transaction().await.ok()?;
    let mut failed = None;
    for st in split(sql) {
        if tx.batch_execute(st.sql).await.is_err() {
            failed = Some((st.line, st.column));
            break;
        }
    }
    // Rolled back, whatever ran.
    let _ = tx.rollback().await;
    failed
}

/// One statement of a file: its text (without the `;`) and where its first token starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    pub sql: &'a str,
    /// 1-based line and column (in characters) of the statement's first token.
    pub line: usize,
    pub column: usize,
}

/// The file's statements, in order; comments and blanks between them belong to none.
pub fn split(sql: &str) -> Vec<Statement<'_>> {
    let mut s = Scanner {
        text: sql,
        pos: 0,
        depth: 0,
        words: Vec::new(),
        atomic: 0,
    };
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    // Lines are counted once over the file, from one statement's start to the next (counting
    // from the top for each was quadratic: 250 ms on a 10,000-line migration).
    let mut at = Cursor::default();
    while let Some(c) = s.peek() {
        if s.skip_comment() {
            continue;
        }
        if c.is_whitespace() {
            s.bump();
            continue;
        }
        if c == ';' && s.depth == 0 && s.atomic == 0 {
            if let Some(b) = start.take() {
                out.push(at.statement(sql, b, s.pos));
            }
            s.words.clear();
            s.bump();
            continue;
        }
        start.get_or_insert(s.pos);
        s.token();
    }
    if let Some(b) = start {
        out.push(at.statement(sql, b, sql.len()));
    }
    out
}

/// Where the previous statement started: its byte offset, its 0-based line, and the offset of
/// that line's start.
#[derive(Default)]
struct Cursor {
    pos: usize,
    line: usize,
    line_start: usize,
}

impl Cursor {
    /// The statement from `start` to `end`, located by counting lines since the previous one.
    fn statement<'a>(&mut self, text: &'a str, start: usize, end: usize) -> Statement<'a> {
        let between = &text[self.pos..start];
        self.line += between.matches('\n').count();
        if let Some(i) = between.rfind('\n') {
            self.line_start = self.pos + i + 1;
        }
        self.pos = start;
        Statement {
            sql: text[start..end].trim_end(),
            line: self.line + 1,
            column: text[self.line_start..start].chars().count() + 1,
        }
    }
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    /// Open brackets.
    depth: usize,
    /// The statement's first words, upper-cased (enough to know a CREATE FUNCTION).
    words: Vec<String>,
    /// Open `BEGIN` / `CASE` blocks inside a SQL-standard function body.
    atomic: usize,
}

impl Scanner<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    /// Skip a `--` or (nested) `/* */` comment at the cursor; false when there is none.
    fn skip_comment(&mut self) -> bool {
        if self.rest().starts_with("--") {
            self.pos = self
                .rest()
                .find('\n')
                .map_or(self.text.len(), |i| self.pos + i);
            return true;
        }
        if !self.rest().starts_with("/*") {
            return false;
        }
        let mut nesting = 0;
        while !self.rest().is_empty() {
            if self.rest().starts_with("/*") {
                nesting += 1;
                self.pos += 2;
            } else if self.rest().starts_with("*/") {
                nesting -= 1;
                self.pos += 2;
                if nesting == 0 {
                    break;
                }
            } else {
                self.bump();
            }
        }
        true
    }

    /// Consume one token: a quoted string or identifier, a dollar-quoted string, a word, or one
    /// character.
    fn token(&mut self) {
        let rest = self.rest();
        let c = rest.chars().next().unwrap_or(' ');
        let escaped = rest.len() > 1 && matches!(c, 'e' | 'E') && rest[1..].starts_with('\'');
        if escaped {
            self.pos += 1;
            self.quoted('\'', true);
        } else if c == '\'' || c == '"' {
            self.quoted(c, false);
        } else if let Some(tag) = dollar_tag(rest) {
            let body = &rest[tag.len()..];
            let end = body
                .find(tag)
                .map_or(rest.len(), |i| tag.len() + i + tag.len());
            self.pos += end;
        } else if c.is_alphabetic() || c == '_' {
            let len = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
                .unwrap_or(rest.len());
            let word = rest[..len].to_ascii_uppercase();
            self.pos += len;
            self.word(word);
        } else {
            match c {
                '(' | '[' => self.depth += 1,
                ')' | ']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            self.bump();
        }
    }

    /// A string or quoted identifier from its opening quote; a doubled quote is one character,
    /// and with `backslash` (E'...') a backslash escapes the next character.
    fn quoted(&mut self, quote: char, backslash: bool) {
        self.bump();
        while let Some(c) = self.peek() {
            self.bump();
            if backslash && c == '\\' {
                self.bump();
            } else if c == quote {
                if self.peek() == Some(quote) {
                    self.bump();
                } else {
                    return;
                }
            }
        }
    }

    /// Track `BEGIN ... END` in the body of a `CREATE [OR REPLACE] FUNCTION|PROCEDURE`, as psql
    /// does: there `;` ends the body's statements, not the CREATE.
    fn word(&mut self, word: String) {
        let routine = self.words.first().is_some_and(|w| w == "CREATE")
            && self
                .words
                .iter()
                .any(|w| w == "FUNCTION" || w == "PROCEDURE");
        if routine {
            match word.as_str() {
                "BEGIN" | "CASE" => self.atomic += 1,
                "END" => self.atomic = self.atomic.saturating_sub(1),
                _ => {}
            }
        }
        if self.words.len() < 8 {
            self.words.push(word);
        }
    }
}

/// The `$tag$` opening a dollar-quoted string at the start of `s` (`$$` or `$name$`), if any.
fn dollar_tag(s: &str) -> Option<&str> {
    let body = s.strip_prefix('$')?;
    let end = body.find('$')?;
    let tag = &body[..end];
    let valid = tag
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_alphabetic() || (i > 0 && c.is_ascii_digit()));
    valid.then(|| &s[..end + 2])
}

#[cfg(test)]
mod tests {
    use super::split;

    fn texts(sql: &str) -> Vec<(&str, usize, usize)> {
        split(sql)
            .into_iter()
            .map(|s| (s.sql, s.line, s.column))
            .collect()
    }

    #[test]
    fn semicolons_in_quotes_comments_and_bodies_do_not_split() {
        let sql = "-- a; comment\nSELECT 'a;b', E'c\\';d', \"e;f\";\n/* x; /* nested; */ y; */ SELECT $$;$$, $t$ $$; $t$;\n  DO $tc$\nBEGIN\n    PERFORM 1;\nEND\n$tc$;\nSELECT (1;2)";
        assert_eq!(
            texts(sql),
            vec![
                ("SELECT 'a;b', E'c\\';d', \"e;f\"", 2, 1),
                ("SELECT $$;$$, $t$ $$; $t$", 3, 27),
                ("DO $tc$\nBEGIN\n    PERFORM 1;\nEND\n$tc$", 4, 3),
                ("SELECT (1;2)", 9, 1),
            ]
        );
    }

    #[test]
    fn sql_standard_function_bodies_stay_whole() {
        let sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;\nSELECT 3;";
        let got = texts(sql);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].0.ends_with("SELECT 2; END"));
        assert_eq!(got[1], ("SELECT 3", 2, 1));
    }

    #[test]
    fn positions_count_characters_and_empty_statements_are_none() {
        assert_eq!(
            texts("é; ;\n\tSELECT 1"),
            vec![("é", 1, 1), ("SELECT 1", 2, 2)]
        );
        assert_eq!(texts("SELECT $1, a$b"), vec![("SELECT $1, a$b", 1, 1)]);
    }
}
