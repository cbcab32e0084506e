//! `run --dry-run` against the real broker and the simulator: each user command is looked up and
//! answered with `command.dry_run` saying what a real run would do, nothing changes in LastPass,
//! nothing is parked or recorded, and a real run later applies the same commands.

use crate::support::simulator::TestSim;
use crate::support::{Broker, Running, command, test_retry};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(15);

fn routing(ev: &Value) -> &str {
    ev["type"]
        .as_str()
        .unwrap()
        .strip_prefix("io.github.lastpass-connector.")
        .unwrap()
}

/// The simulator's calls that could change something, received or applied.
fn changing_calls(sim: &TestSim) -> (u64, u64, u64, usize) {
    let c = sim.handle.call_counts();
    (c.batchadd, c.deluser, c.enableuser, sim.calls().len())
}

#[tokio::test]
async fn a_dry_run_says_what_each_command_would_do_and_changes_nothing() {
    let (broker, sim, running, mut tap, dir) = crate::consumer::setup_with(
        &[
            ("enabled@example.com", false, false),
            ("leaver@example.com", false, true),
        ],
        |c| c.dry_run = true,
    )
    .await;
    let users_before = sim.users();

    let (provision_id, provision) = command("user.provision", "new.hire@example.com");
    let (suspend_id, suspend) = command("user.suspend", "enabled@example.com");
    let (deprovision_id, deprovision) = command("user.deprovision", "leaver@example.com");
    // (command id, command, account status now, what the real run would do)
    let cases = [
        (
            &provision_id,
            &provision,
            Value::Null,
            json!({"would_call": "batchadd", "outcome": "applied",
                "account_status": "Staged", "license_reclaimed": false,
                "invitation_pending": false}),
        ),
        (
            &suspend_id,
            &suspend,
            json!("Active"),
            json!({"would_call": "deluser", "deleteaction": 0, "outcome": "applied",
                "account_status": "Suspended", "license_reclaimed": false,
                "invitation_pending": false}),
        ),
        (
            &deprovision_id,
            &deprovision,
            json!("Staged"),
            json!({"would_call": "deluser", "deleteaction": 2, "outcome": "applied",
                "account_status": "Deprovisioned", "license_reclaimed": true,
                "invitation_pending": false}),
        ),
    ];
    for (_, cmd, _, _) in &cases {
        broker.send_json(cmd).await;
    }
    for (id, cmd, status_now, would) in &cases {
        // The tap checks every event against its schema (event.command.dry_run.json).
        let ev = tap.for_command(id, T).await;
        assert_eq!(routing(&ev), "command.dry_run", "{ev:#}");
        let d = &ev["data"];
        assert_eq!(d["command_type"], cmd["type"], "{ev:#}");
        assert_eq!(d["outcome"], "dry_run", "{ev:#}");
        assert_eq!(&d["account_status"], status_now, "{ev:#}");
        assert_eq!(d["license_reclaimed"], false, "{ev:#}");
        assert_eq!(d["correlation_id"], cmd["correlation_id"], "{ev:#}");
        assert_eq!(&d["dry_run"], would, "{ev:#}");
    }

    // Nothing changed in LastPass: not even a deluser that would have changed nothing.
    assert_eq!(changing_calls(&sim), (0, 0, 0, 0));
    assert!(
        sim.handle.call_counts().getuserdata >= 3,
        "each was looked up"
    );
    assert_eq!(sim.users(), users_before);
    // Nothing parked, nothing else published.
    assert!(
        broker
            .dead_letters(1, Duration::from_millis(300))
            .await
            .is_empty()
    );
    tap.expect_none(Duration::from_millis(300)).await;
    running.stop().await;

    // The same commands to a real run, on the same store: applied, since the dry run recorded
    // none of them as completed.
    let running = Running::start(broker.config(&sim, dir.path().to_path_buf(), test_retry())).await;
    for (_, cmd, _, _) in &cases {
        broker.send_json(cmd).await;
    }
    for (id, want) in [
        (&provision_id, "user.provisioned"),
        (&suspend_id, "user.suspended"),
        (&deprovision_id, "user.deprovisioned"),
    ] {
        let ev = tap.for_command(id, T).await;
        assert_eq!(
            (routing(&ev), ev["data"]["outcome"].as_str()),
            (want, Some("applied")),
            "{ev:#}"
        );
    }
    assert!(sim.user("new.hire@example.com").is_some());
    assert!(sim.user("enabled@example.com").unwrap().disabled);
    assert!(sim.user("leaver@example.com").is_none());
    assert_eq!(sim.calls().len(), 3);
    running.stop().await;
}

/// `CONNECTOR_DRY_RUN=true` on the binary, as an operator sets it: the start says so (warning),
/// and a command is answered with `command.dry_run`.
#[tokio::test]
async fn the_binary_in_dry_run_mode_by_environment_warns_and_changes_nothing() {
    let sim = TestSim::start().await;
    sim.add("enabled@example.com", false, false);
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let (id, cmd) = command("user.suspend", "enabled@example.com");
    broker.send_json(&cmd).await;
    let mut child = broker
        .connector_process(&sim, dir.path())
        .env("CONNECTOR_DRY_RUN", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ev = tap.for_command(&id, Duration::from_secs(30)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the connector did not exit within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(routing(&ev), "command.dry_run", "{ev:#}");
    assert_eq!(ev["data"]["dry_run"]["would_call"], "deluser");
    assert!(!sim.user("enabled@example.com").unwrap().disabled);
    assert_eq!(changing_calls(&sim), (0, 0, 0, 0));
    let warning = log
        .lines()
        .find(|l| l.contains("dry-run mode"))
        .unwrap_or_else(|| panic!("no dry-run warning in:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        log.lines()
            .any(|l| l.contains("starting") && l.contains("dry_run=true")),
        "{log}"
    );
}

#[test]
fn a_malformed_connector_dry_run_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lastpass-connector"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "text")
        .env("LASTPASS_CID", "123")
        .env("LASTPASS_PROVHASH", "x")
        .env("CONNECTOR_STATE_DIR", dir.path())
        .env("CONNECTOR_DRY_RUN", "maybe")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CONNECTOR_DRY_RUN"), "{stderr}");
}
