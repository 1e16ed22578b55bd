//! Creating a tenant: the gym inserted as the platform admin, then seeded as itself, all in one
//! transaction (on Citus in two, see [`citus_seed`]).

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::gym::{as_admin, as_tenant, check_schema, find, validate_slug, Gym};
use super::seed;
use crate::model::{Backend, Schema};
use crate::pg;
use crate::pg::error::pg_error;
use crate::pg::unnamed::typed;
use crate::sqlgen::tenants as sql;

#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub slug: String,
    pub name: String,
    pub counts: seed::Counts,
    pub seed: u64,
    pub if_not_exists: bool,
}

#[derive(Debug)]
pub enum Created {
    New {
        gym: Gym,
        report: seed::Report,
    },
    /// `--if-not-exists` and the slug was taken: nothing was written.
    Existing(Gym),
}

/// The application_name of a create's session, so an operator (or a test) can find it.
pub fn create_application_name(slug: &str) -> String {
    format!("tenantctl tenant create {slug}")
}

/// Insert the gym as the platform admin, then seed it as the tenant, in ONE transaction: a
/// create that fails at any point (bad data, a killed backend) leaves no gym behind.
pub async fn create(
    url: &pg::Target,
    schema: &Schema,
    spec: &CreateSpec,
    bar: &ProgressBar,
) -> Result<Created> {
    validate_slug(&spec.slug)?;
    check_schema(schema)?;
    if spec.name.trim().is_empty() {
        bail!("the gym's name cannot be empty");
    }
    let mut client = pg::connect(url).await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    // Transaction-local, as every setting outside migrate: nothing reaches the next client of a
    // pooled server connection.
    let app_name = create_application_name(&spec.slug);
    tx.execute_typed(
        "SELECT set_config('application_name', $1, true)",
        typed![app_name],
    )
    .await
    .map_err(pg_error)?;
    as_admin(&tx, schema).await?;
    if let Some(gym) = find(&tx, schema, &spec.slug).await? {
        if spec.if_not_exists {
            return Ok(Created::Existing(gym));
        }
        bail!(exists_message(&gym));
    }
    let id = insert(&tx, schema, spec).await?;
    if schema.target == Backend::Citus {
        tx.commit().await.map_err(pg_error)?;
        return citus_seed(&mut client, schema, spec, id, bar).await;
    }
    as_tenant(&tx, schema, id).await?;
    let report = seed::seed(&tx, schema, id, spec.counts, spec.seed, bar)
        .await
        .with_context(|| format!("seeding tenant {} failed; nothing was created", spec.slug))?;
    tx.commit()
        .await
        .map_err(pg_error)
        .with_context(|| format!("cannot commit tenant {}; nothing was created", spec.slug))?;
    Ok(Created::New {
        gym: Gym {
            id,
            slug: spec.slug.clone(),
            name: spec.name.clone(),
        },
        report,
    })
}

/// On Citus: the app role's connections to the workers cannot see the admin's uncommitted gym
/// (Citus opens one connection per role), so the gym is committed first, seeded in a second
/// transaction, and deleted again (with what cascades from it) when seeding fails.
async fn citus_seed(
    client: &mut tokio_postgres::Client,
    schema: &Schema,
    spec: &CreateSpec,
    id: Uuid,
    bar: &ProgressBar,
) -> Result<Created> {
    let seeded = async {
        let tx = client.transaction().await.map_err(pg_error)?;
        as_tenant(&tx, schema, id).await?;
        let report = seed::seed(&tx, schema, id, spec.counts, spec.seed, bar).await?;
        tx.commit().await.map_err(pg_error)?;
        anyhow::Ok(report)
    }
    .await;
    let report = match seeded {
        Ok(report) => report,
        Err(e) => {
            let tx = client.transaction().await.map_err(pg_error)?;
            super::citus::before_delete(&tx, schema).await?;
            as_admin(&tx, schema).await?;
            tx.execute_typed(&sql::delete_tenant(schema), typed![id])
                .await
                .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            return Err(e.context(format!(
                "seeding tenant {} failed; the gym was deleted again",
                spec.slug
            )));
        }
    };
    let gym = Gym {
        id,
        slug: spec.slug.clone(),
        name: spec.name.clone(),
    };
    Ok(Created::New { gym, report })
}

/// The gym's row, as the platform admin; returns its id.
async fn insert(tx: &Transaction<'_>, schema: &Schema, spec: &CreateSpec) -> Result<Uuid> {
    match tx
        .query_typed_one(&sql::insert_tenant(schema), typed![spec.slug, spec.name])
        .await
    {
        Ok(row) => Ok(row.get(0)),
        // Another create took the slug between our look-up and the insert.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            bail!(
                "tenant {:?} already exists\n  hint: pick another slug, or pass --if-not-exists",
                spec.slug
            )
        }
        Err(e) => Err(pg_error(e).context(format!("cannot create tenant {}", spec.slug))),
    }
}

fn exists_message(gym: &Gym) -> String {
    format!(
        "tenant {:?} already exists (id {})\n  hint: pick another slug, pass --if-not-exists to accept the existing one, or `tenantctl tenant delete {}` first",
        gym.slug, gym.id, gym.slug
    )
}
