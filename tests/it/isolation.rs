//! The seed release's security guarantees, on a database migrated from the shipped policies plus
//! the sessions/bookings fixtures. Each test fails if its guarantee breaks.

use crate::harness::{test_db, TestDb};
use crate::support::{generate_and_migrate, sqlstate, write_project, Pg, Roles};

const GYM_A: &str = "00000000-0000-4000-8000-00000000000a";
const GYM_B: &str = "00000000-0000-4000-8000-00000000000b";
const COACH_A: &str = "10000000-0000-4000-8000-00000000000a";
const COACH_B: &str = "10000000-0000-4000-8000-00000000000b";
const MEMBER_A: &str = "20000000-0000-4000-8000-00000000000a";
const MEMBER_B: &str = "20000000-0000-4000-8000-00000000000b";
const SESSION_A: &str = "30000000-0000-4000-8000-00000000000a";
const SESSION_B: &str = "30000000-0000-4000-8000-00000000000b";

/// Tenant tables of the fixture project: one row id per gym, and a column the app may update.
const TABLES: &[(&str, &str, &str, &str)] = &[
    ("coaches", COACH_A, COACH_B, "full_name"),
    ("members", MEMBER_A, MEMBER_B, "full_name"),
    ("sessions", SESSION_A, SESSION_B, "title"),
];

struct World {
    db: TestDb,
    roles: Roles,
    pg: Pg,
}

/// Migrate, then seed two gyms as the superuser (which RLS does not apply to).
fn world(label: &str) -> World {
    let db = test_db(label);
    let dir = write_project(&db, true);
    generate_and_migrate(&dir);
    let roles = Roles::for_db(&db);
    let mut pg = Pg::connect(&db.url);
    for (gym, suffix, coach, member, session) in [
        (GYM_A, "a", COACH_A, MEMBER_A, SESSION_A),
        (GYM_B, "b", COACH_B, MEMBER_B, SESSION_B),
    ] {
        pg.batch(&format!(
            "INSERT INTO gyms (id, slug, name) VALUES ('{gym}', 'gym-{suffix}', 'Gym {suffix}');
             INSERT INTO coaches (id, gym_id, full_name, email) VALUES ('{coach}', '{gym}', 'Coach {suffix}', 'coach@{suffix}.test');
             INSERT INTO members (id, gym_id, full_name, email, home_coach_id) VALUES ('{member}', '{gym}', 'Member {suffix}', 'm@{suffix}.test', '{coach}');
             INSERT INTO members (gym_id, full_name, email) VALUES ('{gym}', 'Second {suffix}', 'm2@{suffix}.test');
             INSERT INTO sessions (id, gym_id, title, author_coach_id, starts_at) VALUES ('{session}', '{gym}', 'HIIT {suffix}', '{coach}', now());
             INSERT INTO bookings (gym_id, session_id, member_id) VALUES ('{gym}', '{session}', '{member}');"
        ))
        .unwrap();
    }
    World { db, roles, pg }
}

fn gym_ids(rows: &[Vec<Option<String>>]) -> Vec<String> {
    rows.iter().map(|r| r[0].clone().unwrap()).collect()
}

#[test]
fn each_gym_sees_only_its_own_rows_even_without_where() {
    let mut w = world("own_rows");
    for table in ["gyms", "coaches", "members", "sessions", "bookings"] {
        let col = if table == "gyms" { "id" } else { "gym_id" };
        for gym in [GYM_A, GYM_B] {
            // The application "forgot" WHERE gym_id = ?: RLS filters anyway.
            let rows =
                w.pg.as_role(
                    &w.roles.app,
                    Some(gym),
                    &format!("SELECT {col}::text FROM {table}"),
                )
                .unwrap();
            assert!(
                !rows.is_empty(),
                "{table}: gym {gym} sees none of its own rows"
            );
            assert!(
                gym_ids(&rows).iter().all(|g| g == gym),
                "{table}: gym {gym} sees {rows:?}"
            );
        }
    }
    let members =
        w.pg.as_role(
            &w.roles.app,
            Some(GYM_A),
            "SELECT count(*)::text FROM members",
        )
        .unwrap();
    assert_eq!(members[0][0].as_deref(), Some("2"));
}

#[test]
fn other_gyms_rows_are_invisible_not_errors() {
    let mut w = world("invisible");
    for (table, _, b_id, col) in TABLES {
        let rows =
            w.pg.as_role(
                &w.roles.app,
                Some(GYM_A),
                &format!("SELECT id::text FROM {table} WHERE id = '{b_id}'"),
            )
            .unwrap();
        assert!(
            rows.is_empty(),
            "{table}: gym A looked up B's row by id and got {rows:?}"
        );
        let rows =
            w.pg.as_role(
                &w.roles.app,
                Some(GYM_A),
                &format!("SELECT id::text FROM {table} WHERE gym_id = '{GYM_B}'"),
            )
            .unwrap();
        assert!(
            rows.is_empty(),
            "{table}: gym A asked for gym B's rows and got {rows:?}"
        );
        // Writes to B's rows affect nothing.
        let updated = w
            .pg
            .as_role(
                &w.roles.app,
                Some(GYM_A),
                &format!("WITH u AS (UPDATE {table} SET {col} = {col} WHERE id = '{b_id}' RETURNING 1) SELECT count(*)::text FROM u"),
            )
            .unwrap();
        assert_eq!(
            updated[0][0].as_deref(),
            Some("0"),
            "{table}: A updated B's row"
        );
        let deleted = w
            .pg
            .as_role(
                &w.roles.app,
                Some(GYM_A),
                &format!("WITH d AS (DELETE FROM {table} WHERE id = '{b_id}' RETURNING 1) SELECT count(*)::text FROM d"),
            )
            .unwrap();
        assert_eq!(
            deleted[0][0].as_deref(),
            Some("0"),
            "{table}: A deleted B's row"
        );
    }
    let gyms =
        w.pg.as_role(
            &w.roles.app,
            Some(GYM_A),
            &format!("SELECT id::text FROM gyms WHERE id = '{GYM_B}'"),
        )
        .unwrap();
    assert!(gyms.is_empty());
}

#[test]
fn inserting_another_gyms_id_is_rejected() {
    let mut w = world("insert_other");
    let cases = [
        format!("INSERT INTO members (gym_id, full_name, email) VALUES ('{GYM_B}', 'Mallory', 'mal@b.test') RETURNING 1"),
        format!("INSERT INTO coaches (gym_id, full_name, email) VALUES ('{GYM_B}', 'Mallory', 'mal@b.test') RETURNING 1"),
        format!("INSERT INTO sessions (gym_id, title, author_coach_id, starts_at) VALUES ('{GYM_B}', 'x', '{COACH_B}', now()) RETURNING 1"),
        format!("INSERT INTO bookings (gym_id, session_id, member_id) VALUES ('{GYM_B}', '{SESSION_B}', '{MEMBER_B}') RETURNING 1"),
    ];
    for sql in &cases {
        let err = w.pg.as_role(&w.roles.app, Some(GYM_A), sql).expect_err(sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    // Without a gym_id, the row takes the context's gym.
    let rows = w
        .pg
        .as_role(&w.roles.app, Some(GYM_A), "INSERT INTO members (full_name, email) VALUES ('Ann', 'ann@a.test') RETURNING gym_id::text")
        .unwrap();
    assert_eq!(gym_ids(&rows), vec![GYM_A.to_string()]);
    // The app cannot create gyms: only the platform admin does.
    let err =
        w.pg.as_role(
            &w.roles.app,
            Some(GYM_A),
            "INSERT INTO gyms (slug, name) VALUES ('new-gym', 'New') RETURNING 1",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let err =
        w.pg.as_role(
            &w.roles.app,
            Some(GYM_A),
            &format!("DELETE FROM gyms WHERE id = '{GYM_A}' RETURNING 1"),
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    // A gym may update its own row.
    let rows =
        w.pg.as_role(
            &w.roles.app,
            Some(GYM_A),
            "UPDATE gyms SET name = 'Renamed' RETURNING id::text",
        )
        .unwrap();
    assert_eq!(gym_ids(&rows), vec![GYM_A.to_string()]);
}

#[test]
fn cross_tenant_references_are_impossible() {
    let mut w = world("cross_refs");
    // Even the superuser (no RLS) cannot point gym A's member at gym B's coach: composite keys.
    let err = w
        .pg
        .batch(&format!("INSERT INTO members (gym_id, full_name, email, home_coach_id) VALUES ('{GYM_A}', 'X', 'x@a.test', '{COACH_B}')"))
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err}");
    // Nor book gym A's member onto gym B's session, as the app.
    let err = w
        .pg
        .as_role(
            &w.roles.app,
            Some(GYM_A),
            &format!("INSERT INTO bookings (session_id, member_id) VALUES ('{SESSION_B}', '{MEMBER_A}') RETURNING 1"),
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23503", "{err}");
}

#[test]
fn tenant_id_is_immutable_for_every_role() {
    let mut w = world("immutable");
    for (table, a_id, _, _) in TABLES {
        let sql = format!("UPDATE {table} SET gym_id = '{GYM_B}' WHERE id = '{a_id}' RETURNING 1");
        // The app and the admin hold no UPDATE right on the tenant column.
        for role in [&w.roles.app, &w.roles.admin] {
            let err = w.pg.as_role(role, Some(GYM_A), &sql).expect_err(&sql);
            assert_eq!(sqlstate(&err), "42501", "{role} {sql}: {err}");
        }
        // RLS is forced, so the owner role has no policy and sees no row to move.
        let owner = w.pg.as_role(&w.roles.owner, Some(GYM_A), &sql);
        assert!(
            matches!(&owner, Ok(rows) if rows.is_empty()),
            "owner {sql}: {owner:?}"
        );
        // A superuser (no RLS) is stopped by the trigger, with its own SQLSTATE.
        w.pg.batch("BEGIN").unwrap();
        let err = w.pg.batch(&sql).unwrap_err();
        w.pg.batch("ROLLBACK").unwrap();
        assert_eq!(sqlstate(&err), "TC001", "superuser {sql}: {err}");
        assert!(
            err.as_db_error()
                .unwrap()
                .message()
                .contains("tenant id is immutable"),
            "{err}"
        );
    }
    // The tenant table's own key too.
    let err =
        w.pg.batch(&format!(
            "UPDATE gyms SET id = gen_random_uuid() WHERE id = '{GYM_A}'"
        ))
        .unwrap_err();
    assert!(
        ["TC001", "23503"].contains(&sqlstate(&err).as_str()),
        "{err}"
    );
    // Other columns stay updatable by the app.
    let rows =
        w.pg.as_role(
            &w.roles.app,
            Some(GYM_A),
            &format!("UPDATE members SET full_name = 'New' WHERE id = '{MEMBER_A}' RETURNING 1"),
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn no_context_fails_closed() {
    let mut w = world("no_context");
    for table in ["gyms", "coaches", "members", "sessions", "bookings"] {
        let rows =
            w.pg.as_role(&w.roles.app, None, &format!("SELECT 1::text FROM {table}"))
                .unwrap();
        assert!(
            rows.is_empty(),
            "{table}: no context gave {} rows",
            rows.len()
        );
        let rows =
            w.pg.as_role(
                &w.roles.app,
                Some(""),
                &format!("SELECT 1::text FROM {table}"),
            )
            .unwrap();
        assert!(
            rows.is_empty(),
            "{table}: empty context gave {} rows",
            rows.len()
        );
        // Garbage is an error, never rows.
        let err =
            w.pg.as_role(
                &w.roles.app,
                Some("not-a-uuid"),
                &format!("SELECT 1::text FROM {table}"),
            )
            .unwrap_err();
        assert_eq!(sqlstate(&err), "22P02", "{table}: {err}");
    }
    // Inserting without a context is refused: the tenant column's default is NULL.
    let err =
        w.pg.as_role(
            &w.roles.app,
            None,
            "INSERT INTO members (full_name, email) VALUES ('x', 'x@x.test') RETURNING 1",
        )
        .unwrap_err();
    assert!(
        ["23502", "42501"].contains(&sqlstate(&err).as_str()),
        "{err}"
    );
}

#[test]
fn context_dies_with_its_transaction_on_a_pooled_connection() {
    let mut w = world("pooled");
    // One connection, as a transaction pooler would hand it from request to request.
    let seen =
        w.pg.as_role(
            &w.roles.app,
            Some(GYM_A),
            "SELECT count(*)::text FROM members",
        )
        .unwrap();
    assert_eq!(seen[0][0].as_deref(), Some("2"));
    let after =
        w.pg.as_role(&w.roles.app, None, "SELECT count(*)::text FROM members")
            .unwrap();
    assert_eq!(
        after[0][0].as_deref(),
        Some("0"),
        "the previous request's gym leaked into the next transaction"
    );
    let setting =
        w.pg.one("SELECT coalesce(current_setting('tenantctl.gym_id', true), '')");
    assert_eq!(setting, "", "context survived its transaction");
}

#[test]
fn platform_admin_sees_every_gym() {
    let mut w = world("admin");
    for table in ["gyms", "coaches", "members", "sessions", "bookings"] {
        let all = w.pg.one(&format!("SELECT count(*)::text FROM {table}"));
        let rows =
            w.pg.as_role(
                &w.roles.admin,
                None,
                &format!("SELECT count(*)::text FROM {table}"),
            )
            .unwrap();
        assert_eq!(rows[0][0].as_deref(), Some(all.as_str()), "{table}");
    }
    let gyms =
        w.pg.as_role(
            &w.roles.admin,
            None,
            "SELECT count(DISTINCT gym_id)::text FROM members",
        )
        .unwrap();
    assert_eq!(gyms[0][0].as_deref(), Some("2"));
}

#[test]
fn catalog_holds_the_security_model() {
    let mut w = world("catalog");
    let app = w.roles.app.clone();
    for table in ["gyms", "coaches", "members", "sessions", "bookings"] {
        let rls = w.pg.one(&format!(
            "SELECT relrowsecurity::text || ',' || relforcerowsecurity::text || ',' || pg_get_userbyid(relowner) FROM pg_class WHERE oid = '{table}'::regclass"
        ));
        assert_eq!(rls, format!("true,true,{}", w.roles.owner), "{table}");
        for privilege in ["TRUNCATE", "REFERENCES", "TRIGGER"] {
            let has = w.pg.one(&format!(
                "SELECT has_table_privilege('{app}', '{table}', '{privilege}')::text"
            ));
            assert_eq!(has, "false", "{app} has {privilege} on {table}");
        }
        let trigger = w.pg.one(&format!("SELECT count(*)::text FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal"));
        assert_eq!(trigger, "1", "{table}");
    }
    let attrs = w.pg.one(&format!("SELECT rolbypassrls::text || ',' || rolsuper::text || ',' || rolcanlogin::text FROM pg_roles WHERE rolname = '{app}'"));
    assert_eq!(attrs, "false,false,false");
    let admin = w.pg.one(&format!(
        "SELECT rolbypassrls::text FROM pg_roles WHERE rolname = '{}'",
        w.roles.admin
    ));
    assert_eq!(admin, "true");
    let volatility =
        w.pg.one("SELECT provolatile::text FROM pg_proc WHERE proname = 'current_gym_id'");
    assert_eq!(volatility, "s");
    // Every policy for the app role reads the context through an InitPlan-able subquery.
    let policies = w.pg.rows(&format!("SELECT tablename::text, coalesce(qual, '') FROM pg_policies WHERE '{app}' = ANY(roles)")).unwrap();
    assert!(policies.len() >= 6, "{policies:?}");
    for p in &policies {
        let qual = p[1].clone().unwrap();
        assert!(
            qual.contains("( SELECT ")
                && qual.contains("current_gym_id()")
                && !qual.contains(" OR "),
            "{p:?}"
        );
    }
}

/// The context function is inlined into the app's statements, so its body is parsed with the
/// caller's search_path, where types are looked up in pg_temp first. An application session
/// that makes its own temporary `uuid` type (with casts mapping any context to gym A) must still
/// see only the tenant it set: the body names `pg_catalog.uuid`.
#[test]
fn a_session_type_named_uuid_cannot_redirect_the_context() {
    let w = world("uuid_type");
    let login = format!("{}hijack", w.db.role_prefix);
    let password = "hijack-test-password";
    let mut admin = Pg::connect(&w.db.url);
    admin
        .batch(&format!(
            "CREATE ROLE \"{login}\" LOGIN PASSWORD '{password}' IN ROLE \"{}\"",
            w.roles.app
        ))
        .unwrap();
    let mut u = url::Url::parse(&w.db.url).unwrap();
    u.set_username(&login).unwrap();
    u.set_password(Some(password)).unwrap();
    let mut app = Pg::connect(u.as_str());
    app.batch(&format!(
        "CREATE TYPE pg_temp.uuid AS (v pg_catalog.uuid);
         CREATE FUNCTION pg_temp.from_text(t text) RETURNS pg_temp.uuid LANGUAGE sql IMMUTABLE STRICT
           AS $$ SELECT ROW('{GYM_A}')::pg_temp.uuid $$;
         CREATE FUNCTION pg_temp.to_uuid(x pg_temp.uuid) RETURNS pg_catalog.uuid LANGUAGE sql IMMUTABLE STRICT
           AS $$ SELECT x.v $$;
         CREATE CAST (text AS pg_temp.uuid) WITH FUNCTION pg_temp.from_text(text);
         CREATE CAST (pg_temp.uuid AS pg_catalog.uuid) WITH FUNCTION pg_temp.to_uuid(pg_temp.uuid) AS ASSIGNMENT;"
    ))
    .unwrap();
    let seen = app
        .as_role(
            &w.roles.app,
            Some(GYM_B),
            "SELECT DISTINCT gym_id::text FROM members",
        )
        .unwrap();
    let inserted = app
        .as_role(
            &w.roles.app,
            Some(GYM_B),
            "INSERT INTO members (full_name, email) VALUES ('Hijack', 'hijack@b.test') RETURNING gym_id::text",
        )
        .unwrap();
    app.batch("DISCARD TEMP").unwrap();
    drop(app);
    admin.batch(&format!("DROP ROLE \"{login}\"")).unwrap();
    assert_eq!(
        gym_ids(&seen),
        vec![GYM_B.to_string()],
        "gym B's session saw other gyms"
    );
    assert_eq!(
        gym_ids(&inserted),
        vec![GYM_B.to_string()],
        "a row landed in another gym"
    );
}
