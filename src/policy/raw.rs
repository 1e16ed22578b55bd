//! The serde shapes of a policy file's TOML, with spans for error positions. Unknown keys are
//! rejected everywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostics::{PolicyError, Sink};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub(crate) tenancy: Option<Spanned<RawTenancy>>,
    #[serde(default)]
    pub(crate) roles: BTreeMap<Spanned<String>, Spanned<RawRole>>,
    #[serde(default)]
    pub(crate) tables: BTreeMap<Spanned<String>, Spanned<RawTable>>,
    #[serde(default)]
    pub(crate) policies: Vec<Spanned<RawPolicy>>,
    #[serde(default)]
    pub(crate) views: BTreeMap<Spanned<String>, Spanned<RawView>>,
    #[serde(default)]
    pub(crate) extensions: BTreeMap<Spanned<String>, Spanned<RawExtension>>,
    /// `[verify]`: only `[[verify.allow]]` (src/policy/allow.rs).
    pub(crate) verify: Option<super::allow::RawVerify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenancy {
    pub(crate) tenant_table: Spanned<String>,
    pub(crate) tenant_key: Option<Spanned<String>>,
    pub(crate) tenant_column: Option<Spanned<String>>,
    pub(crate) table_schema: Option<Spanned<String>>,
    pub(crate) helper_schema: Option<Spanned<String>>,
    pub(crate) context_setting: Option<Spanned<String>>,
    pub(crate) context_function: Option<Spanned<String>>,
    pub(crate) admin_bypass: Option<Spanned<String>>,
    pub(crate) owner_role: Option<Spanned<String>>,
    pub(crate) app_role: Option<Spanned<String>>,
    pub(crate) admin_role: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    #[serde(default)]
    pub(crate) login: bool,
    #[allow(dead_code)]
    pub(crate) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTable {
    pub(crate) columns: Vec<Spanned<RawColumn>>,
    #[serde(default)]
    pub(crate) primary_key: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) unique: Vec<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(crate) references: Vec<Spanned<RawReference>>,
    #[serde(default)]
    pub(crate) indexes: Vec<Spanned<RawIndex>>,
    #[serde(default)]
    pub(crate) isolation: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) grants: RawGrants,
    /// A global reference table: no tenant column, read-only for the app.
    #[serde(default)]
    pub(crate) global: Option<Spanned<bool>>,
    #[serde(default)]
    pub(crate) partition_by: Option<Spanned<RawPartitionBy>>,
    #[serde(default)]
    pub(crate) partitions: Vec<Spanned<RawPartition>>,
    #[allow(dead_code)]
    pub(crate) comment: Option<String>,
}

/// `grants.<role> = ["select", ...]`.
pub(crate) type RawGrants = BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPartitionBy {
    pub(crate) method: Spanned<String>,
    pub(crate) column: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPartition {
    pub(crate) name: Spanned<String>,
    pub(crate) modulus: Option<u32>,
    pub(crate) remainder: Option<u32>,
    pub(crate) values: Option<Vec<Spanned<String>>>,
    pub(crate) from: Option<Vec<Spanned<String>>>,
    pub(crate) to: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(crate) default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawView {
    pub(crate) query: Spanned<String>,
    #[serde(default)]
    pub(crate) grants: RawGrants,
    #[allow(dead_code)]
    pub(crate) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtension {
    pub(crate) schema: Spanned<String>,
    #[serde(default)]
    pub(crate) usage: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawColumn {
    pub(crate) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(crate) ty: Spanned<String>,
    #[serde(default)]
    pub(crate) nullable: bool,
    pub(crate) default: Option<Spanned<String>>,
    pub(crate) check: Option<Spanned<String>>,
    #[allow(dead_code)]
    pub(crate) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReference {
    pub(crate) column: Spanned<String>,
    pub(crate) table: Spanned<String>,
    pub(crate) on_delete: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIndex {
    pub(crate) columns: Spanned<Vec<String>>,
    #[serde(default)]
    pub(crate) unique: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub(crate) name: Spanned<String>,
    pub(crate) table: Spanned<String>,
    #[serde(default)]
    pub(crate) command: Option<Spanned<String>>,
    pub(crate) roles: Spanned<Vec<Spanned<String>>>,
    pub(crate) using: Option<Spanned<String>>,
    pub(crate) with_check: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) kind: Option<Spanned<String>>,
}

/// A parsed policy file with its text (for positions).
pub(crate) struct Parsed {
    pub(crate) path: PathBuf,
    /// How provenance comments name the file (`policies/gyms.toml`).
    pub(crate) source: String,
    pub(crate) text: String,
    pub(crate) file: RawFile,
}

impl Parsed {
    /// Where this file's problems are collected, located in its text.
    pub(crate) fn sink<'a>(&'a self, errors: &'a mut Vec<PolicyError>) -> Sink<'a> {
        Sink {
            file: &self.path,
            text: &self.text,
            errors,
        }
    }
}
