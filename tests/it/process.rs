//! The binary as an operator runs it: configuration errors exit 2 naming the value, and SIGTERM
//! with commands in flight exits 0 in time and loses none.

use crate::support::simulator::{self as sim, TestSim};
use crate::support::{Broker, Running, command, test_retry};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lastpass-connector"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "text");
    c
}

fn run_expecting_exit_2(envs: &[(&str, &str)], names: &str) {
    let out = bin()
        .arg("run")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for {envs:?}: {stderr}"
    );
    assert!(stderr.contains(names), "{names} named in: {stderr}");
    assert!(!stderr.contains("s3cr3t-value"), "secret leaked: {stderr}");
}

#[test]
fn a_missing_or_malformed_setting_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let base = [
        ("LASTPASS_PROVHASH", "s3cr3t-value"),
        ("CONNECTOR_STATE_DIR", state),
    ];
    run_expecting_exit_2(&base, "LASTPASS_CID");
    run_expecting_exit_2(
        &[("LASTPASS_CID", "123"), ("CONNECTOR_STATE_DIR", state)],
        "LASTPASS_PROVHASH",
    );
    let with = |k: &'static str, v: &'static str| {
        let mut e = base.to_vec();
        e.push(("LASTPASS_CID", "123"));
        e.push((k, v));
        e
    };
    run_expecting_exit_2(
        &with("CONNECTOR_CONCURRENCY", "lots"),
        "CONNECTOR_CONCURRENCY",
    );
    run_expecting_exit_2(&with("CONNECTOR_CONCURRENCY", "0"), "CONNECTOR_CONCURRENCY");
    run_expecting_exit_2(&with("CONNECTOR_PREFIX", "has space"), "CONNECTOR_PREFIX");
    run_expecting_exit_2(
        &with("CONNECTOR_LEDGER_RETENTION", "forever"),
        "CONNECTOR_LEDGER_RETENTION",
    );
    // Too large to be a duration: a parse error, never an overflow panic or a wrapped value.
    run_expecting_exit_2(
        &with("CONNECTOR_LEDGER_RETENTION", "999999999999999d"),
        "CONNECTOR_LEDGER_RETENTION",
    );
    run_expecting_exit_2(
        &with("CONNECTOR_RETRY_DELAYS", "1s,3700d"),
        "CONNECTOR_RETRY_DELAYS",
    );
    run_expecting_exit_2(&with("AMQP_URL", "http://wrong"), "AMQP_URL");
    // A malformed URL is a configuration error, not an endless reconnect loop.
    run_expecting_exit_2(
        &with("AMQP_URL", "amqp://guest:guest@127.0.0.1:99999/%2f"),
        "AMQP_URL",
    );
    run_expecting_exit_2(
        &with("LASTPASS_API_URL", "https://exa mple.com/"),
        "LASTPASS_API_URL",
    );
    // Plain http to a host that is not loopback would send the provhash in clear text.
    run_expecting_exit_2(
        &with(
            "LASTPASS_API_URL",
            "http://lastpass.example/enterpriseapi.php",
        ),
        "LASTPASS_API_URL",
    );
    // Secrets are never flags.
    let out = bin()
        .args(["run", "--lastpass-provhash", "s3cr3t-value"])
        .envs(with("CONNECTOR_PREFIX", "p"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--lastpass-provhash"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-value"), "{stderr}");
    run_expecting_exit_2(
        &with("LASTPASS_PROVHASH_FILE", "/nonexistent/provhash"),
        "LASTPASS_PROVHASH_FILE",
    );
    let mut bad_cid = base.to_vec();
    bad_cid.push(("LASTPASS_CID", "12ab"));
    run_expecting_exit_2(&bad_cid, "LASTPASS_CID");
}

/// A consumer task that panics (debug builds have a switch for it) must not leave a process up
/// that consumes nothing: `run` exits non-zero at once, so a supervisor restarts it.
#[tokio::test]
async fn a_consumer_that_panics_makes_the_process_exit_non_zero() {
    let sim = TestSim::start().await;
    let broker = Broker::new(&test_retry()).await;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = broker
        .connector_process(&sim, dir.path())
        .env("LPC_DEBUG_PANIC_IN_CONSUMER", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("the connector was still running 5 s after its consumer panicked");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}: {stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("consumer task panicked"), "{stderr}");
}

#[tokio::test]
async fn sigterm_with_commands_in_flight_loses_none() {
    let sim = TestSim::start().await;
    let n = 16;
    for i in 0..n {
        sim.add(&format!("term{i}@example.com"), false, false);
    }
    // Slow LastPass, so commands are in flight when the signal comes.
    sim.faults(sim::FaultsPatch {
        latency_ms: Some(300),
        ..Default::default()
    });
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let (id, cmd) = command("user.suspend", &format!("term{i}@example.com"));
        broker.send_json(&cmd).await;
        ids.push(id);
    }
    let mut child = broker
        .connector_process(&sim, dir.path())
        .env("CONNECTOR_CONCURRENCY", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first results, then signal while others are in flight.
    let early = tap.take(2, Duration::from_secs(20)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let signalled = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "exit within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status:?}; log:\n{log}"
    );
    assert!(
        !log.contains(&sim.provhash()),
        "provhash leaked into the log"
    );
    let done_before = sim.mutations("deluser");
    assert!(
        done_before < n,
        "the test signalled while commands were still waiting"
    );

    // A new instance picks up the rest; every command ends with exactly one effect.
    sim.faults(sim::FaultsPatch {
        latency_ms: Some(0),
        ..Default::default()
    });
    let running = Running::start(broker.config(&sim, dir.path().to_path_buf(), test_retry())).await;
    let early_ids: Vec<&str> = early
        .iter()
        .map(|e| e["data"]["command_id"].as_str().unwrap())
        .collect();
    for id in ids.iter().filter(|id| !early_ids.contains(&id.as_str())) {
        tap.for_command(id, Duration::from_secs(20)).await;
    }
    for i in 0..n {
        assert!(sim.user(&format!("term{i}@example.com")).unwrap().disabled);
    }
    assert_eq!(
        sim.mutations("deluser"),
        n,
        "one deluser per command, none lost, none twice"
    );
    running.stop().await;
}

/// `lastpass-connector simulator` as a newcomer starts it, asked the way curl would ask.
#[tokio::test]
async fn the_simulator_subcommand_answers_like_lastpass() {
    use std::io::{BufRead, BufReader};
    let mut child = bin()
        .args([
            "simulator",
            "--addr",
            "127.0.0.1:0",
            "--users",
            "100",
            "--cid",
            "1234",
            "--provhash",
            "x",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.post(url).body(body.to_string()).send().await.unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (r.status().as_u16(), ct, r.text().await.unwrap())
        }
    };
    let (status, ct, body) = post(serde_json::json!({"cid": 1234, "provhash": "x",
        "cmd": "getuserdata", "data": {"pagesize": 100, "pageindex": 0}}))
    .await;
    assert_eq!((status, ct.as_str()), (200, "text/xml;charset=UTF-8"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 100);
    let users = v["Users"].as_object().unwrap();
    assert!(users.keys().all(|k| k.parse::<u64>().is_ok()), "uid keys");
    let never: Vec<_> = users
        .values()
        .filter(|u| u["neverloggedin"] == true)
        .collect();
    assert!(!never.is_empty());
    assert!(
        never
            .iter()
            .all(|u| u["last_login"] == "" && u["sites"].is_null())
    );

    let (status, ct, body) = post(serde_json::json!({"cid": 1234, "provhash": "wrong",
        "cmd": "getuserdata", "data": {}}))
    .await;
    assert_eq!((status, ct.as_str()), (200, "text/xml;charset=UTF-8"));
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<lastpass rc=\"Authorization Error\"/>\n"
    );

    let (status, _, body) = post(serde_json::json!({"cid": 1234, "provhash": "x",
        "cmd": "getuserdata", "data": {"username": "nobody@example.com"}}))
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Users"], serde_json::json!([]));
    let _ = child.kill();
    let _ = child.wait();
}
