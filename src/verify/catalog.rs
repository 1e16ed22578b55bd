//! Static checks: read the catalog (no data) and compare it with the declaration and with the
//! known ways row-level security breaks. Catalog queries are static strings with bind parameters.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{Context, Result};
use tokio_postgres::{Client, Row};

use super::{Finding, Tally};
use crate::model::{AdminBypass, Command, Constraint, OnDelete, Privilege, Schema, Table};
use crate::sqlgen;

/// A relation the checks look at.
#[derive(Debug, Clone)]
struct Rel {
    oid: u32,
    schema: String,
    name: String,
    kind: String,
    rls: bool,
    forced: bool,
    owner: String,
    has_tc: bool,
    options: Vec<String>,
}

impl Rel {
    fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    fn object(&self) -> String {
        let what = match self.kind.as_str() {
            "v" => "view",
            "m" => "materialized view",
            "f" => "foreign table",
            _ => "table",
        };
        format!("{what} {}", self.display())
    }
    fn security_invoker(&self) -> bool {
        self.options.iter().any(|o| {
            o.split_once('=').is_some_and(|(k, v)| {
                k == "security_invoker"
                    && matches!(v.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1")
            })
        })
    }
}

const RELATIONS: &str = "
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
       pg_catalog.pg_get_userbyid(c.relowner)::text,
       EXISTS (SELECT FROM pg_catalog.pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = $1 AND a.attnum > 0 AND NOT a.attisdropped),
       coalesce(c.reloptions, '{}')::text[],
       pg_catalog.has_schema_privilege($2, n.oid, 'USAGE')
         AND (pg_catalog.has_table_privilege($2, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
              OR pg_catalog.has_any_column_privilege($2, c.oid, 'SELECT, INSERT, UPDATE'))
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY n.nspname, c.relname";

/// Relations a view or materialized view reads, through any depth of views.
const VIEW_READS: &str = "
WITH RECURSIVE deps(rel) AS (
    SELECT d.refobjid FROM pg_catalog.pg_rewrite r
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
         AND d.refclassid = 'pg_catalog.pg_class'::regclass
    WHERE r.ev_class = $1 AND d.refobjid <> r.ev_class
  UNION
    SELECT d.refobjid FROM deps
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = deps.rel
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
         AND d.refclassid = 'pg_catalog.pg_class'::regclass
    WHERE d.refobjid <> r.ev_class
)
SELECT DISTINCT rel FROM deps";

const ROLES: &str = "
SELECT rolname::text, rolsuper, rolbypassrls, rolcanlogin, rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = ANY($1)";

/// Every role the app role is a member of, directly or through other roles.
const APP_MEMBERSHIPS: &str = "
WITH RECURSIVE up(roleid) AS (
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.member
    WHERE r.rolname = $1
  UNION
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN up ON m.member = up.roleid
)
SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, r.rolcreaterole FROM up JOIN pg_catalog.pg_roles r ON r.oid = up.roleid
ORDER BY 1";

/// Predefined roles that reach past row-level security or out to the server's files and programs.
const PREDEFINED: &[&str] = &[
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_read_all_data",
    "pg_write_all_data",
];

/// Every role granted the app role, directly or through other roles (the application's login
/// roles), except the role verify runs as (the migrator) and the owner and admin roles ($2):
/// its attributes and which of $2 it is also a member of.
const APP_GRANTEES: &str = "
WITH RECURSIVE down(member) AS (
    SELECT m.member FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
    WHERE r.rolname = $1
  UNION
    SELECT m.member FROM pg_catalog.pg_auth_members m JOIN down ON m.roleid = down.member
)
SELECT r.rolname::text, r.rolsuper, r.rolbypassrls,
       ARRAY(SELECT o.rolname::text FROM pg_catalog.pg_roles o
             WHERE o.rolname = ANY($2) AND pg_catalog.pg_has_role(r.oid, o.oid, 'MEMBER') ORDER BY 1)
FROM down JOIN pg_catalog.pg_roles r ON r.oid = down.member
WHERE r.rolname <> ALL($2) AND r.rolname <> current_user AND r.rolname <> session_user
ORDER BY 1";

const OWNED: &str = "
SELECT pg_catalog.pg_describe_object(s.classid, s.objid, s.objsubid)
FROM pg_catalog.pg_shdepend s
WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.deptype = 'o'
  AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)
  AND s.dbid IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
ORDER BY 1";

const DEFAULT_CONTEXT: &str = "
SELECT coalesce(d.datname::text, '(every database)'), coalesce(r.rolname::text, '(every role)')
FROM pg_catalog.pg_db_role_setting s
LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
WHERE (s.setdatabase = 0 OR d.datname = pg_catalog.current_database())
  AND EXISTS (SELECT FROM unnest(s.setconfig) c WHERE lower(c) LIKE lower($1) || '=%')";

const COLUMNS: &str = "
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid)
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped";

const CONSTRAINTS: &str = "
SELECT c.conname::text, c.contype::text, pg_catalog.pg_get_constraintdef(c.oid),
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
       coalesce(fc.relname::text, ''), coalesce(fn.nspname::text, ''),
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i),
       c.confdeltype::text
FROM pg_catalog.pg_constraint c
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = c.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
WHERE c.conrelid = $1";

const INDEXES: &str = "
SELECT ic.relname::text, i.indisunique,
       ARRAY(SELECT coalesce(a.attname::text, '(expression)') FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
       i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = $1";

const POLICIES: &str = "
SELECT p.polname::text, p.polcmd::text, p.polpermissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r)::text END
             FROM unnest(p.polroles) r ORDER BY 1),
       pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_catalog.pg_policy p WHERE p.polrelid = $1";

const TABLE_GRANTS: &str = "
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END, a.privilege_type
FROM pg_catalog.pg_class c, aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
WHERE c.oid = $1 AND a.grantee <> c.relowner";

const COLUMN_GRANTS: &str = "
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
       a.privilege_type, att.attname::text
FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid, aclexplode(att.attacl) a
WHERE att.attrelid = $1 AND att.attnum > 0 AND NOT att.attisdropped AND att.attacl IS NOT NULL
  AND a.grantee <> c.relowner";

const DANGEROUS: &str = "
SELECT p, pg_catalog.has_table_privilege($1, $2::oid, p),
       EXISTS (SELECT FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
               WHERE c.oid = $2 AND a.grantee = 0 AND a.privilege_type = p)
FROM unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) p";

const TRIGGER: &str = "
SELECT t.tgenabled::text, t.tgtype::int4, n.nspname::text, p.proname::text, t.tgargs
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE t.tgrelid = $1 AND t.tgname = $2";

const FUNCTION: &str = "
SELECT p.prosrc, p.provolatile::text, p.prosecdef, pg_catalog.pg_get_userbyid(p.proowner)::text,
       coalesce(p.proconfig, '{}')::text[]
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1 AND p.proname = $2 AND p.pronargs = 0";

/// `proconfig` of a helper function whose search_path tenantctl pins.
const PINNED_SEARCH_PATH: &str = "search_path=pg_catalog, pg_temp";

const SCHEMA_OWNER: &str = "
SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text FROM pg_catalog.pg_namespace n WHERE n.nspname = $1";

/// SECURITY DEFINER functions the app role ($1) can execute, with their owner's attributes and
/// which of the roles $2 (owner, admin) the owner is a member of.
const DEFINER_FUNCTIONS: &str = "
SELECT n.nspname::text, p.proname::text, pg_catalog.pg_get_function_identity_arguments(p.oid), p.prosrc,
       coalesce(p.proconfig, '{}')::text[], o.rolname::text, o.rolsuper, o.rolbypassrls,
       ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
             WHERE r.rolname = ANY($2) AND pg_catalog.pg_has_role(p.proowner, r.oid, 'MEMBER') ORDER BY 1)
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_function_privilege($1, p.oid, 'EXECUTE')
  AND pg_catalog.has_schema_privilege($1, n.oid, 'USAGE')
ORDER BY 1, 2, 3";

/// Rules on tenant tables (a table has no `_RETURN` rule; a view that was a table might).
const RULES: &str = "
SELECT r.ev_class, r.rulename::text, r.ev_type::text, r.ev_enabled::text
FROM pg_catalog.pg_rewrite r WHERE r.ev_class = ANY($1) AND r.rulename <> '_RETURN'
ORDER BY 1, 2";

/// User triggers on a table other than the immutability trigger ($2); foreign-key triggers are internal.
const OTHER_TRIGGERS: &str = "
SELECT t.tgname::text, t.tgtype::int4, t.tgenabled::text FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgname <> $2
ORDER BY 1";

/// Whether a table references a tenant table ($2) by foreign key or inherits from one.
const TABLE_DERIVED: &str = "
SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint c
               WHERE c.conrelid = $1 AND c.contype = 'f' AND c.confrelid = ANY($2))
    OR EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhrelid = $1 AND i.inhparent = ANY($2))";

/// Scratch copies of the declared tables and policies, read back after Postgres normalised them.
const SCRATCH_COLUMNS: &str = COLUMNS;
const SCRATCH_CHECKS: &str = "
SELECT c.conname::text, pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c
WHERE c.conrelid = $1 AND c.contype = 'c'";
const SCRATCH_POLICY: &str = "
SELECT pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 AND p.polname = $2";

/// A policy's USING and WITH CHECK, as Postgres renders them.
type PolicyExprs = (Option<String>, Option<String>);

/// The declaration, normalised by Postgres (see `normalise`).
#[derive(Debug, Default)]
struct Normalised {
    /// column → (type, not null, default)
    columns: BTreeMap<String, (String, bool, Option<String>)>,
    checks: BTreeMap<String, String>,
    /// policy → (using, with check), or the error that creating it raised.
    policies: BTreeMap<String, std::result::Result<PolicyExprs, String>>,
    error: Option<String>,
}

pub async fn check(client: &Client, schema: &Schema) -> Result<Tally> {
    let mut tally = Tally::default();
    let t = &schema.tenancy;
    roles(client, schema, &mut tally).await?;
    default_context(client, schema, &mut tally).await?;

    let mut rels: Vec<(Rel, bool)> = Vec::new();
    for r in client
        .query(RELATIONS, &[&t.tenant_column, &t.app_role])
        .await
        .context("cannot list relations")?
    {
        rels.push((
            Rel {
                oid: col(&r, 0)?,
                schema: col(&r, 1)?,
                name: col(&r, 2)?,
                kind: col(&r, 3)?,
                rls: col(&r, 4)?,
                forced: col(&r, 5)?,
                owner: col(&r, 6)?,
                has_tc: col(&r, 7)?,
                options: col(&r, 8)?,
            },
            col(&r, 9)?,
        ));
    }
    // Declared tables count only in the declared schema, and only as tables.
    let declared = |r: &Rel| {
        r.schema == t.table_schema
            && schema.tables.contains_key(&r.name)
            && matches!(r.kind.as_str(), "r" | "p")
    };
    // Tenant data: every declared table, and every other table that carries the tenant column.
    let tenant_oids: HashSet<u32> = rels
        .iter()
        .filter(|(r, _)| matches!(r.kind.as_str(), "r" | "p" | "f") && (declared(r) || r.has_tc))
        .map(|(r, _)| r.oid)
        .collect();
    let tenant_owners: BTreeSet<&str> = rels
        .iter()
        .filter(|(r, _)| tenant_oids.contains(&r.oid))
        .map(|(r, _)| r.owner.as_str())
        .collect();
    functions(client, schema, &tenant_owners, &mut tally).await?;
    rules(client, &rels, &tenant_oids, &mut tally).await?;

    // Declared tables: drift, RLS, grants, trigger, policies, index.
    let norm = normalise(client, schema).await?;
    for (name, table) in &schema.tables {
        let rel = rels
            .iter()
            .map(|(r, _)| r)
            .find(|r| &r.name == name && declared(r));
        let Some(rel) = rel else {
            tally.fail(Finding::new(
                "drift.table",
                format!("table {}.{name}", t.table_schema),
                format!(
                    "table {}.{name} is declared in {} but does not exist",
                    t.table_schema, table.source
                ),
            ));
            continue;
        };
        tally.pass("drift.table");
        let n = norm.get(name);
        declared_table(client, schema, table, rel, n, &mut tally).await?;
    }

    // Everything else the app role can reach.
    let tenant_oid_list: Vec<u32> = tenant_oids.iter().copied().collect();
    for (rel, reachable) in &rels {
        if declared(rel) || !reachable {
            continue;
        }
        let reads: Vec<u32> = if matches!(rel.kind.as_str(), "v" | "m") {
            let mut v = Vec::new();
            for r in client
                .query(VIEW_READS, &[&rel.oid])
                .await
                .context("cannot read view dependencies")?
            {
                v.push(col(&r, 0)?);
            }
            v
        } else {
            Vec::new()
        };
        let reads_tenant = reads.iter().any(|o| tenant_oids.contains(o));
        let tenant_data = rel.has_tc || reads_tenant;
        let derived = tenant_data
            || (matches!(rel.kind.as_str(), "r" | "p" | "f")
                && col::<bool>(
                    &client
                        .query_one(TABLE_DERIVED, &[&rel.oid, &tenant_oid_list])
                        .await
                        .context("cannot read table dependencies")?,
                    0,
                )?);
        // A security_invoker view, over security_invoker views only, reads with the app role's
        // own rights: row-level security and the app role's grants apply beneath it, and every
        // relation it can reach that way is checked on its own.
        let invoker_only = rel.kind == "v"
            && rel.security_invoker()
            && reads.iter().all(|o| {
                rels.iter()
                    .find(|(r, _)| r.oid == *o)
                    .is_none_or(|(r, _)| r.kind != "v" || r.security_invoker())
            });
        undeclared(schema, rel, derived, invoker_only, &mut tally);
        match rel.kind.as_str() {
            "r" | "p" if rel.has_tc => {
                if !rel.rls {
                    tally.fail(Finding::new(
                        "exposure.table",
                        rel.object(),
                        format!(
                            "{} carries {} and the app role can reach it, but row-level security is off",
                            rel.display(),
                            t.tenant_column
                        ),
                    ));
                } else {
                    tally.pass("exposure.table");
                    tally.record(
                        "rls.not-forced",
                        (!rel.forced).then(|| {
                            Finding::new(
                                "rls.not-forced",
                                rel.object(),
                                format!("row-level security on {} is not forced", rel.display()),
                            )
                        }),
                    );
                    let policies = read_policies(client, rel.oid).await?;
                    let memberships = app_memberships(client, schema).await?;
                    policy_shape(schema, rel, &policies, &memberships, &mut tally);
                    tenant_index(client, schema, rel, &rel.name, &mut tally).await?;
                }
            }
            "f" if tenant_data => tally.record(
                "exposure.foreign-table",
                (!rel.rls).then(|| {
                    Finding::new(
                        "exposure.foreign-table",
                        rel.object(),
                        format!("foreign table {} carries tenant data and the app role can reach it", rel.display()),
                    )
                }),
            ),
            "m" if tenant_data => tally.fail(Finding::new(
                "exposure.materialized-view",
                rel.object(),
                format!(
                    "materialized view {} holds tenant data and the app role can read it; RLS never applies to materialized views",
                    rel.display()
                ),
            )),
            "v" if tenant_data => tally.record(
                "exposure.view",
                (!rel.security_invoker()).then(|| {
                    Finding::new(
                        "exposure.view",
                        rel.object(),
                        format!(
                            "view {} reads tenant data with the rights of its owner {} (no security_invoker)",
                            rel.display(),
                            rel.owner
                        ),
                    )
                }),
            ),
            _ => {}
        }
    }
    Ok(tally)
}

/// A relation the app role can reach that policies/ does not declare.
fn undeclared(schema: &Schema, rel: &Rel, derived: bool, invoker_only: bool, tally: &mut Tally) {
    let t = &schema.tenancy;
    let app = qi(&t.app_role);
    let revoke = format!(
        "REVOKE ALL ON {} FROM {app}, PUBLIC (and from the roles {app} is a member of), or declare it in policies/",
        qualified(&rel.schema, &rel.name)
    );
    if invoker_only {
        tally.pass("exposure.undeclared");
        tally.pass("exposure.undeclared-other");
    } else if derived {
        tally.fail(
            Finding::new(
                "exposure.undeclared",
                rel.object(),
                format!(
                    "{} is not declared in policies/, the app role can reach it, and it carries {} or is derived from tenant tables",
                    rel.object(),
                    t.tenant_column
                ),
            )
            .hint(revoke),
        );
    } else {
        tally.pass("exposure.undeclared");
        tally.fail(
            Finding::new(
                "exposure.undeclared-other",
                rel.object(),
                format!(
                    "{} is not declared in policies/ and the app role can reach it",
                    rel.object()
                ),
            )
            .hint(revoke),
        );
    }
}

/// Any rule on a tenant table: its actions run with the table owner's rights and can write
/// other tenants' rows that the policies would have hidden.
async fn rules(
    client: &Client,
    rels: &[(Rel, bool)],
    tenant_oids: &HashSet<u32>,
    tally: &mut Tally,
) -> Result<()> {
    let oids: Vec<u32> = tenant_oids.iter().copied().collect();
    let mut found = Vec::new();
    for r in client
        .query(RULES, &[&oids])
        .await
        .context("cannot read rules")?
    {
        let (oid, name, ev, enabled): (u32, String, String, String) =
            (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?, col(&r, 3)?);
        found.push((oid, name, ev, enabled));
    }
    for (rel, _) in rels.iter().filter(|(r, _)| tenant_oids.contains(&r.oid)) {
        let mine: Vec<_> = found.iter().filter(|f| f.0 == rel.oid).collect();
        if mine.is_empty() {
            tally.pass("drift.rule");
        }
        for (_, name, ev, enabled) in mine {
            let on = match ev.as_str() {
                "1" => "SELECT",
                "2" => "UPDATE",
                "3" => "INSERT",
                "4" => "DELETE",
                _ => "?",
            };
            tally.fail(
                Finding::new(
                    "drift.rule",
                    format!("rule {name} on {}", rel.display()),
                    format!(
                        "rule {name} ON {on} on tenant table {}{} rewrites statements with the rights of its owner {}",
                        rel.display(),
                        if enabled == "D" { " (disabled)" } else { "" },
                        rel.owner
                    ),
                )
                .hint(format!(
                    "DROP RULE {} ON {}",
                    qi(name),
                    qualified(&rel.schema, &rel.name)
                )),
            );
        }
    }
    Ok(())
}

/// A quoted identifier, for fixes that name hostile objects.
fn qi(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", qi(schema), qi(name))
}

/// A column of a catalog row. A value of an unexpected type is an error (verify exits 2), never
/// a panic.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).with_context(|| {
        format!(
            "unexpected catalog value in column {i} ({})",
            r.columns().get(i).map_or("?", |c| c.name())
        )
    })
}

async fn roles(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let t = &schema.tenancy;
    let mut names: Vec<&String> = schema.roles.keys().collect();
    for r in [&t.app_role, &t.admin_role, &t.owner_role] {
        if !names.contains(&r) {
            names.push(r);
        }
    }
    let mut live: BTreeMap<String, (bool, bool, bool, bool)> = BTreeMap::new();
    for r in client
        .query(ROLES, &[&names])
        .await
        .context("cannot read roles")?
    {
        live.insert(
            col(&r, 0)?,
            (col(&r, 1)?, col(&r, 2)?, col(&r, 3)?, col(&r, 4)?),
        );
    }
    for (name, role) in &schema.roles {
        let obj = format!("role {name}");
        let finding = match live.get(name) {
            None => Some(Finding::new(
                "drift.role",
                &obj,
                format!("role {name} is declared but does not exist"),
            )),
            Some((_, bypass, login, _)) if *bypass != role.bypassrls || *login != role.login => {
                Some(Finding::new(
                    "drift.role",
                    &obj,
                    format!(
                        "role {name} is {} {}, declared {} {}",
                        if *login { "LOGIN" } else { "NOLOGIN" },
                        if *bypass { "BYPASSRLS" } else { "NOBYPASSRLS" },
                        if role.login { "LOGIN" } else { "NOLOGIN" },
                        if role.bypassrls {
                            "BYPASSRLS"
                        } else {
                            "NOBYPASSRLS"
                        },
                    ),
                ))
            }
            Some(_) => None,
        };
        tally.record("drift.role", finding);
    }
    let app = &t.app_role;
    let obj = format!("role {app}");
    let (superuser, bypass) = live.get(app).map(|l| (l.0, l.1)).unwrap_or_default();
    tally.record(
        "role.app-superuser",
        superuser
            .then(|| Finding::new("role.app-superuser", &obj, format!("{app} is a superuser"))),
    );
    tally.record(
        "role.app-bypassrls",
        bypass.then(|| Finding::new("role.app-bypassrls", &obj, format!("{app} has BYPASSRLS"))),
    );
    let mut owned: Vec<String> = Vec::new();
    for r in client
        .query(OWNED, &[app])
        .await
        .context("cannot read object owners")?
    {
        owned.push(col(&r, 0)?);
    }
    tally.pass("role.app-owns");
    for o in owned {
        tally.fail(Finding::new(
            "role.app-owns",
            &obj,
            format!("{app} owns {o}"),
        ));
    }
    tally.pass("role.app-membership");
    let memberships = app_memberships(client, schema).await?;
    // CREATEROLE lets a role grant itself (on Postgres 15) any non-superuser role: the admin role.
    let app_createrole = live.get(app).is_some_and(|l| l.3);
    let creators: Vec<&str> = (app_createrole.then_some(app.as_str()).into_iter())
        .chain(memberships.iter().filter(|m| m.3).map(|m| m.0.as_str()))
        .collect();
    tally.pass("role.app-createrole");
    for c in creators {
        let via = if c == app {
            String::new()
        } else {
            format!(", which {app} is a member of")
        };
        tally.fail(
            Finding::new(
                "role.app-createrole",
                format!("role {c}"),
                format!(
                    "{c}{via} has CREATEROLE: {app} can grant itself {} or {}",
                    t.admin_role, t.owner_role
                ),
            )
            .hint(if c == app {
                format!("ALTER ROLE {} NOCREATEROLE", qi(c))
            } else {
                format!(
                    "ALTER ROLE {} NOCREATEROLE, or REVOKE {} FROM {}",
                    qi(c),
                    qi(c),
                    qi(app)
                )
            }),
        );
    }
    for (role, sup, byp, _) in memberships {
        let why = if role == t.owner_role {
            Some("the owner role (owners bypass RLS unless forced, and can disable it)")
        } else if role == t.admin_role {
            Some("the admin role")
        } else if sup {
            Some("a superuser role")
        } else if byp {
            Some("a BYPASSRLS role")
        } else if PREDEFINED.contains(&role.as_str()) {
            Some("a predefined role that reaches every table or the server's files and programs")
        } else {
            None
        };
        if let Some(why) = why {
            tally.fail(Finding::new(
                "role.app-membership",
                &obj,
                format!("{app} is a member of {role}, {why}"),
            ));
        }
    }
    app_grantees(client, schema, tally).await?;
    if t.admin_bypass == AdminBypass::Bypassrls {
        let has = live.get(&t.admin_role).is_some_and(|l| l.1 || l.0);
        tally.record(
            "role.admin-bypass",
            (!has).then(|| {
                Finding::new(
                    "role.admin-bypass",
                    format!("role {}", t.admin_role),
                    format!(
                        "{} has no BYPASSRLS (admin_bypass = \"bypassrls\")",
                        t.admin_role
                    ),
                )
            }),
        );
    }
    Ok(())
}

/// A role the app role is a member of: name, superuser, BYPASSRLS, CREATEROLE.
type Membership = (String, bool, bool, bool);

async fn app_memberships(client: &Client, schema: &Schema) -> Result<Vec<Membership>> {
    let mut out = Vec::new();
    for r in client
        .query(APP_MEMBERSHIPS, &[&schema.tenancy.app_role])
        .await
        .context("cannot read role memberships")?
    {
        out.push((col(&r, 0)?, col(&r, 1)?, col(&r, 2)?, col(&r, 3)?));
    }
    Ok(out)
}

/// The roles granted the app role (the application's login roles) must not carry more than it:
/// a superuser or BYPASSRLS login, or one that is also admin or owner, skips the policies.
async fn app_grantees(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let t = &schema.tenancy;
    let app = &t.app_role;
    let others = vec![t.owner_role.clone(), t.admin_role.clone()];
    tally.pass("role.app-grantee");
    for r in client
        .query(APP_GRANTEES, &[app, &others])
        .await
        .context("cannot read the roles granted the app role")?
    {
        let (role, sup, byp, also): (String, bool, bool, Vec<String>) =
            (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?, col(&r, 3)?);
        let mut why = Vec::new();
        let mut fix = Vec::new();
        if sup {
            why.push("is a superuser".to_string());
            fix.push(format!("ALTER ROLE {} NOSUPERUSER", qi(&role)));
        }
        if byp {
            why.push("has BYPASSRLS".to_string());
            fix.push(format!("ALTER ROLE {} NOBYPASSRLS", qi(&role)));
        }
        if !sup && !also.is_empty() {
            why.push(format!("is also a member of {}", also.join(" and ")));
            let list: Vec<String> = also.iter().map(|a| qi(a)).collect();
            fix.push(format!("REVOKE {} FROM {}", list.join(", "), qi(&role)));
        }
        if why.is_empty() {
            continue;
        }
        tally.fail(
            Finding::new(
                "role.app-grantee",
                format!("role {role}"),
                format!(
                    "{role} is granted {app} and {}: its sessions skip {app}'s policies",
                    why.join(", ")
                ),
            )
            .hint(fix.join("; ")),
        );
    }
    Ok(())
}

async fn default_context(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    let setting = &schema.tenancy.context_setting;
    tally.pass("config.default-context");
    for r in client
        .query(DEFAULT_CONTEXT, &[setting])
        .await
        .context("cannot read database and role settings")?
    {
        let (db, role): (String, String) = (col(&r, 0)?, col(&r, 1)?);
        tally.fail(Finding::new(
            "config.default-context",
            format!("setting {setting}"),
            format!("{setting} has a default for database {db}, role {role}"),
        ));
    }
    let now: Option<String> = col(
        &client
            .query_one("SELECT pg_catalog.current_setting($1, true)", &[setting])
            .await
            .context("cannot read the context setting")?,
        0,
    )?;
    if let Some(v) = now.filter(|v| !v.is_empty()) {
        tally.fail(Finding::new(
            "config.default-context",
            format!("setting {setting}"),
            format!("{setting} is already set to {v:?} when a session starts (server configuration or connection options)"),
        ));
    }
    Ok(())
}

async fn functions(
    client: &Client,
    schema: &Schema,
    tenant_owners: &BTreeSet<&str>,
    tally: &mut Tally,
) -> Result<()> {
    let t = &schema.tenancy;
    let owner = &t.owner_role;
    let helper_functions = [
        t.context_function.clone(),
        "forbid_tenant_change".to_string(),
    ];
    for (name, body, volatility) in [
        (
            &helper_functions[0],
            sqlgen::context_function_body(t),
            Some("s"),
        ),
        (&helper_functions[1], sqlgen::trigger_function_body(), None),
    ] {
        let obj = format!("function {}.{name}()", t.helper_schema);
        let row = client
            .query_opt(FUNCTION, &[&t.helper_schema, name])
            .await
            .context("cannot read functions")?;
        let problem = match row {
            None => Some("does not exist".to_string()),
            Some(r) => {
                let (src, vol, definer, fowner): (String, String, bool, String) =
                    (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?, col(&r, 3)?);
                let config: Vec<String> = col(&r, 4)?;
                let pinned = config == [PINNED_SEARCH_PATH];
                if volatility.is_some() {
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
                                    config.join(", ")
                                ),
                            )
                        }),
                    );
                }
                owned_by(
                    &obj,
                    &fowner,
                    format!(
                        "ALTER FUNCTION {}() OWNER TO {}",
                        qualified(&t.helper_schema, name),
                        qi(owner)
                    ),
                    owner,
                    tally,
                );
                // The context function: its body now, or (pinned only) the one before helpers
                // revision 2, whose unqualified `::uuid` the caller's search_path (pg_temp
                // first, for types) could resolve to a type of its own if it were inlined.
                let context = volatility.is_some();
                let old_body = context && src == sqlgen::context_function_body_v1(t);
                // (The old body without the pin is reported first, below.)
                let settings_ok = pinned || context && config.is_empty();
                if old_body && !pinned {
                    Some("has the body of an older tenantctl without its pinned search_path: its `::uuid` would be resolved by each caller's search_path (re-create it with `tenantctl generate` and `tenantctl migrate`)".to_string())
                } else if src != body && !old_body {
                    Some(format!("has another body: {}", src.trim()))
                } else if !settings_ok {
                    Some(format!(
                        "carries settings ({}) other than tenantctl's (re-create it with `tenantctl generate` and `tenantctl migrate`)",
                        if config.is_empty() { "none".to_string() } else { config.join(", ") }
                    ))
                } else if volatility.is_some_and(|v| v != vol) {
                    Some("is not STABLE".to_string())
                } else if definer {
                    Some("is SECURITY DEFINER".to_string())
                } else {
                    None
                }
            }
        };
        tally.record(
            "drift.function",
            problem.map(|p| Finding::new("drift.function", &obj, format!("{obj} {p}"))),
        );
    }
    if let Some(r) = client
        .query_opt(SCHEMA_OWNER, &[&t.helper_schema])
        .await
        .context("cannot read the helper schema")?
    {
        owned_by(
            &format!("schema {}", t.helper_schema),
            &col::<String>(&r, 0)?,
            format!(
                "ALTER SCHEMA {} OWNER TO {}",
                qi(&t.helper_schema),
                qi(owner)
            ),
            owner,
            tally,
        );
    }

    let tables: Vec<String> = schema.tables.keys().cloned().collect();
    let owner_admin = vec![t.owner_role.clone(), t.admin_role.clone()];
    for r in client
        .query(DEFINER_FUNCTIONS, &[&t.app_role, &owner_admin])
        .await
        .context("cannot read SECURITY DEFINER functions")?
    {
        let (nsp, name, args, src, config): (String, String, String, String, Vec<String>) = (
            col(&r, 0)?,
            col(&r, 1)?,
            col(&r, 2)?,
            col(&r, 3)?,
            col(&r, 4)?,
        );
        let (fowner, sup, byp, member_of): (String, bool, bool, Vec<String>) =
            (col(&r, 5)?, col(&r, 6)?, col(&r, 7)?, col(&r, 8)?);
        // tenantctl's own helpers are SECURITY INVOKER; drift.function reports them otherwise.
        if nsp == t.helper_schema && args.is_empty() && helper_functions.contains(&name) {
            continue;
        }
        let obj = format!("function {nsp}.{name}({args})");
        let reads: Vec<&String> = tables.iter().filter(|t| mentions(&src, t)).collect();
        // Whatever the body says (EXECUTE hides what it reads), these owners reach tenant rows.
        let runs_as = if sup {
            Some(format!("the superuser {fowner}"))
        } else if byp {
            Some(format!("{fowner}, which has BYPASSRLS"))
        } else if tenant_owners.contains(fowner.as_str()) {
            Some(format!("{fowner}, which owns tenant tables"))
        } else if !member_of.is_empty() {
            Some(format!("{fowner}, a member of {}", member_of.join(" and ")))
        } else {
            None
        };
        let why = match (reads.is_empty(), runs_as) {
            (true, None) => None,
            (false, None) => Some(format!(
                "reads {}",
                reads
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (_, Some(who)) => Some(format!("runs as {who}")),
        };
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
        let pinned = config.iter().any(|c| c.starts_with("search_path="));
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

/// drift.owner for one object: it must be owned by the owner role.
fn owned_by(obj: &str, actual: &str, fix: String, owner: &str, tally: &mut Tally) {
    tally.record(
        "drift.owner",
        (actual != owner).then(|| {
            Finding::new(
                "drift.owner",
                obj,
                format!("{obj} is owned by {actual}, not {owner}"),
            )
            .hint(fix)
        }),
    );
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

/// Create scratch copies of the declared tables and policies in a transaction that is rolled
/// back, and read back Postgres's own rendering of every declared expression.
async fn normalise(client: &Client, schema: &Schema) -> Result<BTreeMap<String, Normalised>> {
    let mut out = BTreeMap::new();
    client
        .batch_execute("BEGIN")
        .await
        .context("cannot begin")?;
    let result = async {
        for (i, (name, table)) in schema.tables.iter().enumerate() {
            let scratch = format!("tenantctl_verify_{i}");
            let mut n = Normalised::default();
            client.batch_execute("SAVEPOINT tc_scratch").await?;
            // The extended protocol (`execute`, not `batch_execute`) refuses more than one
            // statement: declared expressions can never run anything of their own here.
            match client
                .execute(sqlgen::scratch_table(&scratch, table).as_str(), &[])
                .await
                .map(|_| ())
            {
                Err(e) if e.as_db_error().is_some() => {
                    n.error = Some(db_message(&e));
                    client
                        .batch_execute("ROLLBACK TO SAVEPOINT tc_scratch")
                        .await?;
                    out.insert(name.clone(), n);
                    continue;
                }
                Err(e) => return Err(e.into()),
                Ok(()) => {}
            }
            let oid: u32 = col(
                &client
                    .query_one("SELECT ('pg_temp.' || $1)::regclass::oid", &[&scratch])
                    .await?,
                0,
            )?;
            for r in client.query(SCRATCH_COLUMNS, &[&oid]).await? {
                n.columns
                    .insert(col(&r, 0)?, (col(&r, 1)?, col(&r, 2)?, col(&r, 3)?));
            }
            for r in client.query(SCRATCH_CHECKS, &[&oid]).await? {
                n.checks.insert(col(&r, 0)?, col(&r, 1)?);
            }
            for (pname, p) in &table.policies {
                client.batch_execute("SAVEPOINT tc_policy").await?;
                let created = client
                    .execute(sqlgen::scratch_policy(&scratch, pname, p).as_str(), &[])
                    .await
                    .map(|_| ());
                let value = match created {
                    Err(e) if e.as_db_error().is_some() => {
                        client
                            .batch_execute("ROLLBACK TO SAVEPOINT tc_policy")
                            .await?;
                        Err(db_message(&e))
                    }
                    Err(e) => return Err(e.into()),
                    Ok(()) => {
                        let r = client.query_one(SCRATCH_POLICY, &[&oid, pname]).await?;
                        client.batch_execute("RELEASE SAVEPOINT tc_policy").await?;
                        Ok((col(&r, 0)?, col(&r, 1)?))
                    }
                };
                n.policies.insert(pname.clone(), value);
            }
            client.batch_execute("RELEASE SAVEPOINT tc_scratch").await?;
            out.insert(name.clone(), n);
        }
        anyhow::Ok(())
    }
    .await;
    let rolled_back = client.batch_execute("ROLLBACK").await;
    result.context("cannot normalise the declared expressions")?;
    rolled_back.context("cannot roll back the scratch objects")?;
    Ok(out)
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

#[derive(Debug)]
struct LivePolicy {
    name: String,
    cmd: String,
    permissive: bool,
    roles: Vec<String>,
    using: Option<String>,
    with_check: Option<String>,
}

async fn read_policies(client: &Client, oid: u32) -> Result<Vec<LivePolicy>> {
    client
        .query(POLICIES, &[&oid])
        .await
        .context("cannot read policies")?
        .iter()
        .map(|r: &Row| {
            Ok(LivePolicy {
                name: col(r, 0)?,
                cmd: col(r, 1)?,
                permissive: col(r, 2)?,
                roles: col(r, 3)?,
                using: col(r, 4)?,
                with_check: col(r, 5)?,
            })
        })
        .collect::<Result<_>>()
}

fn cmd_code(c: Command) -> &'static str {
    match c {
        Command::All => "*",
        Command::Select => "r",
        Command::Insert => "a",
        Command::Update => "w",
        Command::Delete => "d",
    }
}

async fn declared_table(
    client: &Client,
    schema: &Schema,
    table: &Table,
    rel: &Rel,
    norm: Option<&Normalised>,
    tally: &mut Tally,
) -> Result<()> {
    let t = &schema.tenancy;
    let obj = rel.object();
    let disp = rel.display();

    owned_by(
        &obj,
        &rel.owner,
        format!(
            "ALTER TABLE {} OWNER TO {}",
            qualified(&rel.schema, &rel.name),
            qi(&t.owner_role)
        ),
        &t.owner_role,
        tally,
    );

    // Row-level security, enabled and forced.
    tally.record(
        "rls.disabled",
        (!rel.rls).then(|| {
            Finding::new(
                "rls.disabled",
                &obj,
                format!("row-level security is disabled on {disp}"),
            )
        }),
    );
    tally.record(
        "rls.not-forced",
        (!rel.forced).then(|| {
            Finding::new(
                "rls.not-forced",
                &obj,
                format!(
                    "row-level security on {disp} is not forced: its owner {} bypasses it",
                    rel.owner
                ),
            )
        }),
    );

    // Columns, compared with the scratch copy Postgres built from the declaration.
    let live: BTreeMap<String, (String, bool, Option<String>)> = client
        .query(COLUMNS, &[&rel.oid])
        .await
        .context("cannot read columns")?
        .iter()
        .map(|r| Ok((col(r, 0)?, (col(r, 1)?, col(r, 2)?, col(r, 3)?))))
        .collect::<Result<_>>()?;
    if let Some(e) = norm.and_then(|n| n.error.as_ref()) {
        tally.fail(Finding::new(
            "drift.column",
            &obj,
            format!("the declared columns of {disp} cannot be compared: Postgres rejects them here: {e}"),
        ));
    }
    for c in &table.columns {
        let finding = match (live.get(&c.name), norm.and_then(|n| n.columns.get(&c.name))) {
            (None, _) => Some(format!(
                "column {disp}.{} is declared but does not exist",
                c.name
            )),
            (Some(l), Some(d)) if l != d => Some(format!(
                "column {disp}.{} is {} {}{}, declared {} {}{}",
                c.name,
                l.0,
                if l.1 { "NOT NULL" } else { "NULL" },
                l.2.as_ref()
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default(),
                d.0,
                if d.1 { "NOT NULL" } else { "NULL" },
                d.2.as_ref()
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default(),
            )),
            _ => None,
        };
        tally.record(
            "drift.column",
            finding.map(|m| Finding::new("drift.column", format!("column {disp}.{}", c.name), m)),
        );
    }

    // Constraints.
    let rows = client
        .query(CONSTRAINTS, &[&rel.oid])
        .await
        .context("cannot read constraints")?;
    let live_cons: BTreeMap<String, &Row> = rows
        .iter()
        .map(|r| Ok((col::<String>(r, 0)?, r)))
        .collect::<Result<_>>()?;
    for (cname, c) in &table.constraints {
        let problem = match live_cons.get(cname) {
            None => Some("is missing".to_string()),
            Some(r) => {
                let kind: String = col(r, 1)?;
                let def: String = col(r, 2)?;
                let cols: Vec<String> = col(r, 3)?;
                match c {
                    Constraint::PrimaryKey { columns } | Constraint::Unique { columns } => {
                        let want = if matches!(c, Constraint::PrimaryKey { .. }) {
                            "p"
                        } else {
                            "u"
                        };
                        (kind != want || &cols != columns).then(|| format!("is {def}"))
                    }
                    Constraint::Check { .. } => {
                        let live_def = def.clone();
                        let decl = norm.and_then(|n| n.checks.get(cname));
                        (kind != "c" || decl.is_some_and(|d| d != &live_def)).then(|| {
                            format!(
                                "is {live_def}, declared {}",
                                decl.map_or("?", |s| s.as_str())
                            )
                        })
                    }
                    Constraint::ForeignKey {
                        columns,
                        table: rt,
                        ref_columns,
                        on_delete,
                    } => {
                        let (rtab, rnsp, rcols, del): (String, String, Vec<String>, String) =
                            (col(r, 4)?, col(r, 5)?, col(r, 6)?, col(r, 7)?);
                        let want_del = match on_delete {
                            OnDelete::NoAction => "a",
                            OnDelete::Restrict => "r",
                            OnDelete::Cascade => "c",
                        };
                        (kind != "f"
                            || &cols != columns
                            || &rtab != rt
                            || rnsp != t.table_schema
                            || &rcols != ref_columns
                            || del != want_del)
                            .then(|| format!("is {def}"))
                    }
                }
            }
        };
        tally.record(
            "drift.constraint",
            problem.map(|p| {
                Finding::new(
                    "drift.constraint",
                    format!("constraint {cname} on {disp}"),
                    format!("constraint {cname} on {disp} {p}"),
                )
            }),
        );
    }

    // Indexes.
    let idx = client
        .query(INDEXES, &[&rel.oid])
        .await
        .context("cannot read indexes")?;
    for (iname, ix) in &table.indexes {
        let mut live = None;
        for r in &idx {
            if col::<String>(r, 0)? == *iname {
                live = Some(r);
            }
        }
        let problem = match live {
            None => Some("is missing".to_string()),
            Some(r) => {
                let (unique, cols, partial): (bool, Vec<String>, bool) =
                    (col(r, 1)?, col(r, 2)?, col(r, 3)?);
                (unique != ix.unique || cols != ix.columns || partial).then(|| {
                    format!(
                        "is on ({}){}",
                        cols.join(", "),
                        if unique { " UNIQUE" } else { "" }
                    )
                })
            }
        };
        tally.record(
            "drift.index",
            problem.map(|p| {
                Finding::new(
                    "drift.index",
                    format!("index {iname} on {disp}"),
                    format!("index {iname} on {disp} {p}"),
                )
            }),
        );
    }
    tenant_index(client, schema, rel, &table.tenant_column, tally).await?;

    // Grants: each role's privileges equal the declaration.
    grants(client, schema, table, rel, tally).await?;

    // The immutability trigger.
    let trig = client
        .query_opt(TRIGGER, &[&rel.oid, &sqlgen::IMMUTABILITY_TRIGGER])
        .await
        .context("cannot read triggers")?;
    let problem = match trig {
        None => Some("is missing".to_string()),
        Some(r) => {
            let (enabled, tgtype, nsp, func, args): (String, i32, String, String, Vec<u8>) = (
                col(&r, 0)?,
                col(&r, 1)?,
                col(&r, 2)?,
                col(&r, 3)?,
                col(&r, 4)?,
            );
            let mut want_args = table.tenant_column.as_bytes().to_vec();
            want_args.push(0);
            // tgtype bits: 1 = ROW, 2 = BEFORE, 16 = UPDATE.
            if enabled == "D" || enabled == "R" {
                Some("is disabled".to_string())
            } else if tgtype & 0b1_0011 != 0b1_0011 {
                Some("is not BEFORE UPDATE FOR EACH ROW".to_string())
            } else if nsp != t.helper_schema || func != "forbid_tenant_change" || args != want_args
            {
                Some(format!("calls {nsp}.{func} with other arguments"))
            } else {
                None
            }
        }
    };
    tally.record(
        "drift.trigger",
        problem.map(|p| {
            Finding::new(
                "drift.trigger",
                format!("trigger {} on {disp}", sqlgen::IMMUTABILITY_TRIGGER),
                format!("the tenant-id immutability trigger on {disp} {p}"),
            )
        }),
    );

    other_triggers(client, rel, tally).await?;

    // Policies: declared ones present and equal; no undeclared one; shape.
    let live = read_policies(client, rel.oid).await?;
    for (pname, p) in &table.policies {
        let pobj = format!("policy {pname} on {disp}");
        let Some(l) = live.iter().find(|l| &l.name == pname) else {
            tally.fail(Finding::new(
                "drift.policy",
                &pobj,
                format!("{pobj} is declared but missing"),
            ));
            continue;
        };
        let mut diffs = Vec::new();
        if l.cmd != cmd_code(p.command) {
            diffs.push(format!(
                "command is {}, declared {}",
                l.cmd,
                p.command.sql()
            ));
        }
        if l.permissive != p.permissive {
            diffs.push(format!(
                "it is {}",
                if l.permissive {
                    "PERMISSIVE"
                } else {
                    "RESTRICTIVE"
                }
            ));
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
            format!("policy {} on {disp}", l.name),
            format!(
                "policy {} on {disp} ({} {} TO {}) is not declared",
                l.name,
                if l.permissive {
                    "PERMISSIVE"
                } else {
                    "RESTRICTIVE"
                },
                cmd_name(&l.cmd),
                l.roles.join(", ")
            ),
        ));
    }
    if t.admin_bypass == AdminBypass::Policy {
        let ok = live.iter().any(|l| {
            l.permissive
                && l.cmd == "*"
                && l.roles.contains(&t.admin_role)
                && l.using.as_deref() == Some("true")
        });
        tally.record(
            "role.admin-bypass",
            (!ok).then(|| {
                Finding::new(
                    "role.admin-bypass",
                    &obj,
                    format!(
                        "{disp} has no permissive USING (true) policy for {}",
                        t.admin_role
                    ),
                )
            }),
        );
    }
    let memberships = app_memberships(client, schema).await?;
    policy_shape(schema, rel, &live, &memberships, tally);
    Ok(())
}

/// Triggers that tenantctl does not generate. Row triggers fire in name order (byte order), so a
/// BEFORE INSERT/UPDATE row trigger named after the immutability trigger can change the tenant id
/// once the check has passed.
async fn other_triggers(client: &Client, rel: &Rel, tally: &mut Tally) -> Result<()> {
    let disp = rel.display();
    let mut late = false;
    let mut other = false;
    for r in client
        .query(OTHER_TRIGGERS, &[&rel.oid, &sqlgen::IMMUTABILITY_TRIGGER])
        .await
        .context("cannot read triggers")?
    {
        let (name, tgtype, enabled): (String, i32, String) =
            (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?);
        // tgtype bits: 1 = ROW, 2 = BEFORE, 4 = INSERT, 16 = UPDATE, 64 = INSTEAD.
        let row_before = tgtype & 0b100_0011 == 0b11;
        let writes = tgtype & (4 | 16) != 0;
        let after_check = name.as_bytes() > sqlgen::IMMUTABILITY_TRIGGER.as_bytes();
        let fix = format!(
            "DROP TRIGGER {} ON {}",
            qi(&name),
            qualified(&rel.schema, &rel.name)
        );
        let obj = format!("trigger {name} on {disp}");
        if row_before && writes && after_check && enabled != "D" {
            late = true;
            tally.fail(
                Finding::new(
                    "drift.trigger-late",
                    &obj,
                    format!(
                        "trigger {name} on {disp} fires BEFORE INSERT/UPDATE FOR EACH ROW after {} (names sort after it): it can change the tenant id once the check has passed",
                        sqlgen::IMMUTABILITY_TRIGGER
                    ),
                )
                .hint(fix),
            );
        } else {
            other = true;
            tally.fail(
                Finding::new(
                    "drift.trigger-undeclared",
                    &obj,
                    format!(
                        "trigger {name} on {disp}{} is not generated by tenantctl",
                        if enabled == "D" { " (disabled)" } else { "" }
                    ),
                )
                .hint(fix),
            );
        }
    }
    if !late {
        tally.pass("drift.trigger-late");
    }
    if !other {
        tally.pass("drift.trigger-undeclared");
    }
    Ok(())
}

fn show(e: &Option<String>) -> String {
    e.clone().unwrap_or_else(|| "(none)".into())
}

fn cmd_name(code: &str) -> &'static str {
    match code {
        "r" => "SELECT",
        "a" => "INSERT",
        "w" => "UPDATE",
        "d" => "DELETE",
        _ => "ALL",
    }
}

async fn tenant_index(
    client: &Client,
    schema: &Schema,
    rel: &Rel,
    tc: &str,
    tally: &mut Tally,
) -> Result<()> {
    let tc = if schema.tables.contains_key(&rel.name) && rel.schema == schema.tenancy.table_schema {
        tc
    } else {
        schema.tenancy.tenant_column.as_str()
    };
    let led = client
        .query(INDEXES, &[&rel.oid])
        .await
        .context("cannot read indexes")?
        .iter()
        .map(|r| {
            Ok(
                col::<Vec<String>>(r, 2)?.first().map(String::as_str) == Some(tc)
                    && !col::<bool>(r, 3)?,
            )
        })
        .collect::<Result<Vec<bool>>>()?
        .into_iter()
        .any(|b| b);
    tally.record(
        "perf.tenant-index",
        (!led).then(|| {
            Finding::new(
                "perf.tenant-index",
                rel.object(),
                format!("no index on {} is led by {tc}", rel.display()),
            )
        }),
    );
    Ok(())
}

fn privilege_name(p: Privilege) -> &'static str {
    p.sql()
}

async fn grants(
    client: &Client,
    schema: &Schema,
    table: &Table,
    rel: &Rel,
    tally: &mut Tally,
) -> Result<()> {
    let t = &schema.tenancy;
    let disp = rel.display();
    let obj = rel.object();
    let mut live: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in client
        .query(TABLE_GRANTS, &[&rel.oid])
        .await
        .context("cannot read grants")?
    {
        live.entry(col(&r, 0)?).or_default().insert(col(&r, 1)?);
    }
    let mut live_cols: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in client
        .query(COLUMN_GRANTS, &[&rel.oid])
        .await
        .context("cannot read column grants")?
    {
        let (who, p, column): (String, String, String) = (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?);
        live_cols
            .entry(who)
            .or_default()
            .insert(format!("{p} ({column})"));
    }
    let mut grantees: BTreeSet<&String> = live.keys().chain(live_cols.keys()).collect();
    grantees.extend(table.grants.keys());
    for who in grantees {
        if who == &rel.owner {
            continue;
        }
        let decl = table.grants.get(who).cloned().unwrap_or_default();
        let want: BTreeSet<String> = decl
            .privileges
            .iter()
            .map(|p| privilege_name(*p).to_string())
            .collect();
        let want_cols: BTreeSet<String> = decl
            .update_columns
            .iter()
            .map(|c| format!("UPDATE ({c})"))
            .collect();
        let have = live.get(who).cloned().unwrap_or_default();
        let have_cols = live_cols.get(who).cloned().unwrap_or_default();
        let extra: Vec<String> = have
            .difference(&want)
            .chain(have_cols.difference(&want_cols))
            .cloned()
            .collect();
        let missing: Vec<String> = want
            .difference(&have)
            .chain(want_cols.difference(&have_cols))
            .cloned()
            .collect();
        let mut msg = Vec::new();
        if !extra.is_empty() {
            msg.push(format!("has undeclared {}", extra.join(", ")));
        }
        if !missing.is_empty() {
            msg.push(format!("lacks declared {}", missing.join(", ")));
        }
        tally.record(
            "drift.grant",
            (!msg.is_empty()).then(|| {
                Finding::new(
                    "drift.grant",
                    format!("grants to {who} on {disp}"),
                    format!("{who} on {disp} {}", msg.join("; ")),
                )
            }),
        );
    }

    // Privileges that RLS does not cover, to the app role (directly or through membership) or PUBLIC.
    for r in client
        .query(DANGEROUS, &[&t.app_role, &rel.oid])
        .await
        .context("cannot read privileges")?
    {
        let (p, app, public): (String, bool, bool) = (col(&r, 0)?, col(&r, 1)?, col(&r, 2)?);
        let who = match (app, public) {
            (_, true) => Some("PUBLIC".to_string()),
            (true, false) => Some(t.app_role.clone()),
            _ => None,
        };
        tally.record(
            "grant.dangerous",
            who.map(|w| Finding::new("grant.dangerous", &obj, format!("{w} holds {p} on {disp}"))),
        );
    }
    let can: bool = col(
        &client
            .query_one(
                "SELECT pg_catalog.has_column_privilege($1, $2::oid, $3, 'UPDATE')",
                &[&t.app_role, &rel.oid, &table.tenant_column],
            )
            .await
            .context("cannot read column privileges")?,
        0,
    )?;
    tally.record(
        "grant.tenant-column-update",
        can.then(|| {
            Finding::new(
                "grant.tenant-column-update",
                format!("column {disp}.{}", table.tenant_column),
                format!("{} may UPDATE {disp}.{}", t.app_role, table.tenant_column),
            )
        }),
    );
    Ok(())
}

/// The shape of the policies that apply to the app role on one table.
fn policy_shape(
    schema: &Schema,
    rel: &Rel,
    live: &[LivePolicy],
    memberships: &[Membership],
    tally: &mut Tally,
) {
    let t = &schema.tenancy;
    let disp = rel.display();
    let applies = |p: &LivePolicy| {
        p.roles
            .iter()
            .any(|r| r == "public" || r == &t.app_role || memberships.iter().any(|m| &m.0 == r))
    };
    let func = format!("{}()", t.context_function);
    let mut per_cmd: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in live.iter().filter(|p| applies(p)) {
        let pobj = format!("policy {} on {disp}", p.name);
        let exprs: Vec<&String> = p.using.iter().chain(p.with_check.iter()).collect();
        if p.permissive {
            let cmds: &[&str] = match p.cmd.as_str() {
                "*" => &["SELECT", "INSERT", "UPDATE", "DELETE"],
                c => std::slice::from_ref(match c {
                    "r" => &"SELECT",
                    "a" => &"INSERT",
                    "w" => &"UPDATE",
                    _ => &"DELETE",
                }),
            };
            for c in cmds {
                per_cmd.entry(c).or_default().push(&p.name);
            }
            let always_true = exprs.iter().any(|e| is_true(e));
            tally.record(
                "policy.always-true",
                always_true.then(|| {
                    Finding::new(
                        "policy.always-true",
                        &pobj,
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
                        &pobj,
                        format!("{pobj} can fail open: {e}"),
                    )
                }),
            );
            let writes = matches!(p.cmd.as_str(), "*" | "a" | "w");
            tally.record(
                "policy.missing-with-check",
                (writes && p.with_check.is_none()).then(|| {
                    Finding::new(
                        "policy.missing-with-check",
                        &pobj,
                        format!("{pobj} ({}) has no WITH CHECK", cmd_name(&p.cmd)),
                    )
                }),
            );
            if !always_true {
                let bad = exprs
                    .iter()
                    .find(|e| !e.contains(&func) || e.contains("current_setting("));
                tally.record(
                    "policy.context",
                    bad.map(|e| {
                        Finding::new(
                            "policy.context",
                            &pobj,
                            format!(
                                "{pobj} does not read the context through {}.{func}: {e}",
                                t.helper_schema
                            ),
                        )
                    }),
                );
            }
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
                        t.app_role,
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
    fn table_names_are_matched_as_words() {
        assert!(mentions("SELECT * FROM public.members", "members"));
        assert!(mentions("select * from \"members\"", "members"));
        assert!(!mentions("SELECT * FROM members_archive", "members"));
        assert!(!mentions("SELECT 1", "members"));
    }

    #[test]
    fn always_true_ignores_parentheses() {
        assert!(is_true("true"));
        assert!(is_true("(true)"));
        assert!(!is_true("(gym_id = x)"));
    }
}
