//! `tenantctl init`: scaffold a project (config, the gym platform's policies, migrations/).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::Outcome;

/// The shipped project files, embedded from the repository so that `init` and the repo never differ.
const FILES: &[(&str, &str)] = &[
    ("tenantctl.toml", include_str!("../../tenantctl.toml")),
    (
        "policies/tenancy.toml",
        include_str!("../../policies/tenancy.toml"),
    ),
    (
        "policies/gyms.toml",
        include_str!("../../policies/gyms.toml"),
    ),
    (
        "policies/coaches.toml",
        include_str!("../../policies/coaches.toml"),
    ),
    (
        "policies/members.toml",
        include_str!("../../policies/members.toml"),
    ),
    (".gitignore", ".tenantctl/\n"),
];

pub fn run(dir: &Path) -> Result<Outcome> {
    if dir.join("tenantctl.toml").exists() {
        bail!(
            "{} already holds a tenantctl.toml\n  hint: init scaffolds a new project; pick an empty directory",
            dir.display()
        );
    }
    for (rel, _) in FILES {
        let path = dir.join(rel);
        if path.exists() && *rel != ".gitignore" {
            bail!(
                "{} already exists; init never overwrites files",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir.join("policies"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("migrations"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (rel, text) in FILES {
        let path = dir.join(rel);
        if path.exists() {
            continue;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let shown = dir.display();
    eprintln!(
        "Created a tenantctl project in {shown}: tenantctl.toml, policies/ (gyms, coaches, members), migrations/.\n\
         Next:\n  cd {shown}\n  tenantctl plan        # see the SQL\n  tenantctl generate    # write migrations/V1__initial.sql\n  tenantctl migrate     # apply it (embedded local database unless a URL is given)"
    );
    Ok(Outcome::Clean)
}
