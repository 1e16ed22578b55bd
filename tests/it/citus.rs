//! The Citus target (`[target] kind = "citus"`, docs/citus.md) on a coordinator and two workers
//! (Citus 13.2.2 in Debian's PostgreSQL 15: `scripts/setup.sh --citus` builds it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::harness::{cluster_dir, psql_exec, query_strings, tenantctl, watch, Cluster};
use crate::support::{self, sqlstate, Pg, Roles};

/// Citus is built into Debian's PostgreSQL 15 (scripts/setup-citus.sh).
const BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// A coordinator and two workers, started once per test run.
struct Citus {
    coordinator: Cluster,
    workers: [Cluster; 2],
}

fn citus() -> &'static Citus {
    static CITUS: OnceLock<Citus> = OnceLock::new();
    CITUS.get_or_init(|| {
        let lib = Path::new("/usr/lib/postgresql/15/lib/citus.so");
        assert!(
            lib.exists(),
            "{} not found: run scripts/setup.sh --citus (it builds Citus 13.2.2 once per machine)",
            lib.display()
        );
        Citus {
            coordinator: start_node(false),
            workers: [start_node(true), start_node(true)],
        }
    })
}

fn dev(dir: &Path, args: &[&str]) -> std::process::Output {
    let parent = dir.parent().unwrap();
    let out = tenantctl(parent)
        .env("TENANTCTL_PG_BINDIR", BINDIR)
        .arg("dev")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tenantctl dev {args:?} --dir {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One node: a dev cluster with Citus preloaded. A worker accepts the coordinator's
/// connections from 127.0.0.1 without a password (the coordinator opens them as the current
/// role; a real cluster uses pg_dist_authinfo, a password file or certificates instead).
fn start_node(worker: bool) -> Cluster {
    let dir = cluster_dir();
    watch(&dir);
    dev(&dir, &["up"]);
    let data = dir.join("data");
    append(
        &data.join("postgresql.conf"),
        "shared_preload_libraries = 'citus'\n",
    );
    if worker {
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("host all all 127.0.0.1/32 trust\n{old}")).unwrap();
    }
    dev(&dir, &["down"]);
    dev(&dir, &["up"]);
    let parent = dir.parent().unwrap();
    let json = tenantctl(parent)
        .args(["--format", "json", "dev", "url", "--show-password", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    Cluster {
        port: json["port"].as_u64().unwrap() as u16,
        url: json["url"].as_str().unwrap().to_string(),
        dir,
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// One test's database on every node, with the extension and the workers added; its project
/// (the shipped policies, `[target] kind = "citus"`, the test's role names).
struct CitusDb {
    url: String,
    roles: Roles,
    db: crate::harness::TestDb,
}

fn citus_db(label: &str) -> CitusDb {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let name = format!("c_{label}_{pid}_{n}");
    let c = citus();
    // One database set up at a time: adding the workers to two databases at once has failed
    // ("failure on connection marked as essential").
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    for node in [&c.coordinator, &c.workers[0], &c.workers[1]] {
        psql_exec(&node.url, &format!("CREATE DATABASE \"{name}\""));
        psql_exec(&node.url_for(&name), "CREATE EXTENSION citus");
    }
    let url = c.coordinator.url_for(&name);
    let password = support::password_of(&url);
    let mut setup = format!(
        "SELECT citus_set_coordinator_host('127.0.0.1', {});",
        c.coordinator.port
    );
    for w in &c.workers {
        setup.push_str(&format!("SELECT citus_add_node('127.0.0.1', {});", w.port));
    }
    // The coordinator's connections to itself (a reference table's placement there, shard
    // splits over `localhost`) log in with the superuser's password (nodeid 0: every node).
    setup.push_str(&format!(
        "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) \
         VALUES (0, current_user, 'password={password}');"
    ));
    psql_exec(&url, &setup);
    let db = crate::harness::TestDb {
        name: name.clone(),
        url: url.clone(),
        role_prefix: format!("c{pid}_{n}_"),
        project: tempfile::tempdir().unwrap(),
    };
    let dir = support::write_project(&db, false);
    append(
        &dir.join("tenantctl.toml"),
        "\n[target]\nkind = \"citus\"\n",
    );
    // Citus raises max_prepared_transactions itself (its distributed commits prepare on the
    // workers): setting.two-phase-commit, whose fix there is a login per tenant.
    std::fs::write(
        dir.join("policies/zz_citus_allow.toml"),
        "[[verify.allow]]\nobject = \"setting cluster max_prepared_transactions\"\n\
         check = \"setting.two-phase-commit\"\n\
         reason = \"Citus needs it; a login per tenant in production\"\n",
    )
    .unwrap();
    let roles = Roles::for_db(&db);
    CitusDb { url, roles, db }
}

impl CitusDb {
    fn dir(&self) -> PathBuf {
        self.db.project.path().to_path_buf()
    }

    fn tenantctl(&self, args: &[&str]) -> std::process::Output {
        tenantctl(&self.dir()).args(args).output().unwrap()
    }

    /// Run a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.tenantctl(args);
        assert!(
            out.status.success(),
            "tenantctl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Migrated, with two seeded gyms; their ids.
    fn with_two_gyms(&self) -> [String; 2] {
        support::generate_and_migrate(&self.dir());
        ["iron-a", "iron-b"].map(|slug| {
            let args = format!(
                "--format json tenant create {slug} --name {slug} --coaches 3 --members 40"
            );
            let out = self.ok(&args.split(' ').collect::<Vec<_>>());
            let json: serde_json::Value = serde_json::from_str(&out).unwrap();
            json["id"].as_str().unwrap().to_string()
        })
    }

    /// The app's LOGIN role, with a password to log in to the coordinator.
    fn app_session(&self) -> Pg {
        psql_exec(
            &self.url,
            &format!("ALTER ROLE \"{}\" PASSWORD 'app-pw'", self.roles.app),
        );
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_username(&self.roles.app).unwrap();
        url.set_password(Some("app-pw")).unwrap();
        Pg::connect(url.as_str())
    }

    fn verify(&self) -> (i32, String) {
        let out = self.tenantctl(&["verify"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The table truncates ids when a column widens (an ALLOWED row): the JSON run names the
        // failing ids in full.
        let json = self.tenantctl(&["--format", "json", "verify"]);
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
        let ids = crate::corpus::failing_ids(&json);
        let text = format!("{text}\nfailing ids: {}", ids.join(" "));
        (out.status.code().unwrap(), text)
    }
}

/// In `gym`'s context as the application does it on Citus (SET LOCAL with propagation), or with
/// `set_config` (which Citus does not pass on), run `sql` and roll back.
fn in_context(
    pg: &mut Pg,
    gym: Option<&str>,
    set_local: bool,
    sql: &str,
) -> Result<support::Rows, tokio_postgres::Error> {
    pg.batch("BEGIN").unwrap();
    let result = (|| {
        if let Some(g) = gym {
            if set_local {
                pg.batch("SET LOCAL citus.propagate_set_commands TO 'local'")?;
                pg.batch(&format!("SET LOCAL tenantctl.gym_id TO '{g}'"))?;
            } else {
                pg.batch(&format!(
                    "SELECT set_config('tenantctl.gym_id', '{g}', true)"
                ))?;
            }
        }
        pg.rows(sql)
    })();
    pg.batch("ROLLBACK").unwrap();
    result
}

fn count(rows: &support::Rows) -> i64 {
    rows[0][0].as_deref().unwrap().parse().unwrap()
}

#[test]
fn citus_target_distributes_the_schema_and_isolates_tenants_on_the_workers() {
    let db = citus_db("accept");
    let [a, b] = db.with_two_gyms();
    // The schema as Citus holds it: a reference tenant table, the others by gym_id, co-located.
    let tables = query_strings(
        &db.url,
        "SELECT table_name::text, citus_table_type, distribution_column, colocation_id::text \
         FROM citus_tables ORDER BY 1",
    );
    let kinds: Vec<(String, String)> = tables
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[2].clone().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("coaches".to_string(), "gym_id".to_string()),
            ("gyms".into(), "<none>".into()),
            ("members".into(), "gym_id".into())
        ]
    );
    assert_eq!(tables[0][3], tables[2][3], "coaches and members co-located");
    // The clean database passes, without a warning: the plain target's static checks run on
    // the model as Citus holds it, and the Citus checks and probes find nothing.
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(" 0 error(s), 0 warning(s)"), "{text}");
    // exec as the tenant: its 40 members, of one gym.
    let sql = "SELECT count(*) * 1000 + count(DISTINCT gym_id) AS n FROM members";
    let out = db.ok(&["exec", "--tenant", "iron-a", sql]);
    assert!(out.contains("40001"), "{out}");

    // The four seed scenarios as the app's LOGIN role with SET LOCAL context.
    let mut app = db.app_session();
    let own = "SELECT count(*) FILTER (WHERE gym_id = tenantctl.current_gym_id()), \
               count(*) FILTER (WHERE gym_id IS DISTINCT FROM tenantctl.current_gym_id()) FROM members";
    let rows = in_context(&mut app, Some(&a), true, own).unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("40"), "own rows");
    assert_eq!(rows[0][1].as_deref(), Some("0"), "foreign rows");
    let none = in_context(&mut app, None, true, "SELECT count(*) FROM members").unwrap();
    assert_eq!(count(&none), 0, "no context, no rows");
    let insert = format!(
        "INSERT INTO members (gym_id, full_name, email) VALUES ('{b}', 'Mallory', 'm@example.com')"
    );
    let err = in_context(&mut app, Some(&a), true, &insert).unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "42501",
        "another gym's id is rejected: {err:?}"
    );
    // The tenant id is immutable: Citus's own rule on distributed tables, the app role's
    // privileges and the trigger on the reference table (which binds even its owner).
    for (update, code) in [
        (format!("UPDATE members SET gym_id = '{b}'"), "0A000"),
        (format!("UPDATE gyms SET id = '{b}'"), "42501"),
    ] {
        let err = in_context(&mut app, Some(&a), true, &update).unwrap_err();
        assert_eq!(sqlstate(&err), code, "the tenant id is immutable: {err:?}");
    }
    let mut owner = Pg::connect(&db.url);
    let err = owner
        .batch("UPDATE gyms SET id = '00000000-0000-0000-0000-000000000001' WHERE slug = 'iron-a'")
        .unwrap_err();
    assert_eq!(sqlstate(&err), "TC001", "{err:?}");
    // Why SET LOCAL: set_config does not reach the workers (fail closed, but broken).
    let rows = in_context(&mut app, Some(&a), false, own).unwrap();
    assert_eq!(
        rows[0][0].as_deref(),
        Some("0"),
        "set_config's context on the workers"
    );

    // An index added to a distributed table: built CONCURRENTLY in a non-transactional
    // migration, which Citus propagates to every shard.
    let policy = db.dir().join("policies/coaches.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let more = r#"indexes = [{ columns = ["full_name"] }, { columns = ["email", "full_name"] }]"#;
    std::fs::write(
        &policy,
        text.replace(r#"indexes = [{ columns = ["full_name"] }]"#, more),
    )
    .unwrap();
    db.ok(&["generate", "--name", "coach_email"]);
    let file = db.dir().join("migrations/V2__coach_email_index.sql");
    let sql = std::fs::read_to_string(file).unwrap();
    assert!(
        sql.contains("\nCREATE INDEX CONCURRENTLY IF NOT EXISTS"),
        "{sql}"
    );
    db.ok(&["migrate"]);
    let valid = query_strings(
        &db.url,
        "SELECT i.indisvalid::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = 'coaches_gym_id_email_full_name_idx'",
    );
    assert_eq!(valid, [[Some("true".to_string())]]);
    let shards = query_strings(
        &db.url,
        "SELECT bool_and(success AND result = 't')::text FROM run_command_on_shards('coaches', \
         $$SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = '%s'::regclass \
         AND indexrelid::regclass::text LIKE 'coaches_gym_id_email_full_name_idx%%'$$)",
    );
    assert_eq!(
        shards,
        [[Some("true".to_string())]],
        "every shard has the index"
    );
}

#[test]
fn citus_verify_finds_a_table_left_local_or_distributed_by_another_column() {
    let db = citus_db("distribution");
    db.with_two_gyms();
    // The plain target's static checks run on Citus too.
    let grant = format!("GRANT TRUNCATE ON members TO \"{}\"", db.roles.app);
    psql_exec(&db.url, &grant);
    let (code, text) = db.verify();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("grant.dangerous"), "{text}");
    for sql in [
        "ALTER TABLE members DROP CONSTRAINT members_home_coach_id_fkey",
        "ALTER TABLE members DROP CONSTRAINT members_tenant_fkey",
        "ALTER TABLE members DROP CONSTRAINT members_gym_id_email_key",
        "SELECT undistribute_table('members')",
        "SELECT create_distributed_table('members', 'id', colocate_with => 'none')",
    ] {
        psql_exec(&db.url, sql);
    }
    let (code, text) = db.verify();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("citus.distribution-column"), "{text}");
    assert!(text.contains("citus.colocation"), "{text}");
    psql_exec(&db.url, "SELECT undistribute_table('members');");
    let (code, text) = db.verify();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("citus.local-table"), "{text}");
}

#[test]
fn citus_verify_finds_a_shard_without_its_policy_on_a_worker() {
    let db = citus_db("shard_policy");
    db.with_two_gyms();
    // A shard of members on a worker that holds rows: its RLS off, as a hand edit there would.
    let shard = query_strings(
        &db.url,
        "SELECT shard_name('members'::regclass, s.shardid), p.nodeport::text \
         FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid) \
         JOIN pg_dist_node p ON p.groupid = pl.groupid \
         WHERE s.logicalrelid = 'members'::regclass \
         AND s.shardid = get_shard_id_for_distribution_column('members', (SELECT id FROM gyms ORDER BY slug LIMIT 1))",
    );
    let (name, port) = (shard[0][0].clone().unwrap(), shard[0][1].clone().unwrap());
    let worker = citus()
        .workers
        .iter()
        .find(|w| w.port.to_string() == port)
        .unwrap();
    psql_exec(
        &worker.url_for(&db.db.name),
        &format!("ALTER TABLE \"{name}\" NO FORCE ROW LEVEL SECURITY; ALTER TABLE \"{name}\" DISABLE ROW LEVEL SECURITY;"),
    );
    let (code, text) = db.verify();
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("citus.shard-policy"), "{text}");
    // The leak it opens: another gym's context (or none) reads that gym's rows.
    assert!(text.contains("citus.probe-foreign-rows"), "{text}");
    assert!(text.contains("citus.probe-no-context"), "{text}");
}

#[test]
fn citus_tenant_list_shows_nodes_and_isolate_gives_a_tenant_its_own_shard() {
    let db = citus_db("isolate");
    let [a, _] = db.with_two_gyms();
    let nodes: Vec<String> = citus()
        .workers
        .iter()
        .map(|w| format!("127.0.0.1:{}", w.port))
        .collect();
    let list: serde_json::Value =
        serde_json::from_str(&db.ok(&["--format", "json", "tenant", "list"])).unwrap();
    for t in list["tenants"].as_array().unwrap() {
        assert_eq!(t["rows"]["members"], 40, "{t}");
        let node = t["node"].as_str().unwrap();
        assert!(
            nodes.iter().any(|n| n == node),
            "{node} is not a worker: {nodes:?}"
        );
    }
    let shard_of = |table: &str| {
        query_strings(
            &db.url,
            &format!(
                "SELECT get_shard_id_for_distribution_column('{table}', id)::text FROM gyms WHERE slug = 'iron-a'"
            ),
        )[0][0]
            .clone()
            .unwrap()
    };
    let before = shard_of("members");
    let out: serde_json::Value =
        serde_json::from_str(&db.ok(&["--format", "json", "tenant", "isolate", "iron-a"])).unwrap();
    assert_eq!(out["id"].as_str(), Some(a.as_str()), "{out}");
    let after = shard_of("members");
    assert_ne!(
        before, after,
        "a new shard of members (co-located: CASCADE)"
    );
    // The shard printed is that of the first distributed table.
    assert_eq!(out["shard"].to_string(), shard_of("coaches"), "{out}");
    // The new shard holds iron-a's rows only, and isolation still holds.
    let rows = query_strings(
        &db.url,
        &format!("SELECT count(*)::text FROM members WHERE get_shard_id_for_distribution_column('members', gym_id) = {after}"),
    );
    assert_eq!(rows[0][0].as_deref(), Some("40"));
    let (code, text) = db.verify();
    assert_eq!(code, 0, "{text}");
    // Deleting a tenant cascades from the reference table to the shards.
    db.ok(&["tenant", "delete", "iron-b", "--yes"]);
    let left = query_strings(&db.url, "SELECT count(*)::text FROM members");
    assert_eq!(left[0][0].as_deref(), Some("40"));
}
