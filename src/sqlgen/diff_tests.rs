//! `diff` case by case: two small policy sets, compiled by the real compiler, and the SQL that
//! takes a database from the first to the second (snapshots in `snapshots/`).

use super::*;
use crate::policy::testing::{base, edited, model, with, with_model, AUDITOR, COACHES, MODEL};

/// Statements as reviewed: provenance, destructive flag, SQL.
fn text(stmts: &[Statement]) -> String {
    stmts
        .iter()
        .map(|s| {
            let flag = match (s.destructive, s.part) {
                (true, _) => " [destructive]",
                (_, Part::Main) => "",
                (_, Part::Validate) => " [next migration]",
                (_, Part::Index) => " [non-transactional migration]",
                (_, Part::Attach) => " [attach migration]",
            };
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
            "column_set_not_null",
            edited(
                "gyms.toml",
                "{ name = \"name\", type = \"text\" }",
                "{ name = \"name\", type = \"text\", nullable = true }",
            ),
            base(),
        ),
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
    .into_iter()
    .chain([model_cases(), live_table_cases()].into_iter().flatten())
    .collect()
}

/// Indexes and unique keys of tables that already exist: built or dropped CONCURRENTLY in the
/// non-transactional migration, a key then attached in the one after.
fn live_table_cases() -> Vec<Case> {
    vec![
        case(
            "index_and_unique_added_to_live_table",
            base(),
            edited(
                "members.toml",
                "unique = [[\"full_name\"]]",
                "unique = [[\"full_name\"], [\"id\"]]\nindexes = [{ columns = [\"id\"] }]",
            ),
        ),
        case(
            "index_dropped_from_live_table",
            edited(
                "members.toml",
                "unique = [[\"full_name\"]]",
                "unique = [[\"full_name\"]]\nindexes = [{ columns = [\"id\"] }]",
            ),
            base(),
        ),
    ]
}

/// The objects beyond tenant tables: global tables, partitions, views, extensions.
fn model_cases() -> Vec<Case> {
    vec![
        case("model_objects_added", base(), with("model.toml", MODEL)),
        case(
            "partition_added",
            with("model.toml", MODEL),
            with_model("[{ name = \"visits_rest\"", "[{ name = \"visits_a\", values = [\"'00000000-0000-4000-8000-00000000000a'\"] }, { name = \"visits_rest\""),
        ),
        Case {
            destructive: true,
            ..case(
                "partition_dropped",
                with_model("[{ name = \"visits_rest\"", "[{ name = \"visits_a\", values = [\"'00000000-0000-4000-8000-00000000000a'\"] }, { name = \"visits_rest\""),
                with("model.toml", MODEL),
            )
        },
        case(
            "partitioned_table_policy_and_grants_changed",
            with("model.toml", MODEL),
            {
                let mut files = with_model("grants.gym_app = [\"select\", \"insert\"]", "grants.gym_app = [\"select\", \"insert\", \"delete\"]\nisolation = \"manual\"");
                files[3].1.push_str("\n[[policies]]\nname = \"visits_own\"\ntable = \"visits\"\nroles = [\"gym_app\"]\nusing = \"gym_id = (SELECT tenantctl.current_gym_id())\"\n");
                files
            },
        ),
        case(
            "table_partitioned_later",
            with_model("partition_by = { method = \"list\", column = \"gym_id\" }\npartitions = [{ name = \"visits_rest\", default = true }]\n", ""),
            with("model.toml", MODEL),
        ),
        case(
            "view_query_and_grants_changed",
            with("model.toml", MODEL),
            with_model("p.title FROM", "p.title, p.id AS plan_id FROM"),
        ),
        case(
            "view_grant_added_extension_moved",
            with("model.toml", MODEL),
            with(
                "model.toml",
                &MODEL
                    .replace("ON p.id = v.plan_id\"\ngrants.gym_app = [\"select\"]", "ON p.id = v.plan_id\"\ngrants.gym_app = [\"select\"]\ngrants.platform_admin = [\"select\"]")
                    .replace("schema = \"extensions\", usage = [\"gym_app\"]", "schema = \"crypto\", usage = [\"gym_app\", \"platform_admin\"]"),
            ),
        ),
        Case {
            destructive: true,
            ..case("model_objects_removed", with("model.toml", MODEL), base())
        },
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
