//! The rough edges a newcomer hits: completions, the man page, hints on stderr, where the project
//! is found.

use crate::harness::{tenantctl, test_db};
use crate::support::write_project;

fn run_ok(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = tenantctl(dir.path()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tenantctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        // Outside any project: completions describe the command line, not a project.
        let script = run_ok(&["completions", shell]);
        for sub in ["migrate", "verify", "generate", "completions"] {
            assert!(
                script.contains(sub),
                "{shell} completions name `{sub}`:\n{script}"
            );
        }
    }
    assert!(run_ok(&["completions", "zsh"]).starts_with("#compdef tenantctl"));
    assert!(run_ok(&["completions", "fish"]).contains("complete -c tenantctl"));
}

#[test]
fn man_page_is_roff_naming_the_subcommands() {
    let page = run_ok(&["man"]);
    assert!(page.contains(".TH tenantctl 1"), "{page}");
    for sub in ["init", "migrate", "status", "verify", "dev"] {
        assert!(
            page.contains(&format!("tenantctl\\-{sub}(1)")),
            "man page names `{sub}`:\n{page}"
        );
    }
}

#[test]
fn verify_on_a_never_migrated_database_reports_pending_migrations() {
    let db = test_db("verify_unmigrated");
    let dir = write_project(&db, false);
    let gen = tenantctl(&dir).arg("generate").output().unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let files = std::fs::read_dir(dir.join("migrations"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with('V') && name.ends_with(".sql")
        })
        .count();
    assert!(files > 0);

    let out = tenantctl(&dir)
        .args(["--format", "json", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a finding, not a failure:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "{files} migrations pending: run `tenantctl migrate`"
        )),
        "{stdout}"
    );
    assert!(!stderr.contains("does not exist"), "{stderr}");

    let out = tenantctl(&dir)
        .args(["verify", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["passed"], serde_json::Value::Bool(false), "{json}");
    let failing: Vec<&str> = json["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "fail")
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(failing, ["drift.unmigrated"], "{json}");

    // Once migrated, the same command verifies as usual.
    let migrate = tenantctl(&dir).arg("migrate").output().unwrap();
    assert!(migrate.status.success());
    let out = tenantctl(&dir).arg("verify").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_project_is_found_from_a_subdirectory() {
    let db = test_db("config_walk_up");
    let dir = write_project(&db, false);
    let sub = dir.join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();

    // generate from two levels down writes beside the found tenantctl.toml, not in src/deep.
    let out = tenantctl(&sub).arg("generate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Vec<_> = std::fs::read_dir(dir.join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    assert!(!written.is_empty(), "migrations/ beside tenantctl.toml");
    assert!(!sub.join("migrations").exists());

    // migrate and status use the found file's database URL and migrations.
    let out = tenantctl(&sub).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tenantctl(&sub)
        .args(["status", "--check"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // --config still names the file exactly: a directory without one is no project.
    let out = tenantctl(&sub)
        .args(["--config", "tenantctl.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenantctl.toml found"));
}

/// `exec` with neither mode names both, and says it in clap's words before any connection.
#[test]
fn exec_without_a_mode_names_both_modes() {
    let dir = std::env::temp_dir();
    let out = tenantctl(&dir).args(["exec", "SELECT 1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--tenant <SLUG>|--admin"),
        "both modes are named: {stderr}"
    );
}
