//! Function checks: tenantctl's helper functions (and their schema) as generated and owned by the
//! owner role, and no SECURITY DEFINER function the app role can call that reaches tenant rows.

use crate::pg::unnamed::typed;
use std::collections::BTreeSet;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::{col, owned_by, query, query_opt};
use crate::model::{Schema, Tenancy};
use crate::sqlgen;
use crate::verify::{Finding, Tally};

const FUNCTION: &str = "
SELECT p.prosrc AS src, p.provolatile::text AS volatility, p.prosecdef AS definer,
       pg_catalog.pg_get_userbyid(p.proowner)::text AS owner,
       coalesce(p.proconfig, '{}')::text[] AS config
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1 AND p.proname = $2 AND p.pronargs = 0";

/// `proconfig` of a helper function whose search_path tenantctl pins.
const PINNED_SEARCH_PATH: &str = "search_path=pg_catalog, pg_temp";

const SCHEMA_OWNER: &str = "
SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text AS owner FROM pg_catalog.pg_namespace n WHERE n.nspname = $1";

/// SECURITY DEFINER functions the app role ($1) can execute, directly or as an aggregate's support
/// function, a cast or a type's I/O function, with their owner's attributes and
/// which of the roles $2 (owner, admin) the owner is a member of.
const DEFINER_FUNCTIONS: &str = "
SELECT n.nspname::text AS schema, p.proname::text AS name,
       pg_catalog.pg_get_function_identity_arguments(p.oid) AS args, p.prosrc AS src,
       coalesce(p.proconfig, '{}')::text[] AS config, o.rolname::text AS owner,
       o.rolsuper AS superuser, o.rolbypassrls AS bypassrls,
       ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
             WHERE r.rolname = ANY($2) AND pg_catalog.pg_has_role(p.proowner, r.oid, 'MEMBER') ORDER BY 1) AS member_of
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND ((pg_catalog.has_function_privilege($1, p.oid, 'EXECUTE')
        AND pg_catalog.has_schema_privilege($1, n.oid, 'USAGE'))
       -- reached without EXECUTE of its own: an aggregate runs its support functions with the
       -- aggregate owner's right, a cast or a type's I/O function runs for whoever casts or
       -- reads the type
       OR EXISTS (SELECT FROM pg_catalog.pg_aggregate a
                  WHERE p.oid IN (a.aggtransfn::oid, a.aggfinalfn::oid, a.aggcombinefn::oid,
                                  a.aggserialfn::oid, a.aggdeserialfn::oid, a.aggmtransfn::oid,
                                  a.aggminvtransfn::oid, a.aggmfinalfn::oid)
                    AND pg_catalog.has_function_privilege($1, a.aggfnoid, 'EXECUTE'))
       OR EXISTS (SELECT FROM pg_catalog.pg_cast c WHERE c.castfunc = p.oid)
       OR EXISTS (SELECT FROM pg_catalog.pg_type t
                  WHERE p.oid IN (t.typinput::oid, t.typoutput::oid, t.typreceive::oid,
                                  t.typsend::oid, t.typmodin::oid, t.typmodout::oid)))
ORDER BY 1, 2, 3";

catalog_code! {
    /// `pg_proc.provolatile`.
    enum Volatility {
        "i" => Immutable,
        "s" => Stable,
        "v" => Volatile,
    }
}

typed_row! {
    /// A helper function as it is (a row of [`FUNCTION`]).
    struct LiveFunction {
        src: String,
        volatility: Volatility,
        definer: bool,
        owner: String,
        config: Vec<String>,
    }
}

typed_row! {
    /// A SECURITY DEFINER function the app role can execute (a row of [`DEFINER_FUNCTIONS`]).
    struct DefinerFunction {
        schema: String,
        name: String,
        args: String,
        src: String,
        config: Vec<String>,
        owner: String,
        superuser: bool,
        bypassrls: bool,
        /// Which of the owner and admin roles its owner is a member of.
        member_of: Vec<String>,
    }
}

/// One of tenantctl's helper functions: its name, generated body, and whether it is the context
/// function (STABLE, and allowed no settings or the pinned search_path).
struct Helper {
    name: String,
    body: String,
    context: bool,
}

fn helpers(t: &Tenancy) -> [Helper; 2] {
    [
        Helper {
            name: t.context_function.clone(),
            body: sqlgen::context_function_body(t),
            context: true,
        },
        Helper {
            name: "forbid_tenant_change".to_string(),
            body: sqlgen::trigger_function_body(),
            context: false,
        },
    ]
}

pub(super) async fn check(
    client: &Client,
    schema: &Schema,
    tenant_owners: &BTreeSet<&str>,
    tally: &mut Tally,
) -> Result<()> {
    let t = &schema.tenancy;
    let helpers = helpers(t);
    for h in &helpers {
        helper(client, t, h, tally).await?;
    }
    helper_schema_owner(client, t, tally).await?;
    let names: Vec<&String> = helpers.iter().map(|h| &h.name).collect();
    definer_functions(client, schema, &names, tenant_owners, tally).await
}

/// drift.function (and perf.context-function, drift.owner) for one helper function.
async fn helper(client: &Client, t: &Tenancy, h: &Helper, tally: &mut Tally) -> Result<()> {
    let obj = format!("function {}.{}()", t.helper_schema, h.name);
    let params = typed![&t.helper_schema, &h.name];
    let what = "cannot read functions";
    let problem = match query_opt(client, FUNCTION, params, what, LiveFunction::from_row).await? {
        None => Some("does not exist".to_string()),
        Some(f) => {
            let pinned = f.config == [PINNED_SEARCH_PATH];
            if h.context {
                // The context function: Postgres inlines a SQL function into the statement
                // only without settings. With the pinned search_path (as tenantctl wrote it
                // before helpers revision 2) it is safe but slow.
                tally.record(
                    "perf.context-function",
                    pinned.then(|| {
                        Finding::new(
                            "perf.context-function",
                            &obj,
                            format!(
                                "{obj} carries settings ({}), so Postgres cannot inline it: every statement of the app role calls it",
                                f.config.join(", ")
                            ),
                        )
                    }),
                );
            }
            let fix = sqlgen::fix_function_owner(&t.helper_schema, &h.name, &t.owner_role);
            owned_by(&obj, &f.owner, fix, &t.owner_role, tally);
            helper_problem(t, h, &f, pinned)
        }
    };
    tally.record(
        "drift.function",
        problem.map(|p| Finding::new("drift.function", &obj, format!("{obj} {p}"))),
    );
    Ok(())
}

/// How a live helper function differs from the generated one, if it does.
fn helper_problem(t: &Tenancy, h: &Helper, f: &LiveFunction, pinned: bool) -> Option<String> {
    // The context function: its body now, or (pinned only) the one before helpers revision 2,
    // whose unqualified `::uuid` the caller's search_path (pg_temp first, for types) could
    // resolve to a type of its own if it were inlined.
    let old_body = h.context && f.src == sqlgen::context_function_body_v1(t);
    // (The old body without the pin is reported first, below.)
    let settings_ok = pinned || h.context && f.config.is_empty();
    if old_body && !pinned {
        Some("has the body of an older tenantctl without its pinned search_path: its `::uuid` would be resolved by each caller's search_path (re-create it with `tenantctl generate` and `tenantctl migrate`)".to_string())
    } else if f.src != h.body && !old_body {
        Some(format!("has another body: {}", f.src.trim()))
    } else if !settings_ok {
        Some(format!(
            "carries settings ({}) other than tenantctl's (re-create it with `tenantctl generate` and `tenantctl migrate`)",
            if f.config.is_empty() { "none".to_string() } else { f.config.join(", ") }
        ))
    } else if h.context && f.volatility != Volatility::Stable {
        Some("is not STABLE".to_string())
    } else if f.definer {
        Some("is SECURITY DEFINER".to_string())
    } else {
        None
    }
}

/// drift.owner for the helper schema.
async fn helper_schema_owner(client: &Client, t: &Tenancy, tally: &mut Tally) -> Result<()> {
    if let Some(r) = client
        .query_typed_opt(SCHEMA_OWNER, typed![&t.helper_schema])
        .await
        .context("cannot read the helper schema")?
    {
        owned_by(
            &format!("schema {}", t.helper_schema),
            &col::<String>(&r, "owner")?,
            sqlgen::fix_schema_owner(&t.helper_schema, &t.owner_role),
            &t.owner_role,
            tally,
        );
    }
    Ok(())
}

/// exposure.function and exposure.function-search-path for every SECURITY DEFINER function the
/// app role can execute.
async fn definer_functions(
    client: &Client,
    schema: &Schema,
    helper_names: &[&String],
    tenant_owners: &BTreeSet<&str>,
    tally: &mut Tally,
) -> Result<()> {
    let t = &schema.tenancy;
    let owner_admin = vec![t.owner_role.clone(), t.admin_role.clone()];
    let params = typed![&t.app_role, &owner_admin];
    let what = "cannot read SECURITY DEFINER functions";
    for f in query(
        client,
        DEFINER_FUNCTIONS,
        params,
        what,
        DefinerFunction::from_row,
    )
    .await?
    {
        // tenantctl's own helpers are SECURITY INVOKER; drift.function reports them otherwise.
        if f.schema == t.helper_schema && f.args.is_empty() && helper_names.contains(&&f.name) {
            continue;
        }
        let obj = format!("function {}.{}({})", f.schema, f.name, f.args);
        let why = definer_reach(schema, &f, tenant_owners);
        tally.record(
            "exposure.function",
            why.map(|why| {
                Finding::new(
                    "exposure.function",
                    &obj,
                    format!("SECURITY DEFINER {obj} {why} and the app role can execute it"),
                )
            }),
        );
        let pinned = f.config.iter().any(|c| c.starts_with("search_path="));
        tally.record(
            "exposure.function-search-path",
            (!pinned).then(|| {
                Finding::new(
                    "exposure.function-search-path",
                    &obj,
                    format!("SECURITY DEFINER {obj} has no pinned search_path and the app role can execute it"),
                )
            }),
        );
    }
    Ok(())
}

/// Why a SECURITY DEFINER function reaches tenant rows: the tenant tables its body names, or
/// (whatever the body says: EXECUTE hides what it reads) an owner that reaches them anyway.
fn definer_reach(
    schema: &Schema,
    f: &DefinerFunction,
    tenant_owners: &BTreeSet<&str>,
) -> Option<String> {
    let reads: Vec<&str> = schema
        .tables
        .keys()
        .filter(|t| mentions(&f.src, t))
        .map(String::as_str)
        .collect();
    let owner = &f.owner;
    let runs_as = if f.superuser {
        Some(format!("the superuser {owner}"))
    } else if f.bypassrls {
        Some(format!("{owner}, which has BYPASSRLS"))
    } else if tenant_owners.contains(owner.as_str()) {
        Some(format!("{owner}, which owns tenant tables"))
    } else if !f.member_of.is_empty() {
        Some(format!(
            "{owner}, a member of {}",
            f.member_of.join(" and ")
        ))
    } else {
        None
    };
    match (reads.is_empty(), runs_as) {
        (true, None) => None,
        (false, None) => Some(format!("reads {}", reads.join(", "))),
        (_, Some(who)) => Some(format!("runs as {who}")),
    }
}

/// Whether `name` occurs in `text` as a whole word (an identifier), case-insensitively.
fn mentions(text: &str, name: &str) -> bool {
    let text = text.to_ascii_lowercase();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    text.match_indices(&name.to_ascii_lowercase())
        .any(|(i, m)| {
            let before = text[..i].chars().next_back();
            let after = text[i + m.len()..].chars().next();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn table_names_are_matched_as_words() {
        assert!(mentions("SELECT * FROM public.members", "members"));
        assert!(mentions("select * from \"members\"", "members"));
        assert!(!mentions("SELECT * FROM members_archive", "members"));
        assert!(!mentions("SELECT 1", "members"));
    }
}
