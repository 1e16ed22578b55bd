//! The declared world: everything attached to a tenant table must be declared in policies/, or it
//! is a finding (an error where it can break isolation; allow-listed with `[[verify.allow]]`).
//! The tables judged are the declared ones and every relation with the tenant column that the
//! app role can reach; an extension's own objects are the extension's. One query per kind.

use std::collections::BTreeSet;

use crate::pg::unnamed::typed;
use anyhow::Result;
use tokio_postgres::Client;

use super::relations::Rel;
use super::{query, TenantData};
use crate::model::{Schema, Table};
use crate::verify::{Finding, Tally};

/// Whether pg_depend row `e` (aliased) marks `$classid`/`$objid` as an extension's.
macro_rules! not_extension {
    ($class:literal, $obj:literal) => {
        concat!(
            "NOT EXISTS (SELECT FROM pg_catalog.pg_depend e WHERE e.deptype = 'e' AND e.classid = '",
            $class,
            "'::regclass AND e.objid = ",
            $obj,
            ")"
        )
    };
}

/// Functions outside pg_catalog that pg_depend records for the object `$obj` of class `$class`.
macro_rules! user_functions {
    ($class:literal, $obj:literal) => {
        concat!(
            "ARRAY(SELECT DISTINCT fp.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_depend fd
             JOIN pg_catalog.pg_proc fp ON fp.oid = fd.refobjid
             WHERE fd.classid = '",
            $class,
            "'::regclass AND fd.objid = ",
            $obj,
            " AND fd.refclassid = 'pg_catalog.pg_proc'::regclass
               AND fp.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace ORDER BY 1)"
        )
    };
}

const COLUMNS: &str = concat!(
    "SELECT a.attrelid AS table, a.attname::text AS name, a.attgenerated::text <> '' AS generated, ",
    user_functions!("pg_catalog.pg_attrdef", "d.oid"),
    " AS functions
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1, 2"
);

/// Keys, CHECKs, foreign keys and exclusion constraints ('n': NOT NULL on 18+, declared as columns).
const CONSTRAINTS: &str = concat!(
    "SELECT c.conrelid AS table, c.conname::text AS name, c.contype::text AS kind,
       pg_catalog.pg_get_constraintdef(c.oid) AS def,
       EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.conrelid AND a.attname = $2
               AND a.attnum = ANY(c.conkey)) AS has_tc
FROM pg_catalog.pg_constraint c
WHERE c.conrelid = ANY($1) AND c.contype IN ('p', 'u', 'x', 'c', 'f') AND ",
    not_extension!("pg_catalog.pg_constraint", "c.oid"),
    " ORDER BY 1, 2"
);

/// Indexes that back no constraint of their table (those are judged as constraints).
const INDEXES: &str = concat!(
    "SELECT i.indrelid AS table, n.nspname::text AS schema, ic.relname::text AS name, i.indisunique AS unique,
       EXISTS (SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indrelid AND a.attname = $2
               AND a.attnum = ANY(i.indkey::int2[])) AS has_tc, ",
    user_functions!("pg_catalog.pg_class", "i.indexrelid"),
    " AS functions
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
WHERE i.indrelid = ANY($1)
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
  AND ",
    not_extension!("pg_catalog.pg_class", "i.indexrelid"),
    " ORDER BY 1, 3"
);

/// Inheritance and partitioning links with a table of $1 on either side.
const INHERITS: &str = "
SELECT i.inhrelid AS child, i.inhparent AS parent
FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
WHERE c.relkind IN ('r', 'p', 'f') AND (i.inhrelid = ANY($1) OR i.inhparent = ANY($1))
ORDER BY 1, 2";

/// Sequences that back a table of $1: owned by a column (serial, identity) or in a default.
const SEQUENCES: &str = concat!(
    "SELECT s.oid, n.nspname::text AS schema, s.relname::text AS name, min(t.table) AS table
FROM (SELECT d.objid AS seq, d.refobjid AS table FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
        AND d.refobjid = ANY($1) AND d.deptype IN ('a', 'i')
      UNION
      SELECT d.refobjid, ad.adrelid FROM pg_catalog.pg_attrdef ad
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = ad.oid
           AND d.refclassid = 'pg_catalog.pg_class'::regclass
      WHERE ad.adrelid = ANY($1)) t
JOIN pg_catalog.pg_class s ON s.oid = t.seq AND s.relkind = 'S'
JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
WHERE ",
    not_extension!("pg_catalog.pg_class", "s.oid"),
    " GROUP BY 1, 2, 3 ORDER BY 2, 3"
);

/// Publications that ship a table of $1 (named, by schema, or FOR ALL TABLES).
const PUBLICATIONS: &str = "
SELECT pt.pubname::text AS name, bool_or(p.puballtables) AS all_tables,
       string_agg(DISTINCT pt.schemaname || '.' || pt.tablename, ', ') AS tables
FROM pg_catalog.pg_publication_tables pt
JOIN pg_catalog.pg_publication p ON p.pubname = pt.pubname
JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
WHERE c.oid = ANY($1)
GROUP BY 1 ORDER BY 1";

/// Subscriptions into this database (the columns PUBLIC may read).
const SUBSCRIPTIONS: &str = "
SELECT s.subname::text AS name, pg_catalog.array_to_string(s.subpublications, ', ') AS publications,
       pg_catalog.pg_get_userbyid(s.subowner)::text AS owner
FROM pg_catalog.pg_subscription s
WHERE s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
ORDER BY 1";

/// Foreign keys into a table of $1 from a table outside $3 that the app role ($2) can write.
const FOREIGN_KEYS: &str = "
SELECT n.nspname::text AS schema, r.relname::text AS relation, c.conname::text AS name, c.confrelid AS target
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_class r ON r.oid = c.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
WHERE c.contype = 'f' AND c.confrelid = ANY($1) AND NOT c.conrelid = ANY($3)
  AND pg_catalog.has_schema_privilege($2, n.oid, 'USAGE')
  AND (pg_catalog.has_table_privilege($2, r.oid, 'INSERT, UPDATE')
       OR pg_catalog.has_any_column_privilege($2, r.oid, 'INSERT, UPDATE'))
ORDER BY 1, 2, 3";

typed_row! {
    struct Column {
        table: u32,
        name: String,
        generated: bool,
        functions: Vec<String>,
    }
}

catalog_code! {
    /// `pg_constraint.contype`, for the kinds [`CONSTRAINTS`] reads.
    enum Kind {
        "p" => PrimaryKey,
        "u" => Unique,
        "x" => Exclusion,
        _ => Other,
    }
}

typed_row! {
    struct Constraint {
        table: u32,
        name: String,
        kind: Kind,
        def: String,
        has_tc: bool,
    }
}

typed_row! {
    struct Index {
        table: u32,
        schema: String,
        name: String,
        unique: bool,
        has_tc: bool,
        functions: Vec<String>,
    }
}

typed_row! {
    struct Inherits {
        child: u32,
        parent: u32,
    }
}

typed_row! {
    struct Sequence {
        schema: String,
        name: String,
        table: u32,
    }
}

typed_row! {
    struct Publication {
        name: String,
        all_tables: bool,
        tables: String,
    }
}

typed_row! {
    struct Subscription {
        name: String,
        publications: String,
        owner: String,
    }
}

typed_row! {
    struct ForeignKey {
        schema: String,
        relation: String,
        name: String,
        target: u32,
    }
}

/// The tables whose world must be declared, and how to find one.
struct Attached<'a> {
    schema: &'a Schema,
    rels: Vec<&'a Rel>,
    oids: Vec<u32>,
    declared: Vec<u32>,
}

impl<'a> Attached<'a> {
    /// The declared tables, and the relations with the tenant column the app role can reach.
    fn of(schema: &'a Schema, rels: &'a [Rel], tenant: &TenantData) -> Attached<'a> {
        let rels: Vec<&Rel> = rels
            .iter()
            .filter(|r| r.is_declared(schema) || (r.reachable && tenant.oids.contains(&r.oid)))
            .collect();
        let oids = rels.iter().map(|r| r.oid).collect();
        let declared = rels
            .iter()
            .filter(|r| r.is_declared(schema))
            .map(|r| r.oid)
            .collect();
        Attached {
            schema,
            rels,
            oids,
            declared,
        }
    }

    fn rel(&self, oid: u32) -> Option<&'a Rel> {
        self.rels.iter().copied().find(|r| r.oid == oid)
    }

    /// The declaration of a declared table.
    fn table(&self, oid: u32) -> Option<&'a Table> {
        let rel = self.rel(oid)?;
        rel.is_declared(self.schema)
            .then(|| self.schema.tables.get(&rel.name))
            .flatten()
    }
}

/// Every world check, over the relations `rels` of which `tenant` hold tenant data.
pub(super) async fn check(
    client: &Client,
    schema: &Schema,
    (rels, tenant): (&[Rel], &TenantData),
    tally: &mut Tally,
) -> Result<()> {
    let world = Attached::of(schema, rels, tenant);
    super::triggers::others(client, schema, &world.rels, tally).await?;
    super::triggers::other_rules(client, tenant, tally).await?;
    columns(client, &world, tally).await?;
    constraints(client, &world, tally).await?;
    indexes(client, &world, tally).await?;
    super::leading::check(client, schema, &world.rels, tally).await?;
    inheritance(client, &world, rels, tally).await?;
    sequences(client, &world, tally).await?;
    publications(client, tenant, tally).await?;
    subscriptions(client, tally).await?;
    foreign_keys(client, &world, rels, tenant, tally).await
}

/// Count one run of `id` and fail it with each of `findings`.
pub(super) fn report(tally: &mut Tally, id: &'static str, findings: Vec<Finding>) {
    if findings.is_empty() {
        tally.pass(id);
    }
    for f in findings {
        tally.fail(f);
    }
}

/// Run `sql` (rows read by `from_row`), make each row a finding of `id`, and report them: the
/// shape of every check whose rows are all findings.
pub(super) async fn each_row<T>(
    client: &Client,
    (sql, params): (&str, &[crate::pg::unnamed::Typed<'_>]),
    what: &'static str,
    from_row: impl Fn(&tokio_postgres::Row) -> Result<T>,
    finding: impl Fn(T) -> Finding,
    (id, tally): (&'static str, &mut Tally),
) -> Result<()> {
    let live = query(client, sql, params, what, from_row).await?;
    report(tally, id, live.into_iter().map(finding).collect());
    Ok(())
}

/// world.column / world.column-extra: columns of declared tables that the declaration lacks.
async fn columns(client: &Client, world: &Attached<'_>, tally: &mut Tally) -> Result<()> {
    let live = query(
        client,
        COLUMNS,
        typed![&world.declared],
        "cannot read columns",
        Column::from_row,
    )
    .await?;
    let (mut leaky, mut extra) = (Vec::new(), Vec::new());
    for c in live {
        let (Some(table), Some(rel)) = (world.table(c.table), world.rel(c.table)) else {
            continue;
        };
        if table.columns.iter().any(|d| d.name == c.name) {
            continue;
        }
        let obj = format!("column {}.{}", rel.display(), c.name);
        if c.functions.is_empty() {
            extra.push(Finding::new(
                "world.column-extra",
                &obj,
                format!("{obj} is not declared"),
            ));
        } else {
            let how = if c.generated {
                "a generated column"
            } else {
                "its default"
            };
            let calls = c.functions.join(", ");
            let message = format!("{obj} is not declared, and {how} calls {calls}: it runs on every insert and can copy other tenants' data into this tenant's row");
            leaky.push(Finding::new("world.column", &obj, message));
        }
    }
    report(tally, "world.column", leaky);
    report(tally, "world.column-extra", extra);
    Ok(())
}

/// world.unique (any attached table) and world.constraint (declared tables): constraints the
/// declaration lacks.
async fn constraints(client: &Client, world: &Attached<'_>, tally: &mut Tally) -> Result<()> {
    let tc = &world.schema.tenancy.tenant_column;
    let what = "cannot read constraints";
    let params = typed![&world.oids, tc];
    let live = query(client, CONSTRAINTS, params, what, Constraint::from_row).await?;
    let (mut unique, mut other) = (Vec::new(), Vec::new());
    for c in live {
        let Some(rel) = world.rel(c.table) else {
            continue;
        };
        let table = world.table(c.table);
        if table.is_some_and(|t| t.constraints.contains_key(&c.name)) {
            continue;
        }
        let obj = format!("constraint {}.{}", rel.display(), c.name);
        if matches!(c.kind, Kind::Unique | Kind::Exclusion) && !c.has_tc {
            unique.push(unique_finding(&obj, &c.def, tc));
        } else if table.is_some() && c.kind != Kind::PrimaryKey {
            other.push(Finding::new(
                "world.constraint",
                &obj,
                format!("{obj} ({}) is not declared", c.def),
            ));
        }
    }
    report(tally, "world.unique", unique);
    report(tally, "world.constraint", other);
    Ok(())
}

fn unique_finding(obj: &str, def: &str, tc: &str) -> Finding {
    Finding::new(
        "world.unique",
        obj,
        format!(
            "{obj} ({def}) does not include {tc}: an insert that fails with a unique violation tells one tenant that another holds the value"
        ),
    )
}

/// world.unique, world.index and world.index-extra: indexes the declaration lacks.
async fn indexes(client: &Client, world: &Attached<'_>, tally: &mut Tally) -> Result<()> {
    let tc = &world.schema.tenancy.tenant_column;
    let what = "cannot read indexes";
    let params = typed![&world.oids, tc];
    let live = query(client, INDEXES, params, what, Index::from_row).await?;
    let (mut unique, mut calls, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    for ix in live {
        let table = world.table(ix.table);
        if table.is_some_and(|t| t.indexes.contains_key(&ix.name)) {
            continue;
        }
        let obj = format!("index {}.{}", ix.schema, ix.name);
        if ix.unique && !ix.has_tc {
            unique.push(unique_finding(&obj, "a unique index", tc));
        } else if !ix.functions.is_empty() {
            let message = format!(
                "{obj} is not declared and calls {} on every write",
                ix.functions.join(", ")
            );
            calls.push(Finding::new("world.index", &obj, message));
        } else if table.is_some() {
            extra.push(Finding::new(
                "world.index-extra",
                &obj,
                format!("{obj} is not declared"),
            ));
        }
    }
    // world.unique ran with the constraints; count the index half only when it found something.
    for f in unique {
        tally.fail(f);
    }
    report(tally, "world.index", calls);
    report(tally, "world.index-extra", extra);
    Ok(())
}

/// world.inheritance: an undeclared parent or child (or partition) of an attached table.
async fn inheritance(
    client: &Client,
    world: &Attached<'_>,
    rels: &[Rel],
    tally: &mut Tally,
) -> Result<()> {
    let what = "cannot read inheritance";
    let params = typed![&world.oids];
    let links = query(client, INHERITS, params, what, Inherits::from_row).await?;
    let name = |oid: u32| {
        rels.iter()
            .find(|r| r.oid == oid)
            .map_or_else(|| format!("table (oid {oid})"), Rel::object)
    };
    let mut found = BTreeSet::new();
    for l in links {
        for (oid, other, role) in [
            (l.child, l.parent, "inherits from"),
            (l.parent, l.child, "is inherited by"),
        ] {
            if world.declared.contains(&oid) {
                continue;
            }
            let obj = name(oid);
            let message = format!(
                "{obj} is not declared and {role} {}: a SELECT on the parent shows its children's rows under the parent's policies only",
                name(other)
            );
            found.insert((obj, message));
        }
    }
    let findings = found
        .into_iter()
        .map(|(obj, m)| Finding::new("world.inheritance", obj, m))
        .collect();
    report(tally, "world.inheritance", findings);
    Ok(())
}

/// world.sequence: a sequence that backs an attached table.
async fn sequences(client: &Client, world: &Attached<'_>, tally: &mut Tally) -> Result<()> {
    let finding = |s: Sequence| {
        let obj = format!("sequence {}.{}", s.schema, s.name);
        let table = world.rel(s.table).map_or_else(String::new, Rel::display);
        Finding::new(
            "world.sequence",
            &obj,
            format!("{obj} backs tenant table {table}: every tenant draws from one counter, so its values tell how many rows other tenants write"),
        )
    };
    let sql = (SEQUENCES, typed![&world.oids] as &[_]);
    let what = "cannot read sequences";
    each_row(
        client,
        sql,
        what,
        Sequence::from_row,
        finding,
        ("world.sequence", tally),
    )
    .await
}

/// world.publication: a publication that ships a tenant table.
async fn publications(client: &Client, tenant: &TenantData, tally: &mut Tally) -> Result<()> {
    let finding = |p: Publication| {
        let scope = if p.all_tables { "FOR ALL TABLES, " } else { "" };
        Finding::new(
            "world.publication",
            format!("publication {}", p.name),
            format!(
                "publication {} ({scope}{}) ships every tenant's rows of these tenant tables to its subscribers",
                p.name, p.tables
            ),
        )
    };
    let sql = (PUBLICATIONS, typed![&tenant.list] as &[_]);
    let what = "cannot read publications";
    each_row(
        client,
        sql,
        what,
        Publication::from_row,
        finding,
        ("world.publication", tally),
    )
    .await
}

/// world.subscription: any subscription into this database. Its apply worker writes what the
/// publisher sends into the tables as its owner, outside the app role's policies, whichever
/// tenant the rows name (which tables it fills, pg_subscription_rel, only a superuser may read).
async fn subscriptions(client: &Client, tally: &mut Tally) -> Result<()> {
    let finding = |s: Subscription| {
        Finding::new(
            "world.subscription",
            format!("subscription {}", s.name),
            format!(
                "subscription {} (publications {}, owner {}) writes rows into this database's tables outside row-level security",
                s.name, s.publications, s.owner
            ),
        )
    };
    let sql = (SUBSCRIPTIONS, typed![] as &[_]);
    let what = "cannot read subscriptions";
    each_row(
        client,
        sql,
        what,
        Subscription::from_row,
        finding,
        ("world.subscription", tally),
    )
    .await
}

/// world.foreign-key: a foreign key into a tenant table from an undeclared table the app role
/// can write (the key check ignores row-level security: an existence side channel).
async fn foreign_keys(
    client: &Client,
    world: &Attached<'_>,
    rels: &[Rel],
    tenant: &TenantData,
    tally: &mut Tally,
) -> Result<()> {
    let finding = |k: ForeignKey| {
        let obj = format!("constraint {}.{}.{}", k.schema, k.relation, k.name);
        let target = rels
            .iter()
            .find(|r| r.oid == k.target)
            .map_or_else(String::new, Rel::display);
        Finding::new(
            "world.foreign-key",
            &obj,
            format!("{obj} references tenant table {target} from an undeclared table the app role can write: an insert succeeds exactly when another tenant's row exists"),
        )
    };
    let app = &world.schema.tenancy.app_role;
    let sql = (
        FOREIGN_KEYS,
        typed![&tenant.list, app, &world.declared] as &[_],
    );
    let what = "cannot read foreign keys";
    each_row(
        client,
        sql,
        what,
        ForeignKey::from_row,
        finding,
        ("world.foreign-key", tally),
    )
    .await
}
