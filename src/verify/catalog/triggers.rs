//! What runs beside a tenant table's statements: the tenant-id immutability trigger as generated,
//! no trigger that fires after it and can change the tenant id, no other trigger, and no rule.

use std::collections::HashSet;

use anyhow::{Context, Result};
use tokio_postgres::{Client, Row};

use super::relations::Rel;
use super::{col, typed};
use crate::model::{Schema, Table};
use crate::sqlgen;
use crate::verify::{Finding, Tally};

const TRIGGER: &str = "
SELECT t.tgenabled::text AS enabled, t.tgtype::int4 AS type, n.nspname::text AS schema,
       p.proname::text AS function, t.tgargs AS args
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE t.tgrelid = $1 AND t.tgname = $2";

/// User triggers on a table other than the immutability trigger ($2); foreign-key triggers are internal.
const OTHER_TRIGGERS: &str = "
SELECT t.tgname::text AS name, t.tgtype::int4 AS type, t.tgenabled::text AS enabled FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgname <> $2
ORDER BY 1";

/// Rules on tenant tables (a table has no `_RETURN` rule; a view that was a table might).
const RULES: &str = "
SELECT r.ev_class AS table, r.rulename::text AS name, r.ev_type::text AS event, r.ev_enabled::text AS enabled
FROM pg_catalog.pg_rewrite r WHERE r.ev_class = ANY($1) AND r.rulename <> '_RETURN'
ORDER BY 1, 2";

/// `pg_trigger.tgtype` bits.
const ROW: i32 = 1;
const BEFORE: i32 = 2;
const INSERT: i32 = 4;
const UPDATE: i32 = 16;
const INSTEAD: i32 = 64;

/// `tgenabled` / `ev_enabled`: when the trigger or rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firing {
    /// `O`: in origin and local sessions (the default).
    Origin,
    /// `D`: never.
    Disabled,
    /// `R`: only in replica sessions.
    Replica,
    /// `A`: always.
    Always,
}

impl Firing {
    fn from_code(code: &str) -> Result<Firing> {
        Ok(match code {
            "O" => Firing::Origin,
            "D" => Firing::Disabled,
            "R" => Firing::Replica,
            "A" => Firing::Always,
            other => anyhow::bail!("unexpected catalog value in column tgenabled: {other:?}"),
        })
    }

    fn disabled_note(self) -> &'static str {
        if self == Firing::Disabled {
            " (disabled)"
        } else {
            ""
        }
    }
}

/// The immutability trigger as it is (a row of [`TRIGGER`]).
struct LiveTrigger {
    enabled: Firing,
    tgtype: i32,
    schema: String,
    function: String,
    args: Vec<u8>,
}

impl LiveTrigger {
    fn from_row(r: &Row) -> Result<LiveTrigger> {
        Ok(LiveTrigger {
            enabled: Firing::from_code(&col::<String>(r, "enabled")?)?,
            tgtype: col(r, "type")?,
            schema: col(r, "schema")?,
            function: col(r, "function")?,
            args: col(r, "args")?,
        })
    }
}

/// Another trigger on a tenant table (a row of [`OTHER_TRIGGERS`]).
struct OtherTrigger {
    name: String,
    tgtype: i32,
    enabled: Firing,
}

impl OtherTrigger {
    fn from_row(r: &Row) -> Result<OtherTrigger> {
        Ok(OtherTrigger {
            name: col(r, "name")?,
            tgtype: col(r, "type")?,
            enabled: Firing::from_code(&col::<String>(r, "enabled")?)?,
        })
    }
}

/// A rule on a tenant table (a row of [`RULES`]).
struct Rule {
    table: u32,
    name: String,
    /// The command it rewrites (`ev_type`).
    event: &'static str,
    enabled: Firing,
}

impl Rule {
    fn from_row(r: &Row) -> Result<Rule> {
        Ok(Rule {
            table: col(r, "table")?,
            name: col(r, "name")?,
            event: match col::<String>(r, "event")?.as_str() {
                "1" => "SELECT",
                "2" => "UPDATE",
                "3" => "INSERT",
                "4" => "DELETE",
                _ => "?",
            },
            enabled: Firing::from_code(&col::<String>(r, "enabled")?)?,
        })
    }
}

/// drift.trigger: the tenant-id immutability trigger on a declared table, as generated.
pub(super) async fn immutability(
    client: &Client,
    schema: &Schema,
    table: &Table,
    rel: &Rel,
    tally: &mut Tally,
) -> Result<()> {
    let disp = rel.display();
    let row = client
        .query_opt(TRIGGER, &[&rel.oid, &sqlgen::IMMUTABILITY_TRIGGER])
        .await
        .context("cannot read triggers")?;
    let problem = match row {
        None => Some("is missing".to_string()),
        Some(r) => {
            let live = LiveTrigger::from_row(&r)?;
            let mut want_args = table.tenant_column.as_bytes().to_vec();
            want_args.push(0);
            let row_before_update = ROW | BEFORE | UPDATE;
            if matches!(live.enabled, Firing::Disabled | Firing::Replica) {
                Some("is disabled".to_string())
            } else if live.tgtype & row_before_update != row_before_update {
                Some("is not BEFORE UPDATE FOR EACH ROW".to_string())
            } else if live.schema != schema.tenancy.helper_schema
                || live.function != "forbid_tenant_change"
                || live.args != want_args
            {
                Some(format!(
                    "calls {}.{} with other arguments",
                    live.schema, live.function
                ))
            } else {
                None
            }
        }
    };
    tally.record(
        "drift.trigger",
        problem.map(|p| {
            Finding::new(
                "drift.trigger",
                format!("trigger {} on {disp}", sqlgen::IMMUTABILITY_TRIGGER),
                format!("the tenant-id immutability trigger on {disp} {p}"),
            )
        }),
    );
    Ok(())
}

/// Triggers that tenantctl does not generate. Row triggers fire in name order (byte order), so a
/// BEFORE INSERT/UPDATE row trigger named after the immutability trigger can change the tenant id
/// once the check has passed.
pub(super) async fn others(client: &Client, rel: &Rel, tally: &mut Tally) -> Result<()> {
    let disp = rel.display();
    let mut late = false;
    let mut other = false;
    let rows = client
        .query(OTHER_TRIGGERS, &[&rel.oid, &sqlgen::IMMUTABILITY_TRIGGER])
        .await
        .context("cannot read triggers")?;
    for trigger in typed(&rows, OtherTrigger::from_row)? {
        let name = &trigger.name;
        let row_before = trigger.tgtype & (INSTEAD | BEFORE | ROW) == BEFORE | ROW;
        let writes = trigger.tgtype & (INSERT | UPDATE) != 0;
        let after_check = name.as_bytes() > sqlgen::IMMUTABILITY_TRIGGER.as_bytes();
        let fix = sqlgen::fix_drop_trigger(name, &rel.schema, &rel.name);
        let obj = format!("trigger {name} on {disp}");
        if row_before && writes && after_check && trigger.enabled != Firing::Disabled {
            late = true;
            tally.fail(
                Finding::new(
                    "drift.trigger-late",
                    &obj,
                    format!(
                        "trigger {name} on {disp} fires BEFORE INSERT/UPDATE FOR EACH ROW after {} (names sort after it): it can change the tenant id once the check has passed",
                        sqlgen::IMMUTABILITY_TRIGGER
                    ),
                )
                .hint(fix),
            );
        } else {
            other = true;
            tally.fail(
                Finding::new(
                    "drift.trigger-undeclared",
                    &obj,
                    format!(
                        "trigger {name} on {disp}{} is not generated by tenantctl",
                        trigger.enabled.disabled_note()
                    ),
                )
                .hint(fix),
            );
        }
    }
    if !late {
        tally.pass("drift.trigger-late");
    }
    if !other {
        tally.pass("drift.trigger-undeclared");
    }
    Ok(())
}

/// Any rule on a tenant table: its actions run with the table owner's rights and can write
/// other tenants' rows that the policies would have hidden.
pub(super) async fn rules(
    client: &Client,
    rels: &[Rel],
    tenant_oids: &HashSet<u32>,
    tally: &mut Tally,
) -> Result<()> {
    let oids: Vec<u32> = tenant_oids.iter().copied().collect();
    let rows = client
        .query(RULES, &[&oids])
        .await
        .context("cannot read rules")?;
    let found = typed(&rows, Rule::from_row)?;
    for rel in rels.iter().filter(|r| tenant_oids.contains(&r.oid)) {
        let mine: Vec<&Rule> = found.iter().filter(|f| f.table == rel.oid).collect();
        if mine.is_empty() {
            tally.pass("drift.rule");
        }
        for rule in mine {
            let name = &rule.name;
            tally.fail(
                Finding::new(
                    "drift.rule",
                    format!("rule {name} on {}", rel.display()),
                    format!(
                        "rule {name} ON {} on tenant table {}{} rewrites statements with the rights of its owner {}",
                        rule.event,
                        rel.display(),
                        rule.enabled.disabled_note(),
                        rel.owner
                    ),
                )
                .hint(sqlgen::fix_drop_rule(name, &rel.schema, &rel.name)),
            );
        }
    }
    Ok(())
}
