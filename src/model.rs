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
    /// The database the SQL is for (`[target] kind` in tenantctl.toml, not the policy files);
    /// absent from a plain-Postgres snapshot, so those stay byte-identical.
    #[serde(default, skip_serializing_if = "Backend::is_postgres")]
    pub target: Backend,
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
