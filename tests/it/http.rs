//! The operator's HTTP endpoints on the real binary: `/readyz` follows the broker connection
//! and the credentials, `/metrics` is valid Prometheus text whose command counter moves.

use crate::consumer::close_connection_named;
use crate::support::simulator::TestSim;
use crate::support::{Broker, command, test_retry};
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Connector {
    child: Child,
    base: String,
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(broker: &Broker, sim: &TestSim, dir: &std::path::Path) -> Connector {
    let port = free_port();
    let child = broker
        .connector_process(sim, dir)
        .env("CONNECTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = Connector {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    assert!(
        wait_for(&c.base, |code, _| code == 200, Duration::from_secs(20)).await,
        "never ready"
    );
    c
}

async fn get(base: &str, path: &str) -> Option<(u16, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::get(format!("{base}{path}")).await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

/// Polls `/readyz` until `want(status, body)` or the timeout.
async fn wait_for(base: &str, want: impl Fn(u16, &Value) -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((code, body)) = get(base, "/readyz").await {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if want(code, &v) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn has_reason(v: &Value, reason: &str) -> bool {
    v["reasons"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x == reason))
}

#[tokio::test]
async fn readyz_follows_the_broker_connection_and_the_credentials() {
    let sim = TestSim::start().await;
    sim.add("a@example.com", false, false);
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let c = start(&broker, &sim, dir.path()).await;
    assert_eq!(get(&c.base, "/healthz").await.unwrap().0, 200);

    // The broker connection is cut: not ready (broker_disconnected) until it reconnects.
    let name = format!("lastpass-connector {} pid", broker.prefix());
    let watcher = {
        let base = c.base.clone();
        tokio::spawn(async move {
            wait_for(
                &base,
                |code, v| code == 503 && has_reason(v, "broker_disconnected"),
                Duration::from_secs(10),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        close_connection_named(&name),
        "closed the connector's connection"
    );
    assert!(
        watcher.await.unwrap(),
        "503 broker_disconnected while reconnecting"
    );
    assert!(
        wait_for(&c.base, |code, _| code == 200, Duration::from_secs(20)).await,
        "ready again after reconnecting"
    );

    // The provhash is rotated: not ready (credentials_refused) until it works again.
    let old = sim.provhash();
    sim.rotate("rotated-provhash");
    let (id, cmd) = command("user.suspend", "a@example.com");
    broker.send_json(&cmd).await;
    assert!(
        wait_for(
            &c.base,
            |code, v| code == 503 && has_reason(v, "credentials_refused"),
            Duration::from_secs(20)
        )
        .await,
        "503 credentials_refused"
    );
    sim.rotate(&old);
    assert!(
        wait_for(&c.base, |code, _| code == 200, Duration::from_secs(40)).await,
        "ready again once the credentials work"
    );
    assert_eq!(
        tap.for_command(&id, Duration::from_secs(40)).await["data"]["outcome"],
        "applied"
    );
}

fn commands_counter(metrics: &str, kind: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("lastpass_connector_commands_total{")
                && l.contains(&format!("type=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_the_command_counter_moves() {
    let sim = TestSim::start().await;
    sim.add("m@example.com", false, false);
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let c = start(&broker, &sim, dir.path()).await;
    // The container HEALTHCHECK's command.
    let port = c.base.rsplit(':').next().unwrap().to_string();
    let hc = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lastpass-connector"))
            .args([
                "healthcheck",
                "--ready",
                "--http-addr",
                &format!("0.0.0.0:{port}"),
            ])
            .env_clear()
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        hc.status.success(),
        "{}",
        String::from_utf8_lossy(&hc.stderr)
    );
    let before = get(&c.base, "/metrics").await.unwrap().1;
    let (id, cmd) = command("user.suspend", "m@example.com");
    broker.send_json(&cmd).await;
    tap.for_command(&id, Duration::from_secs(20)).await;
    let (code, after) = get(&c.base, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        commands_counter(&after, "user.suspend") - commands_counter(&before, "user.suspend"),
        1.0,
        "{after}"
    );
    for name in [
        "lastpass_connector_lastpass_calls_total",
        "lastpass_connector_lastpass_call_duration_seconds",
        "lastpass_connector_command_duration_seconds",
        "lastpass_connector_build_info",
        "lastpass_connector_ready",
    ] {
        assert!(after.contains(name), "{name} in {after}");
    }
    // Prometheus's own parser (promtool, from Debian's `prometheus` package) accepts it.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed: apt-get install prometheus (.ci/run installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
