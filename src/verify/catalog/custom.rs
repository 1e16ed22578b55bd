//! setting.cluster-custom: a custom setting (a dotted name no loaded library registered: a
//! placeholder, "Customized Options") set for the whole cluster in postgresql.conf or by
//! ALTER SYSTEM. Every role reads a placeholder with `current_setting`, the application's
//! logins included: a DSN or password kept there is theirs. Placeholders do not show in
//! `pg_settings`; the configuration files do (`pg_file_settings`, superuser-only by default:
//! read where verify's role may, skipped otherwise). Command-line placeholders show nowhere.

use anyhow::Result;
use tokio_postgres::Client;

use super::query;
use crate::model::Schema;
use crate::verify::{Finding, Tally};

/// Whether verify's role may read the configuration files' settings.
const READABLE: &str = "
SELECT pg_catalog.has_function_privilege('pg_catalog.pg_show_all_file_settings()', 'EXECUTE') AS readable";

/// Every dotted setting of the configuration files in effect, and whether a loaded library
/// registered it (registered settings show in `pg_settings`, placeholders do not).
const FILE_SETTINGS: &str = "
SELECT f.name, f.sourcefile,
       EXISTS (SELECT FROM pg_catalog.pg_settings s WHERE s.name = f.name) AS registered
FROM pg_catalog.pg_file_settings f
WHERE f.name LIKE '%.%' AND f.error IS NULL AND f.applied
ORDER BY 1, 2";

typed_row! {
    /// A dotted setting of a configuration file (a row of [`FILE_SETTINGS`]).
    pub(super) struct FileSetting {
        name: String,
        sourcefile: Option<String>,
        registered: bool,
    }
}

pub(super) async fn check(client: &Client, schema: &Schema, tally: &mut Tally) -> Result<()> {
    tally.pass("setting.cluster-custom");
    let what = "cannot read the privileges on the configuration files' settings";
    let readable = query(client, READABLE, &[], what, |r| super::col(r, "readable")).await?;
    if !readable.first().copied().unwrap_or(false) {
        return Ok(());
    }
    let what = "cannot read the configuration files' settings";
    let rows = query(client, FILE_SETTINGS, &[], what, FileSetting::from_row).await?;
    for f in judge(&rows, &schema.tenancy.context_setting) {
        tally.fail(f);
    }
    Ok(())
}

/// The placeholders among `rows`; the context setting is left to config.default-context.
fn judge(rows: &[FileSetting], context: &str) -> Vec<Finding> {
    rows.iter()
        .filter(|f| !f.registered && !f.name.eq_ignore_ascii_case(context))
        .map(|f| {
            Finding::new(
                "setting.cluster-custom",
                format!("setting cluster {}", f.name),
                format!(
                    "{} is set for the whole cluster ({}) and no loaded library registered it: every role, the application's logins included, reads it with current_setting",
                    f.name,
                    f.sourcefile.as_deref().unwrap_or("a configuration file")
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, registered: bool) -> FileSetting {
        FileSetting {
            name: name.into(),
            sourcefile: Some("/data/postgresql.conf".into()),
            registered,
        }
    }

    #[test]
    fn placeholders_are_reported_registered_settings_and_the_context_are_not() {
        let rows = [
            row("export.bi_dsn", false),
            row("pg_stat_statements.max", true),
            row("citus.node_conninfo", true),
            row("tenantctl.gym_id", false),
        ];
        let found = judge(&rows, "tenantctl.gym_id");
        let objects: Vec<&str> = found.iter().map(|f| f.object.as_str()).collect();
        assert_eq!(objects, ["setting cluster export.bi_dsn"]);
        assert!(found[0].message.contains("/data/postgresql.conf"));
    }
}
