//! Load and validate the TOML files in `policies/` into the compiled model, with file:line:column errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::ident::{Ident, IdentError};
use crate::model::{
    AdminBypass, Column, Command, Constraint, Grant, Index, OnDelete, Policy, Privilege, Role,
    Schema, Table, Tenancy,
};
use crate::settings::Project;

const DOCS_HINT: &str = "the policy format is described in docs/policy-format.md";

// ---------------------------------------------------------------------------------------------
// Raw TOML shapes. Unknown keys are rejected everywhere.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tenancy: Option<Spanned<RawTenancy>>,
    #[serde(default)]
    roles: BTreeMap<Spanned<String>, Spanned<RawRole>>,
    #[serde(default)]
    tables: BTreeMap<Spanned<String>, Spanned<RawTable>>,
    #[serde(default)]
    policies: Vec<Spanned<RawPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenancy {
    tenant_table: Spanned<String>,
    tenant_key: Option<Spanned<String>>,
    tenant_column: Option<Spanned<String>>,
    table_schema: Option<Spanned<String>>,
    helper_schema: Option<Spanned<String>>,
    context_setting: Option<Spanned<String>>,
    context_function: Option<Spanned<String>>,
    admin_bypass: Option<Spanned<String>>,
    owner_role: Option<Spanned<String>>,
    app_role: Option<Spanned<String>>,
    admin_role: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    login: bool,
    #[allow(dead_code)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    columns: Vec<Spanned<RawColumn>>,
    #[serde(default)]
    primary_key: Option<Spanned<String>>,
    #[serde(default)]
    unique: Vec<Spanned<Vec<String>>>,
    #[serde(default)]
    references: Vec<Spanned<RawReference>>,
    #[serde(default)]
    indexes: Vec<Spanned<RawIndex>>,
    #[serde(default)]
    isolation: Option<Spanned<String>>,
    #[serde(default)]
    grants: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>,
    #[allow(dead_code)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: Spanned<String>,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    #[serde(default)]
    nullable: bool,
    default: Option<Spanned<String>>,
    check: Option<Spanned<String>>,
    #[allow(dead_code)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    column: Spanned<String>,
    table: Spanned<String>,
    on_delete: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    columns: Spanned<Vec<String>>,
    #[serde(default)]
    unique: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    table: Spanned<String>,
    #[serde(default)]
    command: Option<Spanned<String>>,
    roles: Spanned<Vec<Spanned<String>>>,
    using: Option<Spanned<String>>,
    with_check: Option<Spanned<String>>,
    #[serde(default)]
    kind: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------
// Errors

/// One problem in one input file, located by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in the policy files (loading does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the policy files",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A TOML syntax or shape error, as `file:line:column: message` with a hint.
pub fn toml_error_message(path: &Path, text: &str, err: &toml::de::Error) -> String {
    let (line, column) = err.span().map_or((1, 1), |s| line_col(text, s.start));
    let message = err.message().trim().replace('\n', " ");
    let hint = if message.contains("unknown field") {
        format!("remove or rename the key; {DOCS_HINT}")
    } else if message.contains("missing field") {
        format!("add the key; {DOCS_HINT}")
    } else {
        "check the TOML syntax near this position".to_string()
    };
    PolicyError {
        file: path.to_path_buf(),
        line,
        column,
        message,
        hint: Some(hint),
    }
    .to_string()
}

/// Collects errors for one file, turning spans into positions.
struct Sink<'a> {
    file: &'a Path,
    text: &'a str,
    errors: &'a mut Vec<PolicyError>,
}

impl Sink<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        let hint: String = hint.into();
        self.errors.push(PolicyError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: (!hint.is_empty()).then_some(hint),
        });
    }

    /// Record where `key` is first declared; a second declaration is reported with both places
    /// and gives false.
    fn first_declaration<K: Ord>(
        &mut self,
        seen: &mut BTreeMap<K, Seen>,
        key: K,
        span: Range<usize>,
        what: &str,
        hint: &str,
    ) -> bool {
        if let Some(prev) = seen.get(&key) {
            let message = format!(
                "{what} is declared twice (first at {}:{})",
                prev.file.display(),
                prev.line
            );
            self.err(span, message, hint);
            return false;
        }
        let (line, _) = line_col(self.text, span.start);
        seen.insert(
            key,
            Seen {
                file: self.file.to_path_buf(),
                line,
            },
        );
        true
    }

    /// Validate a name written in a policy file; on error, record it and return None.
    fn name(&mut self, name: &Spanned<String>, what: &str) -> Option<String> {
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
    fn expr(&mut self, expr: &Spanned<String>, what: &str) -> Option<String> {
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
fn check_type(ty: &str) -> Result<String, String> {
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

// ---------------------------------------------------------------------------------------------
// Loading

/// A parsed policy file with its text (for positions).
struct Parsed {
    path: PathBuf,
    source: String,
    text: String,
    file: RawFile,
}

impl Parsed {
    /// Where this file's problems are collected, located in its text.
    fn sink<'a>(&'a self, errors: &'a mut Vec<PolicyError>) -> Sink<'a> {
        Sink {
            file: &self.path,
            text: &self.text,
            errors,
        }
    }
}

/// Load every `*.toml` file in the project's policies directory, sorted by name, into a model.
pub fn load(project: &Project) -> Result<Schema, PolicyErrors> {
    let dir = project.policies_dir();
    let fail = |message: String, hint: &str| {
        PolicyErrors(vec![PolicyError {
            file: dir.clone(),
            line: 1,
            column: 1,
            message,
            hint: Some(hint.to_string()),
        }])
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        fail(
            format!("cannot read the policies directory: {e}"),
            "run `tenantctl init`, or set [paths].policies in tenantctl.toml",
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(fail(
            "no .toml files in the policies directory".into(),
            DOCS_HINT,
        ));
    }
    let rel_dir = project
        .config
        .paths
        .policies
        .to_string_lossy()
        .replace('\\', "/");
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(PolicyError {
                    file: path.clone(),
                    line: 1,
                    column: 1,
                    message: format!("cannot read: {e}"),
                    hint: None,
                });
                continue;
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let source = format!("{}/{}", rel_dir.trim_end_matches('/'), name);
        match toml::from_str::<RawFile>(&text) {
            Ok(file) => parsed.push(Parsed {
                path,
                source,
                text,
                file,
            }),
            Err(e) => {
                let (line, column) = e.span().map_or((1, 1), |s| line_col(&text, s.start));
                let full = toml_error_message(&path, &text, &e);
                let hint = full.split_once("\n  hint: ").map(|(_, h)| h.to_string());
                errors.push(PolicyError {
                    file: path,
                    line,
                    column,
                    message: e.message().trim().replace('\n', " "),
                    hint,
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let schema = compile(&parsed, &project.config.role_names, &mut errors);
    match schema {
        Some(s) if errors.is_empty() => Ok(s),
        _ => Err(PolicyErrors(errors)),
    }
}

/// Where a declaration came from, to report duplicates.
struct Seen {
    file: PathBuf,
    line: usize,
}

fn compile(
    files: &[Parsed],
    role_names: &BTreeMap<String, String>,
    errors: &mut Vec<PolicyError>,
) -> Option<Schema> {
    let physical = |name: &str| {
        role_names
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    };

    // Tenancy: exactly one file declares it.
    let mut tenancy: Option<(Tenancy, &Parsed)> = None;
    for p in files {
        let Some(raw) = &p.file.tenancy else { continue };
        let mut sink = p.sink(errors);
        if let Some((_, first)) = &tenancy {
            sink.err(
                raw.span(),
                format!(
                    "[tenancy] is declared again (first in {})",
                    first.path.display()
                ),
                "declare [tenancy] once, in one policy file",
            );
            continue;
        }
        if let Some(t) = compile_tenancy(raw, &p.source, &mut sink, &physical) {
            tenancy = Some((t, p));
        }
    }
    let Some((tenancy, _)) = tenancy else {
        if errors.is_empty() {
            let p = &files[0];
            errors.push(PolicyError {
                file: p.path.clone(),
                line: 1,
                column: 1,
                message: "no [tenancy] section in any policy file".into(),
                hint: Some(format!(
                    "add [tenancy] with tenant_table = \"gyms\" to one file; {DOCS_HINT}"
                )),
            });
        }
        return None;
    };

    // Roles: the three built-in ones always exist; files may declare more, or set LOGIN.
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    for (name, bypass) in [
        (&tenancy.owner_role, false),
        (&tenancy.app_role, false),
        (
            &tenancy.admin_role,
            tenancy.admin_bypass == AdminBypass::Bypassrls,
        ),
    ] {
        roles.insert(
            name.clone(),
            Role {
                source: tenancy.source.clone(),
                login: false,
                bypassrls: bypass,
            },
        );
    }
    let mut role_seen: BTreeMap<String, Seen> = BTreeMap::new();
    for p in files {
        let mut sink = p.sink(errors);
        for (key, raw) in &p.file.roles {
            let Some(name) = sink.name(key, "role") else {
                continue;
            };
            let name = physical(&name);
            if let Err(e) = Ident::new(&name) {
                sink.err(
                    key.span(),
                    format!("role name mapped in tenantctl.toml is invalid: {e}"),
                    "",
                );
                continue;
            }
            let what = format!("role {name}");
            if !sink.first_declaration(
                &mut role_seen,
                name.clone(),
                key.span(),
                &what,
                "declare each role once",
            ) {
                continue;
            }
            if raw.get_ref().login
                && (name == tenancy.app_role
                    || name == tenancy.admin_role
                    || name == tenancy.owner_role)
            {
                sink.err(
                    raw.span(),
                    format!("role {name} is one of tenancy's roles and must stay NOLOGIN"),
                    "create a login role for the application and GRANT the app role to it",
                );
                continue;
            }
            let entry = roles.entry(name).or_insert(Role {
                source: p.source.clone(),
                login: false,
                bypassrls: false,
            });
            entry.login = raw.get_ref().login;
        }
    }

    // Tables: declared once across all files.
    let mut table_seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut raw_tables: Vec<(&Parsed, &Spanned<String>, &Spanned<RawTable>, String)> = Vec::new();
    for p in files {
        let mut sink = p.sink(errors);
        for (key, raw) in &p.file.tables {
            let Some(name) = sink.name(key, "table") else {
                continue;
            };
            let what = format!("table {name}");
            if !sink.first_declaration(
                &mut table_seen,
                name.clone(),
                key.span(),
                &what,
                "declare each table once",
            ) {
                continue;
            }
            raw_tables.push((p, key, raw, name));
        }
    }
    if !table_seen.contains_key(&tenancy.tenant_table) {
        let (_, p) = files
            .iter()
            .find_map(|p| p.file.tenancy.as_ref().map(|t| (t, p)))
            .expect("tenancy came from a file");
        let raw = p.file.tenancy.as_ref().expect("checked");
        let mut sink = p.sink(errors);
        sink.err(
            raw.get_ref().tenant_table.span(),
            format!("the tenant table {} is not declared", tenancy.tenant_table),
            format!(
                "declare [tables.{}] with an `id uuid` primary key",
                tenancy.tenant_table
            ),
        );
        return None;
    }

    // First pass: columns and primary keys of every table (references need their parents').
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let mut pk_of: BTreeMap<String, (String, String)> = BTreeMap::new(); // table → (pk column, type)
    for (p, key, raw, name) in &raw_tables {
        let mut sink = p.sink(errors);
        if let Some(t) = compile_columns(name, key, raw, &p.source, &tenancy, &mut sink) {
            let pk = match t.constraints.get(&format!("{name}_pkey")) {
                Some(Constraint::PrimaryKey { columns }) => columns[0].clone(),
                _ => continue,
            };
            let ty = t.column(&pk).map(|c| c.ty.clone()).unwrap_or_default();
            pk_of.insert(name.clone(), (pk, ty));
            tables.insert(name.clone(), t);
        }
    }

    // Second pass: references, uniques, indexes, grants.
    for (p, _key, raw, name) in &raw_tables {
        let mut sink = p.sink(errors);
        if let Some(table) = tables.get_mut(name) {
            let ctx = RelationCtx {
                tenancy: &tenancy,
                pk_of: &pk_of,
                declared: &table_seen,
                roles: &roles,
            };
            compile_relations(name, raw, table, &ctx, &mut sink, &physical);
        }
    }

    // Policies.
    let mut policy_seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for p in files {
        let mut sink = p.sink(errors);
        for raw in &p.file.policies {
            let r = raw.get_ref();
            let Some(name) = sink.name(&r.name, "policy") else {
                continue;
            };
            let Some(table_name) = sink.name(&r.table, "table") else {
                continue;
            };
            let Some(table) = tables.get_mut(&table_name) else {
                if table_seen.contains_key(&table_name) {
                    continue; // the table itself had errors, already reported
                }
                sink.err(
                    r.table.span(),
                    format!(
                        "policy {name} is on table {table_name}, which no policy file declares"
                    ),
                    format!("declare [tables.{table_name}], or fix the table name"),
                );
                continue;
            };
            let what = format!("policy {name} on {table_name}");
            let key = (table_name.clone(), name.clone());
            if !sink.first_declaration(
                &mut policy_seen,
                key,
                r.name.span(),
                &what,
                "policy names are unique per table",
            ) {
                continue;
            }
            if table.policies.contains_key(&name) {
                sink.err(
                    r.name.span(),
                    format!(
                        "policy name {name} is reserved for tenantctl's own policy on {table_name}"
                    ),
                    "choose another name",
                );
                continue;
            }
            if let Some(policy) = compile_policy(r, &p.source, &roles, &mut sink, &physical) {
                table.policies.insert(name, policy);
            }
        }
    }

    // Manual isolation needs at least one policy for the app role.
    for (p, key, raw, name) in &raw_tables {
        let manual = raw
            .get_ref()
            .isolation
            .as_ref()
            .is_some_and(|i| i.get_ref() == "manual");
        let Some(table) = tables.get(name) else {
            continue;
        };
        if manual
            && !table
                .policies
                .values()
                .any(|pol| pol.roles.contains(&tenancy.app_role))
        {
            let mut sink = p.sink(errors);
            sink.err(
                key.span(),
                format!("table {name} has isolation = \"manual\" but no policy for the app role {}", tenancy.app_role),
                "declare [[policies]] for this table, or remove isolation = \"manual\" to get the tenant isolation policy",
            );
        }
    }

    if !errors.is_empty() {
        return None;
    }
    Some(Schema {
        tenancy,
        roles,
        tables,
    })
}

fn compile_tenancy(
    raw: &Spanned<RawTenancy>,
    source: &str,
    sink: &mut Sink<'_>,
    physical: &dyn Fn(&str) -> String,
) -> Option<Tenancy> {
    let r = raw.get_ref();
    let before = sink.errors.len();
    let name_or =
        |sink: &mut Sink<'_>, v: &Option<Spanned<String>>, default: &str, what: &str| -> String {
            match v {
                Some(s) => sink.name(s, what).unwrap_or_default(),
                None => default.to_string(),
            }
        };
    let tenant_table = sink
        .name(&r.tenant_table, "tenant table")
        .unwrap_or_default();
    let tenant_key = name_or(sink, &r.tenant_key, "id", "tenant key column");
    let tenant_column = name_or(sink, &r.tenant_column, "gym_id", "tenant column");
    let table_schema = name_or(sink, &r.table_schema, "public", "table schema");
    let helper_schema = name_or(sink, &r.helper_schema, "tenantctl", "helper schema");
    if table_schema == helper_schema {
        sink.err(
            raw.span(),
            "table_schema and helper_schema must differ",
            "keep the helper objects apart from the tables",
        );
    }
    let context_function = name_or(
        sink,
        &r.context_function,
        "current_gym_id",
        "context function",
    );
    let owner_role = physical(&name_or(sink, &r.owner_role, "gym_owner", "owner role"));
    let app_role = physical(&name_or(sink, &r.app_role, "gym_app", "app role"));
    let admin_role = physical(&name_or(
        sink,
        &r.admin_role,
        "platform_admin",
        "admin role",
    ));
    let context_setting = match &r.context_setting {
        None => "tenantctl.gym_id".to_string(),
        Some(s) => {
            let v = s.get_ref();
            let ok = v.split_once('.').is_some_and(|(a, b)| {
                Ident::plain(a).is_ok() && Ident::plain(b).is_ok() && !b.contains('.')
            });
            if !ok {
                sink.err(
                    s.span(),
                    format!("context_setting {v:?} is not a custom setting name"),
                    "use a two-part lowercase name such as tenantctl.gym_id",
                );
            }
            v.clone()
        }
    };
    let admin_bypass = match r
        .admin_bypass
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("bypassrls", _)) => AdminBypass::Bypassrls,
        Some(("policy", _)) => AdminBypass::Policy,
        Some((other, span)) => {
            sink.err(
                span,
                format!("admin_bypass {other:?} is not known"),
                "use \"bypassrls\" or \"policy\"",
            );
            AdminBypass::Bypassrls
        }
    };
    let roles = [&owner_role, &app_role, &admin_role];
    for (i, a) in roles.iter().enumerate() {
        if let Err(e) = Ident::new(a) {
            sink.err(
                raw.span(),
                format!("role name is invalid after [role_names] mapping: {e}"),
                "",
            );
        }
        if roles[i + 1..].contains(a) {
            sink.err(
                raw.span(),
                format!("role {a} is used for two of owner_role, app_role and admin_role"),
                "the owner, app and admin roles must be three different roles",
            );
        }
    }
    if sink.errors.len() > before {
        return None;
    }
    Some(Tenancy {
        source: source.to_string(),
        tenant_table,
        tenant_key,
        tenant_column,
        table_schema,
        helper_schema,
        context_setting,
        context_function,
        admin_bypass,
        owner_role,
        app_role,
        admin_role,
    })
}

/// Columns, primary key, checks, and the tenant column rules.
fn compile_columns(
    name: &str,
    key: &Spanned<String>,
    raw: &Spanned<RawTable>,
    source: &str,
    tenancy: &Tenancy,
    sink: &mut Sink<'_>,
) -> Option<Table> {
    let r = raw.get_ref();
    let before = sink.errors.len();
    let is_root = name == tenancy.tenant_table;
    let tenant_column = if is_root {
        tenancy.tenant_key.clone()
    } else {
        tenancy.tenant_column.clone()
    };
    let mut columns: Vec<Column> = Vec::new();
    let mut constraints = BTreeMap::new();
    for c in &r.columns {
        let cr = c.get_ref();
        let Some(col) = sink.name(&cr.name, "column") else {
            continue;
        };
        if columns.iter().any(|x| x.name == col) {
            sink.err(
                cr.name.span(),
                format!("column {col} is declared twice in table {name}"),
                "",
            );
            continue;
        }
        let ty = match check_type(cr.ty.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                sink.err(
                    cr.ty.span(),
                    format!("column {name}.{col}: {e}"),
                    "use a Postgres type such as text, uuid, integer, timestamptz, numeric(10,2)",
                );
                continue;
            }
        };
        let mut default = cr.default.as_ref().and_then(|d| sink.expr(d, "default"));
        if col == tenant_column && !is_root {
            if ty != "uuid" {
                sink.err(
                    cr.ty.span(),
                    format!(
                        "tenant column {name}.{col} must be uuid (it holds the {} id)",
                        tenancy.tenant_table
                    ),
                    "set type = \"uuid\"",
                );
            }
            if cr.nullable {
                sink.err(
                    c.span(),
                    format!("tenant column {name}.{col} cannot be nullable"),
                    "remove nullable = true: every row belongs to a tenant",
                );
            }
            if let Some(d) = &cr.default {
                sink.err(
                    d.span(),
                    format!("tenant column {name}.{col} gets its default from the tenant context"),
                    "remove the default",
                );
            }
            default = Some(format!(
                "{}.{}()",
                Ident::new(&tenancy.helper_schema).ok()?,
                Ident::new(&tenancy.context_function).ok()?
            ));
        }
        if let Some(check) = &cr.check {
            if let Some(expr) = sink.expr(check, "check") {
                let cname = format!("{name}_{col}_check");
                if generated_name_ok(sink, &cname, c.span()) {
                    constraints.insert(cname, Constraint::Check { expr });
                }
            }
        }
        columns.push(Column {
            name: col,
            ty,
            nullable: cr.nullable,
            default,
        });
    }
    if columns.iter().all(|c| c.name != tenant_column) {
        let hint = format!(
            "add {{ name = \"{tenant_column}\", type = \"uuid\" }} to the columns of {name}"
        );
        let what = if is_root {
            "tenant key column"
        } else {
            "tenant column"
        };
        sink.err(
            key.span(),
            format!("table {name} has no {what} {tenant_column}"),
            hint,
        );
    }
    let pk = match &r.primary_key {
        Some(pk) => {
            let v = sink.name(pk, "primary key column");
            if let Some(v) = &v {
                if columns.iter().all(|c| &c.name != v) {
                    sink.err(
                        pk.span(),
                        format!("primary key {v} is not a column of {name}"),
                        "",
                    );
                }
            }
            v
        }
        None => Some("id".to_string()),
    };
    if let Some(pk) = &pk {
        if columns.iter().all(|c| &c.name != pk) && r.primary_key.is_none() {
            sink.err(
                key.span(),
                format!("table {name} has no `id` column to be its primary key"),
                "add an id column, or set primary_key = \"column\"",
            );
        }
        if is_root && *pk != tenant_column {
            sink.err(
                key.span(),
                format!("the tenant table's primary key must be its tenant key {tenant_column}"),
                "",
            );
        }
        if let Some(c) = columns.iter_mut().find(|c| &c.name == pk) {
            c.nullable = false;
        }
        constraints.insert(
            format!("{name}_pkey"),
            Constraint::PrimaryKey {
                columns: vec![pk.clone()],
            },
        );
        if !is_root && *pk != tenant_column {
            let cname = format!("{name}_tenant_key");
            if generated_name_ok(sink, &cname, key.span()) {
                constraints.insert(
                    cname,
                    Constraint::Unique {
                        columns: vec![tenant_column.clone(), pk.clone()],
                    },
                );
            }
        }
    }
    if !is_root {
        let cname = format!("{name}_tenant_fkey");
        if generated_name_ok(sink, &cname, key.span()) {
            constraints.insert(
                cname,
                Constraint::ForeignKey {
                    columns: vec![tenant_column.clone()],
                    table: tenancy.tenant_table.clone(),
                    ref_columns: vec![tenancy.tenant_key.clone()],
                    on_delete: OnDelete::Cascade,
                },
            );
        }
    }
    if let Some(iso) = &r.isolation {
        if !matches!(iso.get_ref().as_str(), "auto" | "manual") {
            sink.err(
                iso.span(),
                format!("isolation {:?} is not known", iso.get_ref()),
                "use \"auto\" (the default) or \"manual\"",
            );
        }
    }
    let manual = r
        .isolation
        .as_ref()
        .is_some_and(|i| i.get_ref() == "manual");
    let mut policies = BTreeMap::new();
    let ctx = format!(
        "(SELECT {}.{}())",
        Ident::new(&tenancy.helper_schema).ok()?,
        Ident::new(&tenancy.context_function).ok()?
    );
    let tenant_ident = Ident::new(&tenant_column).ok()?;
    if !manual {
        let pname = format!("{name}_tenant_isolation");
        if generated_name_ok(sink, &pname, key.span()) {
            let expr = format!("({tenant_ident} = {ctx})");
            policies.insert(
                pname,
                Policy {
                    source: source.to_string(),
                    command: Command::All,
                    permissive: true,
                    roles: vec![tenancy.app_role.clone()],
                    using: Some(expr.clone()),
                    with_check: Some(expr),
                },
            );
        }
    }
    if tenancy.admin_bypass == AdminBypass::Policy {
        let pname = format!("{name}_platform_admin");
        if generated_name_ok(sink, &pname, key.span()) {
            policies.insert(
                pname,
                Policy {
                    source: source.to_string(),
                    command: Command::All,
                    permissive: true,
                    roles: vec![tenancy.admin_role.clone()],
                    using: Some("true".into()),
                    with_check: Some("true".into()),
                },
            );
        }
    }
    if sink.errors.len() > before {
        return None;
    }
    Some(Table {
        source: source.to_string(),
        tenant_column,
        columns,
        constraints,
        indexes: BTreeMap::new(),
        policies,
        grants: BTreeMap::new(),
    })
}

fn generated_name_ok(sink: &mut Sink<'_>, name: &str, span: Range<usize>) -> bool {
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

/// What references, grants and uniques are checked against.
struct RelationCtx<'a> {
    tenancy: &'a Tenancy,
    /// Table → (primary key column, its type), for tables that compiled.
    pk_of: &'a BTreeMap<String, (String, String)>,
    /// Every declared table, compiled or not (a broken parent is reported once, at the parent).
    declared: &'a BTreeMap<String, Seen>,
    roles: &'a BTreeMap<String, Role>,
}

fn compile_relations(
    name: &str,
    raw: &Spanned<RawTable>,
    table: &mut Table,
    ctx: &RelationCtx<'_>,
    sink: &mut Sink<'_>,
    physical: &dyn Fn(&str) -> String,
) {
    let (tenancy, pk_of, roles) = (ctx.tenancy, ctx.pk_of, ctx.roles);
    let r = raw.get_ref();
    let is_root = name == tenancy.tenant_table;
    let tc = table.tenant_column.clone();
    let has = |t: &Table, c: &str| t.column(c).is_some();
    let scoped = |cols: &[String]| -> Vec<String> {
        if is_root || cols.first() == Some(&tc) {
            cols.to_vec()
        } else {
            std::iter::once(tc.clone())
                .chain(cols.iter().cloned())
                .collect()
        }
    };

    for u in &r.unique {
        let mut cols = Vec::new();
        for c in u.get_ref() {
            match Ident::plain(c) {
                Ok(_) if has(table, c) => cols.push(c.clone()),
                Ok(_) => sink.err(
                    u.span(),
                    format!("unique: {c} is not a column of {name}"),
                    "",
                ),
                Err(e) => sink.err(u.span(), format!("unique: {e}"), ""),
            }
        }
        if cols.len() != u.get_ref().len() || cols.is_empty() {
            if cols.is_empty() && u.get_ref().is_empty() {
                sink.err(u.span(), "unique needs at least one column", "");
            }
            continue;
        }
        let cols = scoped(&cols);
        let cname = format!("{name}_{}_key", cols.join("_"));
        if generated_name_ok(sink, &cname, u.span()) {
            table
                .constraints
                .insert(cname, Constraint::Unique { columns: cols });
        }
    }

    for rf in &r.references {
        let rr = rf.get_ref();
        let Some(col) = sink.name(&rr.column, "column") else {
            continue;
        };
        let Some(parent) = sink.name(&rr.table, "table") else {
            continue;
        };
        if !has(table, &col) {
            sink.err(
                rr.column.span(),
                format!("references: {col} is not a column of {name}"),
                "",
            );
            continue;
        }
        if parent == tenancy.tenant_table {
            sink.err(
                rr.table.span(),
                format!(
                    "{name} references the tenant table {parent} already, through {}",
                    tenancy.tenant_column
                ),
                format!(
                    "remove this reference; use the {} column",
                    tenancy.tenant_column
                ),
            );
            continue;
        }
        if is_root {
            sink.err(
                rf.span(),
                "the tenant table cannot reference tenant tables",
                "",
            );
            continue;
        }
        let Some((ppk, pty)) = pk_of.get(&parent) else {
            if ctx.declared.contains_key(&parent) {
                continue;
            }
            sink.err(
                rr.table.span(),
                format!("{name}.{col} references table {parent}, which no policy file declares"),
                format!("declare [tables.{parent}], or fix the table name"),
            );
            continue;
        };
        let cty = table.column(&col).map(|c| c.ty.clone()).unwrap_or_default();
        if &cty != pty {
            sink.err(
                rr.column.span(),
                format!("{name}.{col} is {cty} but {parent}.{ppk} is {pty}"),
                "give both columns the same type",
            );
            continue;
        }
        let on_delete = match rr
            .on_delete
            .as_ref()
            .map(|s| (s.get_ref().as_str(), s.span()))
        {
            None | Some(("no action", _)) => OnDelete::NoAction,
            Some(("restrict", _)) => OnDelete::Restrict,
            Some(("cascade", _)) => OnDelete::Cascade,
            Some((other, span)) => {
                sink.err(span, format!("on_delete {other:?} is not supported"), "use \"no action\", \"restrict\" or \"cascade\" (SET NULL would null the tenant column too)");
                continue;
            }
        };
        let cname = format!("{name}_{col}_fkey");
        if generated_name_ok(sink, &cname, rf.span()) {
            table.constraints.insert(
                cname,
                Constraint::ForeignKey {
                    columns: vec![tc.clone(), col.clone()],
                    table: parent.clone(),
                    ref_columns: vec![tenancy.tenant_column.clone(), ppk.clone()],
                    on_delete,
                },
            );
        }
    }

    for ix in &r.indexes {
        let cols_raw = ix.get_ref().columns.get_ref();
        let mut cols = Vec::new();
        for c in cols_raw {
            match Ident::plain(c) {
                Ok(_) if has(table, c) => cols.push(c.clone()),
                Ok(_) => sink.err(
                    ix.get_ref().columns.span(),
                    format!("index: {c} is not a column of {name}"),
                    "",
                ),
                Err(e) => sink.err(ix.get_ref().columns.span(), format!("index: {e}"), ""),
            }
        }
        if cols.len() != cols_raw.len() || cols.is_empty() {
            if cols_raw.is_empty() {
                sink.err(ix.span(), "an index needs at least one column", "");
            }
            continue;
        }
        let cols = scoped(&cols);
        let iname = format!("{name}_{}_idx", cols.join("_"));
        if generated_name_ok(sink, &iname, ix.span()) {
            table.indexes.insert(
                iname,
                Index {
                    columns: cols,
                    unique: ix.get_ref().unique,
                },
            );
        }
    }

    let update_columns: BTreeSet<String> = table
        .columns
        .iter()
        .filter(|c| c.name != tc && !table.constraints.values().any(|k| matches!(k, Constraint::PrimaryKey { columns } if columns.contains(&c.name))))
        .map(|c| c.name.clone())
        .collect();
    for (role_key, privs) in &r.grants {
        let Some(role) = sink.name(role_key, "role") else {
            continue;
        };
        let role = physical(&role);
        if !roles.contains_key(&role) {
            sink.err(
                role_key.span(),
                format!("grant to role {role}, which is not declared"),
                "declare it under [roles.<name>] or use one of tenancy's roles",
            );
            continue;
        }
        let mut grant = Grant::default();
        for p in privs.get_ref() {
            let privilege = match p.get_ref().to_ascii_lowercase().as_str() {
                "select" => Privilege::Select,
                "insert" => Privilege::Insert,
                "delete" => Privilege::Delete,
                "update" => {
                    grant.update_columns.extend(update_columns.iter().cloned());
                    continue;
                }
                "truncate" => Privilege::Truncate,
                "references" => Privilege::References,
                "trigger" => Privilege::Trigger,
                other => {
                    sink.err(
                        p.span(),
                        format!("unknown privilege {other:?}"),
                        "use select, insert, update or delete",
                    );
                    continue;
                }
            };
            if matches!(
                privilege,
                Privilege::Truncate | Privilege::References | Privilege::Trigger
            ) && (role == tenancy.app_role || roles.get(&role).is_some_and(|r| r.login))
            {
                sink.err(
                    p.span(),
                    format!(
                        "{} cannot be granted to {role}: Row-Level Security does not apply to it",
                        privilege.sql()
                    ),
                    "grant only select, insert, update and delete to the application",
                );
                continue;
            }
            grant.privileges.insert(privilege);
        }
        table.grants.insert(role, grant);
    }
}

fn compile_policy(
    r: &RawPolicy,
    source: &str,
    roles: &BTreeMap<String, Role>,
    sink: &mut Sink<'_>,
    physical: &dyn Fn(&str) -> String,
) -> Option<Policy> {
    let before = sink.errors.len();
    let command = match r
        .command
        .as_ref()
        .map(|c| (c.get_ref().to_ascii_lowercase(), c.span()))
    {
        None => Command::All,
        Some((c, span)) => match c.as_str() {
            "all" => Command::All,
            "select" => Command::Select,
            "insert" => Command::Insert,
            "update" => Command::Update,
            "delete" => Command::Delete,
            other => {
                sink.err(
                    span,
                    format!("unknown policy command {other:?}"),
                    "use all, select, insert, update or delete",
                );
                Command::All
            }
        },
    };
    let permissive = match r.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("permissive", _)) => true,
        Some(("restrictive", _)) => false,
        Some((other, span)) => {
            sink.err(
                span,
                format!("policy kind {other:?} is not known"),
                "use \"permissive\" or \"restrictive\"",
            );
            true
        }
    };
    let mut role_list = BTreeSet::new();
    for role in r.roles.get_ref() {
        let Some(name) = sink.name(role, "role") else {
            continue;
        };
        let name = physical(&name);
        if !roles.contains_key(&name) {
            sink.err(
                role.span(),
                format!(
                    "policy {} names role {name}, which is not declared",
                    r.name.get_ref()
                ),
                "declare it under [roles.<name>] or use one of tenancy's roles",
            );
            continue;
        }
        role_list.insert(name);
    }
    if r.roles.get_ref().is_empty() {
        sink.err(
            r.roles.span(),
            "a policy needs at least one role",
            "name the roles it applies to; a policy for PUBLIC is never generated",
        );
    }
    let using = r.using.as_ref().and_then(|u| sink.expr(u, "USING"));
    let mut with_check = r
        .with_check
        .as_ref()
        .and_then(|u| sink.expr(u, "WITH CHECK"));
    match command {
        Command::Insert if r.using.is_some() => {
            sink.err(
                r.using.as_ref().map(|u| u.span()).unwrap_or(r.name.span()),
                "an INSERT policy has no USING clause",
                "use with_check",
            );
        }
        Command::Insert if r.with_check.is_none() => {
            sink.err(
                r.name.span(),
                "an INSERT policy needs with_check",
                "add with_check = \"<tenant column> = (SELECT ...)\"",
            );
        }
        Command::Select | Command::Delete if r.with_check.is_some() => {
            sink.err(
                r.with_check
                    .as_ref()
                    .map(|u| u.span())
                    .unwrap_or(r.name.span()),
                format!("a {} policy has no WITH CHECK clause", command.sql()),
                "remove with_check",
            );
        }
        Command::Select | Command::Delete | Command::Update | Command::All if r.using.is_none() => {
            sink.err(
                r.name.span(),
                format!("a {} policy needs using", command.sql()),
                "add using = \"<tenant column> = (SELECT ...)\"",
            );
        }
        // Postgres checks new rows of ALL/UPDATE against USING when WITH CHECK is absent; say so
        // explicitly so that the database (and verify) see the check that is really applied.
        Command::Update | Command::All if with_check.is_none() => with_check = using.clone(),
        _ => {}
    }
    if sink.errors.len() > before {
        return None;
    }
    Some(Policy {
        source: source.to_string(),
        command,
        permissive,
        roles: role_list.into_iter().collect(),
        using,
        with_check,
    })
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

    #[test]
    fn positions() {
        assert_eq!(line_col("a\nbc\nd", 0), (1, 1));
        assert_eq!(line_col("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_col("a\nbc\nd", 5), (3, 1));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }
}
