//! `tenantctl bench`'s SQL: the typical application queries and their hand-written baselines, the
//! scratch database's seed, the naive policy's scratch schema, and the plan checks' EXPLAIN.
//! Identifiers are quoted; every value (tenant ids, keys, counts) is a bind parameter.

use crate::model::Schema;

use super::{q, qlist, rel};

/// Rows a page query returns.
pub const PAGE_ROWS: u32 = 20;

/// Which statement of a pair: what the application sends under the generated (or naive)
/// policies, or the same query written by hand with an explicit tenant filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// No tenant filter: row-level security adds it.
    Policy,
    /// `WHERE <tenant column> = $n`, run by a role that bypasses row-level security.
    Baseline,
}

/// A typical query on one tenant table, with the columns it needs. Parameters: `$1` is the
/// query's value (a key, or the inserted text) when it takes one; the baseline's tenant id is the
/// next parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// One row by a per-tenant unique key.
    Point { key: String, key_type: String },
    /// The first page ordered by an indexed column.
    Page { order: String },
    /// Rows counted by a column.
    CountBy { column: String },
    /// A page joined to the table that `fk` references (on the tenant column and `parent_key`).
    Join {
        fk: String,
        parent: String,
        parent_key: String,
        order: String,
    },
    /// One row: every required column set to `$1` (all of them are text).
    Insert { columns: Vec<String> },
    /// One row by its key, a column set to itself (a real write, as far as Postgres is concerned).
    Update {
        set: String,
        key: String,
        key_type: String,
    },
}

impl Shape {
    /// Whether `$1` is the query's own value.
    pub fn takes_value(&self) -> bool {
        matches!(
            self,
            Shape::Point { .. } | Shape::Insert { .. } | Shape::Update { .. }
        )
    }
}

/// The query on `schema_name.table` in the given form.
pub fn query(schema: &Schema, schema_name: &str, table: &str, shape: &Shape, form: Form) -> String {
    let t = rel(schema_name, table);
    let tc = schema
        .tables
        .get(table)
        .map_or(schema.tenancy.tenant_column.as_str(), |t| {
            t.tenant_column.as_str()
        });
    let tenant = format!("${}::uuid", if shape.takes_value() { 2 } else { 1 });
    // The baseline's tenant filter, as a WHERE clause or its first conjunct.
    let filter = |alias: &str| match form {
        Form::Policy => None,
        Form::Baseline => Some(format!("{alias}{} = {tenant}", q(tc))),
    };
    let wher = |alias: &str, rest: Option<String>| {
        let parts: Vec<String> = filter(alias).into_iter().chain(rest).collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    };
    match shape {
        Shape::Point { key, key_type } => {
            let cond = format!("{} = {}", q(key), value(key_type));
            format!("SELECT * FROM {t}{}", wher("", Some(cond)))
        }
        Shape::Page { order } => format!(
            "SELECT * FROM {t}{} ORDER BY {} LIMIT {PAGE_ROWS}",
            wher("", None),
            q(order)
        ),
        Shape::CountBy { column } => format!(
            "SELECT {c}, count(*) FROM {t}{} GROUP BY {c}",
            wher("", None),
            c = q(column)
        ),
        Shape::Join {
            fk,
            parent,
            parent_key,
            order,
        } => {
            // On the whole composite foreign key, tenant column included: joined on `fk` alone,
            // the planner cannot tell that both sides belong to one tenant when each side's
            // tenant condition is its own policy's InitPlan (docs/performance.md).
            let (a, b) = (q("t"), q("p"));
            format!(
                "SELECT {a}.*, {b}.* FROM {t} AS {a} JOIN {} AS {b} ON {b}.{tcq} = {a}.{tcq} AND {b}.{} = {a}.{}{} ORDER BY {a}.{} LIMIT {PAGE_ROWS}",
                rel(schema_name, parent),
                q(parent_key),
                q(fk),
                wher(&format!("{a}."), None),
                q(order),
                tcq = q(tc)
            )
        }
        Shape::Insert { columns } => {
            let values = vec!["$1"; columns.len()].join(", ");
            match form {
                Form::Policy => format!("INSERT INTO {t} ({}) VALUES ({values})", qlist(columns)),
                Form::Baseline => format!(
                    "INSERT INTO {t} ({}, {}) VALUES ({tenant}, {values})",
                    q(tc),
                    qlist(columns)
                ),
            }
        }
        Shape::Update { set, key, key_type } => {
            let cond = format!("{} = {}", q(key), value(key_type));
            format!(
                "UPDATE {t} SET {s} = {s}{}",
                wher("", Some(cond)),
                s = q(set)
            )
        }
    }
}

/// `$1` as a value of `ty`: keys are sampled and bound as text, then cast where the column is not
/// text, so one code path binds every key type.
fn value(ty: &str) -> String {
    if ty == "text" {
        "$1".to_string()
    } else {
        format!("CAST($1::text AS {ty})")
    }
}

/// Up to `$1` random rows of `table` as (tenant id, key as text); the key is NULL without one.
pub fn sample_keys(schema: &Schema, table: &str, tenant_column: &str, key: Option<&str>) -> String {
    let key = key.map_or("NULL".to_string(), |k| format!("{}::text", q(k)));
    format!(
        "SELECT {}::text, {key} FROM {} ORDER BY random() LIMIT $1",
        q(tenant_column),
        rel(&schema.tenancy.table_schema, table)
    )
}

/// The role and the tenant context for the transaction, as `pg::tx::set_tenant` sets them; here
/// prepared once, as an application's driver would.
pub const SET_CONTEXT: &str =
    "SELECT pg_catalog.set_config('role', $1, true), pg_catalog.set_config($2, $3, true)";

pub const SERVER_VERSION: &str = "SHOW server_version";

/// EXPLAIN in JSON, without running the statement.
pub fn explain(sql: &str) -> String {
    format!("EXPLAIN (FORMAT JSON) {sql}")
}

/// Index scans cannot be taken for granted on a small table: the plan checks ask whether the
/// planner CAN use the tenant index, so sequential scans are priced out for the transaction.
pub const NO_SEQSCAN: &str = "SET LOCAL enable_seqscan = off";

/// Indexes of table `$2` in schema `$1` whose first column is `$3`.
pub const TENANT_LED_INDEXES: &str = "SELECT i.relname::text FROM pg_catalog.pg_index x \
     JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
     JOIN pg_catalog.pg_class t ON t.oid = x.indrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0] \
     WHERE n.nspname = $1 AND t.relname = $2 AND a.attname = $3 ORDER BY 1";

// The scratch database's seed, set-based as the admin role: `$1` rows each. Tenants are
// interleaved row by row, as on a live table that many tenants write to at once, so one tenant's
// rows are spread over the heap and only the tenant index finds them quickly.

const FIRST_NAMES: &str = "ARRAY['Ada','Ben','Cleo','Dev','Eli','Fay','Gus','Hana','Ivo','Jun','Kai','Lea','Max','Noa','Oli','Pia','Quin','Rui','Sol','Tess','Uma','Vic','Wes','Xia','Yan','Zoe','Amir','Bea','Cruz','Dara']";
const LAST_NAMES: &str = "ARRAY['Abbott','Baker','Castro','Diaz','Evans','Fischer','Garcia','Hughes','Ito','Jensen','Khan','Lopez','Moreau','Novak','Okafor','Patel','Quinn','Rossi','Silva','Tanaka','Ueda','Varga','Weber','Xu','Young','Zhang','Adler','Brandt','Costa','Dubois','Eriksen','Fontaine','Gomez']";

/// `$1` gyms, slugs `bench-1`, `bench-2`, ...
pub fn seed_tenants(schema: &Schema, slug: &str, name: &str) -> String {
    format!(
        "INSERT INTO {} ({}, {}) SELECT 'bench-' || i, 'Bench gym ' || i FROM generate_series(1, $1::int) AS i",
        rel(&schema.tenancy.table_schema, &schema.tenancy.tenant_table),
        q(slug),
        q(name)
    )
}

/// The gyms as an array (`g.a`) and their number (`g.n`), for the seed statements.
fn gyms_cte(schema: &Schema) -> String {
    format!(
        "WITH g AS (SELECT array_agg({k} ORDER BY {k}) AS a, count(*)::int AS n FROM {})",
        rel(&schema.tenancy.table_schema, &schema.tenancy.tenant_table),
        k = q(&schema.tenancy.tenant_key)
    )
}

/// A coach's id from its number: members can then point at a coach of their own gym without a
/// lookup.
const COACH_ID: &str = "md5('tenantctl-bench-coach-' || j)::uuid";

/// `$1` coaches; coach j belongs to gym j mod n.
pub fn seed_coaches(schema: &Schema, table: &str) -> String {
    let t = &schema.tenancy;
    format!(
        "{} INSERT INTO {} (id, {}, full_name, email, phone, hired_on) \
         SELECT {COACH_ID}, g.a[1 + j % g.n], \
                ({FIRST_NAMES})[1 + j % 30] || ' ' || ({LAST_NAMES})[1 + (j / 30) % 33], \
                'coach' || j || '@bench.example', '+1-555-' || lpad((j % 10000)::text, 4, '0'), \
                DATE '2010-01-01' + (j * 7) % 5000 \
         FROM g, generate_series(0, $1::int - 1) AS j",
        gyms_cte(schema),
        rel(&t.table_schema, table),
        q(&t.tenant_column)
    )
}

/// `$1` members; member i belongs to gym i mod n, and (when there are `$2` coaches, at least one
/// a gym) its home coach is one of its gym's coaches.
pub fn seed_members(schema: &Schema, table: &str) -> String {
    let t = &schema.tenancy;
    // Coach number j = (gym of i) + n * k: a coach of member i's own gym.
    let coach = "md5('tenantctl-bench-coach-' || ((i % g.n) + g.n * ((i / g.n) % GREATEST($2::int / g.n, 1))))::uuid";
    format!(
        "{} INSERT INTO {} ({}, full_name, email, phone, date_of_birth, joined_on, status, home_coach_id) \
         SELECT g.a[1 + i % g.n], \
                ({FIRST_NAMES})[1 + (i * 7) % 30] || ' ' || ({LAST_NAMES})[1 + (i / 7) % 33], \
                'member' || i || '@bench.example', '+1-555-' || lpad((i % 10000)::text, 4, '0'), \
                DATE '1960-01-01' + (i * 37) % 16000, DATE '2015-01-01' + (i * 11) % 3800, \
                CASE i % 20 WHEN 0 THEN 'cancelled' WHEN 1 THEN 'paused' WHEN 2 THEN 'paused' ELSE 'active' END, \
                CASE WHEN $2::int >= g.n THEN {coach} END \
         FROM g, generate_series(0, $1::int - 1) AS i",
        gyms_cte(schema),
        rel(&t.table_schema, table),
        q(&t.tenant_column)
    )
}

/// VACUUM (ANALYZE) of the listed tables: statistics current and the visibility map set, as
/// autovacuum keeps a live database.
pub fn vacuum(schema_name: &str, tables: &[&str]) -> String {
    let list: Vec<String> = tables.iter().map(|t| rel(schema_name, t)).collect();
    format!("VACUUM (ANALYZE) {}", list.join(", "))
}

/// How many of the tables in schema `$1` named in `$2` still have pages not all-visible.
pub const NOT_ALL_VISIBLE: &str = "SELECT count(*) FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relallvisible < c.relpages";

// The naive policy's scratch schema: copies of the tenant tables with their indexes, a
// context function that cannot be inlined (its SET clause), and a policy that calls it unwrapped,
// so it can run per row.

pub fn create_scratch_schema(scratch: &str, schema: &Schema) -> String {
    let t = &schema.tenancy;
    format!(
        "CREATE SCHEMA {s}; GRANT USAGE ON SCHEMA {s} TO {}, {}",
        q(&t.app_role),
        q(&t.admin_role),
        s = q(scratch)
    )
}

pub fn drop_scratch_schema(scratch: &str) -> String {
    format!("DROP SCHEMA IF EXISTS {} CASCADE", q(scratch))
}

/// A copy of `table` (columns, defaults, checks, indexes; no foreign keys or triggers), usable
/// by the app and admin roles.
pub fn copy_table(scratch: &str, schema: &Schema, table: &str) -> String {
    let t = &schema.tenancy;
    let copy = rel(scratch, table);
    format!(
        "CREATE TABLE {copy} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES); \
         GRANT SELECT, INSERT, UPDATE, DELETE ON {copy} TO {}, {}",
        rel(&t.table_schema, table),
        q(&t.app_role),
        q(&t.admin_role)
    )
}

/// Fill the copy with the table's rows (run as the admin role, which sees every tenant).
pub fn copy_rows(scratch: &str, schema: &Schema, table: &str) -> String {
    format!(
        "INSERT INTO {} SELECT * FROM {}",
        rel(scratch, table),
        rel(&schema.tenancy.table_schema, table)
    )
}

/// The naive context function: a bare cast of the setting, and a SET clause that keeps the
/// planner from inlining it (as this project's V1 function had).
pub fn naive_context_function(scratch: &str, schema: &Schema) -> String {
    let t = &schema.tenancy;
    format!(
        "CREATE FUNCTION {}.{}() RETURNS uuid LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp \
         AS $tc$ SELECT pg_catalog.current_setting({})::uuid $tc$",
        q(scratch),
        q(&t.context_function),
        crate::ident::literal(&t.context_setting)
    )
}

/// Row-level security on the copy, with one policy for the app role that compares the tenant
/// column with the naive function, unwrapped.
pub fn naive_policy(scratch: &str, schema: &Schema, table: &str, tenant_column: &str) -> String {
    let t = &schema.tenancy;
    let copy = rel(scratch, table);
    let cond = format!(
        "{} = {}.{}()",
        q(tenant_column),
        q(scratch),
        q(&t.context_function)
    );
    format!(
        "ALTER TABLE {copy} ENABLE ROW LEVEL SECURITY; ALTER TABLE {copy} FORCE ROW LEVEL SECURITY; \
         CREATE POLICY {} ON {copy} FOR ALL TO {} USING ({cond}) WITH CHECK ({cond})",
        q("naive_tenant_isolation"),
        q(&t.app_role)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        crate::policy::load(&dir, std::path::Path::new("policies"), &Default::default())
            .expect("shipped policies compile")
    }

    #[test]
    fn baseline_adds_the_tenant_filter_and_policy_form_has_none() {
        let s = schema();
        let shape = Shape::Point {
            key: "email".into(),
            key_type: "text".into(),
        };
        assert_eq!(
            query(&s, "public", "members", &shape, Form::Policy),
            r#"SELECT * FROM "public"."members" WHERE "email" = $1"#
        );
        assert_eq!(
            query(&s, "public", "members", &shape, Form::Baseline),
            r#"SELECT * FROM "public"."members" WHERE "gym_id" = $2::uuid AND "email" = $1"#
        );
        let join = Shape::Join {
            fk: "home_coach_id".into(),
            parent: "coaches".into(),
            parent_key: "id".into(),
            order: "full_name".into(),
        };
        assert_eq!(
            query(&s, "x\"y", "members", &join, Form::Baseline),
            r#"SELECT "t".*, "p".* FROM "x""y"."members" AS "t" JOIN "x""y"."coaches" AS "p" ON "p"."gym_id" = "t"."gym_id" AND "p"."id" = "t"."home_coach_id" WHERE "t"."gym_id" = $1::uuid ORDER BY "t"."full_name" LIMIT 20"#
        );
    }
}
