//! Grant checks on a declared table: each role's privileges as declared, nothing RLS does not
//! cover (TRUNCATE, REFERENCES, TRIGGER) for the app role or PUBLIC, and no UPDATE of the tenant
//! column.

use crate::pg::unnamed::typed;
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::relations::Rel;
use super::tables::Declared;
use super::{col, query};
use crate::model::Schema;
use crate::verify::{Finding, Tally};

const TABLE_GRANTS: &str = "
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee,
       a.privilege_type AS privilege
FROM pg_catalog.pg_class c, aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
WHERE c.oid = $1 AND a.grantee <> c.relowner";

const COLUMN_GRANTS: &str = "
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee,
       a.privilege_type || ' (' || att.attname::text || ')' AS privilege
FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid, aclexplode(att.attacl) a
WHERE att.attrelid = $1 AND att.attnum > 0 AND NOT att.attisdropped AND att.attacl IS NOT NULL
  AND a.grantee <> c.relowner";

const DANGEROUS: &str = "
SELECT p AS privilege, pg_catalog.has_table_privilege($1, $2::oid, p) AS app,
       EXISTS (SELECT FROM pg_catalog.pg_class c, aclexplode(c.relacl) a
               WHERE c.oid = $2 AND a.grantee = 0 AND a.privilege_type = p) AS public
FROM unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) p";

const TENANT_COLUMN_UPDATE: &str =
    "SELECT pg_catalog.has_column_privilege($1, $2::oid, $3, 'UPDATE') AS can";

typed_row! {
    /// A privilege granted on the table or one of its columns (a row of [`TABLE_GRANTS`] or
    /// [`COLUMN_GRANTS`]).
    struct LiveGrant {
        grantee: String,
        /// `SELECT`, or `UPDATE (column)` for a column privilege.
        privilege: String,
    }
}

typed_row! {
    /// A privilege RLS does not cover (a row of [`DANGEROUS`]).
    struct Dangerous {
        privilege: String,
        app: bool,
        public: bool,
    }
}

type PerGrantee = BTreeMap<String, BTreeSet<String>>;

async fn read(client: &Client, sql: &str, oid: u32, what: &'static str) -> Result<PerGrantee> {
    let mut out = PerGrantee::new();
    for g in query(client, sql, typed![&oid], what, LiveGrant::from_row).await? {
        out.entry(g.grantee).or_default().insert(g.privilege);
    }
    Ok(out)
}

pub(super) async fn check(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    declared(cx, tally).await?;
    dangerous(cx.client, cx.schema, cx.rel, tally).await?;
    tenant_column_update(cx, tally).await
}

/// drift.grant: each role's privileges (table and column) equal the declaration.
async fn declared(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let (client, table, rel) = (cx.client, cx.table, cx.rel);
    let disp = rel.display();
    let live = read(client, TABLE_GRANTS, rel.oid, "cannot read grants").await?;
    let live_cols = read(client, COLUMN_GRANTS, rel.oid, "cannot read column grants").await?;
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
            .map(|p| p.sql().to_string())
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
    Ok(())
}

/// grant.dangerous: privileges that RLS does not cover, to the app role (directly or through
/// membership) or PUBLIC.
async fn dangerous(client: &Client, schema: &Schema, rel: &Rel, tally: &mut Tally) -> Result<()> {
    let app = &schema.tenancy.app_role;
    let params = typed![app, &rel.oid];
    let what = "cannot read privileges";
    for d in query(client, DANGEROUS, params, what, Dangerous::from_row).await? {
        let who = match (d.app, d.public) {
            (_, true) => Some("PUBLIC".to_string()),
            (true, false) => Some(app.clone()),
            _ => None,
        };
        tally.record(
            "grant.dangerous",
            who.map(|w| {
                Finding::new(
                    "grant.dangerous",
                    rel.object(),
                    format!("{w} holds {} on {}", d.privilege, rel.display()),
                )
            }),
        );
    }
    Ok(())
}

/// grant.tenant-column-update: the app role may not UPDATE the tenant column.
async fn tenant_column_update(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let (client, schema, table, rel) = (cx.client, cx.schema, cx.table, cx.rel);
    let t = &schema.tenancy;
    let disp = rel.display();
    let can: bool = col(
        &client
            .query_typed_one(
                TENANT_COLUMN_UPDATE,
                typed![&t.app_role, &rel.oid, &table.tenant_column],
            )
            .await
            .context("cannot read column privileges")?,
        "can",
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
