//! `[[policies]]`: each on a declared table, unique per table, for declared roles, with the
//! clauses its command allows.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::roles::declared_role;
use super::{DeclaredTables, RoleNames};
use crate::model::{Command, Policy, Role, Table};
use crate::policy::diagnostics::{PolicyError, Seen, Sink};
use crate::policy::raw::{Parsed, RawPolicy};

/// What a policy is checked against.
struct Ctx<'a> {
    roles: &'a BTreeMap<String, Role>,
    role_names: &'a RoleNames<'a>,
}

pub(super) fn compile(
    files: &[Parsed],
    tables: &mut BTreeMap<String, Table>,
    declared: &DeclaredTables<'_>,
    roles: &BTreeMap<String, Role>,
    role_names: &RoleNames<'_>,
    errors: &mut Vec<PolicyError>,
) {
    let ctx = Ctx { roles, role_names };
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for p in files {
        let mut sink = p.sink(errors);
        for raw in &p.file.policies {
            let r = raw.get_ref();
            let Some((name, table)) = place(r, tables, declared, &mut seen, &mut sink) else {
                continue;
            };
            if let Some(policy) = compile_one(r, &p.source, &ctx, &mut sink) {
                table.policies.insert(name, policy);
            }
        }
    }
}

/// The policy's name and its table, if both are valid and the name is free on that table.
fn place<'t>(
    r: &RawPolicy,
    tables: &'t mut BTreeMap<String, Table>,
    declared: &DeclaredTables<'_>,
    seen: &mut BTreeMap<(String, String), Seen>,
    sink: &mut Sink<'_>,
) -> Option<(String, &'t mut Table)> {
    let name = sink.name(&r.name, "policy")?;
    let table_name = sink.name(&r.table, "table")?;
    let Some(table) = tables.get_mut(&table_name) else {
        // A declared table that is missing had errors, already reported.
        if !declared.seen.contains_key(&table_name) {
            sink.err(
                r.table.span(),
                format!("policy {name} is on table {table_name}, which no policy file declares"),
                format!("declare [tables.{table_name}], or fix the table name"),
            );
        }
        return None;
    };
    if table.global {
        let hint = "a global table has no row-level security: grant the application only select";
        sink.err(
            r.table.span(),
            format!("policy {name} is on global table {table_name}"),
            hint,
        );
        return None;
    }
    let what = format!("policy {name} on {table_name}");
    let key = (table_name.clone(), name.clone());
    let hint = "policy names are unique per table";
    if !sink.first_declaration(seen, key, r.name.span(), &what, hint) {
        return None;
    }
    if table.policies.contains_key(&name) {
        sink.err(
            r.name.span(),
            format!("policy name {name} is reserved for tenantctl's own policy on {table_name}"),
            "choose another name",
        );
        return None;
    }
    Some((name, table))
}

fn compile_one(r: &RawPolicy, source: &str, ctx: &Ctx<'_>, sink: &mut Sink<'_>) -> Option<Policy> {
    let before = sink.count();
    let command = command(r, sink);
    let permissive = permissive(r, sink);
    let roles = policy_roles(r, ctx, sink);
    let using = r.using.as_ref().and_then(|u| sink.expr(u, "USING"));
    let with_check = r
        .with_check
        .as_ref()
        .and_then(|u| sink.expr(u, "WITH CHECK"));
    let with_check = check_clauses(r, command, &using, with_check, sink);
    if sink.count() > before {
        return None;
    }
    Some(Policy {
        source: source.to_string(),
        command,
        permissive,
        roles,
        using,
        with_check,
    })
}

fn command(r: &RawPolicy, sink: &mut Sink<'_>) -> Command {
    let Some(c) = &r.command else {
        return Command::All;
    };
    match c.get_ref().to_ascii_lowercase().as_str() {
        "all" => Command::All,
        "select" => Command::Select,
        "insert" => Command::Insert,
        "update" => Command::Update,
        "delete" => Command::Delete,
        other => {
            sink.err(
                c.span(),
                format!("unknown policy command {other:?}"),
                "use all, select, insert, update or delete",
            );
            Command::All
        }
    }
}

fn permissive(r: &RawPolicy, sink: &mut Sink<'_>) -> bool {
    match r.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
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
    }
}

/// The physical names of the policy's roles, sorted; each must be declared.
fn policy_roles(r: &RawPolicy, ctx: &Ctx<'_>, sink: &mut Sink<'_>) -> Vec<String> {
    let mut roles = BTreeSet::new();
    for role in r.roles.get_ref() {
        let message = |name: &str| {
            format!(
                "policy {} names role {name}, which is not declared",
                r.name.get_ref()
            )
        };
        if let Some(name) = declared_role(sink, role, ctx.roles, ctx.role_names, message) {
            roles.insert(name);
        }
    }
    if r.roles.get_ref().is_empty() {
        sink.err(
            r.roles.span(),
            "a policy needs at least one role",
            "name the roles it applies to; a policy for PUBLIC is never generated",
        );
    }
    roles.into_iter().collect()
}

/// The clauses the command allows and needs; gives the WITH CHECK expression to record.
fn check_clauses(
    r: &RawPolicy,
    command: Command,
    using: &Option<String>,
    with_check: Option<String>,
    sink: &mut Sink<'_>,
) -> Option<String> {
    let span_or_name = |clause: &Option<Spanned<String>>| {
        clause.as_ref().map(|c| c.span()).unwrap_or(r.name.span())
    };
    match command {
        Command::Insert if r.using.is_some() => {
            sink.err(
                span_or_name(&r.using),
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
                span_or_name(&r.with_check),
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
        Command::Update | Command::All if with_check.is_none() => return using.clone(),
        _ => {}
    }
    with_check
}
