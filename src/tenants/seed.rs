//! Realistic, reproducible fake data for one tenant, inserted in set-based batches as that tenant.
//!
//! COPY is refused on tables with RLS for the roles RLS applies to, so seeding sends columnar
//! arrays (`INSERT ... SELECT FROM unnest($2::text[], ...)`) of a few thousand rows per statement.
//! Generation runs on its own thread and stays one batch ahead of the server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fake::faker::name::en::{FirstName, LastName};
use fake::faker::phone_number::en::CellNumber;
use fake::Fake;
use indicatif::ProgressBar;
use postgres_types::ToSql;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio_postgres::{Statement, Transaction};
use uuid::Uuid;

use crate::model::{Backend, Schema, Table};
use crate::pg::error::pg_error;
use crate::sqlgen::citus;
use crate::sqlgen::tenants::{self as sql, SeedColumn, SeedValue};

/// Rows per INSERT statement: large enough that per-statement overhead vanishes, small enough
/// that one batch's arrays stay a few MB.
pub const BATCH_ROWS: usize = 5_000;

/// 2025-06-30 as a day offset from [`sql::EPOCH_SQL`] (2000-01-01): the "today" of generated data.
const TODAY: i32 = 9_312;

/// The tables tenantctl knows how to fill. Any other tenant table is left empty.
pub const COACHES: &str = "coaches";
pub const MEMBERS: &str = "members";

/// How much to seed.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub coaches: u64,
    pub members: u64,
}

/// What a seeding run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Table → rows inserted.
    pub rows: BTreeMap<String, u64>,
    /// Tenant tables that were not seeded, with the reason.
    pub skipped: BTreeMap<String, String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// One column's values for a batch.
enum Values {
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Int(Vec<i32>),
    OptInt(Vec<Option<i32>>),
    Bool(Vec<bool>),
    Uuid(Vec<Uuid>),
    OptUuid(Vec<Option<Uuid>>),
}

impl Values {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Values::Text(v) => v,
            Values::OptText(v) => v,
            Values::Int(v) => v,
            Values::OptInt(v) => v,
            Values::Bool(v) => v,
            Values::Uuid(v) => v,
            Values::OptUuid(v) => v,
        }
    }
}

/// One seeded column, written on one line.
const fn column(name: &'static str, array_type: &'static str, value: SeedValue) -> SeedColumn {
    SeedColumn {
        name,
        array_type,
        value,
    }
}

// The columns tenantctl can generate: the array type each is sent as, and how its value is made.
const COACH_COLUMNS: &[SeedColumn] = &[
    column("id", "uuid[]", SeedValue::Plain),
    column("full_name", "text[]", SeedValue::Plain),
    column("email", "text[]", SeedValue::Plain),
    column("phone", "text[]", SeedValue::Plain),
    column("specialties", "text[]", SeedValue::List),
    column("hired_on", "int4[]", SeedValue::Day),
    column("active", "bool[]", SeedValue::Plain),
];

const MEMBER_COLUMNS: &[SeedColumn] = &[
    column("full_name", "text[]", SeedValue::Plain),
    column("email", "text[]", SeedValue::Plain),
    column("phone", "text[]", SeedValue::Plain),
    column("date_of_birth", "int4[]", SeedValue::Day),
    column("joined_on", "int4[]", SeedValue::Day),
    column("status", "text[]", SeedValue::Plain),
    column("home_coach_id", "uuid[]", SeedValue::Plain),
];

/// The columns of `table` that will be sent (known and present), or why the table cannot be seeded.
fn plan(
    table: &Table,
    known: &'static [SeedColumn],
    tenant_column: &str,
) -> Result<Vec<&'static SeedColumn>, String> {
    let cols: Vec<&SeedColumn> = known
        .iter()
        .filter(|k| table.column(k.name).is_some())
        .collect();
    for c in &table.columns {
        let needed = !c.nullable && c.default.is_none() && c.name != tenant_column;
        if needed && !cols.iter().any(|k| k.name == c.name) {
            return Err(format!(
                "column {} is NOT NULL without a default and tenantctl does not know how to fill it",
                c.name
            ));
        }
    }
    Ok(cols)
}

/// A batch of generated rows for one table, column by column in plan order.
struct Batch {
    table: &'static str,
    rows: usize,
    columns: Vec<Values>,
}

/// Deterministic generator: the same seed gives the same names, emails, phones, dates, statuses
/// and coach assignments (row ids come from the database or the OS and differ).
struct Generator {
    rng: Xoshiro256PlusPlus,
}

const SPECIALTIES: &[&str] = &[
    "strength",
    "hiit",
    "yoga",
    "mobility",
    "boxing",
    "cycling",
    "pilates",
    "olympic lifting",
    "running",
    "nutrition",
];
/// RFC 2606 reserved domains: realistic-looking addresses that can never reach anyone.
const DOMAINS: &[&str] = &["example.com", "example.net", "example.org"];

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// A person: display name and the ASCII local part of an email address.
    fn person(&mut self) -> (String, String) {
        let first: String = FirstName().fake_with_rng(&mut self.rng);
        let last: String = LastName().fake_with_rng(&mut self.rng);
        let local: String = format!("{first}.{last}")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        (format!("{first} {last}"), local)
    }

    fn coaches(&mut self, ids: &[Uuid], start: usize, cols: &[&SeedColumn]) -> Batch {
        let n = ids.len();
        let (mut names, mut emails, mut phones, mut specs, mut hired, mut active) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for i in 0..n {
            let (name, local) = self.person();
            names.push(name);
            // The index keeps emails unique per gym (UNIQUE (gym_id, email)) whatever the names.
            emails.push(format!("coach.{local}.{}@{}", start + i + 1, DOMAINS[1]));
            phones.push(Some(CellNumber().fake_with_rng::<String, _>(&mut self.rng)));
            let k = self.rng.random_range(1..=3);
            let mut s: Vec<&str> = Vec::with_capacity(k);
            while s.len() < k {
                let pick = SPECIALTIES[self.rng.random_range(0..SPECIALTIES.len())];
                if !s.contains(&pick) {
                    s.push(pick);
                }
            }
            specs.push(s.join(","));
            hired.push(TODAY - self.rng.random_range(0..3_650));
            active.push(self.rng.random_bool(0.9));
        }
        batch(
            COACHES,
            n,
            [
                ("id", Values::Uuid(ids.to_vec())),
                ("full_name", Values::Text(names)),
                ("email", Values::Text(emails)),
                ("phone", Values::OptText(phones)),
                ("specialties", Values::Text(specs)),
                ("hired_on", Values::Int(hired)),
                ("active", Values::Bool(active)),
            ],
            cols,
        )
    }

    fn members(&mut self, n: usize, start: u64, coaches: &[Uuid], cols: &[&SeedColumn]) -> Batch {
        let mut names = Vec::with_capacity(n);
        let mut emails = Vec::with_capacity(n);
        let mut phones = Vec::with_capacity(n);
        let mut born = Vec::with_capacity(n);
        let mut joined = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut coach = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let (name, local) = self.person();
            names.push(name);
            let domain = DOMAINS[self.rng.random_range(0..DOMAINS.len())];
            emails.push(format!("{local}.{}@{domain}", start + i + 1));
            phones.push(if self.rng.random_bool(0.85) {
                Some(CellNumber().fake_with_rng::<String, _>(&mut self.rng))
            } else {
                None
            });
            // Ages 16 to 75; about one member in ten never gave a birth date.
            born.push(if self.rng.random_bool(0.9) {
                Some(TODAY - self.rng.random_range(16 * 365..75 * 365))
            } else {
                None
            });
            joined.push(TODAY - self.rng.random_range(0..5 * 365));
            let roll = self.rng.random_range(0..100);
            status.push(
                match roll {
                    0..80 => "active",
                    80..92 => "paused",
                    _ => "cancelled",
                }
                .to_string(),
            );
            coach.push(if !coaches.is_empty() && self.rng.random_bool(0.7) {
                Some(coaches[self.rng.random_range(0..coaches.len())])
            } else {
                None
            });
        }
        batch(
            MEMBERS,
            n,
            [
                ("full_name", Values::Text(names)),
                ("email", Values::Text(emails)),
                ("phone", Values::OptText(phones)),
                ("date_of_birth", Values::OptInt(born)),
                ("joined_on", Values::Int(joined)),
                ("status", Values::Text(status)),
                ("home_coach_id", Values::OptUuid(coach)),
            ],
            cols,
        )
    }
}

/// A batch of `rows` rows of `table`: of the generated columns, those the table has, in plan order.
fn batch<const N: usize>(
    table: &'static str,
    rows: usize,
    generated: [(&str, Values); N],
    cols: &[&SeedColumn],
) -> Batch {
    Batch {
        table,
        rows,
        columns: pick(BTreeMap::from(generated), cols),
    }
}

/// Keep the generated columns the table has, in plan order.
fn pick(mut by_name: BTreeMap<&str, Values>, cols: &[&SeedColumn]) -> Vec<Values> {
    cols.iter()
        .map(|c| {
            by_name
                .remove(c.name)
                .expect("every known column is generated")
        })
        .collect()
}

/// The columns to send per seeded table (`coaches`, `members`), and whether members point at
/// coaches.
struct Plans {
    tables: BTreeMap<&'static str, Vec<&'static SeedColumn>>,
    link: bool,
}

/// Which tables can be seeded and with which columns. A table that cannot be seeded is an error
/// when rows were asked of it, else it is noted in `report` as skipped.
fn plan_tables(schema: &Schema, counts: Counts, report: &mut Report) -> Result<Plans> {
    let mut tables: BTreeMap<&'static str, Vec<&'static SeedColumn>> = BTreeMap::new();
    for (name, table) in &schema.tables {
        if *name == schema.tenancy.tenant_table {
            continue;
        }
        let (known, wanted) = match name.as_str() {
            COACHES => (COACH_COLUMNS, counts.coaches),
            MEMBERS => (MEMBER_COLUMNS, counts.members),
            _ => {
                report.skipped.insert(
                    name.clone(),
                    "tenantctl seeds coaches and members only".into(),
                );
                continue;
            }
        };
        match plan(table, known, &table.tenant_column) {
            Ok(cols) => {
                tables.insert(if name == COACHES { COACHES } else { MEMBERS }, cols);
            }
            Err(why) if wanted > 0 => bail!("cannot seed table {name}: {why}"),
            Err(why) => {
                report.skipped.insert(name.clone(), why);
            }
        }
    }
    if !tables.contains_key(COACHES) && counts.coaches > 0 {
        bail!("cannot seed coaches: the policies declare no table {COACHES}");
    }
    if !tables.contains_key(MEMBERS) && counts.members > 0 {
        bail!("cannot seed members: the policies declare no table {MEMBERS}");
    }
    // Members point at coaches only when both tables carry the reference.
    let has = |table: &str, column: &str| {
        tables
            .get(table)
            .is_some_and(|c| c.iter().any(|k| k.name == column))
    };
    let link = has(MEMBERS, "home_coach_id") && has(COACHES, "id");
    Ok(Plans { tables, link })
}

/// Generation runs on a plain thread, one batch ahead (a channel of two), so the server never
/// waits for the faker and the faker never waits for the server.
fn spawn_generator(
    plans: &Plans,
    counts: Counts,
    seed: u64,
) -> (
    tokio::sync::mpsc::Receiver<Batch>,
    std::thread::JoinHandle<()>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Batch>(2);
    let coach_cols = plans.tables.get(COACHES).cloned();
    let member_cols = plans.tables.get(MEMBERS).cloned();
    let link = plans.link;
    let generator = std::thread::spawn(move || {
        let mut g = Generator::new(seed);
        let coach_ids: Vec<Uuid> = (0..counts.coaches).map(|_| Uuid::new_v4()).collect();
        if let Some(cols) = &coach_cols {
            for (k, chunk) in coach_ids.chunks(BATCH_ROWS).enumerate() {
                if sender
                    .blocking_send(g.coaches(chunk, k * BATCH_ROWS, cols))
                    .is_err()
                {
                    return;
                }
            }
        }
        let linked: &[Uuid] = if link { &coach_ids } else { &[] };
        if let Some(cols) = &member_cols {
            let mut done = 0u64;
            while done < counts.members {
                let n = (counts.members - done).min(BATCH_ROWS as u64) as usize;
                if sender
                    .blocking_send(g.members(n, done, linked, cols))
                    .is_err()
                {
                    return;
                }
                done += n as u64;
            }
        }
    });
    (receiver, generator)
}

/// One prepared INSERT per seeded table.
async fn prepare_inserts(
    tx: &Transaction<'_>,
    schema: &Schema,
    plans: &Plans,
) -> Result<BTreeMap<&'static str, Statement>> {
    let mut statements = BTreeMap::new();
    for (table, cols) in &plans.tables {
        let sql = sql::seed_insert(schema, table, cols);
        let stmt = tx
            .prepare(&sql)
            .await
            .map_err(pg_error)
            .with_context(|| format!("cannot prepare the insert into {table}"))?;
        statements.insert(*table, stmt);
    }
    Ok(statements)
}

/// Seed the tenant inside `tx`, which must already run as the app role with the tenant's
/// context set: every row then passes the policies' WITH CHECK like an application's would.
pub async fn seed(
    tx: &Transaction<'_>,
    schema: &Schema,
    gym_id: Uuid,
    counts: Counts,
    seed: u64,
    bar: &ProgressBar,
) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report::default();
    let plans = plan_tables(schema, counts, &mut report)?;
    let statements = prepare_inserts(tx, schema, &plans).await?;
    let (mut receiver, generator) = spawn_generator(&plans, counts, seed);
    while let Some(batch) = receiver.recv().await {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&gym_id];
        params.extend(batch.columns.iter().map(Values::as_sql));
        let n = match schema.target {
            Backend::Postgres => tx.execute(&statements[batch.table], &params).await,
            Backend::Citus => {
                let cols = &plans.tables[batch.table];
                let sql = citus::seed_insert_rows(schema, batch.table, cols, batch.rows);
                tx.execute(sql.as_str(), &params).await
            }
        };
        let n = n
            .map_err(pg_error)
            .with_context(|| format!("cannot insert into {}", batch.table))?;
        if n != batch.rows as u64 {
            bail!(
                "inserting into {} wrote {n} rows, not {}",
                batch.table,
                batch.rows
            );
        }
        *report.rows.entry(batch.table.to_string()).or_default() += n;
        bar.inc(n);
    }
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the data generator panicked"))?;
    report.elapsed = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_people() {
        let cols: Vec<&SeedColumn> = MEMBER_COLUMNS.iter().collect();
        let coaches = [Uuid::nil()];
        let a = Generator::new(7).members(50, 0, &coaches, &cols);
        let b = Generator::new(7).members(50, 0, &coaches, &cols);
        let c = Generator::new(8).members(50, 0, &coaches, &cols);
        let emails = |b: &Batch| match &b.columns[1] {
            Values::Text(v) => v.clone(),
            _ => unreachable!(),
        };
        assert_eq!(emails(&a), emails(&b));
        assert_ne!(emails(&a), emails(&c));
    }

    #[test]
    fn emails_are_unique_and_ascii() {
        let cols: Vec<&SeedColumn> = MEMBER_COLUMNS.iter().collect();
        let batch = Generator::new(1).members(5_000, 0, &[], &cols);
        let Values::Text(emails) = &batch.columns[1] else {
            unreachable!()
        };
        let set: std::collections::BTreeSet<&String> = emails.iter().collect();
        assert_eq!(set.len(), emails.len());
        assert!(emails.iter().all(|e| e.is_ascii() && e.contains('@')));
    }

    #[test]
    fn insert_sql_quotes_every_name_and_binds_every_value() {
        let config = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tenantctl.toml"));
        let project = crate::settings::Project::load(config).unwrap();
        let schema = project.schema().unwrap();
        let cols: Vec<&SeedColumn> = MEMBER_COLUMNS.iter().collect();
        let sql = sql::seed_insert(&schema, MEMBERS, &cols);
        assert!(
            sql.starts_with("INSERT INTO \"public\".\"members\" (\"gym_id\", \"full_name\""),
            "{sql}"
        );
        assert!(sql.contains("FROM unnest($2::text[], $3::text[]"), "{sql}");
    }
}
