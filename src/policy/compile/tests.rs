//! The compiler's problems, case by case: each case edits the small test project into one kind
//! of mistake; the snapshot holds every message with its file:line:column and hint.

use crate::policy::testing::{base, edited, load, with, AUDITOR};

type Files = Vec<(&'static str, String)>;

/// The base project with more `[[policies]]` named `extra` on members, one a body.
fn with_policies(bodies: &[&str]) -> Files {
    let mut files = base();
    for body in bodies {
        let policy = format!("\n[[policies]]\nname = \"extra\"\ntable = \"members\"\n{body}\n");
        files[2].1.push_str(&policy);
    }
    files
}

fn with_policy(body: &str) -> Files {
    with_policies(&[body])
}

fn cases() -> Vec<(&'static str, Files)> {
    let second_tenancy = "[tenancy]\ntenant_table = \"gyms\"\n";
    let using = "using = \"true\"";
    vec![
        ("tenancy_declared_twice", with("more.toml", second_tenancy)),
        ("no_tenancy", edited("tenancy.toml", "[tenancy]\ntenant_table = \"gyms\"", "")),
        ("tenant_table_not_declared", edited("tenancy.toml", "\"gyms\"", "\"clubs\"")),
        ("unknown_admin_bypass", edited("tenancy.toml", "\"gyms\"", "\"gyms\"\nadmin_bypass = \"never\"")),
        ("bad_context_setting", edited("tenancy.toml", "\"gyms\"", "\"gyms\"\ncontext_setting = \"gym_id\"")),
        ("same_table_and_helper_schema", edited("tenancy.toml", "\"gyms\"", "\"gyms\"\nhelper_schema = \"public\"")),
        ("builtin_role_with_login", with("app.toml", "[roles.gym_app]\nlogin = true\n")),
        ("role_declared_twice", {
            let mut files = with("auditor.toml", AUDITOR);
            files.push(("more.toml", AUDITOR.to_string()));
            files
        }),
        ("table_declared_twice", with("more.toml", "[tables.gyms]\ncolumns = []\n")),
        ("tenant_column_nullable_text_with_default", edited("members.toml", "{ name = \"gym_id\", type = \"uuid\" }", "{ name = \"gym_id\", type = \"text\", nullable = true, default = \"'x'\" }")),
        ("column_declared_twice", edited("gyms.toml", "{ name = \"name\", type = \"text\" },", "{ name = \"name\", type = \"text\" },\n  { name = \"name\", type = \"text\" },")),
        ("primary_key_not_a_column", edited("gyms.toml", "[tables.gyms]", "[tables.gyms]\nprimary_key = \"gym\"")),
        ("no_id_column", edited("members.toml", "{ name = \"id\",", "{ name = \"member_id\",")),
        ("unknown_isolation", edited("gyms.toml", "[tables.gyms]", "[tables.gyms]\nisolation = \"strict\"")),
        ("manual_isolation_without_app_policy", edited("gyms.toml", "[tables.gyms]", "[tables.gyms]\nisolation = \"manual\"")),
        ("unique_on_unknown_and_no_column", edited("members.toml", "unique = [[\"full_name\"]]", "unique = [[\"nickname\"], []]")),
        ("index_without_columns", edited("members.toml", "unique = [", "indexes = [{ columns = [] }]\nunique = [")),
        ("reference_to_the_tenant_table", edited("members.toml", "unique = [", "references = [{ column = \"id\", table = \"gyms\" }]\nunique = [")),
        ("reference_type_mismatch_and_set_null", edited("members.toml", "unique = [", "references = [{ column = \"full_name\", table = \"members\" }, { column = \"id\", table = \"members\", on_delete = \"set null\" }]\nunique = [")),
        ("grant_to_undeclared_role_and_unknown_privilege", edited("members.toml", "grants.gym_app = [\"select\", \"insert\"]", "grants.gym_app = [\"select\", \"upsert\"]\ngrants.auditor = [\"select\"]")),
        ("trigger_to_the_app_role", edited("members.toml", "[\"select\", \"insert\"]", "[\"select\", \"trigger\"]")),
        ("policy_on_undeclared_table", edited("members.toml", "table = \"members\"", "table = \"trainers\"")),
        ("policy_name_reserved", edited("members.toml", "name = \"members_named\"", "name = \"members_tenant_isolation\"")),
        ("policy_declared_twice", with_policies(&["roles = [\"gym_app\"]\nusing = \"true\""; 2])),
        ("policy_unknown_command_and_kind", with_policy(&format!("command = \"upsert\"\nkind = \"lenient\"\nroles = [\"gym_app\"]\n{using}"))),
        ("policy_without_roles", with_policy(&format!("roles = []\n{using}"))),
        ("policy_for_an_undeclared_role", with_policy(&format!("roles = [\"auditor\"]\n{using}"))),
        ("insert_policy_with_using", with_policy(&format!("command = \"insert\"\nroles = [\"gym_app\"]\n{using}"))),
        ("select_policy_with_check", with_policy("command = \"select\"\nroles = [\"gym_app\"]\nwith_check = \"true\"")),
        ("policy_expression_with_a_comment", with_policy("roles = [\"gym_app\"]\nusing = \"true -- all\"")),
    ]
}

/// Every message of a case, as the user reads it.
fn messages(files: &Files) -> String {
    match load(files) {
        Ok(_) => "compiles\n".into(),
        Err(errors) => errors.0.iter().map(|e| format!("{e}\n")).collect(),
    }
}

#[test]
fn policy_diagnostics() {
    let all: String = cases()
        .iter()
        .map(|(name, files)| format!("## {name}\n{}\n", messages(files)))
        .collect();
    insta::assert_snapshot!(all);
}
