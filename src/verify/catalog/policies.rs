//! Policy checks: the declared policies exist as declared and no other is there (drift), and the
//! shape of every policy that applies to the app role (fail-closed, WITH CHECK, context function).

use crate::pg::unnamed::typed;
use std::collections::BTreeMap;

use anyhow::Result;
use tokio_postgres::Client;

use super::normalise::Normalised;
use super::relations::Rel;
use super::roles::LiveRole;
use super::{query, show};
use crate::model::{AdminBypass, Command, Policy, Schema, Table};
use crate::verify::{Finding, Tally};

const POLICIES: &str = "
SELECT p.polname::text AS name, p.polcmd::text AS cmd, p.polpermissive AS permissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r)::text END
             FROM unnest(p.polroles) r ORDER BY 1) AS roles,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS \"using\",
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_catalog.pg_policy p WHERE p.polrelid = $1";

catalog_code! {
    /// `pg_policy.polcmd`.
    enum PolicyCmd {
        "*" => All,
        "r" => Select,
        "a" => Insert,
        "w" => Update,
        "d" => Delete,
    }
}

typed_row! {
    /// A policy as it is (a row of [`POLICIES`]).
    #[derive(Debug)]
    pub(super) struct LivePolicy {
        name: String,
        cmd: PolicyCmd,
        permissive: bool,
        roles: Vec<String>,
        using: Option<String>,
        with_check: Option<String>,
    }
}

impl LivePolicy {
    fn command(&self) -> Command {
        match self.cmd {
            PolicyCmd::All => Command::All,
            PolicyCmd::Select => Command::Select,
            PolicyCmd::Insert => Command::Insert,
            PolicyCmd::Update => Command::Update,
            PolicyCmd::Delete => Command::Delete,
        }
    }

    fn kind(&self) -> &'static str {
        if self.permissive {
            "PERMISSIVE"
        } else {
            "RESTRICTIVE"
        }
    }
}

/// The `pg_policy.polcmd` code of a command, as drift.policy names a live policy's command.
fn code(c: Command) -> &'static str {
    match c {
        Command::All => "*",
        Command::Select => "r",
        Command::Insert => "a",
        Command::Update => "w",
        Command::Delete => "d",
    }
}

pub(super) async fn read(client: &Client, oid: u32) -> Result<Vec<LivePolicy>> {
    query(
        client,
        POLICIES,
        typed![&oid],
        "cannot read policies",
        LivePolicy::from_row,
    )
    .await
}

/// drift.policy, drift.policy-undeclared and (admin_bypass = "policy") role.admin-bypass on a
/// declared table.
pub(super) fn drift(
    schema: &Schema,
    table: &Table,
    rel: &Rel,
    live: &[LivePolicy],
    norm: Option<&Normalised>,
    tally: &mut Tally,
) {
    let disp = rel.display();
    for (pname, p) in &table.policies {
        let pobj = format!("policy {disp}.{pname}");
        let Some(l) = live.iter().find(|l| &l.name == pname) else {
            tally.fail(Finding::new(
                "drift.policy",
                &pobj,
                format!("{pobj} is declared but missing"),
            ));
            continue;
        };
        let diffs = differences(pname, p, l, norm);
        tally.record(
            "drift.policy",
            (!diffs.is_empty()).then(|| {
                Finding::new(
                    "drift.policy",
                    &pobj,
                    format!("{pobj}: {}", diffs.join("; ")),
                )
            }),
        );
    }
    tally.pass("drift.policy-undeclared");
    for l in live
        .iter()
        .filter(|l| !table.policies.contains_key(&l.name))
    {
        tally.fail(Finding::new(
            "drift.policy-undeclared",
            format!("policy {disp}.{}", l.name),
            format!(
                "policy {} on {disp} ({} {} TO {}) is not declared",
                l.name,
                l.kind(),
                l.command().sql(),
                l.roles.join(", ")
            ),
        ));
    }
    admin_bypass_policy(schema, rel, live, tally);
}

/// How a live policy differs from its declaration (expressions as Postgres renders both).
fn differences(pname: &str, p: &Policy, l: &LivePolicy, norm: Option<&Normalised>) -> Vec<String> {
    let mut diffs = Vec::new();
    if l.command() != p.command {
        diffs.push(format!(
            "command is {}, declared {}",
            code(l.command()),
            p.command.sql()
        ));
    }
    if l.permissive != p.permissive {
        diffs.push(format!("it is {}", l.kind()));
    }
    let mut roles = p.roles.clone();
    roles.sort();
    if l.roles != roles {
        diffs.push(format!(
            "roles are {}, declared {}",
            l.roles.join(", "),
            roles.join(", ")
        ));
    }
    match norm.and_then(|n| n.policies.get(pname)) {
        Some(Ok((u, c))) => {
            if &l.using != u {
                diffs.push(format!("USING is {}, declared {}", show(&l.using), show(u)));
            }
            if &l.with_check != c {
                diffs.push(format!(
                    "WITH CHECK is {}, declared {}",
                    show(&l.with_check),
                    show(c)
                ));
            }
        }
        Some(Err(e)) => diffs.push(format!("the declared expressions are rejected here: {e}")),
        None => {}
    }
    diffs
}

/// role.admin-bypass with `admin_bypass = "policy"`: a permissive USING (true) policy for the
/// admin role.
fn admin_bypass_policy(schema: &Schema, rel: &Rel, live: &[LivePolicy], tally: &mut Tally) {
    let t = &schema.tenancy;
    if t.admin_bypass != AdminBypass::Policy {
        return;
    }
    let ok = live.iter().any(|l| {
        l.permissive
            && l.cmd == PolicyCmd::All
            && l.roles.contains(&t.admin_role)
            && l.using.as_deref() == Some("true")
    });
    tally.record(
        "role.admin-bypass",
        (!ok).then(|| {
            Finding::new(
                "role.admin-bypass",
                rel.object(),
                format!(
                    "{} has no permissive USING (true) policy for {}",
                    rel.display(),
                    t.admin_role
                ),
            )
        }),
    );
}

/// The shape of the policies that apply to the app role on one table.
pub(super) fn shape(
    schema: &Schema,
    rel: &Rel,
    live: &[LivePolicy],
    memberships: &[LiveRole],
    tally: &mut Tally,
) {
    let t = &schema.tenancy;
    let applies = |p: &LivePolicy| {
        p.roles
            .iter()
            .any(|r| r == "public" || r == &t.app_role || memberships.iter().any(|m| &m.name == r))
    };
    let func = format!("{}()", t.context_function);
    let mut per_cmd: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in live.iter().filter(|p| applies(p)) {
        let pobj = format!("policy {}.{}", rel.display(), p.name);
        let exprs: Vec<&String> = p.using.iter().chain(p.with_check.iter()).collect();
        if p.permissive {
            for c in commands(p.command()) {
                per_cmd.entry(c).or_default().push(&p.name);
            }
            permissive_shape(schema, p, &pobj, &exprs, &func, tally);
        }
        let per_row = exprs.iter().find(|e| per_row_context(e, &func));
        tally.record(
            "policy.context-per-row",
            per_row.map(|e| {
                Finding::new(
                    "policy.context-per-row",
                    &pobj,
                    format!("{pobj} calls {func} per row: {e}"),
                )
            }),
        );
    }
    multiple_permissive(schema, rel, per_cmd, tally);
}

/// The commands a policy for `c` applies to.
fn commands(c: Command) -> &'static [&'static str] {
    match c {
        Command::All => &["SELECT", "INSERT", "UPDATE", "DELETE"],
        Command::Select => &["SELECT"],
        Command::Insert => &["INSERT"],
        Command::Update => &["UPDATE"],
        Command::Delete => &["DELETE"],
    }
}

/// policy.always-true, policy.fail-open, policy.missing-with-check and policy.context for one
/// permissive policy that applies to the app role.
fn permissive_shape(
    schema: &Schema,
    p: &LivePolicy,
    pobj: &str,
    exprs: &[&String],
    func: &str,
    tally: &mut Tally,
) {
    let t = &schema.tenancy;
    let always_true = exprs.iter().any(|e| is_true(e));
    tally.record(
        "policy.always-true",
        always_true.then(|| {
            Finding::new(
                "policy.always-true",
                pobj,
                format!("{pobj} is always true for {}", t.app_role),
            )
        }),
    );
    let fail_open = exprs.iter().find(|e| {
        let u = e.to_ascii_uppercase();
        u.contains(" IS NULL")
            || u.contains("COALESCE(")
            || u.contains(" OR TRUE")
            || u.contains("IS NOT TRUE")
    });
    tally.record(
        "policy.fail-open",
        fail_open.map(|e| {
            Finding::new(
                "policy.fail-open",
                pobj,
                format!("{pobj} can fail open: {e}"),
            )
        }),
    );
    let writes = matches!(
        p.cmd,
        PolicyCmd::All | PolicyCmd::Insert | PolicyCmd::Update
    );
    tally.record(
        "policy.missing-with-check",
        (writes && p.with_check.is_none()).then(|| {
            Finding::new(
                "policy.missing-with-check",
                pobj,
                format!("{pobj} ({}) has no WITH CHECK", p.command().sql()),
            )
        }),
    );
    if !always_true {
        let bad = exprs
            .iter()
            .find(|e| !e.contains(func) || e.contains("current_setting("));
        tally.record(
            "policy.context",
            bad.map(|e| {
                Finding::new(
                    "policy.context",
                    pobj,
                    format!(
                        "{pobj} does not read the context through {}.{func}: {e}",
                        t.helper_schema
                    ),
                )
            }),
        );
    }
}

/// policy.multiple-permissive: per command, at most one permissive policy for the app role.
fn multiple_permissive(
    schema: &Schema,
    rel: &Rel,
    per_cmd: BTreeMap<&str, Vec<&str>>,
    tally: &mut Tally,
) {
    let disp = rel.display();
    for (cmd, names) in per_cmd {
        tally.record(
            "policy.multiple-permissive",
            (names.len() > 1).then(|| {
                Finding::new(
                    "policy.multiple-permissive",
                    format!("table {disp}"),
                    format!(
                        "{} permissive policies apply to {} for {cmd} on {disp}: {}",
                        names.len(),
                        schema.tenancy.app_role,
                        names.join(", ")
                    ),
                )
            }),
        );
    }
}

fn is_true(e: &str) -> bool {
    let s: String = e
        .chars()
        .filter(|c| *c != '(' && *c != ')' && !c.is_whitespace())
        .collect();
    s.eq_ignore_ascii_case("true")
}

/// Postgres renders `(SELECT f())` as `( SELECT schema.f() AS f)`: an InitPlan. Any other call
/// of the context function is evaluated for each row.
fn per_row_context(expr: &str, func: &str) -> bool {
    expr.match_indices(func).any(|(i, _)| {
        let before = expr[..i].trim_end_matches(|c: char| {
            c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '"'
        });
        !before.trim_end().ends_with("SELECT")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_wrapped_in_a_subselect_is_an_initplan() {
        let f = "current_gym_id()";
        assert!(!per_row_context(
            "(gym_id = ( SELECT tenantctl.current_gym_id() AS current_gym_id))",
            f
        ));
        assert!(per_row_context("(gym_id = tenantctl.current_gym_id())", f));
        assert!(per_row_context("(gym_id = current_gym_id())", f));
    }

    #[test]
    fn always_true_ignores_parentheses() {
        assert!(is_true("true"));
        assert!(is_true("(true)"));
        assert!(!is_true("(gym_id = x)"));
    }
}
