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
