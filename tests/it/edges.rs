//! The rough edges a newcomer hits: completions, the man page, hints on stderr, where the project
//! is found.

use crate::harness::tenantctl;

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
