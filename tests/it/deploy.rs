//! The deployment files are accepted by the tools that read them: Prometheus's `promtool` for
//! the alerting rules, `docker-compose config` for the compose file (both from Debian; `.ci/run`
//! installs them when missing; no Docker engine is needed).

use std::process::Command;

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is needed: apt-get install prometheus docker-compose ({e})")
        })
}

#[test]
fn the_alerting_rules_pass_promtool() {
    let out = run("promtool", &["check", "rules", "deploy/alerts.yml"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_is_valid() {
    let out = run("docker-compose", &["config", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
