//! The `[tenancy]` section: declared in exactly one file; names, the context setting, the admin
//! bypass and the three built-in roles.

use toml::Spanned;

use super::RoleNames;
use crate::ident::Ident;
use crate::model::{AdminBypass, Tenancy};
use crate::policy::diagnostics::{PolicyError, Sink, DOCS_HINT};
use crate::policy::raw::{Parsed, RawTenancy};

/// The tenancy of the one file that declares it; None (with the problem recorded) otherwise.
pub(super) fn compile(
    files: &[Parsed],
    role_names: &RoleNames<'_>,
    errors: &mut Vec<PolicyError>,
) -> Option<Tenancy> {
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
        if let Some(t) = compile_section(raw, &p.source, &mut sink, role_names) {
            tenancy = Some((t, p));
        }
    }
    if tenancy.is_none() && errors.is_empty() {
        errors.push(PolicyError::at_start(
            &files[0].path,
            "no [tenancy] section in any policy file".into(),
            Some(format!(
                "add [tenancy] with tenant_table = \"gyms\" to one file; {DOCS_HINT}"
            )),
        ));
    }
    tenancy.map(|(t, _)| t)
}

/// A name key of `[tenancy]`, or its default when absent.
fn name_or(sink: &mut Sink<'_>, v: &Option<Spanned<String>>, default: &str, what: &str) -> String {
    match v {
        Some(s) => sink.name(s, what).unwrap_or_default(),
        None => default.to_string(),
    }
}

fn compile_section(
    raw: &Spanned<RawTenancy>,
    source: &str,
    sink: &mut Sink<'_>,
    role_names: &RoleNames<'_>,
) -> Option<Tenancy> {
    let r = raw.get_ref();
    let before = sink.count();
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
    let mut role = |v: &Option<Spanned<String>>, default: &str, what: &str| {
        role_names.physical(&name_or(sink, v, default, what))
    };
    let owner_role = role(&r.owner_role, "gym_owner", "owner role");
    let app_role = role(&r.app_role, "gym_app", "app role");
    let admin_role = role(&r.admin_role, "platform_admin", "admin role");
    let context_setting = context_setting(sink, &r.context_setting);
    let admin_bypass = admin_bypass(sink, &r.admin_bypass);
    check_builtin_roles(sink, raw, [&owner_role, &app_role, &admin_role]);
    if sink.count() > before {
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

/// The custom setting that holds the current tenant: a two-part name.
fn context_setting(sink: &mut Sink<'_>, setting: &Option<Spanned<String>>) -> String {
    let Some(s) = setting else {
        return "tenantctl.gym_id".to_string();
    };
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

fn admin_bypass(sink: &mut Sink<'_>, bypass: &Option<Spanned<String>>) -> AdminBypass {
    match bypass.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
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
    }
}

/// Owner, app and admin role: valid after `[role_names]` mapping, and three different roles.
fn check_builtin_roles(sink: &mut Sink<'_>, raw: &Spanned<RawTenancy>, roles: [&String; 3]) {
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
}
