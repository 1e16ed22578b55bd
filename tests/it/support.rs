//! Test helpers on top of the harness: a project per test, and a blocking Postgres session that
//! can impersonate the app and admin roles inside transactions.

use std::path::{Path, PathBuf};

use tokio_postgres::{Client, NoTls};

use crate::harness::TestDb;

/// Repository root (the shipped project lives there).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The physical role names a test's project uses (roles are cluster-wide).
pub struct Roles {
    pub app: String,
    pub admin: String,
    pub owner: String,
}

impl Roles {
    pub fn for_db(db: &TestDb) -> Roles {
        Roles {
            app: format!("{}gym_app", db.role_prefix),
            admin: format!("{}platform_admin", db.role_prefix),
            owner: format!("{}gym_owner", db.role_prefix),
        }
    }
}

/// Copy the shipped policies (and optionally the sessions/bookings fixtures) into the test's
/// project directory, with a tenantctl.toml that maps the roles to the test's unique names.
pub fn write_project(db: &TestDb, with_fixtures: bool) -> PathBuf {
    let dir = db.project.path().to_path_buf();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    copy_dir(&repo().join("policies"), &dir.join("policies"));
    if with_fixtures {
        copy_dir(
            &repo().join("tests/fixtures/policies"),
            &dir.join("policies"),
        );
    }
    let p = &db.role_prefix;
    std::fs::write(
        dir.join("tenantctl.toml"),
        format!(
            "[database]\nurl = \"{}\"\nlock_timeout = \"10s\"\nstatement_timeout = \"1min\"\n\n\
             [role_names]\ngym_app = \"{p}gym_app\"\nplatform_admin = \"{p}platform_admin\"\ngym_owner = \"{p}gym_owner\"\n",
            db.url
        ),
    )
    .unwrap();
    dir
}

/// A copy of the project in `from` (tenantctl.toml, policies/, migrations/) in a new directory,
/// for a test that changes its configuration or adds a policy file without touching the original.
pub fn copy_project(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        from.join("tenantctl.toml"),
        dir.path().join("tenantctl.toml"),
    )
    .unwrap();
    for sub in ["policies", "migrations"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        copy_dir(&from.join(sub), &dir.path().join(sub));
    }
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Run `generate` then `migrate` in the project; panic with the output on failure.
pub fn generate_and_migrate(dir: &Path) {
    for args in [&["generate"][..], &["migrate"][..]] {
        let out = crate::harness::tenantctl(dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "tenantctl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A blocking session on one connection.
pub struct Pg {
    rt: tokio::runtime::Runtime,
    pub client: Client,
}

pub type Rows = Vec<Vec<Option<String>>>;

impl Pg {
    pub fn connect(url: &str) -> Pg {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        });
        Pg { rt, client }
    }

    pub fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.rt.block_on(self.client.batch_execute(sql))
    }

    /// Rows of one statement, every value in its text form (simple query protocol).
    pub fn rows(&mut self, sql: &str) -> Result<Rows, tokio_postgres::Error> {
        let messages = self.rt.block_on(self.client.simple_query(sql))?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    pub fn one(&mut self, sql: &str) -> String {
        self.rows(sql).unwrap()[0][0].clone().unwrap_or_default()
    }

    /// Run `sql` inside a transaction as `role`, with the tenant context set (when `gym` is
    /// Some) by `set_config(..., true)` as an application would, then roll back.
    pub fn as_role(
        &mut self,
        role: &str,
        gym: Option<&str>,
        sql: &str,
    ) -> Result<Rows, tokio_postgres::Error> {
        self.batch("BEGIN")?;
        let result = (|| {
            self.batch(&format!("SET LOCAL ROLE \"{role}\""))?;
            if let Some(g) = gym {
                self.rt.block_on(
                    self.client
                        .execute("SELECT set_config('tenantctl.gym_id', $1, true)", &[&g]),
                )?;
            }
            self.rows(sql)
        })();
        self.batch("ROLLBACK")?;
        result
    }
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no code: {e}"))
}

/// The password in a postgres URL (to check that output never shows it).
pub fn password_of(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let userinfo = after_scheme.split_once('@').map_or("", |(u, _)| u);
    let password = userinfo.split_once(':').map_or("", |(_, p)| p);
    assert!(
        password.len() >= 8,
        "test URLs carry a real password: {url}"
    );
    password.to_string()
}

/// Run tenantctl in `dir`: exit code, stdout, stderr.
pub fn output(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = crate::harness::tenantctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}
