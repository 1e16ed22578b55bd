//! What runs beside a tenant table's statements: the tenant-id immutability trigger as generated,
//! no trigger that fires after it and can change the tenant id, no other trigger, and no rule.

use crate::pg::unnamed::typed;
use anyhow::Result;
use tokio_postgres::Client;

use super::relations::Rel;
use super::tables::Declared;
use super::TenantData;
use super::{query, query_opt};
use crate::sqlgen;
use crate::verify::{Finding, Tally};

const TRIGGER: &str = "
SELECT t.tgenabled::text AS enabled, t.tgtype::int4 AS tgtype, n.nspname::text AS schema,
       p.proname::text AS function, t.tgargs AS args
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE t.tgrelid = $1 AND t.tgname = $2";

/// User triggers on a table other than the immutability trigger ($2); foreign-key triggers are internal.
const OTHER_TRIGGERS: &str = "
SELECT t.tgname::text AS name, t.tgtype::int4 AS tgtype, t.tgenabled::text AS enabled FROM pg_catalog.pg_trigger t
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

catalog_code! {
    /// `tgenabled` / `ev_enabled`: when the trigger or rule fires.
    enum Firing {
        /// In origin and local sessions (the default).
        "O" => Origin,
        "D" => Disabled,
        /// Only in replica sessions.
        "R" => Replica,
        "A" => Always,
    }
}

impl Firing {
    fn disabled_note(self) -> &'static str {
        if self == Firing::Disabled {
            " (disabled)"
        } else {
            ""
        }
    }
}

catalog_code! {
    /// `pg_rewrite.ev_type`: the command a rule rewrites.
    enum RuleEvent {
        "1" => Select,
        "2" => Update,
        "3" => Insert,
        "4" => Delete,
        _ => Unknown,
    }
}

impl RuleEvent {
    fn sql(self) -> &'static str {
        match self {
            RuleEvent::Select => "SELECT",
            RuleEvent::Update => "UPDATE",
            RuleEvent::Insert => "INSERT",
            RuleEvent::Delete => "DELETE",
            RuleEvent::Unknown => "?",
        }
    }
}

typed_row! {
    /// The immutability trigger as it is (a row of [`TRIGGER`]).
    struct LiveTrigger {
        enabled: Firing,
        tgtype: i32,
        schema: String,
        function: String,
        args: Vec<u8>,
    }
}

typed_row! {
    /// Another trigger on a tenant table (a row of [`OTHER_TRIGGERS`]).
    struct OtherTrigger {
        name: String,
        tgtype: i32,
        enabled: Firing,
    }
}

typed_row! {
    /// A rule on a tenant table (a row of [`RULES`]).
    struct Rule {
        table: u32,
        name: String,
        event: RuleEvent,
        enabled: Firing,
    }
}

/// drift.trigger: the tenant-id immutability trigger on a declared table, as generated.
pub(super) async fn immutability(cx: &Declared<'_>, tally: &mut Tally) -> Result<()> {
    let (client, schema, table, rel) = (cx.client, cx.schema, cx.table, cx.rel);
    let disp = rel.display();
    let params = typed![&rel.oid, &sqlgen::IMMUTABILITY_TRIGGER];
    let what = "cannot read triggers";
    let problem = match query_opt(client, TRIGGER, params, what, LiveTrigger::from_row).await? {
        None => Some("is missing".to_string()),
        Some(live) => {
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
    let params = typed![&rel.oid, &sqlgen::IMMUTABILITY_TRIGGER];
    let what = "cannot read triggers";
    for trigger in query(client, OTHER_TRIGGERS, params, what, OtherTrigger::from_row).await? {
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
    tenant: &TenantData,
    tally: &mut Tally,
) -> Result<()> {
    let what = "cannot read rules";
    let found = query(client, RULES, typed![&tenant.list], what, Rule::from_row).await?;
    for rel in rels.iter().filter(|r| tenant.oids.contains(&r.oid)) {
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
                        rule.event.sql(),
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
