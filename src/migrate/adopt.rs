//! Adopting a database that has objects but no tenantctl history: the migrations are replayed in a
//! scratch database and, after each, its schema compared with the live one ([`adopt_catalog`]);
//! the longest prefix V1..Vk whose result matches is then recorded in refinery's history, as
//! refinery records a migration (its own checksum), without running it.
//!
//! [`adopt_catalog`]: super::adopt_catalog

use std::path::Path;

use anyhow::{Context, Result};
use refinery::{Migration, Runner, Target};
use tokio_postgres::Client;

use super::adopt_catalog::{self, differences, Catalog, Difference};
use super::scratch::{self, Failure};
use super::Place;

/// The database's schema against the result of V1..Vi.
#[derive(Debug, Clone)]
pub struct Step {
    pub version: i32,
    /// `V<n>__<name>`.
    pub migration: String,
    /// How the database differs from the result of V1..Vi (empty: it matches).
    pub differences: Vec<Difference>,
    /// Vi changed nothing the comparison sees (a data migration): whether it ran cannot be told.
    pub neutral: bool,
}

/// The replay: a step per migration that applied, and the failure of the one that did not.
#[derive(Debug, Clone)]
pub struct Replay {
    pub steps: Vec<Step>,
    pub failure: Option<Failure>,
}

/// Replay `migrations` in the scratch database `client` (one rolled-back transaction), comparing
/// its schema with `live` after each.
pub async fn replay(
    client: &mut Client,
    dir: &Path,
    search_path: &str,
    migrations: &[&Migration],
    live: &Catalog,
    schemas: &[String],
    after: &str,
) -> Result<Replay> {
    let mut steps = Vec::new();
    let mut previous: Option<Catalog> = None;
    let failure = scratch::replay(
        client,
        dir,
        search_path,
        migrations,
        after,
        async |tx, m| {
            let built = adopt_catalog::read(tx, schemas).await?;
            if let (Some(m), Some(before)) = (m, &previous) {
                steps.push(Step {
                    version: m.version(),
                    migration: m.to_string(),
                    differences: differences(live, &built),
                    neutral: *before == built,
                });
            }
            previous = Some(built);
            Ok(())
        },
    )
    .await?;
    Ok(Replay { steps, failure })
}

/// Why the baseline stops short of the newest migration whose result matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// This migration changes no compared object (a backfill) and was not named with `--applied`;
    /// none after it changes one either: it is left pending.
    Pending(String),
    /// As above, but a later migration that changes objects matches: the database has had it,
    /// so it probably ran too, but that cannot be seen. Nothing is adopted until it is named.
    Unnamed(String),
}

/// How many of the steps the database has applied: the longest prefix whose result matches the
/// database. A migration that changes no compared object (a backfill) counts only when named in
/// `applied`: whether it ran cannot be seen in the schema.
pub fn baseline(steps: &[Step], applied: &[i32]) -> (usize, Option<Stop>) {
    let full = steps
        .iter()
        .rposition(|s| s.differences.is_empty())
        .map_or(0, |i| i + 1);
    let unnamed = steps[..full]
        .iter()
        .position(|s| s.neutral && !applied.contains(&s.version));
    match unnamed {
        None => (full, None),
        Some(j) if steps[j..full].iter().all(|s| s.neutral) => {
            (j, Some(Stop::Pending(steps[j].migration.clone())))
        }
        Some(j) => (full, Some(Stop::Unnamed(steps[j].migration.clone()))),
    }
}

/// Record `migrations` as applied in refinery's history in the helper schema (created if need
/// be), in one transaction, without running them: refinery's fake target, so each row is what
/// refinery itself would write (version, name, applied_on, checksum).
pub async fn record(client: &mut Client, place: &Place, migrations: &[Migration]) -> Result<()> {
    let Some(last) = migrations.last() else {
        return Ok(());
    };
    super::settle(client, place, true).await?;
    let mut runner = Runner::new(migrations).set_target(Target::FakeVersion(last.version()));
    runner.set_migration_table_name(place.relation());
    runner
        .run_async(client)
        .await
        .with_context(|| format!("cannot record V1..V{} as applied", last.version()))?;
    super::mark(client, place).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(version: i32, matches: bool, neutral: bool) -> Step {
        let differences = if matches {
            Vec::new()
        } else {
            vec![Difference::Missing {
                object: "table public.t".into(),
                expected: String::new(),
            }]
        };
        Step {
            version,
            migration: format!("V{version}__m"),
            differences,
            neutral,
        }
    }

    #[test]
    fn the_baseline_is_the_longest_matching_prefix() {
        let steps = [
            step(1, false, false),
            step(2, true, false),
            step(3, false, false),
        ];
        assert_eq!(baseline(&steps, &[]), (2, None));
        assert_eq!(baseline(&steps[..1], &[]), (0, None));
    }

    #[test]
    fn a_migration_that_changes_no_object_needs_to_be_named() {
        let steps = [
            step(1, true, false),
            step(2, true, true),
            step(3, false, false),
        ];
        assert_eq!(
            baseline(&steps[..2], &[]),
            (1, Some(Stop::Pending("V2__m".into())))
        );
        assert_eq!(baseline(&steps[..2], &[2]), (2, None));
        let later = [
            step(1, false, false),
            step(2, false, true),
            step(3, true, false),
        ];
        assert_eq!(
            baseline(&later, &[]),
            (3, Some(Stop::Unnamed("V2__m".into())))
        );
        assert_eq!(baseline(&later, &[2]), (3, None));
    }
}
