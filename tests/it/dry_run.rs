//! `migrate --dry-run`: the SQL it would run, test-applied in a scratch database brought to the
//! database's version, never in the database itself; the scratch database always dropped.

use std::path::Path;

use crate::harness::{tenantctl, test_db};
use crate::support::{generate_and_migrate, write_project, Pg};

fn output(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tenantctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The scratch database a run names in its output.
fn scratch_named(text: &str) -> String {
    let at = text
        .find("tenantctl_dry_run_")
        .expect("the scratch database is named");
    text[at..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap()
        .to_string()
}

fn database_exists(pg: &mut Pg, name: &str) -> bool {
    pg.one(&format!(
        "SELECT count(*)::text FROM pg_database WHERE datname = '{name}'"
    )) != "0"
}

#[test]
fn dry_run_test_applies_on_top_of_the_applied_migrations_and_touches_nothing() {
    let db = test_db("dry_run_ok");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    let migrations = dir.join("migrations");
    std::fs::write(migrations.join("V2__t2.sql"), "CREATE TABLE t2 (id int);\n").unwrap();
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    // V3 only applies on top of V2; its role is cluster-wide, and must not outlive the dry run.
    let probe_role = format!("{}dry_run_probe", db.role_prefix);
    std::fs::write(
        migrations.join("V3__t2_more.sql"),
        format!("ALTER TABLE t2 ADD COLUMN note text;\nCREATE ROLE \"{probe_role}\";\n"),
    )
    .unwrap();
    let (code, out, err) = output(&dir, &["migrate", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("-- V3__t2_more.sql\nALTER TABLE t2 ADD COLUMN note text;"),
        "{out}"
    );
    assert!(
        !out.contains("V2__t2"),
        "applied migrations are not printed: {out}"
    );
    assert!(err.contains("they apply"), "{err}");
    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        pg.one("SELECT count(*)::text FROM information_schema.columns WHERE table_name = 't2' AND column_name = 'note'"),
        "0",
        "the dry run changed the database"
    );
    assert_eq!(
        pg.one(&format!(
            "SELECT count(*)::text FROM pg_roles WHERE rolname = '{probe_role}'"
        )),
        "0",
        "the dry run left a role in the cluster"
    );
    assert!(
        !database_exists(&mut pg, &scratch_named(&err)),
        "scratch database left behind"
    );
    assert_eq!(
        pg.one("SELECT max(version)::text FROM tenantctl.refinery_schema_history"),
        "2"
    );
}

#[test]
fn dry_run_reports_the_first_failure_with_file_line_column() {
    let db = test_db("dry_run_fail");
    let dir = write_project(&db, false);
    generate_and_migrate(&dir);
    std::fs::write(
        dir.join("migrations/V2__typo.sql"),
        "CREATE TABLE ok_table (id int);\n-- a typo in a type\nCREATE TABLE bad (id innt);\n",
    )
    .unwrap();
    let (code, out, err) = output(&dir, &["migrate", "--dry-run"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("CREATE TABLE bad (id innt);"),
        "prints the SQL first: {out}"
    );
    assert!(err.contains("V2__typo.sql:3:"), "{err}");
    assert!(err.contains("type \"innt\" does not exist"), "{err}");
    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        pg.one("SELECT (to_regclass('ok_table') IS NULL)::text"),
        "true"
    );
    assert!(
        !database_exists(&mut pg, &scratch_named(&err)),
        "scratch database left behind"
    );
}

#[test]
fn without_createdb_the_dry_run_uses_the_embedded_cluster() {
    let db = test_db("dry_run_embedded");
    let dir = write_project(&db, false);
    let login = format!("{}nocreatedb", db.role_prefix);
    let mut pg = Pg::connect(&db.url);
    pg.batch(&format!(
        "CREATE ROLE \"{login}\" LOGIN PASSWORD 'dry-run-pw-123' CREATEROLE NOCREATEDB; \
         ALTER DATABASE \"{}\" OWNER TO \"{login}\"",
        db.name
    ))
    .unwrap();
    std::fs::write(
        dir.join("migrations/V1__plain.sql"),
        "CREATE TABLE plain (id int);\n",
    )
    .unwrap();
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    let url = format!("{scheme}://{login}:dry-run-pw-123@{host}");
    let (code, out, err) = output(&dir, &["migrate", "--dry-run", "--database-url", &url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("of the embedded cluster"), "{err}");
    assert_eq!(
        pg.one("SELECT (to_regclass('plain') IS NULL)::text"),
        "true"
    );
    let (code, _, err) = output(&dir, &["dev", "down"]);
    assert_eq!(code, 0, "{err}");
}
