//! Non-transactional migrations (`-- tenantctl: no-transaction` among the leading comments): index
//! builds and drops `CONCURRENTLY`, which Postgres refuses inside a transaction block. `migrate` runs their
//! statements one by one in autocommit, on its session (advisory lock, lock_timeout,
//! statement_timeout, pinned search_path), checks each index it builds is valid, then records the
//! migration through refinery (fake target: refinery's own row and checksum). The scratch replays
//! run the same statements without `CONCURRENTLY`, inside their transaction.

use std::ops::Range;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use refinery::Migration;
use tokio_postgres::Client;

use super::statements::split;
use crate::sqlgen;

/// One statement of a non-transactional migration, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The statement as written (without the `;`).
    pub sql: String,
    pub line: usize,
    pub column: usize,
    /// Byte range of `CONCURRENTLY` in `sql`.
    pub keyword: Range<usize>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS index ON [ONLY] table ...`: the index
    /// name (unquoted) and the table as written (for `to_regclass`).
    Create {
        index: String,
        table: String,
    },
    Drop,
}

/// Whether refinery's migration `m` is a non-transactional one.
pub fn is_marked(m: &Migration) -> bool {
    sqlgen::is_no_transaction(m.sql().unwrap_or_default())
}

/// The statements of a marked migration, or the first one that is not allowed there, as an error
/// naming `file:line:column`.
pub fn parse(file: &Path, sql: &str) -> Result<Vec<Step>> {
    split(sql)
        .into_iter()
        .map(|st| {
            parse_statement(st.sql).map(|(keyword, kind)| Step {
                sql: st.sql.to_string(),
                line: st.line,
                column: st.column,
                keyword,
                kind,
            }).ok_or_else(|| anyhow!(
                "migration {}:{}:{} is marked `{}` and may hold only CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS and DROP INDEX CONCURRENTLY IF EXISTS statements; nothing was applied\n  \
                 hint: move this statement to a migration of its own (`tenantctl new NAME`), which runs in a transaction",
                file.display(), st.line, st.column, sqlgen::NO_TRANSACTION_MARKER
            ))
        })
        .collect()
}

/// Refuse (before anything runs) a pending marked migration holding another statement.
pub fn check(dir: &Path, pending: &[Migration]) -> Result<()> {
    for m in pending.iter().filter(|m| is_marked(m)) {
        parse(&dir.join(format!("{m}.sql")), m.sql().unwrap_or_default())?;
    }
    Ok(())
}

/// What a replay inside a transaction runs for `m`: a marked migration's statements without
/// `CONCURRENTLY`; any other migration as written.
pub fn in_transaction(dir: &Path, m: &Migration) -> Result<String> {
    let sql = m.sql().unwrap_or_default();
    if !sqlgen::is_no_transaction(sql) {
        return Ok(sql.to_string());
    }
    let steps = parse(&dir.join(format!("{m}.sql")), sql)?;
    Ok(steps
        .iter()
        .map(|s| {
            format!(
                "{};\n",
                sqlgen::without_concurrently(&s.sql, s.keyword.clone())
            )
        })
        .collect())
}

/// A word or quoted identifier of a statement's head: its text as written, its byte range.
struct Word<'a> {
    raw: &'a str,
    at: Range<usize>,
}

impl Word<'_> {
    fn is(&self, keyword: &str) -> bool {
        self.raw.eq_ignore_ascii_case(keyword)
    }
    /// The identifier it names: folded to lower case, or unquoted.
    fn ident(&self) -> String {
        match self.raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(q) => q.replace("\"\"", "\""),
            None => self.raw.to_lowercase(),
        }
    }
}

/// The statement's leading words, comments skipped, up to the first character that is neither
/// part of a word, a quoted identifier nor a `.`; dots are kept as words of their own.
fn head(sql: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    let b = sql.as_bytes();
    while i < b.len() {
        let rest = &sql[i..];
        let c = rest.chars().next().unwrap_or(' ');
        let len = if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        } else if rest.starts_with("--") {
            i += rest.find('\n').unwrap_or(rest.len());
            continue;
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
            continue;
        } else if c == '"' {
            let mut end = 1;
            loop {
                match rest[end..].find('"') {
                    Some(j) if rest[end + j + 1..].starts_with('"') => end += j + 2,
                    Some(j) => break end + j + 1,
                    None => break rest.len(),
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            rest.find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
                .unwrap_or(rest.len())
        } else if c == '.' {
            1
        } else {
            break;
        };
        out.push(Word {
            raw: &rest[..len],
            at: i..i + len,
        });
        i += len;
    }
    out
}

/// The words of a statement's head, read from the left.
struct Cur<'w, 'a> {
    w: &'w [Word<'a>],
    i: usize,
}

impl Cur<'_, '_> {
    fn eat(&mut self, keyword: &str) -> bool {
        let hit = self.w.get(self.i).is_some_and(|x| x.is(keyword));
        self.i += usize::from(hit);
        hit
    }
    fn eat_all(&mut self, keywords: &[&str]) -> bool {
        keywords.iter().all(|k| self.eat(k))
    }
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name ON [ONLY] table ...` or
/// `DROP INDEX CONCURRENTLY IF EXISTS name`: where `CONCURRENTLY` is, and what it does.
fn parse_statement(sql: &str) -> Option<(Range<usize>, Kind)> {
    let w = head(sql);
    let mut c = Cur { w: &w, i: 0 };
    if c.eat("DROP") {
        if !c.eat_all(&["INDEX", "CONCURRENTLY"]) {
            return None;
        }
        let keyword = w[c.i - 1].at.clone();
        if !c.eat_all(&["IF", "EXISTS"]) {
            return None;
        }
        // One index (CONCURRENTLY drops only one), nothing after its name.
        let end = qualified_end(&w, c.i)?;
        let rest = sql[w[end - 1].at.end..].trim();
        return rest.is_empty().then_some((keyword, Kind::Drop));
    }
    if !c.eat("CREATE") {
        return None;
    }
    c.eat("UNIQUE");
    if !c.eat_all(&["INDEX", "CONCURRENTLY"]) {
        return None;
    }
    let keyword = w[c.i - 1].at.clone();
    if !c.eat_all(&["IF", "NOT", "EXISTS"]) || w.get(c.i)?.raw == "." {
        return None;
    }
    let index = w.get(c.i)?.ident();
    c.i += 1;
    if !c.eat("ON") {
        return None;
    }
    c.eat("ONLY");
    let start = c.i;
    let end = qualified_end(&w, start)?;
    let table = sql[w[start].at.start..w[end - 1].at.end].to_string();
    // The column list (or USING method) must follow: the head stops at it.
    let after = sql[w[end - 1].at.end..].trim_start();
    let method = w.get(end).is_some_and(|x| x.is("USING"));
    (after.starts_with('(') || method).then_some((keyword, Kind::Create { index, table }))
}

/// The index after a possibly qualified name starting at `i` (`a`, `a.b`, `a.b.c`).
fn qualified_end(w: &[Word], mut i: usize) -> Option<usize> {
    let name = |x: &Word| x.raw != "." && !x.raw.is_empty();
    if !name(w.get(i)?) {
        return None;
    }
    i += 1;
    while w.get(i).is_some_and(|x| x.raw == ".") && w.get(i + 1).is_some_and(name) {
        i += 2;
    }
    Some(i)
}

/// Whether index `name` of `table` exists and is valid: None when there is no such index.
const INDEX_VALID: &str = "SELECT i.indisvalid, n.nspname::text \
     FROM pg_catalog.pg_index i \
     JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE i.indrelid = pg_catalog.to_regclass($1) AND c.relname = $2";

async fn index_state(client: &Client, table: &str, index: &str) -> Result<Option<(bool, String)>> {
    let row = client.query_opt(INDEX_VALID, &[&table, &index]).await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Run a marked migration's statements one by one, outside any transaction: an INVALID index of
/// the same name (the leftover of an interrupted build, which IF NOT EXISTS would keep) is dropped
/// and built again; every index built must end valid. `stays`: where the database stands, for the
/// error. Nothing is recorded here.
pub async fn run(client: &mut Client, file: &Path, sql: &str, stays: &str) -> Result<()> {
    let steps = parse(file, sql)?;
    for (n, step) in steps.iter().enumerate() {
        let fail = |e: &tokio_postgres::Error| {
            let earlier = if n == 0 {
                String::new()
            } else {
                format!(": the {n} statement(s) before this one completed, and the rerun skips what they built (IF NOT EXISTS)")
            };
            anyhow!(
                "{}\n  hint: fix the cause (a larger lock_timeout or statement_timeout in tenantctl.toml for a long build, duplicates for a unique index), then run `tenantctl migrate` again{earlier}; an index this statement left INVALID is dropped and built again",
                super::runner::failure_text(file, Some((step.line, step.column)), e, stays)
            )
        };
        if let Kind::Create { index, table } = &step.kind {
            if let Some((false, schema)) = index_state(client, table, index)
                .await
                .map_err(|e| anyhow!(e))?
            {
                eprintln!(
                    "note: index {schema}.{index} is INVALID (left by an interrupted CONCURRENTLY build): dropping it and building it again"
                );
                let drop = sqlgen::drop_index_concurrently(&schema, index);
                client.batch_execute(&drop).await.map_err(|e| fail(&e))?;
            }
        }
        client
            .batch_execute(&step.sql)
            .await
            .map_err(|e| fail(&e))?;
        if let Kind::Create { index, table } = &step.kind {
            let state = index_state(client, table, index).await?;
            if state.as_ref().map(|s| s.0) != Some(true) {
                let what = if state.is_some() {
                    "is not valid"
                } else {
                    "does not exist (another relation has its name)"
                };
                bail!(
                    "migration {}:{}:{} failed: index {index} on {table} {what} after the build; {}\n  \
                     hint: look at the index (`\\d {table}` in psql), fix the cause, then run `tenantctl migrate` again",
                    file.display(), step.line, step.column, stays.trim_start_matches("; ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> Option<(String, Kind)> {
        parse_statement(sql).map(|(r, k)| (sql[r].to_string(), k))
    }

    #[test]
    fn only_guarded_concurrent_index_statements_parse() {
        let create = |index: &str, table: &str| Kind::Create {
            index: index.into(),
            table: table.into(),
        };
        assert_eq!(
            kind("CREATE UNIQUE INDEX /* c */ concurrently IF NOT EXISTS \"M\"\"x\" ON ONLY \"public\".\"members\" (a)"),
            Some(("concurrently".into(), create("M\"x", "\"public\".\"members\"")))
        );
        assert_eq!(
            kind("create index concurrently if not exists m_idx on members using gin (a)"),
            Some(("concurrently".into(), create("m_idx", "members")))
        );
        assert_eq!(
            kind("DROP INDEX CONCURRENTLY IF EXISTS public.m_idx"),
            Some(("CONCURRENTLY".into(), Kind::Drop))
        );
        for bad in [
            "CREATE INDEX m_idx ON members (a)",
            "CREATE INDEX CONCURRENTLY m_idx ON members (a)",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ON members (a)",
            "DROP INDEX CONCURRENTLY m_idx",
            "DROP INDEX CONCURRENTLY IF EXISTS a, b",
            "DROP INDEX CONCURRENTLY IF EXISTS a CASCADE",
            "DROP TABLE members",
            "UPDATE members SET a = 1",
        ] {
            assert_eq!(kind(bad), None, "{bad}");
        }
    }
}
