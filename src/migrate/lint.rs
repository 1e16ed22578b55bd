//! What a migration locks, and for how long: a lint of the file's statements (split as Postgres
//! reads them), with rule ids following squawk's where one applies. A table the file itself
//! creates is new and empty, so what a statement does to it locks nothing anyone waits on; every
//! other table is taken to be live and filled. Tables are matched by name (the last part of a
//! qualified name).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::statements::{split, Statement};

/// One finding: a statement that takes a lock others wait on for longer than a moment, or that
/// fails on a filled table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule id (squawk's name where squawk has the rule).
    pub rule: &'static str,
    /// 1-based line and column of the statement's first token.
    pub line: usize,
    pub column: usize,
    /// The table the statement works on, as written.
    pub table: String,
    /// The lock it takes, and on what.
    pub lock: &'static str,
    /// For how long.
    pub held: &'static str,
    /// What to write instead.
    pub hint: &'static str,
}

/// A rule: its id, the lock, how long it is held, and the safe alternative.
struct Rule {
    id: &'static str,
    lock: &'static str,
    held: &'static str,
    hint: &'static str,
}

const CREATE_INDEX: Rule = Rule {
    id: "require-concurrent-index-creation",
    lock: "SHARE on the table: blocks INSERT, UPDATE, DELETE",
    held: "while the whole index is built (a full scan and sort)",
    hint: "CREATE INDEX CONCURRENTLY, outside a transaction",
};
const DROP_INDEX: Rule = Rule {
    id: "require-concurrent-index-deletion",
    lock: "ACCESS EXCLUSIVE on the index's table: blocks reads and writes",
    held: "briefly, but queued behind every running query on the table",
    hint: "DROP INDEX CONCURRENTLY, outside a transaction",
};
const INDEX_IN_TX: Rule = Rule {
    id: "ban-concurrent-index-creation-in-transaction",
    lock: "none taken: Postgres refuses CONCURRENTLY inside a transaction block",
    held: "the migration fails (refinery runs each file in one transaction)",
    hint: "keep CONCURRENTLY out of a transactional migration",
};
const FOREIGN_KEY: Rule = Rule {
    id: "adding-foreign-key-constraint",
    lock: "SHARE ROW EXCLUSIVE on both tables: blocks writes to either",
    held: "while every existing row is checked against the referenced table",
    hint: "ADD ... NOT VALID, then VALIDATE CONSTRAINT in a later statement",
};
const CHECK: Rule = Rule {
    id: "constraint-missing-not-valid",
    lock: "ACCESS EXCLUSIVE on the table: blocks reads and writes",
    held: "while every existing row is checked (a full scan)",
    hint: "ADD ... NOT VALID, then VALIDATE CONSTRAINT in a later statement",
};
const VALIDATE_IN_TX: Rule = Rule {
    id: "constraint-missing-not-valid",
    lock:
        "the lock its ADD ... NOT VALID took earlier in this transaction (refinery runs each file \
           in one), ACCESS EXCLUSIVE for a check",
    held: "while every existing row is checked: NOT VALID gains nothing in the same transaction",
    hint: "VALIDATE CONSTRAINT in a later migration, after the one that adds it has committed",
};
const UNIQUE: Rule = Rule {
    id: "disallowed-unique-constraint",
    lock: "ACCESS EXCLUSIVE on the table: blocks reads and writes",
    held: "while the unique index is built (a full scan and sort)",
    hint: "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX",
};
const PRIMARY_KEY: Rule = Rule {
    id: "adding-serial-primary-key-field",
    lock: "ACCESS EXCLUSIVE on the table: blocks reads and writes",
    held: "while the primary key's index is built (a full scan and sort)",
    hint: "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY USING INDEX",
};
const SET_NOT_NULL: Rule = Rule {
    id: "adding-not-nullable-field",
    lock: "ACCESS EXCLUSIVE on the table: blocks reads and writes",
    held: "while every existing row is checked for NULL (a full scan)",
    hint: "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL",
};
const REQUIRED_FIELD: Rule = Rule {
    id: "adding-required-field",
    lock: "ACCESS EXCLUSIVE on the table: blocks reads and writes",
    held: "briefly, then the statement fails on a table that has rows",
    hint: "add the column nullable or with a non-volatile DEFAULT",
};
const COLUMN_TYPE: Rule = Rule {
    id: "changing-column-type",
    lock: "ACCESS EXCLUSIVE on the table: blocks reads and writes",
    held: "while the table and its indexes are rewritten (unless the type is binary-compatible)",
    hint: "add a new column, backfill it in batches, then switch over",
};

/// The findings of each of `files`, migrations applied in this order: the `col IS NOT NULL`
/// checks an earlier one adds or validates are known to the later ones (each runs in a
/// transaction of its own, so only what a file itself adds is still under the ADD's lock).
pub fn lint_files(files: &[&str]) -> Vec<Vec<Finding>> {
    let mut state = FileState::default();
    let mut all = Vec::new();
    for sql in files {
        state.created_tables.clear();
        state.created_indexes.clear();
        state.added.clear();
        state.no_transaction = crate::sqlgen::is_no_transaction(sql);
        let mut out = Vec::new();
        for st in split(sql).into_iter().filter(|st| may_lock(st.sql)) {
            let toks = lex(st.sql);
            state.statement(&st, &toks, &mut out);
        }
        all.push(out);
    }
    all
}

/// Whether the statement is one `FileState::statement` looks at (CREATE TABLE or INDEX, DROP
/// INDEX, ALTER TABLE, judged by its first words): the others (functions, policies, grants, most
/// of a generated migration) are not lexed, which is most of the lint's time on a large file.
fn may_lock(sql: &str) -> bool {
    if sql.starts_with("--") || sql.starts_with("/*") {
        return true;
    }
    let mut words = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    let is = |w: &str, any: &[&str]| any.iter().any(|k| w.eq_ignore_ascii_case(k));
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    is(first, &["ALTER", "DROP"])
        || (is(first, &["CREATE"]) && is(second, &["TABLE", "UNLOGGED", "TEMP", "UNIQUE", "INDEX"]))
}

/// What earlier statements of the file did: tables it created, indexes it created, checks of the
/// form `col IS NOT NULL` it added (by name), and which of those it validated.
#[derive(Default)]
struct FileState {
    created_tables: HashSet<String>,
    created_indexes: HashSet<String>,
    /// Constraints the file adds (so still under the ADD's lock until it commits).
    added: HashSet<String>,
    /// Constraint name -> (table, column).
    not_null_checks: HashMap<String, (String, String)>,
    /// (table, column) proven NOT NULL by a validated check.
    proven: HashSet<(String, String)>,
    /// The file is a non-transactional migration (`-- tenantctl: no-transaction`): CONCURRENTLY
    /// is what it is for.
    no_transaction: bool,
}

impl FileState {
    fn statement(&mut self, st: &Statement<'_>, toks: &[Tok], out: &mut Vec<Finding>) {
        let mut found = |rule: &Rule, table: &str| {
            out.push(Finding {
                rule: rule.id,
                line: st.line,
                column: st.column,
                table: table.to_string(),
                lock: rule.lock,
                held: rule.held,
                hint: rule.hint,
            })
        };
        let mut c = Cursor { toks, at: 0 };
        if c.eat_all(&["CREATE", "TABLE"])
            || c.eat_all(&["CREATE", "UNLOGGED", "TABLE"])
            || c.eat_all(&["CREATE", "TEMP", "TABLE"])
        {
            c.eat_all(&["IF", "NOT", "EXISTS"]);
            if let Some(name) = c.name() {
                self.created_tables.insert(name);
            }
        } else if c.eat("CREATE") {
            c.eat("UNIQUE");
            if !c.eat("INDEX") {
                return;
            }
            let concurrently = c.eat("CONCURRENTLY");
            c.eat_all(&["IF", "NOT", "EXISTS"]);
            if !c.is("ON") {
                if let Some(index) = c.name() {
                    self.created_indexes.insert(index);
                }
            }
            c.eat("ON");
            c.eat("ONLY");
            let table = c.name().unwrap_or_default();
            if concurrently {
                // Refused in a transaction; what a non-transactional migration is for.
                if !self.no_transaction {
                    found(&INDEX_IN_TX, &table);
                }
            } else if !self.created_tables.contains(&table) {
                found(&CREATE_INDEX, &table);
            }
        } else if c.eat_all(&["DROP", "INDEX"]) {
            let concurrently = c.eat("CONCURRENTLY");
            c.eat_all(&["IF", "EXISTS"]);
            let index = c.name().unwrap_or_default();
            if !concurrently && !self.created_indexes.contains(&index) {
                found(&DROP_INDEX, &index);
            }
        } else if c.eat_all(&["ALTER", "TABLE"]) {
            c.eat_all(&["IF", "EXISTS"]);
            c.eat("ONLY");
            let Some(table) = c.name() else { return };
            if self.created_tables.contains(&table) {
                return;
            }
            for action in c.rest().split(|t| t.is_punct(',')) {
                if let Some(rule) = self.action(&table, action) {
                    found(rule, &table);
                }
            }
        }
    }

    /// The rule one action of `ALTER TABLE table` breaks, if any; remembers the NOT NULL checks
    /// it adds and validates.
    fn action(&mut self, table: &str, action: &[Tok]) -> Option<&'static Rule> {
        let mut c = Cursor {
            toks: action,
            at: 0,
        };
        let not_valid = action
            .windows(2)
            .any(|w| w[0].is("NOT") && w[1].is("VALID"));
        if c.eat("ADD") {
            let constraint = c.eat("CONSTRAINT").then(|| c.name()).flatten();
            self.added.extend(constraint.clone());
            if c.is("FOREIGN") || c.is("REFERENCES") {
                return (!not_valid).then_some(&FOREIGN_KEY);
            }
            if c.eat("CHECK") {
                if let (Some(name), Some(column)) = (constraint, not_null_column(c.rest())) {
                    self.not_null_checks
                        .insert(name, (table.to_string(), column));
                }
                return (!not_valid).then_some(&CHECK);
            }
            if c.is("UNIQUE") || c.is("PRIMARY") {
                let using_index = action.iter().any(|t| t.is("USING"));
                let rule = if c.is("UNIQUE") {
                    &UNIQUE
                } else {
                    &PRIMARY_KEY
                };
                return (!using_index).then_some(rule);
            }
            c.eat("COLUMN");
            let required = action.windows(2).any(|w| w[0].is("NOT") && w[1].is("NULL"))
                && !action.iter().any(|t| t.is("DEFAULT") || t.is("GENERATED"));
            return required.then_some(&REQUIRED_FIELD);
        }
        if c.eat_all(&["VALIDATE", "CONSTRAINT"]) {
            let name = c.name()?;
            if let Some(proven) = self.not_null_checks.get(&name) {
                self.proven.insert(proven.clone());
            }
            return self.added.contains(&name).then_some(&VALIDATE_IN_TX);
        }
        if !c.eat("ALTER") {
            return None;
        }
        c.eat("COLUMN");
        let column = c.name()?;
        if c.eat_all(&["SET", "NOT", "NULL"]) {
            let proven = self.proven.contains(&(table.to_string(), column));
            return (!proven).then_some(&SET_NOT_NULL);
        }
        if c.eat("TYPE") || c.eat_all(&["SET", "DATA", "TYPE"]) {
            return Some(&COLUMN_TYPE);
        }
        None
    }
}

/// `(col IS NOT NULL)`: the column, when a check says just that.
fn not_null_column(toks: &[Tok]) -> Option<String> {
    let mut c = Cursor { toks, at: 0 };
    if !c.eat_punct('(') {
        return None;
    }
    let column = c.name()?;
    (c.eat_all(&["IS", "NOT", "NULL"]) && c.eat_punct(')')).then_some(column)
}

/// A token of a statement: a word (kept as written), a quoted identifier (unquoted), a literal,
/// or one punctuation character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Literal,
    Punct(char),
}

impl Tok {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
    fn is_punct(&self, p: char) -> bool {
        *self == Tok::Punct(p)
    }
    /// The identifier this token names: a word folds to lower case, a quoted one stays.
    fn ident(&self) -> Option<String> {
        match self {
            Tok::Word(w) => Some(w.to_lowercase()),
            Tok::Quoted(q) => Some(q.clone()),
            _ => None,
        }
    }
}

struct Cursor<'a> {
    toks: &'a [Tok],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn is(&self, keyword: &str) -> bool {
        self.toks.get(self.at).is_some_and(|t| t.is(keyword))
    }
    fn eat(&mut self, keyword: &str) -> bool {
        let hit = self.is(keyword);
        self.at += usize::from(hit);
        hit
    }
    fn eat_punct(&mut self, p: char) -> bool {
        let hit = self.toks.get(self.at).is_some_and(|t| t.is_punct(p));
        self.at += usize::from(hit);
        hit
    }
    /// All of `keywords` in a row, or nothing consumed.
    fn eat_all(&mut self, keywords: &[&str]) -> bool {
        let hit = keywords
            .iter()
            .enumerate()
            .all(|(i, k)| self.toks.get(self.at + i).is_some_and(|t| t.is(k)));
        if hit {
            self.at += keywords.len();
        }
        hit
    }
    /// A possibly qualified name; its last part.
    fn name(&mut self) -> Option<String> {
        let mut last = self.toks.get(self.at)?.ident()?;
        self.at += 1;
        while self.toks.get(self.at).is_some_and(|t| t.is_punct('.')) {
            last = self.toks.get(self.at + 1)?.ident()?;
            self.at += 2;
        }
        Some(last)
    }
    fn rest(&self) -> &'a [Tok] {
        &self.toks[self.at.min(self.toks.len())..]
    }
}

/// The tokens of one statement, comments skipped; commas inside brackets are hidden (a bracket's
/// content is kept, its commas become `Literal`) so that a top-level split on `,` gives the
/// actions of an ALTER TABLE.
fn lex(sql: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let rest = &sql[i..];
        if rest.starts_with("--") {
            while chars.next_if(|&(_, ch)| ch != '\n').is_some() {}
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(sql.len(), |e| i + e + 2);
            while chars.next_if(|&(j, _)| j < end).is_some() {}
        } else if c == '"' || c == '\'' {
            let mut text = String::new();
            while let Some((_, ch)) = chars.next() {
                if ch == c && chars.next_if(|&(_, n)| n == c).is_none() {
                    break;
                }
                text.push(ch);
            }
            out.push(if c == '"' {
                Tok::Quoted(text)
            } else {
                Tok::Literal
            });
        } else if c.is_alphabetic() || c == '_' {
            let mut word = c.to_string();
            while let Some((_, ch)) = chars.next_if(|&(_, ch)| ch.is_alphanumeric() || ch == '_') {
                word.push(ch);
            }
            out.push(Tok::Word(word));
        } else if !c.is_whitespace() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            let hidden = c == ',' && depth > 0;
            out.push(if hidden { Tok::Literal } else { Tok::Punct(c) });
        }
    }
    out
}

#[cfg(test)]
#[path = "lint_tests.rs"]
mod tests;
