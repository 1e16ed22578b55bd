//! The declared tables: each exists, is owned by the owner role, has row-level security enabled
//! and forced, and matches its declaration (structure, grants, trigger, policies).

use std::collections::BTreeMap;

use anyhow::Result;
use tokio_postgres::Client;

use super::normalise::Normalised;
use super::relations::Rel;
use super::{columns, grants, owned_by, policies, roles, triggers};
use crate::model::{Schema, Table};
use crate::sqlgen;
use crate::verify::{Finding, Tally};

/// drift.table for every declared table, and the checks of each one that exists.
pub(super) async fn check_declared(
    client: &Client,
    schema: &Schema,
    rels: &[Rel],
    norm: &BTreeMap<String, Normalised>,
    tally: &mut Tally,
) -> Result<()> {
    let t = &schema.tenancy;
    for (name, table) in &schema.tables {
        let rel = rels
            .iter()
            .find(|r| &r.name == name && r.is_declared(schema));
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
        let cx = Declared {
            client,
            schema,
            table,
            rel,
            norm: norm.get(name),
        };
        declared_table(&cx, tally).await?;
    }
    Ok(())
}

/// One declared table that exists, and what its checks read.
pub(super) struct Declared<'a> {
    pub client: &'a Client,
    pub schema: &'a Schema,
    pub table: &'a Table,
    pub rel: &'a Rel,
    /// The declaration as Postgres renders it.
    pub norm: Option<&'a Normalised>,
}

async fn declared_table(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let Declared {
        client,
        schema,
        table,
        rel,
        norm,
    } = *cx;
    owner_owns(rel, schema, tally);
    row_level_security(rel, tally);
    columns::columns(cx, tally).await?;
    columns::constraints(cx, tally).await?;
    columns::indexes(cx, tally).await?;
    columns::tenant_index(client, schema, rel, &table.tenant_column, tally).await?;
    grants::check(cx, tally).await?;
    triggers::immutability(cx, tally).await?;
    let live = policies::read(client, rel.oid).await?;
    policies::drift(schema, table, rel, &live, norm, tally);
    let memberships = roles::app_memberships(client, schema).await?;
    policies::shape(schema, rel, &live, &memberships, tally);
    Ok(())
}

/// drift.owner: a declared relation belongs to the owner role.
pub(super) fn owner_owns(rel: &Rel, schema: &Schema, tally: &mut Tally) {
    let owner = &schema.tenancy.owner_role;
    let fix = sqlgen::fix_table_owner(&rel.schema, &rel.name, owner);
    owned_by(&rel.object(), &rel.owner, fix, owner, tally);
}

/// rls.disabled and rls.not-forced on a declared table.
pub(super) fn row_level_security(rel: &Rel, tally: &mut Tally) {
    let disp = rel.display();
    tally.fail_if("rls.disabled", !rel.rls, rel.object(), || {
        format!("row-level security is disabled on {disp}")
    });
    tally.fail_if("rls.not-forced", !rel.forced, rel.object(), || {
        format!(
            "row-level security on {disp} is not forced: its owner {} bypasses it",
            rel.owner
        )
    });
}
