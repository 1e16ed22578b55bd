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

/// User triggers on the tables given ($1), with the function each runs; foreign-key triggers
/// are internal, an extension's own triggers are the extension's.
const TRIGGERS: &str = "
SELECT t.tgrelid AS table, t.tgname::text AS name, t.tgtype::int4 AS tgtype, t.tgenabled::text AS enabled,
       t.tgfoid::pg_catalog.regprocedure::text AS function, p.prosecdef AS definer,
       pg_catalog.pg_get_userbyid(p.proowner)::text AS function_owner
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
WHERE t.tgrelid = ANY($1) AND NOT t.tgisinternal
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_trigger'::regclass
                  AND e.objid = t.oid AND e.deptype = 'e')
ORDER BY 1, 2";

/// Rules on every relation but the tenant tables ($1) outside the system schemas, an
/// extension's own aside.
const OTHER_RULES: &str = "
SELECT n.nspname::text AS schema, c.relname::text AS relation, r.rulename::text AS name,
       r.ev_type::text AS event, pg_catalog.pg_get_userbyid(c.relowner)::text AS owner
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename <> '_RETURN' AND NOT r.ev_class = ANY($1)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.deptype = 'e'
                  AND ((e.classid = 'pg_catalog.pg_rewrite'::regclass AND e.objid = r.oid)
                       OR (e.classid = 'pg_catalog.pg_class'::regclass AND e.objid = c.oid)))
ORDER BY 1, 2, 3";

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
    /// A trigger on a tenant table (a row of [`TRIGGERS`]).
    struct OtherTrigger {
        table: u32,
        name: String,
        tgtype: i32,
        enabled: Firing,
        function: String,
        definer: bool,
        function_owner: String,
    }
}

typed_row! {
    /// A rule on a relation that is not a tenant table (a row of [`OTHER_RULES`]).
    struct OtherRule {
        schema: String,
        relation: String,
        name: String,
        event: RuleEvent,
        owner: String,
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
                format!("trigger {disp}.{}", sqlgen::IMMUTABILITY_TRIGGER),
                format!("the tenant-id immutability trigger on {disp} {p}"),
            )
        }),
    );
    Ok(())
}

/// Triggers that tenantctl does not generate, on every table of `tables` (the declared tables and
/// the tenant tables the app role can reach). Row triggers fire in name order (byte order), so a
/// BEFORE INSERT/UPDATE row trigger named after the immutability trigger can change the tenant id
/// once the check has passed (drift.trigger-late); any other is world.trigger: it fires whatever
/// EXECUTE grants say, and a SECURITY DEFINER function runs as its owner.
pub(super) async fn others(
    client: &Client,
    schema: &crate::model::Schema,
    tables: &[&Rel],
    tally: &mut Tally,
) -> Result<()> {
    let oids: Vec<u32> = tables.iter().map(|r| r.oid).collect();
    let what = "cannot read triggers";
    let found = query(
        client,
        TRIGGERS,
        typed![&oids],
        what,
        OtherTrigger::from_row,
    )
    .await?;
    let (mut late, mut other) = (false, false);
    for trigger in &found {
        let Some(rel) = tables.iter().find(|r| r.oid == trigger.table) else {
            continue;
        };
        let name = &trigger.name;
        if rel.is_declared(schema) && name == sqlgen::IMMUTABILITY_TRIGGER {
            continue;
        }
        let disp = rel.display();
        let row_before = trigger.tgtype & (INSTEAD | BEFORE | ROW) == BEFORE | ROW;
        let writes = trigger.tgtype & (INSERT | UPDATE) != 0;
        let after_check = name.as_bytes() > sqlgen::IMMUTABILITY_TRIGGER.as_bytes();
        let fix = sqlgen::fix_drop_trigger(name, &rel.schema, &rel.name);
        let obj = format!("trigger {disp}.{name}");
        let finding = if row_before && writes && after_check && trigger.enabled != Firing::Disabled
        {
            late = true;
            Finding::new(
                "drift.trigger-late",
                &obj,
                format!(
                    "trigger {name} on {disp} fires BEFORE INSERT/UPDATE FOR EACH ROW after {} (names sort after it): it can change the tenant id once the check has passed",
                    sqlgen::IMMUTABILITY_TRIGGER
                ),
            )
        } else {
            other = true;
            let runs_as = if trigger.definer {
                format!("SECURITY DEFINER, as {}", trigger.function_owner)
            } else {
                "as the writing role".to_string()
            };
            Finding::new(
                "world.trigger",
                &obj,
                format!(
                    "trigger {name} on tenant table {disp}{} is not generated by tenantctl: it runs {} ({runs_as}) on every write",
                    trigger.enabled.disabled_note(),
                    trigger.function
                ),
            )
        };
        tally.fail(finding.hint(fix));
    }
    if !late {
        tally.pass("drift.trigger-late");
    }
    if !other {
        tally.pass("world.trigger");
    }
    Ok(())
}

/// world.rule: a rule on any relation that is not a tenant table (those are drift.rule).
pub(super) async fn other_rules(
    client: &Client,
    tenant: &TenantData,
    tally: &mut Tally,
) -> Result<()> {
    let finding = |rule: OtherRule| {
        let (name, disp) = (&rule.name, format!("{}.{}", rule.schema, rule.relation));
        Finding::new(
            "world.rule",
            format!("rule {disp}.{name}"),
            format!(
                "rule {name} ON {} on {disp} rewrites statements with the rights of its owner {}, outside the app role's policies",
                rule.event.sql(),
                rule.owner
            ),
        )
        .hint(sqlgen::fix_drop_rule(name, &rule.schema, &rule.relation))
    };
    let sql = (OTHER_RULES, typed![&tenant.list] as &[_]);
    let what = "cannot read rules";
    super::world::each_row(
        client,
        sql,
        what,
        OtherRule::from_row,
        finding,
        ("world.rule", tally),
    )
    .await
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
                    format!("rule {}.{name}", rel.display()),
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
