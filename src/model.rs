//! The compiled policy model: what the database must hold, normalised and sorted so that equal
//! policies give equal models (and so equal SQL). It is also the snapshot format.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    pub tenancy: Tenancy,
    /// Physical role name → role.
    pub roles: BTreeMap<String, Role>,
    /// Table name → table.
    pub tables: BTreeMap<String, Table>,
    /// Global reference tables (no tenant column; the app may only read them), by name. Kept
    /// apart from `tables` so that everything that acts per tenant never meets them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub globals: BTreeMap<String, Table>,
    /// View name → view (security_invoker, security_barrier; PostgreSQL 15+).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub views: BTreeMap<String, View>,
    /// Extension name → where it lives.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, Extension>,
    /// `[[verify.allow]]`: verify findings accepted on purpose. Not part of the snapshot (it
    /// generates no SQL).
    #[serde(skip)]
    pub allow: Vec<Allow>,
    /// The database the SQL is for (`[target] kind` in tenantctl.toml, not the policy files);
    /// absent from a plain-Postgres snapshot, so those stay byte-identical.
    #[serde(default, skip_serializing_if = "Backend::is_postgres")]
    pub target: Backend,
}

impl Schema {
    /// A model with only tenancy: what `diff` compares the first migration with.
    pub fn empty(tenancy: Tenancy) -> Schema {
        Schema {
            tenancy,
            roles: BTreeMap::new(),
            tables: BTreeMap::new(),
            globals: BTreeMap::new(),
            views: BTreeMap::new(),
            extensions: BTreeMap::new(),
            allow: Vec::new(),
            target: Backend::Postgres,
        }
    }

    /// The partitioned table that declares partition `name`, with the table's name.
    pub fn partition_of(&self, name: &str) -> Option<(&String, &Table)> {
        self.tables.iter().find(|(_, t)| {
            t.partitioning
                .as_ref()
                .is_some_and(|p| p.partitions.contains_key(name))
        })
    }
}

/// One `[[verify.allow]]` entry: a finding on `object` (of check `check`, or any) is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub object: String,
    pub check: Option<String>,
    pub reason: String,
    /// Where it is written: `policies/x.toml:12:1`.
    pub at: String,
}

/// The back end the policies compile to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One PostgreSQL server.
    #[default]
    Postgres,
    /// A Citus cluster: tenant tables distributed by the tenant column (docs/citus.md).
    Citus,
}

impl Backend {
    pub fn is_postgres(&self) -> bool {
        *self == Backend::Postgres
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    pub source: String,
    /// The tenant table (`gyms`); its key column is the tenant id.
    pub tenant_table: String,
    /// The tenant table's key column (`id`).
    pub tenant_key: String,
    /// The tenant column on every other table (`gym_id`).
    pub tenant_column: String,
    /// The schema that holds the tables (`public`); generated SQL always qualifies with it.
    pub table_schema: String,
    pub helper_schema: String,
    pub context_setting: String,
    pub context_function: String,
    pub admin_bypass: AdminBypass,
    pub owner_role: String,
    pub app_role: String,
    pub admin_role: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminBypass {
    /// The admin role carries BYPASSRLS.
    Bypassrls,
    /// A permissive `USING (true)` policy for the admin role on every tenant table.
    Policy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub source: String,
    pub login: bool,
    pub bypassrls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub source: String,
    /// The column holding the tenant id on this table (`id` on the tenant table, `gym_id` elsewhere).
    pub tenant_column: String,
    pub columns: Vec<Column>,
    /// Constraint name → constraint (primary key, uniques, checks, foreign keys).
    pub constraints: BTreeMap<String, Constraint>,
    /// Index name → index.
    pub indexes: BTreeMap<String, Index>,
    /// Policy name → policy.
    pub policies: BTreeMap<String, Policy>,
    /// Role → privileges on this table.
    pub grants: BTreeMap<String, Grant>,
    /// How a partitioned tenant table is split; each partition gets the table's RLS, policies
    /// and grants (a partition queried directly uses its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioning: Option<Partitioning>,
    /// A global reference table: no tenant column, no RLS; the app role may only read it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitioning {
    pub method: PartitionMethod,
    /// The partition key column (the tenant column, or a column every key includes).
    pub column: String,
    /// Partition name → its bound.
    pub partitions: BTreeMap<String, PartitionBound>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMethod {
    List,
    Hash,
    Range,
}

impl PartitionMethod {
    pub fn sql(self) -> &'static str {
        match self {
            PartitionMethod::List => "LIST",
            PartitionMethod::Hash => "HASH",
            PartitionMethod::Range => "RANGE",
        }
    }
}

/// `FOR VALUES ...` of one partition; values are SQL expressions checked like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartitionBound {
    Hash { modulus: u32, remainder: u32 },
    List { values: Vec<String> },
    Range { from: Vec<String>, to: Vec<String> },
    Default,
}

/// A view over tenant tables: created `WITH (security_invoker, security_barrier)`, so the
/// reader's own rights and row-level security apply beneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub source: String,
    /// The SELECT, as declared.
    pub query: String,
    /// Role → privileges (SELECT only).
    pub grants: BTreeMap<String, Grant>,
}

/// An extension and the schema it is created in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    pub source: String,
    pub schema: String,
    /// Declared roles that get USAGE on the schema (to call the extension's functions).
    pub usage: Vec<String>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Constraint {
    PrimaryKey {
        columns: Vec<String>,
    },
    Unique {
        columns: Vec<String>,
    },
    Check {
        expr: String,
    },
    ForeignKey {
        columns: Vec<String>,
        table: String,
        ref_columns: Vec<String>,
        on_delete: OnDelete,
    },
}

impl Constraint {
    /// Foreign keys are added after every table exists (references may point forward or at themselves).
    pub fn is_foreign_key(&self) -> bool {
        matches!(self, Constraint::ForeignKey { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    NoAction,
    Restrict,
    Cascade,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub columns: Vec<String>,
    pub unique: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    All,
    Select,
    Insert,
    Update,
    Delete,
}

impl Command {
    pub fn sql(self) -> &'static str {
        match self {
            Command::All => "ALL",
            Command::Select => "SELECT",
            Command::Insert => "INSERT",
            Command::Update => "UPDATE",
            Command::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub source: String,
    pub command: Command,
    pub permissive: bool,
    /// Sorted role names.
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

/// Table privileges of one role. UPDATE is always column-level so that the tenant column and
/// the primary key are never updatable; TRUNCATE, REFERENCES and TRIGGER are never granted to the
/// app role (RLS does not cover them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Grant {
    pub privileges: BTreeSet<Privilege>,
    pub update_columns: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    Select,
    Insert,
    Delete,
    Truncate,
    References,
    Trigger,
}

impl Privilege {
    pub fn sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Delete => "DELETE",
            Privilege::Truncate => "TRUNCATE",
            Privilege::References => "REFERENCES",
            Privilege::Trigger => "TRIGGER",
        }
    }
}
