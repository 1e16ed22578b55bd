//! The Citus back end (`[target] kind = "citus"`, docs/citus.md): the same model, adapted to what
//! Citus 13 accepts, and the statements that distribute the tables.
//!
//! - the tenant table (and every global table) becomes a reference table (a copy on every node, so its global unique keys
//!   stay), with the immutability trigger (Citus allows triggers there under
//!   `citus.enable_unsafe_triggers`);
//! - every other table is distributed by the tenant column, all co-located with the first one, and
//!   every primary key and unique constraint is led by the tenant column; Citus itself refuses a
//!   change of the distribution column, so those tables get no trigger;
//! - foreign keys are added after distribution (the diff's constraint phase comes later);
//! - policies call the context function directly: Citus refuses subqueries in policies, and the
//!   inlined function needs no `(SELECT ...)` wrapper;
//! - the app and admin roles can log in: a worker refuses a connection as a NOLOGIN role, and the
//!   coordinator opens them as the current role.

use super::diff::immutability_trigger;
use super::*;
use crate::ident::literal;
use crate::model::{Constraint, Schema, Table};

/// The model as Citus needs it (see the module comment).
pub fn adapt(schema: &Schema) -> Schema {
    let mut s = schema.clone();
    let t = &schema.tenancy;
    for name in [&t.app_role, &t.admin_role] {
        if let Some(role) = s.roles.get_mut(name) {
            role.login = true;
        }
    }
    let wrapped = wrapped_context_calls(t);
    let direct = context_function(t) + "()";
    for (name, table) in &mut s.tables {
        if *name != t.tenant_table {
            lead_keys_with(table, &t.tenant_column);
        }
        for p in table.policies.values_mut() {
            for expr in [&mut p.using, &mut p.with_check].into_iter().flatten() {
                for w in &wrapped {
                    *expr = expr.replace(w.as_str(), &direct);
                }
            }
        }
    }
    s
}

/// The ways a policy wraps the context function in a subquery: as the compiler writes it (quoted)
/// and as the shipped policy files do (bare).
fn wrapped_context_calls(t: &crate::model::Tenancy) -> Vec<String> {
    let bare = format!("{}.{}()", t.helper_schema, t.context_function);
    [context_function(t) + "()", bare]
        .iter()
        .flat_map(|f| [format!("(SELECT {f})"), format!("(select {f})")])
        .collect()
}

/// Primary keys, unique constraints and unique indexes led by `column` (Citus enforces them per
/// shard, so they must contain the distribution column).
fn lead_keys_with(table: &mut Table, column: &str) {
    // A unique constraint that the led primary key now repeats goes: Postgres would not create it.
    let pk = table.constraints.values().find_map(|c| match c {
        Constraint::PrimaryKey { columns } => Some(led(columns, column)),
        _ => None,
    });
    table.constraints.retain(|_, c| match c {
        Constraint::Unique { columns } => Some(led(columns, column)) != pk,
        _ => true,
    });
    for c in table.constraints.values_mut() {
        if let Constraint::PrimaryKey { columns } | Constraint::Unique { columns } = c {
            *columns = led(columns, column);
        }
    }
    for ix in table.indexes.values_mut().filter(|ix| ix.unique) {
        ix.columns = led(&ix.columns, column);
    }
}

/// `cols` led by `column` (moved to the front, or added there).
fn led(cols: &[String], column: &str) -> Vec<String> {
    let mut out = vec![column.to_string()];
    out.extend(cols.iter().filter(|c| *c != column).cloned());
    out
}

/// The statements that distribute the tables `new` has and `old` had not: run after they are
/// created and before their foreign keys, policies and grants (Citus propagates those to the
/// shards). One migration is one transaction: sequential mode lets it create foreign keys to
/// the reference table after distributing in the same transaction.
pub(super) fn distribute(old: &Schema, new: &Schema) -> Vec<Statement> {
    let t = &new.tenancy;
    let added: Vec<(&String, &Table)> = new
        .tables
        .iter()
        .filter(|(n, _)| !old.tables.contains_key(*n))
        .collect();
    if added.is_empty() {
        return Vec::new();
    }
    let stmt = |source: &str, name: &str, sql: String| Statement {
        provenance: format!("{source}: table {name} (Citus)"),
        sql,
        destructive: false,
        part: Part::Main,
    };
    let prov = format!("{}: tenancy (Citus)", t.source);
    let mut out = vec![Statement {
        provenance: prov,
        sql: format!("{SEQUENTIAL};"),
        destructive: false,
        part: Part::Main,
    }];
    // Co-located with the first distributed table that already exists, else the first new one.
    let mut anchor = old
        .tables
        .iter()
        .find(|(n, table)| **n != t.tenant_table && !table.global)
        .map(|(n, _)| rel(&t.table_schema, n));
    for (name, table) in added {
        let r = rel(&t.table_schema, name);
        if table.global {
            // A global table (no tenant column): a copy on every node too.
            let sql = format!("SELECT create_reference_table({});", literal(&r));
            out.push(stmt(&table.source, name, sql));
            continue;
        }
        if *name == t.tenant_table {
            let sql = format!("SELECT create_reference_table({});", literal(&r));
            out.push(stmt(&table.source, name, sql));
            let sql = "SET LOCAL citus.enable_unsafe_triggers TO on;".to_string();
            out.push(stmt(&table.source, name, sql));
            out.push(stmt(
                &table.source,
                name,
                immutability_trigger(t, name, table),
            ));
            continue;
        }
        let colocate = anchor.clone().unwrap_or_else(|| "default".into());
        let sql = format!(
            "SELECT create_distributed_table({}, {}, colocate_with => {});",
            literal(&r),
            literal(&table.tenant_column),
            literal(&colocate)
        );
        out.push(stmt(&table.source, name, sql));
        anchor.get_or_insert(r);
    }
    out
}

/// Every DDL statement in a DO block of its own. A migration runs as one multi-statement query,
/// and Citus sends some commands to the workers as the text of the whole query (a foreign key, a
/// trigger), which the worker refuses ("cannot insert multiple commands into a prepared
/// statement"); inside a DO block the text of a command is that command alone. `SELECT` (the
/// distribution calls), `SET` and DO blocks run as they are, and so do the CONCURRENTLY index
/// statements of a non-transactional migration (run one per query; a DO block is a transaction).
pub(super) fn one_command_per_query(stmts: Vec<Statement>) -> Vec<Statement> {
    stmts
        .into_iter()
        .map(|mut st| {
            let bare = st.part == Part::Index
                || ["SELECT ", "SET ", "DO ", "--"]
                    .iter()
                    .any(|p| st.sql.starts_with(p));
            if !bare {
                // The statement's text unchanged: a line break may be inside a literal.
                st.sql = do_block(&format!("{};\n", st.sql.trim_end_matches(';')));
            }
            st
        })
        .collect()
}

/// The seeder's INSERT on Citus: `rows` rows of VALUES, each taking its element of the arrays
/// ($2, ...; the tenant id is $1). Citus runs an `INSERT ... SELECT FROM unnest(...)` through
/// COPY, which row-level security refuses; a multi-row VALUES goes to the tenant's shard as an
/// INSERT.
pub fn seed_insert_rows(
    schema: &Schema,
    table: &str,
    cols: &[&tenants::SeedColumn],
    rows: usize,
) -> String {
    let mut names = vec![q(&schema.tenancy.tenant_column)];
    names.extend(cols.iter().map(|c| q(c.name)));
    let values: Vec<String> = (1..=rows)
        .map(|row| {
            let mut exprs = vec!["$1::uuid".to_string()];
            for (i, c) in cols.iter().enumerate() {
                let element = format!("(${}::{})[{row}]", i + 2, c.array_type);
                exprs.push(tenants::seed_value(c.value, &element));
            }
            format!("({})", exprs.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        rel(&schema.tenancy.table_schema, table),
        names.join(", "),
        values.join(", ")
    )
}

/// verify's read probe on Citus: of the rows of `table` visible now, those of tenant `$1` and
/// those of any other (`own`, `foreign`).
pub fn probe_counts(schema: &Schema, table: &str, column: &str) -> String {
    format!(
        "SELECT count(*) FILTER (WHERE t.{c} = $1::uuid) AS own, \
         count(*) FILTER (WHERE t.{c} IS DISTINCT FROM $1::uuid) AS foreign \
         FROM {} t",
        rel(&schema.tenancy.table_schema, table),
        c = q(column)
    )
}

/// verify's write probe on Citus: a row for tenant `$1` (another tenant than the context's).
pub fn probe_insert(schema: &Schema, table: &str, column: &str) -> String {
    format!(
        "INSERT INTO {} ({}) VALUES ($1::uuid)",
        rel(&schema.tenancy.table_schema, table),
        q(column)
    )
}

/// `tenant list`/`show` on Citus: the tenants (the one with key $1, with `by_key`), without
/// counts: joining a reference table to per-tenant counts makes the coordinator connect to itself
/// as the querying role, and the plain query's correlated subqueries are not planned at all.
pub fn tenants(schema: &Schema, by_key: bool) -> String {
    let t = &schema.tenancy;
    let key = q(&t.tenant_key);
    let filter = if by_key {
        format!(" WHERE {key} = $1")
    } else {
        String::new()
    };
    format!(
        "SELECT {key} AS id, {} AS slug, {} AS name FROM {}{filter} ORDER BY {}",
        q(tenants::SLUG_COLUMN),
        q(tenants::NAME_COLUMN),
        rel(&t.table_schema, &t.tenant_table),
        q(tenants::SLUG_COLUMN)
    )
}

/// Rows of `table` per tenant (`tenant`, `n`): pushed down to every shard.
pub fn counts_by_tenant(schema: &Schema, table: &str, column: &str) -> String {
    format!(
        "SELECT {c} AS tenant, count(*) AS n FROM {} GROUP BY {c}",
        rel(&schema.tenancy.table_schema, table),
        c = q(column)
    )
}

/// The node (`host:port`) that holds tenant $2's shard of distributed table $1.
pub const TENANT_NODE_SQL: &str = "SELECT n.nodename || ':' || n.nodeport \
     FROM pg_catalog.pg_dist_placement p JOIN pg_catalog.pg_dist_node n USING (groupid) \
     WHERE p.shardid = pg_catalog.get_shard_id_for_distribution_column($1::text::regclass, $2::uuid) \
     ORDER BY 1 LIMIT 1";

/// Tenant $2's rows of distributed table $1, and of every table co-located with it, moved to
/// shards of their own (blocking writes to them meanwhile: no logical replication needed); the
/// new shard's id.
pub const ISOLATE_TENANT_SQL: &str = "SELECT pg_catalog.isolate_tenant_to_new_shard(\
     $1::text::regclass, $2::uuid, 'CASCADE', shard_transfer_mode => 'block_writes')";

/// Every tenant's id.
pub fn tenant_ids(schema: &Schema) -> String {
    let t = &schema.tenancy;
    format!(
        "SELECT {k} FROM {} ORDER BY {k}",
        rel(&t.table_schema, &t.tenant_table),
        k = q(&t.tenant_key)
    )
}

/// `SET LOCAL setting TO 'value'` for Citus, which propagates SET LOCAL (and not `set_config`)
/// to the workers' transactions when `citus.propagate_set_commands` is `local`. SET takes no bind
/// parameters: the value is a quoted literal.
pub fn set_local(setting: &str, value: &str) -> String {
    format!("SET LOCAL {} TO {}", q(setting), literal(value))
}

/// One connection per node for the rest of the transaction: Citus requires it to write, after a
/// reference table, the distributed tables whose foreign keys point at it (a migration; a tenant
/// deleted with ON DELETE CASCADE).
pub const SEQUENTIAL: &str = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'";

/// The statement that makes the transaction's later `SET LOCAL`s reach the workers.
pub const PROPAGATE_SET_LOCAL: &str = "SET LOCAL citus.propagate_set_commands TO 'local'";

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::Backend;
    use crate::policy::testing::{base, model};

    fn citus_sql() -> Vec<String> {
        let mut schema = model(&base());
        schema.target = Backend::Citus;
        super::super::diff(None, &schema, false)
            .into_iter()
            .map(|s| s.sql)
            .collect()
    }

    #[test]
    fn the_citus_schema_distributes_before_foreign_keys_and_keeps_policies_plain() {
        let sql = citus_sql();
        let pos = |needle: &str| {
            sql.iter()
                .position(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("no statement with {needle}:\n{}", sql.join("\n")))
        };
        let distributed = pos("create_distributed_table('\"public\".\"members\"', 'gym_id'");
        assert!(pos("CREATE TABLE \"public\".\"members\"") < distributed);
        assert!(pos("create_reference_table('\"public\".\"gyms\"')") < pos("FOREIGN KEY"));
        assert!(distributed < pos("FOREIGN KEY"));
        assert!(pos("PRIMARY KEY (\"gym_id\", \"id\")") < distributed);
        // The trigger only on the reference table; no subquery in any policy.
        assert_eq!(
            sql.iter().filter(|s| s.contains("CREATE TRIGGER")).count(),
            1
        );
        assert!(pos("CREATE TRIGGER") > pos("enable_unsafe_triggers"));
        for p in sql.iter().filter(|s| s.contains("CREATE POLICY")) {
            assert!(!p.to_uppercase().contains("(SELECT"), "{p}");
        }
        // The app and admin roles can log in (the workers refuse NOLOGIN roles).
        assert!(sql
            .iter()
            .any(|s| s.contains("ALTER ROLE \"gym_app\" LOGIN")));
        // Every DDL statement is a query of its own for Citus (a DO block).
        for s in &sql {
            let bare = ["SELECT ", "SET ", "DO "].iter().any(|p| s.starts_with(p));
            assert!(bare, "{s}");
        }
    }

    #[test]
    fn a_global_table_is_a_reference_table_on_citus() {
        let global = "[tables.countries]\nglobal = true\ncolumns = [\n  { name = \"id\", type = \"uuid\" },\n  { name = \"name\", type = \"text\" },\n]\ngrants.gym_app = [\"select\"]\n";
        let mut files = base();
        files.push(("countries.toml", global.to_string()));
        let mut schema = model(&files);
        assert!(
            schema.globals.contains_key("countries"),
            "{:?}",
            schema.globals.keys()
        );
        schema.target = Backend::Citus;
        let sql: Vec<String> = super::super::diff(None, &schema, false)
            .into_iter()
            .map(|s| s.sql)
            .collect();
        let all = sql.join("\n");
        assert!(
            all.contains("create_reference_table('\"public\".\"countries\"')"),
            "{all}"
        );
        assert!(
            !all.contains("create_distributed_table('\"public\".\"countries\""),
            "{all}"
        );
    }

    #[test]
    fn set_local_quotes_the_name_and_the_value() {
        assert_eq!(
            set_local("tenantctl.gym'id", "a'b"),
            "SET LOCAL \"tenantctl.gym'id\" TO 'a''b'"
        );
    }
}
