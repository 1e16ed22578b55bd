//! The tenant table and acting on it: slugs, the schema check, looking a gym up, and switching
//! the transaction to a tenant or to the platform admin.

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use crate::model::{Backend, Schema};
use crate::pg::error::pg_error;
use crate::pg::unnamed::typed;
use crate::sqlgen::tenants::{self as sql, NAME_COLUMN, SLUG_COLUMN};

/// Slugs: lowercase letters, digits and `-`, 3 to 63 characters, not starting or ending with
/// `-` (the same rule as the shipped `gyms_slug_check`, so a bad slug fails before the database).
pub fn validate_slug(slug: &str) -> Result<()> {
    let chars_ok = slug
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let len = slug.chars().count();
    if !chars_ok || !(3..=63).contains(&len) || slug.starts_with('-') || slug.ends_with('-') {
        bail!(
            "invalid slug {slug:?}: a slug is 3 to 63 lowercase letters, digits and '-', and does not start or end with '-'\n  \
             hint: e.g. `iron-temple` or `gym-42`"
        );
    }
    Ok(())
}

/// The tenant tables other than the tenant table itself, with their tenant column, sorted.
pub fn data_tables(schema: &Schema) -> Vec<(&str, &str)> {
    schema
        .tables
        .iter()
        .filter(|(name, _)| **name != schema.tenancy.tenant_table)
        .map(|(name, t)| (name.as_str(), t.tenant_column.as_str()))
        .collect()
}

/// Fail early, with a hint, when the tenant table lacks what these commands need.
pub fn check_schema(schema: &Schema) -> Result<()> {
    let t = &schema.tenancy;
    let Some(table) = schema.tables.get(&t.tenant_table) else {
        bail!("the policies declare no tenant table {}", t.tenant_table);
    };
    for col in [SLUG_COLUMN, NAME_COLUMN] {
        if table.column(col).is_none() {
            bail!(
                "the tenant table {} has no column {col}\n  hint: tenant commands identify gyms by `slug` and show their `name`; declare both in policies/",
                t.tenant_table
            );
        }
    }
    Ok(())
}

/// Act as `role` until the transaction ends.
pub async fn set_role(tx: &Transaction<'_>, role: &str) -> Result<()> {
    crate::pg::tx::set_role(tx, role)
        .await
        .map_err(pg_error)
        .with_context(|| {
            format!("cannot act as role {role} (the connecting user must be a member of it)")
        })
}

/// Act as the app role in `gym`'s context until the transaction ends, as the application does.
pub async fn as_tenant(tx: &Transaction<'_>, schema: &Schema, gym: Uuid) -> Result<()> {
    let t = &schema.tenancy;
    let (role, setting, gym) = (&t.app_role, &t.context_setting, &gym.to_string());
    match schema.target {
        Backend::Postgres => crate::pg::tx::set_tenant(tx, role, setting, gym).await,
        Backend::Citus => crate::pg::tx::set_tenant_citus(tx, role, setting, gym).await,
    }
        .map_err(pg_error)
        .with_context(|| {
            format!(
                "cannot act as role {} in the tenant context (the connecting user must be a member of it)",
                t.app_role
            )
        })
}

pub async fn as_admin(tx: &Transaction<'_>, schema: &Schema) -> Result<()> {
    set_role(tx, &schema.tenancy.admin_role).await
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gym {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

impl Gym {
    /// From a row with the columns `id`, `slug` and `name` (as the tenant statements name them).
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Gym {
        Gym {
            id: row.get("id"),
            slug: row.get("slug"),
            name: row.get("name"),
        }
    }
}

/// The gym with this slug, as whoever the session acts as.
pub async fn find(client: &impl GenericClient, schema: &Schema, slug: &str) -> Result<Option<Gym>> {
    let row = client
        .query_typed_opt(&sql::find_tenant(schema), typed![slug])
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot look up tenant {slug}"))?;
    Ok(row.as_ref().map(Gym::from_row))
}

/// Like `find`, but an unknown slug is an error that says how to list the tenants.
pub async fn require(client: &impl GenericClient, schema: &Schema, slug: &str) -> Result<Gym> {
    validate_slug(slug)?;
    find(client, schema, slug).await?.ok_or_else(|| {
        anyhow!("no tenant with slug {slug:?}\n  hint: `tenantctl tenant list` shows the tenants")
    })
}

#[cfg(test)]
mod tests {
    use super::validate_slug;

    #[test]
    fn slugs() {
        for ok in ["abc", "iron-temple", "gym-42", "a1b", &"a".repeat(63)] {
            assert!(validate_slug(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a_b",
            "ab c",
            "gym;drop",
            "ünï",
            &"a".repeat(64),
            "",
        ] {
            assert!(validate_slug(bad).is_err(), "{bad}");
        }
    }
}
