//! Indexes on live tables: `generate` writes an index added to a table that already exists as a
//! non-transactional migration (`-- tenantctl: no-transaction`, `CREATE INDEX CONCURRENTLY IF NOT
//! EXISTS`), `migrate` runs it outside a transaction and records it in refinery's history, and a
//! writer on the table never waits on it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{test_db, TestDb};
use crate::support::{generate_and_migrate, output, write_project, Pg};

/// The migration's lock_timeout in these tests: a writer must never wait this long.
const LOCK_TIMEOUT_MS: u64 = 500;

/// A project migrated to V1 with a lock_timeout of `LOCK_TIMEOUT_MS`, one gym, and `coaches` rows
/// of it.
fn filled(label: &str, coaches: u32) -> (TestDb, std::path::PathBuf) {
    let db = test_db(label);
    let dir = write_project(&db, false);
    let config = dir.join("tenantctl.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let timeout = format!("lock_timeout = \"{LOCK_TIMEOUT_MS}ms\"");
    std::fs::write(&config, text.replace("lock_timeout = \"10s\"", &timeout)).unwrap();
    generate_and_migrate(&dir);
    let mut pg = Pg::connect(&db.url);
    pg.batch(&format!(
        "INSERT INTO gyms (slug, name) VALUES ('gym-a', 'Gym A');\n\
         INSERT INTO coaches (gym_id, full_name, email) \
         SELECT g.id, 'Coach ' || md5(i::text), md5(i::text) || '@example.test' \
         FROM gyms g, generate_series(1, {coaches}) i;\n\
         ANALYZE coaches;"
    ))
    .unwrap();
    (db, dir)
}

/// Add an index on (email, full_name) of coaches to the policies (led by the tenant column).
fn add_index(dir: &Path) {
    let policy = dir.join("policies/coaches.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let more = r#"indexes = [{ columns = ["full_name"] }, { columns = ["email", "full_name"] }]"#;
    let edited = text.replace(r#"indexes = [{ columns = ["full_name"] }]"#, more);
    assert_ne!(text, edited);
    std::fs::write(&policy, edited).unwrap();
}

/// (exists, valid) of index `name`.
fn index_state(pg: &mut Pg, name: &str) -> (bool, bool) {
    let rows = pg
        .rows(&format!(
            "SELECT i.indisvalid::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = '{name}'"
        ))
        .unwrap();
    match rows.first() {
        Some(r) => (true, r[0].as_deref() == Some("true")),
        None => (false, false),
    }
}

fn history(pg: &mut Pg) -> Vec<String> {
    pg.rows("SELECT version::text FROM tenantctl.refinery_schema_history ORDER BY version")
        .unwrap()
        .iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

/// Insert and update coaches on a connection of its own until `stop`; each write's latency.
fn writer(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut pg = Pg::connect(&url);
        let gym = pg.one("SELECT id::text FROM gyms WHERE slug = 'gym-a'");
        let mut latencies = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let started = Instant::now();
            pg.batch(&format!(
                "INSERT INTO coaches (gym_id, full_name, email) VALUES ('{gym}', 'Writer {n}', 'w{n}@example.test');\n\
                 UPDATE coaches SET phone = '{n}' WHERE gym_id = '{gym}' AND email = 'w{n}@example.test';"
            ))
            .unwrap();
            latencies.push(started.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        latencies
    })
}

#[test]
fn an_index_added_to_a_filled_table_never_blocks_a_writer() {
    let (db, dir) = filled("conc_writer", 800_000);
    // A small maintenance_work_mem: the build sorts on disk, and takes a while.
    let mut pg = Pg::connect(&db.url);
    pg.batch(&format!(
        "ALTER DATABASE \"{}\" SET maintenance_work_mem = '1MB'",
        db.name
    ))
    .unwrap();
    add_index(&dir);
    let (code, _, err) = output(&dir, &["generate", "--name", "coach_email"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning:"), "{err}");
    let file = dir.join("migrations/V2__coach_email_index.sql");
    let sql = std::fs::read_to_string(&file).unwrap();
    assert!(sql.contains("\n-- tenantctl: no-transaction\n"), "{sql}");
    let create = "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"coaches_gym_id_email_full_name_idx\"";
    assert!(sql.contains(create), "{sql}");

    let stop = Arc::new(AtomicBool::new(false));
    let handle = writer(db.url.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (code, _, err) = output(&dir, &["migrate"]);
    let migrate = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let latencies = handle.join().unwrap();
    assert_eq!(code, 0, "{err}");
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "migrate took {:.2}s; {} writes, the slowest {:.1} ms",
        migrate.as_secs_f64(),
        latencies.len(),
        worst.as_secs_f64() * 1000.0
    );
    assert!(
        worst < Duration::from_millis(LOCK_TIMEOUT_MS),
        "a write waited {worst:?} (lock_timeout {LOCK_TIMEOUT_MS} ms) while migrate ran: {err}"
    );
    assert!(
        latencies.len() >= 10,
        "the writer barely ran: {latencies:?}"
    );
    assert_eq!(
        index_state(&mut pg, "coaches_gym_id_email_full_name_idx"),
        (true, true)
    );
    assert_eq!(history(&mut pg), ["1", "2"]);
}

/// `tenantctl new --no-transaction NAME` with `body` appended: the file.
fn hand_written(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let (code, out, err) = output(dir, &["new", "--no-transaction", name, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let file = dir.join(v["written"].as_str().unwrap());
    let header = std::fs::read_to_string(&file).unwrap();
    assert!(
        header.contains("\n-- tenantctl: no-transaction\n"),
        "{header}"
    );
    std::fs::write(&file, header + body).unwrap();
    file
}

#[test]
fn an_invalid_leftover_index_is_dropped_and_built_again_and_the_history_records_it() {
    let (db, dir) = filled("conc_invalid", 10);
    let mut pg = Pg::connect(&db.url);
    // Two coaches share a phone: the unique build fails and leaves an INVALID index.
    pg.batch("UPDATE coaches SET phone = '555' WHERE email IN (SELECT email FROM coaches ORDER BY email LIMIT 2)")
        .unwrap();
    let file = hand_written(
        &dir,
        "coach_phone",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS coaches_email_idx ON coaches (gym_id, email);\n\
         CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS coaches_phone_key ON coaches (gym_id, phone);\n",
    );
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 2, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.contains("coaches_phone_key"))
        .unwrap();
    assert!(
        err.contains(&format!(
            "V2__coach_phone.sql:{line}:1 failed: could not create unique index"
        )),
        "{err}"
    );
    assert!(err.contains("the database stays at V1"), "{err}");
    assert!(err.contains("the rerun skips what they built"), "{err}");
    assert_eq!(index_state(&mut pg, "coaches_email_idx"), (true, true));
    assert_eq!(index_state(&mut pg, "coaches_phone_key"), (true, false));
    assert_eq!(history(&mut pg), ["1"], "recorded a failed migration");

    // Duplicates removed: the rerun drops the INVALID leftover (IF NOT EXISTS would keep it) and
    // builds it again; the first index is skipped.
    pg.batch("UPDATE coaches SET phone = NULL").unwrap();
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("coaches_phone_key is INVALID") && err.contains("building it again"),
        "{err}"
    );
    assert_eq!(index_state(&mut pg, "coaches_phone_key"), (true, true));
    assert_eq!(history(&mut pg), ["1", "2"]);
    let (code, out, err) = output(&dir, &["status", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["migrations"][1]["name"], "coach_phone", "{v}");
    assert_eq!(v["migrations"][1]["state"], "applied", "{v}");

    // Recorded with refinery's checksum: editing the applied file is a divergence.
    std::fs::write(&file, text + "-- edited\n").unwrap();
    let (code, out, err) = output(&dir, &["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!((out.clone() + &err).contains("divergent"), "{out}{err}");
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the file differs from what was applied"),
        "{err}"
    );
}

#[test]
fn a_marked_migration_with_another_statement_is_refused_before_anything_runs() {
    let (db, dir) = filled("conc_refused", 10);
    let file = hand_written(
        &dir,
        "mixed",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS coaches_email_idx ON coaches (gym_id, email);\n\
         UPDATE coaches SET phone = 'x';\n",
    );
    let line = 1 + std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("UPDATE"))
        .unwrap();
    for args in [&["migrate"][..], &["migrate", "--dry-run"]] {
        let (code, _, err) = output(&dir, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "V2__mixed.sql:{line}:1 is marked `-- tenantctl: no-transaction`"
            )),
            "{err}"
        );
    }
    let mut pg = Pg::connect(&db.url);
    assert_eq!(index_state(&mut pg, "coaches_email_idx"), (false, false));
    assert_eq!(
        pg.one("SELECT count(*)::text FROM coaches WHERE phone = 'x'"),
        "0"
    );
    assert_eq!(history(&mut pg), ["1"]);
}

#[test]
fn dry_run_and_adopt_replay_a_marked_migration_inside_their_transaction() {
    let (db, dir) = filled("conc_replay", 10);
    add_index(&dir);
    let (code, _, err) = output(&dir, &["generate", "--name", "coach_email"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("not test-applied"), "{err}");
    let (code, out, err) = output(&dir, &["migrate", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS"),
        "{out}"
    );
    assert!(err.contains("they apply. Nothing was applied."), "{err}");
    let mut pg = Pg::connect(&db.url);
    assert_eq!(
        index_state(&mut pg, "coaches_gym_id_email_full_name_idx"),
        (false, false)
    );

    // The same objects made by hand, with no history: adopt matches V1 and V2.
    pg.batch("DROP SCHEMA tenantctl CASCADE; DROP TABLE coaches, members, gyms CASCADE;")
        .unwrap();
    for v in ["V1__initial.sql", "V2__coach_email_index.sql"] {
        let sql = std::fs::read_to_string(dir.join("migrations").join(v)).unwrap();
        pg.batch(&sql).unwrap();
    }
    let (code, _, err) = output(&dir, &["adopt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(history(&mut pg), ["1", "2"], "{err}");
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Nothing to apply"), "{err}");
}

#[test]
fn a_unique_constraint_added_to_a_filled_table_is_built_concurrently_then_attached() {
    let (db, dir) = filled("conc_unique", 1000);
    let policy = dir.join("policies/coaches.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let edited = text.replace(
        r#"unique = [["email"]]"#,
        r#"unique = [["email"], ["phone"]]"#,
    );
    assert_ne!(text, edited);
    std::fs::write(&policy, edited).unwrap();
    let (code, _, err) = output(&dir, &["generate", "--name", "coach_phone"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning:"), "{err}");
    let build = std::fs::read_to_string(dir.join("migrations/V2__coach_phone_index.sql")).unwrap();
    assert!(
        build.contains(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"coaches_gym_id_phone_key\""
        ),
        "{build}"
    );
    let attach =
        std::fs::read_to_string(dir.join("migrations/V3__coach_phone_attach.sql")).unwrap();
    assert!(
        attach.contains("ADD CONSTRAINT \"coaches_gym_id_phone_key\" UNIQUE USING INDEX \"coaches_gym_id_phone_key\";"),
        "{attach}"
    );
    let (code, _, err) = output(&dir, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    let mut pg = Pg::connect(&db.url);
    let def = pg.one(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'coaches_gym_id_phone_key'",
    );
    assert_eq!(def, "UNIQUE (gym_id, phone)");
    assert_eq!(history(&mut pg), ["1", "2", "3"]);
    // The declared world holds: the attached constraint is the one the policies declare.
    let (code, out, err) = output(&dir, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
