//! The compiler's problems, case by case: each case edits the small test project into one kind
//! of mistake; the snapshot holds every message with its file:line:column and hint.

use crate::policy::testing::{base, edited, load, with, with_model, AUDITOR};

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
        ("model_compiles", with_model("", "")),
        ("global_table_written_by_the_app", with_model("grants.gym_app = [\"select\"]\ngrants.platform_admin", "grants.gym_app = [\"select\", \"insert\", \"update\"]\ngrants.platform_admin")),
        ("global_table_with_tenant_column_isolation_and_partitions", with_model("global = true\n", "global = true\nisolation = \"manual\"\npartition_by = { method = \"hash\", column = \"id\" }\n").into_iter().map(|(n, t)| (n, t.replace("{ name = \"title\", type = \"text\" },", "{ name = \"title\", type = \"text\" },\n  { name = \"gym_id\", type = \"uuid\" },"))).collect()),
        ("global_table_references_a_tenant_table_and_has_a_policy", {
            let mut files = with_model("  { name = \"title\", type = \"text\" },\n]", "  { name = \"title\", type = \"text\" },\n  { name = \"member_id\", type = \"uuid\" },\n]\nreferences = [{ column = \"member_id\", table = \"members\" }]");
            files[3].1.push_str("\n[[policies]]\nname = \"all\"\ntable = \"plans\"\nroles = [\"gym_app\"]\nusing = \"true\"\n");
            files
        }),
        ("partitioned_by_another_column", with_model("{ method = \"list\", column = \"gym_id\" }", "{ method = \"range\", column = \"plan_id\" }")),
        ("partitioned_by_an_unknown_method", with_model("{ method = \"list\", column = \"gym_id\" }", "{ method = \"interval\", column = \"gym_id\" }")),
        ("partition_bounds_that_do_not_fit", with_model("{ name = \"visits_rest\", default = true }", "{ name = \"visits_a\", modulus = 2, remainder = 0 }, { name = \"visits_b\", values = [] }, { name = \"members\", default = true }, { name = \"visits_c\", values = [\"'x'; DROP TABLE gyms\"] }")),
        ("partitions_without_partition_by_and_without_partitions", {
            let mut files = with_model("partitions = [{ name = \"visits_rest\", default = true }]", "");
            files[2].1 = files[2].1.replace("unique = [", "partitions = [{ name = \"members_a\", default = true }]\nunique = [");
            files
        }),
        ("partitioned_by_its_key_with_a_unique_per_tenant", edited("members.toml", "unique = [", "partition_by = { method = \"hash\", column = \"id\" }\npartitions = [{ name = \"members_p0\", modulus = 1, remainder = 0 }]\nunique = [")),
        ("view_written_by_the_app_and_named_like_a_table", with_model("[views.visit_plans]\nquery = \"SELECT", "[views.members]\nquery = \"SELECT 1\"\n\n[views.visit_plans]\ngrants.platform_admin = [\"select\", \"delete\"]\nquery = \"SELECT")),
        ("view_queries_that_are_not_one_select", with_model("query = \"SELECT v.gym_id", "query = \"DELETE FROM gyms\"\n\n[views.two]\nquery = \"SELECT 1; SELECT v.gym_id")),
        ("extension_with_a_bad_name_and_an_undeclared_role", with_model("pgcrypto = { schema = \"extensions\", usage = [\"gym_app\"] }", "\"pg crypto\" = { schema = \"extensions\" }\npgcrypto = { schema = \"ext-ensions\", usage = [\"auditor\"] }")),
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
