//! The command line: every clap type lives here; commands receive plain settings.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version,
    about = "Multi-tenant Postgres with Row-Level Security: compile policies, migrate, prove isolation",
    long_about = "tenantctl compiles the TOML files in policies/ into deterministic SQL migrations \
(tables, roles, grants and Row-Level Security policies), applies them with refinery, and proves \
tenant isolation on a live database.\n\n\
Typical loop:\n  tenantctl init my-project && cd my-project\n  tenantctl plan            # the SQL, no database needed\n  \
tenantctl generate        # write migrations/V<n>__<name>.sql\n  tenantctl migrate         # apply (embedded local database when no URL is given)\n  \
tenantctl status\n\n\
Database URL: --database-url, else $DATABASE_URL, else [database].url in tenantctl.toml, else the \
embedded local database (never when $CI is set: then a missing URL is an error).\n\n\
Exit codes: 0 success, 1 the command ran and found a problem (drift, pending migrations under --check), \
2 it could not do its job (bad input, bad config, no connection)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Project configuration file; policies/ and migrations/ are resolved beside it. Default: the
    /// tenantctl.toml in the current directory or the nearest parent directory that has one.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Postgres URL (postgres://user:pass@host:port/db?sslmode=verify-full). Overrides $DATABASE_URL
    /// and the config file.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Output format: human tables, stable JSON on stdout, or JUnit XML (verify only).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// JUnit XML on stdout, for CI systems (`verify` only).
    Junit,
    /// SARIF 2.1.0 on stdout, for GitHub code scanning (`verify` only).
    Sarif,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a new project: tenantctl.toml, policies/ (gyms, coaches, members), migrations/.
    Init(InitArgs),
    /// Print the SQL that `generate` would write. Needs no database and writes nothing.
    Plan(PlanArgs),
    /// Write the next migrations/V<n>__<name>.sql from the change in policies/ since the last
    /// generation. Writes nothing when nothing changed.
    Generate(GenerateArgs),
    /// Add an empty hand-written migrations/V<n>__<name>.sql (a backfill, a data fix) after the
    /// newest one. generate and plan leave hand-written migrations alone.
    New(NewArgs),
    /// What each migration locks and for how long (rule ids follow squawk's): the migrations the
    /// database has not applied yet, or the files given. Exit 1 when it finds something.
    Lint(LintArgs),
    /// Apply pending migrations, one transaction each, under an advisory lock.
    Migrate(MigrateArgs),
    /// List applied, pending, divergent and missing migrations.
    Status(StatusArgs),
    /// Adopt a database whose objects already exist (made by hand or by another tool) and that has
    /// no tenantctl history: find the migrations it already matches and mark them as applied.
    Adopt(AdoptArgs),
    /// The embedded local Postgres cluster (data under .tenantctl/ beside tenantctl.toml).
    Dev(DevArgs),
    /// Tenants (gyms): create with realistic seed data and an isolation probe, list, show, delete.
    Tenant(TenantArgs),
    /// Run one SQL statement as a tenant (the app role in the tenant's context) or as the platform
    /// admin, inside a transaction, and print the result.
    Exec(ExecArgs),
    /// The whole story on a fresh database of the embedded cluster: migrate, three seeded gyms,
    /// verify, and isolation shown live.
    Demo(DemoArgs),
    /// Prove tenant isolation on a live database: static checks of the catalog, then probes that
    /// impersonate every tenant inside transactions that are always rolled back. Exit 0: passed;
    /// 1: a finding; 2: it could not run.
    Verify(VerifyArgs),
    /// What row-level security costs on this database: typical queries of every tenant table as
    /// the application runs them (generated policies) against the same queries written by hand
    /// (explicit tenant filter, RLS bypassed) and under a naive policy, with plan checks. Without
    /// a database URL: a scratch database of the embedded cluster, seeded, then dropped. With one:
    /// its own data, read only (writes are rolled back); nothing it creates outlives the run.
    Bench(BenchArgs),
    /// Print a shell completion script: `tenantctl completions bash > /etc/bash_completion.d/tenantctl`,
    /// `tenantctl completions zsh > ~/.zfunc/_tenantctl`,
    /// `tenantctl completions fish > ~/.config/fish/completions/tenantctl.fish`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `tenantctl man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Gyms in the scratch database.
    #[arg(long, value_name = "N", default_value = "1000", value_parser = parse_count)]
    pub gyms: u64,
    /// Coaches in the scratch database (spread evenly over the gyms).
    #[arg(long, value_name = "N", default_value = "50000", value_parser = parse_count)]
    pub coaches: u64,
    /// Members in the scratch database (spread evenly over the gyms, tenants interleaved).
    #[arg(long, value_name = "N", default_value = "1000000", value_parser = parse_count)]
    pub members: u64,
    /// With a database URL: seed a scratch database on that server (needs CREATEDB) and drop it
    /// afterwards, instead of reading the database's own data.
    #[arg(long)]
    pub scratch: bool,
    /// Rounds: every query runs in each form in every round, the forms' order rotating.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(5..))]
    pub rounds: u64,
    /// Executions of each query in each form per round.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: u64,
    /// Skip the naive policy's contrast (it copies every tenant table into a scratch schema).
    #[arg(long)]
    pub no_naive: bool,
    /// Also write a chart of the medians to PATH (SVG).
    #[arg(long, value_name = "PATH")]
    pub chart: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Probe a random sample of N tenants instead of all.
    #[arg(long, value_name = "N", conflicts_with = "tenant")]
    pub sample: Option<u64>,
    /// Probe only this tenant (id or slug); repeatable.
    #[arg(long, value_name = "ID|SLUG")]
    pub tenant: Vec<String>,
    /// Lowest severity that fails the gate.
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    pub fail_on: FailOn,
    /// Connections probing tenants in parallel. The probes are CPU-bound on the server: more
    /// connections than it has cores only add contention (2 suits a small CI branch).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub connections: usize,
    /// Static checks only: skip the probes.
    #[arg(long)]
    pub static_only: bool,
    /// The application's login through the transaction pooler (postgres://app_login@pooler/db):
    /// the pooler leak probe interleaves tenants' transactions over its server connections.
    /// Overrides `[verify] pooled_url` in tenantctl.toml.
    #[arg(long, value_name = "URL")]
    pub pooled_url: Option<String>,
    /// The application's own login (postgres://app_login@host/db): the probes log in as it (no
    /// SET ROLE), so its role-level settings, memberships and privileges are what is probed.
    /// Else env TENANTCTL_APP_URL, else `[verify] app_url` (no password on a command line).
    #[arg(
        long,
        value_name = "URL",
        env = "TENANTCTL_APP_URL",
        hide_env_values = true
    )]
    pub app_url: Option<String>,
    /// No write probes (UPDATE, DELETE, INSERT, tenant-id change: they take row locks and fire
    /// triggers on live rows); the report says what is then unproven.
    #[arg(long)]
    pub read_only: bool,
    /// The statement timeout of every probe (e.g. 30s, 500ms, 2min); a probe that times out is a
    /// finding (probe.timeout). Default 30s, or `[verify] probe_timeout`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub probe_timeout: Option<std::time::Duration>,
    /// Print what check ID looks for, how to fix it and how to allow-list it; no database needed.
    #[arg(long, value_name = "ID")]
    pub explain: Option<String>,
}

/// A duration: a number with the unit ms, s or min (`30s`, `500ms`, `2min`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms or 2min"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" | "" => n * 1000,
        "min" => n * 60_000,
        other => return Err(format!("unknown unit {other:?}: use ms, s or min")),
    };
    if ms == 0 {
        return Err("the probe timeout must be more than 0".into());
    }
    Ok(std::time::Duration::from_millis(ms))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Error,
    Warning,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create the project in (created if missing; must not already hold a tenantctl.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Plan drops of tables and columns too (generate needs the same flag to write them).
    #[arg(long)]
    pub allow_destructive: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Migration name: letters, digits and underscores (default: derived from the change).
    #[arg(long)]
    pub name: Option<String>,
    /// Allow DROP TABLE and DROP COLUMN (data loss) in the generated migration.
    #[arg(long)]
    pub allow_destructive: bool,
    /// In CI ($CI set), write a change that widens what a role can see or write (a new or
    /// changed permissive policy, a dropped restrictive one, more privileges).
    #[arg(long)]
    pub allow_widening: bool,
    /// Allow a column type change that makes Postgres rewrite an existing table (and its
    /// indexes) under a lock that blocks reads and writes.
    #[arg(long)]
    pub allow_rewrite: bool,
    /// Write without test-applying the new migration in a scratch database of the embedded
    /// cluster (`migrate --dry-run` checks it later).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Migration name: letters, digits and underscores (`backfill_phones`).
    pub name: String,
    /// A non-transactional migration (marked `-- tenantctl: no-transaction`), for indexes
    /// built or dropped CONCURRENTLY on live tables: it may hold only `CREATE [UNIQUE] INDEX
    /// CONCURRENTLY IF NOT EXISTS` and `DROP INDEX CONCURRENTLY IF EXISTS`.
    #[arg(long)]
    pub no_transaction: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Migration files to lint (default: those not yet applied to the database).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// List the migrations that would run, and run none.
    #[arg(long)]
    pub dry_run: bool,
    /// Migrate up to and including this version only.
    #[arg(long, value_name = "N")]
    pub target: Option<i32>,
    /// Run through a transaction pooler (Neon "-pooler" host) anyway. The advisory lock that stops
    /// two concurrent runs does not hold there: use the direct host instead.
    #[arg(long)]
    pub allow_pooler: bool,
    /// Apply the migration files even though the policies changed since the last `generate`.
    #[arg(long)]
    pub allow_stale: bool,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// A hand-written migration the database has had (a backfill: it changes no object, so the
    /// schema cannot tell). Repeat for several: --applied V4 --applied V6.
    #[arg(long, value_name = "VERSION", value_parser = parse_migration_version)]
    pub applied: Vec<i32>,
    /// Report what matches and what differs, and mark nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `V4` or `4`.
fn parse_migration_version(s: &str) -> Result<i32, String> {
    s.strip_prefix(['V', 'v'])
        .unwrap_or(s)
        .parse::<i32>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a migration version (V4, or 4)"))
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Exit 1 when any migration is pending, divergent or missing (a CI gate).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory of the cluster (default: .tenantctl/ beside tenantctl.toml).
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: DevCommand,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start the local cluster (initialising it on first use) and print its URL.
    Up {
        /// Port on 127.0.0.1 (default: a free one, kept across restarts).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Stop the local cluster; its data stays.
    Down,
    /// Print the local cluster's URL (password redacted unless --show-password).
    Url {
        #[arg(long)]
        show_password: bool,
    },
    /// Open psql on the local cluster; extra arguments go to psql.
    Psql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Stop the local cluster, delete its data, and start a fresh one. Asks for confirmation on
    /// a terminal; elsewhere needs --yes.
    Reset {
        /// Reset without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    pub command: TenantCommand,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a gym, seed it with realistic fake data AS THAT TENANT (so every row passes the
    /// policies' WITH CHECK), probe its isolation, and print its id. All or nothing: a failed
    /// create leaves no gym behind.
    Create(TenantCreateArgs),
    /// Every tenant with its row count in each tenant table.
    List,
    /// One tenant: its row in the tenant table and its row counts.
    Show {
        /// The gym's slug.
        slug: String,
    },
    /// Citus target only: move a (large) tenant's rows of every distributed table to shards of
    /// their own (isolate_tenant_to_new_shard; writes to them wait meanwhile), and print the
    /// new shard and its node. Runs as the connecting role, which must own the tables.
    Isolate {
        /// The gym's slug.
        slug: String,
    },
    /// Delete a tenant and all its rows, in one transaction. Asks for confirmation on a
    /// terminal; elsewhere needs --yes.
    Delete {
        /// The gym's slug.
        slug: String,
        /// Delete without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct TenantCreateArgs {
    /// URL-safe identifier: 3 to 63 lowercase letters, digits and '-'.
    pub slug: String,
    /// Display name of the gym.
    #[arg(long)]
    pub name: String,
    /// Coaches to seed.
    #[arg(long, value_name = "N", default_value = "8", allow_negative_numbers = true, value_parser = parse_count)]
    pub coaches: u64,
    /// Members to seed.
    #[arg(long, value_name = "M", default_value = "200", allow_negative_numbers = true, value_parser = parse_count)]
    pub members: u64,
    /// Seed of the fake data: the same seed gives the same people, emails, phones and dates
    /// (default: random, and printed so the run can be reproduced).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// An existing slug is not an error: print its id and change nothing.
    #[arg(long)]
    pub if_not_exists: bool,
}

/// A row count: a non-negative integer, with a clearer message than clap's for `-5`.
fn parse_count(s: &str) -> Result<u64, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("a count cannot be negative (got {s})"));
    }
    s.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("who").required(true).args(["tenant", "admin"])))]
pub struct ExecArgs {
    /// Run as this tenant: the app role, with the tenant's context set for the transaction.
    #[arg(long, value_name = "SLUG")]
    pub tenant: Option<String>,
    /// Run as the platform admin instead (sees every tenant).
    #[arg(long)]
    pub admin: bool,
    /// Commit. Without it the transaction is READ ONLY and rolled back.
    #[arg(long)]
    pub write: bool,
    /// One SQL statement.
    pub sql: String,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Members of the largest gym (the other two get 60% and 40% of it).
    #[arg(long, value_name = "M", default_value = "1000", allow_negative_numbers = true, value_parser = parse_count)]
    pub members: u64,
}
