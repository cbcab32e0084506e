//! Puts the git commit into the binary (the start line and `lastpass_connector_build_info`).
//! `LPC_GIT_COMMIT` overrides it (a Docker build has no `.git`).

fn main() {
    println!("cargo:rerun-if-env-changed=LPC_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("LPC_GIT_COMMIT").ok().or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    println!(
        "cargo:rustc-env=LPC_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
