//! The project: `tenantctl.toml`, the directories beside it, and which database to use, resolved
//! from flags, environment and config without side effects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::pg::Target;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Physical names for the roles that the policies declare (`gym_app = "staging_gym_app"`).
    /// Roles are cluster-wide: this lets two projects or test runs share one cluster.
    #[serde(default)]
    pub role_names: BTreeMap<String, String>,
    #[serde(default)]
    pub verify: VerifyConfig,
    #[serde(default)]
    pub target: TargetConfig,
}

/// `[target]`: which database the policies compile to (docs/citus.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// "postgres" (the default) or "citus".
    #[serde(default)]
    pub kind: crate::model::Backend,
}

/// `[verify]`: what the gate runs besides its own connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// The application's login through the transaction pooler, for the pooler leak probe
    /// (`--pooled-url` overrides it).
    pub pooled_url: Option<String>,
    /// The application's own login, for the probes (`--app-url` and `TENANTCTL_APP_URL`
    /// override it).
    pub app_url: Option<String>,
    /// The statement timeout of every probe, e.g. "30s" (`--probe-timeout` overrides it).
    pub probe_timeout: Option<String>,
    /// The operator roles (the role that migrates, the role verify connects as, ...): members of
    /// the app role that sit outside the application's reach. The connecting role always is one.
    #[serde(default)]
    pub operators: Vec<String>,
    /// The managed platform whose own roles, extensions and settings verify recognises
    /// (`"neon"` or `"postgres"`); unset: detected from the database.
    pub platform: Option<Platform>,
}

/// `[verify] platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Postgres,
    Neon,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    #[serde(default = "default_migrations")]
    pub migrations: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            policies: default_policies(),
            migrations: default_migrations(),
        }
    }
}

fn default_policies() -> PathBuf {
    "policies".into()
}
fn default_migrations() -> PathBuf {
    "migrations".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Used when neither --database-url nor $DATABASE_URL is given.
    pub url: Option<String>,
    /// Postgres `lock_timeout` for each migration (a Postgres interval: "10s", "1min").
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: String,
    /// Postgres `statement_timeout` for each migration statement.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            lock_timeout: default_lock_timeout(),
            statement_timeout: default_statement_timeout(),
        }
    }
}

fn default_lock_timeout() -> String {
    "10s".into()
}
fn default_statement_timeout() -> String {
    "15min".into()
}

/// A loaded project: the config and the directory it lives in.
#[derive(Debug, Clone)]
pub struct Project {
    pub config_path: PathBuf,
    pub root: PathBuf,
    pub config: Config,
    /// False when no config file exists (only `init` and `dev` work then).
    pub exists: bool,
}

/// The project file's name, looked for in the current directory and its parents.
pub const CONFIG_FILE: &str = "tenantctl.toml";

impl Project {
    /// The project of `--config PATH`; without it, the `tenantctl.toml` of the current directory
    /// or of the nearest parent directory that has one (like git and cargo), named relative to the
    /// current directory (`../tenantctl.toml`) so that printed paths stay short. With none
    /// anywhere: the absent `./tenantctl.toml`, which `require` reports.
    pub fn find(config_path: Option<&Path>) -> Result<Project> {
        if let Some(path) = config_path {
            return Project::load(path);
        }
        let here = std::env::current_dir().context("cannot read the current directory")?;
        let mut relative = PathBuf::new();
        for dir in here.ancestors() {
            if dir.join(CONFIG_FILE).is_file() {
                return Project::load(&relative.join(CONFIG_FILE));
            }
            relative.push("..");
        }
        Project::load(Path::new(CONFIG_FILE))
    }

    pub fn load(config_path: &Path) -> Result<Project> {
        let root = match config_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !config_path.exists() {
            return Ok(Project {
                config_path: config_path.to_path_buf(),
                root,
                config: Config::default(),
                exists: false,
            });
        }
        let text = std::fs::read_to_string(config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(crate::policy::toml_error_message(config_path, &text, &e))
        })?;
        Ok(Project {
            config_path: config_path.to_path_buf(),
            root,
            config,
            exists: true,
        })
    }

    /// Fail with a teaching message when there is no project here.
    pub fn require(&self) -> Result<()> {
        if !self.exists {
            bail!(
                "no {} found\n  hint: run `tenantctl init` to scaffold a project here, or pass --config PATH",
                self.config_path.display()
            );
        }
        Ok(())
    }

    /// The compiled policies of this project.
    pub fn schema(&self) -> Result<crate::model::Schema, crate::policy::PolicyErrors> {
        let mut schema = crate::policy::load(
            &self.policies_dir(),
            &self.config.paths.policies,
            &self.config.role_names,
        )?;
        schema.target = self.config.target.kind;
        Ok(schema)
    }

    pub fn policies_dir(&self) -> PathBuf {
        self.path(&self.config.paths.policies)
    }

    pub fn migrations_dir(&self) -> PathBuf {
        self.path(&self.config.paths.migrations)
    }

    /// A path relative to the project root, shown without a leading `./`.
    fn path(&self, rel: &Path) -> PathBuf {
        if self.root == Path::new(".") {
            rel.to_path_buf()
        } else {
            self.root.join(rel)
        }
    }

    pub fn dev_dir(&self) -> PathBuf {
        self.root.join(".tenantctl")
    }

    /// Resolve which database to use: flag, then $DATABASE_URL, then the config file, then the
    /// embedded local cluster. With $CI set, a missing URL is an error: a gate must never pass
    /// against an empty local database by accident. Pure: announcing and starting the embedded
    /// cluster is the command's job.
    pub fn database(&self, flag: Option<&str>) -> Result<Database> {
        let given = flag
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
            .or_else(|| {
                let url = self.config.database.url.as_deref();
                url.filter(|u| !u.is_empty()).map(str::to_string)
            });
        if let Some(url) = given {
            return Ok(Database::Target(Box::new(Target::parse(&url)?)));
        }
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            bail!(
                "no database URL, and $CI is set so the embedded local database is not used\n  \
                 hint: pass --database-url, set DATABASE_URL, or set [database].url in {}",
                self.config_path.display()
            );
        }
        Ok(Database::Embedded(self.dev_dir()))
    }
}

/// Where a command connects: what the settings resolved to.
#[derive(Debug, Clone)]
pub enum Database {
    /// A connection string given by flag, $DATABASE_URL or the config file.
    Target(Box<Target>),
    /// None given: the embedded local cluster with its data in this directory.
    Embedded(PathBuf),
}
