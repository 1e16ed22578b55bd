//! `diff` case by case: two small policy sets, compiled by the real compiler, and the SQL that
//! takes a database from the first to the second (snapshots in `snapshots/`).

use super::*;
use crate::policy::testing::{base, edited, model, with, AUDITOR, COACHES};

/// Statements as reviewed: provenance, destructive flag, SQL.
fn text(stmts: &[Statement]) -> String {
    stmts
        .iter()
        .map(|s| {
            let flag = if s.destructive { " [destructive]" } else { "" };
            format!("-- {}{flag}\n{}\n", s.provenance, s.sql)
        })
        .collect()
}

struct Case {
    name: &'static str,
    old: Option<Vec<(&'static str, String)>>,
    new: Vec<(&'static str, String)>,
    refresh_helpers: bool,
    destructive: bool,
}

fn case(
    name: &'static str,
    old: Vec<(&'static str, String)>,
    new: Vec<(&'static str, String)>,
) -> Case {
    Case {
        name,
        old: Some(old),
        new,
        refresh_helpers: false,
        destructive: false,
    }
}

fn cases() -> Vec<Case> {
    let restrictive_to_permissive = edited("members.toml", "kind = \"restrictive\"\n", "");
    vec![
        Case {
            old: None,
            ..case("first_migration", vec![], base())
        },
        case("no_change", base(), base()),
        case("table_added", base(), with("coaches.toml", COACHES)),
        Case {
            destructive: true,
            ..case("table_dropped", with("coaches.toml", COACHES), base())
        },
        case(
            "column_added",
            base(),
            edited("gyms.toml", "]\ngrants", "  { name = \"city\", type = \"text\", nullable = true },\n]\ngrants"),
        ),
        Case {
            destructive: true,
            ..case(
                "column_dropped",
                edited("gyms.toml", "]\ngrants", "  { name = \"city\", type = \"text\", nullable = true },\n]\ngrants"),
                base(),
            )
        },
        case(
            "column_type_default_and_null_changed",
            base(),
            edited(
                "gyms.toml",
                "{ name = \"name\", type = \"text\" }",
                "{ name = \"name\", type = \"varchar(80)\", nullable = true, default = \"'new gym'\" }",
            ),
        ),
        case(
            "policy_expression_changed",
            base(),
            edited("members.toml", "using = \"full_name <> ''\"", "using = \"length(full_name) > 1\""),
        ),
        case(
            "policy_roles_changed",
            with("auditor.toml", AUDITOR),
            {
                let mut files = edited("members.toml", "roles = [\"gym_app\"]", "roles = [\"gym_app\", \"auditor\"]");
                files.push(("auditor.toml", AUDITOR.to_string()));
                files
            },
        ),
        case(
            "policy_command_changed",
            base(),
            edited("members.toml", "command = \"select\"", "command = \"delete\""),
        ),
        case("policy_kind_changed", base(), restrictive_to_permissive),
        case(
            "check_constraint_changed",
            base(),
            edited("members.toml", "length(full_name) > 0", "length(full_name) > 2"),
        ),
        case(
            "grant_added",
            base(),
            edited("gyms.toml", "grants.gym_app = [\"select\"]", "grants.gym_app = [\"select\", \"update\", \"delete\"]"),
        ),
        case(
            "grant_revoked",
            edited("gyms.toml", "grants.gym_app = [\"select\"]", "grants.gym_app = [\"select\", \"update\", \"delete\"]"),
            base(),
        ),
        case("role_added", base(), with("auditor.toml", AUDITOR)),
        case(
            "role_login_dropped",
            with("auditor.toml", AUDITOR),
            with("auditor.toml", "[roles.auditor]\nlogin = false\n"),
        ),
        case("role_no_longer_declared", with("auditor.toml", AUDITOR), base()),
        Case {
            refresh_helpers: true,
            ..case("helpers_refreshed", base(), base())
        },
        case(
            "helper_function_renamed",
            base(),
            edited("tenancy.toml", "tenant_table = \"gyms\"", "tenant_table = \"gyms\"\ncontext_function = \"current_tenant\""),
        ),
    ]
}

#[test]
fn diff_cases() {
    for c in cases() {
        let old = c.old.as_deref().map(model);
        let new = model(&c.new);
        let stmts = diff(old.as_ref(), &new, c.refresh_helpers);
        assert_eq!(
            stmts.iter().any(|s| s.destructive),
            c.destructive,
            "{}: destructive flag",
            c.name
        );
        insta::assert_snapshot!(c.name, text(&stmts));
    }
}
