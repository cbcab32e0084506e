//! `lastpass-connector demo`: the newcomer's one command once RabbitMQ is up. The simulator in
//! process, the connector under a fresh prefix, then a provision, a suspend, a deprovision, a
//! duplicate, an invalid message and a sync, each result printed as a table row; exits 0 when
//! every result is the expected one, and removes what it declared.

use super::{BrokerArgs, ToolFailure, connect, event_line};
use crate::amqp::{ReceivedEvent, TopologyOptions};
use crate::config::Config;
use crate::simulator::{SimUserSpec, Simulator, SimulatorConfig};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// How long to wait for each result.
    #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

struct Step {
    what: &'static str,
    routing_key: &'static str,
    body: Vec<u8>,
    command_id: String,
    expect: (&'static str, &'static str),
}

fn step(what: &'static str, command: Value, expect: (&'static str, &'static str)) -> Step {
    Step {
        what,
        routing_key: match command["type"].as_str() {
            Some("user.provision") => "user.provision",
            Some("user.suspend") => "user.suspend",
            Some("user.deprovision") => "user.deprovision",
            _ => "users.sync",
        },
        command_id: command["command_id"].as_str().unwrap_or("").to_string(),
        body: command.to_string().into_bytes(),
        expect,
    }
}

/// Runs the demo. Whatever ends it (its end, a failure, SIGINT or SIGTERM through `stop`), the
/// connector is stopped, then the prefix's queues and exchanges are deleted, the simulator
/// stopped and the temporary state removed.
pub async fn demo(args: DemoArgs, stop: CancellationToken) -> Result<(), ToolFailure> {
    let sim = Simulator::start_local(SimulatorConfig::default())
        .await
        .map_err(|e| ToolFailure::Outcome(format!("cannot start the simulator: {e}")))?;
    for (email, last_login) in [
        ("ada@example.com", "2026-11-20 09:30:00"),
        ("grace@example.com", "2026-11-21 10:00:00"),
    ] {
        sim.add_user(SimUserSpec::active(email, last_login))
            .map_err(|e| ToolFailure::Outcome(format!("simulator: {e:?}")))?;
    }
    let state = tempfile_dir()?;
    let provhash_file = state.join("provhash");
    std::fs::write(&provhash_file, sim.provhash())
        .map_err(|e| ToolFailure::Outcome(format!("{}: {e}", provhash_file.display())))?;
    let prefix = format!("demo-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let config = Config::parse_from([
        "--lastpass-api-url".to_string(),
        sim.api_url(),
        "--lastpass-cid".into(),
        sim.cid(),
        "--lastpass-provhash-file".into(),
        provhash_file.display().to_string(),
        "--prefix".into(),
        prefix.clone(),
        "--state-dir".into(),
        state.join("state").display().to_string(),
        "--retry-delays".into(),
        "1s".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
    ])
    .map_err(|e| ToolFailure::Usage(e.to_string()))?;
    let delays = config.retry.round_delays.clone();
    let broker = match connect(
        &BrokerArgs {
            prefix: prefix.clone(),
        },
        "demo",
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&state);
            return Err(e);
        }
    };
    let connector_stop = CancellationToken::new();
    let mut connector = None;
    let outcome = tokio::select! {
        r = steps(&args, &broker, &sim, config, &prefix, &connector_stop, &mut connector) => r,
        _ = stop.cancelled() => Err(ToolFailure::Interrupted),
    };
    connector_stop.cancel();
    let stopped = match connector.take() {
        Some(task) => Some(task.await),
        None => None,
    };
    let cleanup = broker.delete_topology(&delays).await;
    broker.close().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
    let mut failures = outcome?;
    cleanup?;
    match stopped {
        Some(Ok(Ok(()))) | None => {}
        Some(Ok(Err(e))) => failures.push(format!("the connector failed: {e}")),
        Some(Err(e)) => failures.push(format!("the connector task failed: {e}")),
    }
    if failures.is_empty() {
        println!("demo complete: every command answered as expected; prefix {prefix} removed");
        Ok(())
    } else {
        Err(ToolFailure::Outcome(failures.join("; ")))
    }
}

type ConnectorTask = tokio::task::JoinHandle<Result<(), crate::RunError>>;

/// Declares the topology, starts the connector (its task in `connector`), publishes each step
/// and checks its result; returns what went wrong.
async fn steps(
    args: &DemoArgs,
    broker: &crate::amqp::ToolBroker,
    sim: &crate::simulator::SimulatorHandle,
    config: Config,
    prefix: &str,
    connector_stop: &CancellationToken,
    connector: &mut Option<ConnectorTask>,
) -> Result<Vec<String>, ToolFailure> {
    broker
        .declare(&TopologyOptions {
            delivery_limit: config.delivery_limit,
            retry_delays: config.retry.round_delays.clone(),
        })
        .await?;
    let events = broker.follow_events().await?;
    *connector = Some(tokio::spawn(crate::run(config, connector_stop.clone())));

    println!(
        "simulator at {} (cid {}), connector under prefix {prefix}",
        sim.api_url(),
        sim.cid()
    );
    let id = || Uuid::new_v4().to_string();
    let suspend_id = id();
    let steps = vec![
        step(
            "provision a new person",
            json!({"command_id": id(), "type": "user.provision",
            "user": {"email": "new.hire@example.com", "first_name": "New", "last_name": "Hire"}}),
            ("user.provisioned", "applied"),
        ),
        step(
            "suspend ada",
            json!({"command_id": suspend_id, "type": "user.suspend",
            "user": {"email": "ada@example.com"}}),
            ("user.suspended", "applied"),
        ),
        step(
            "the same suspend again (a duplicate)",
            json!({"command_id": suspend_id,
            "type": "user.suspend", "user": {"email": "ada@example.com"}}),
            ("user.suspended", "applied"),
        ),
        step(
            "deprovision grace",
            json!({"command_id": id(), "type": "user.deprovision",
            "user": {"email": "grace@example.com"}}),
            ("user.deprovisioned", "applied"),
        ),
        step(
            "an invalid message (no email)",
            json!({"command_id": id(), "type": "user.suspend",
            "user": {}}),
            ("command.rejected", "rejected"),
        ),
        step(
            "a sync of every account",
            json!({"command_id": id(), "type": "users.sync"}),
            ("users.sync.completed", ""),
        ),
    ];
    let mut events = std::pin::pin!(events);
    let mut failures = Vec::new();
    println!("{:<38} result", "step");
    for s in &steps {
        broker.publish_command(s.routing_key, &s.body, &[]).await?;
        let found = tokio::time::timeout(args.timeout, async {
            while let Some(e) = events.next().await {
                if is_result_of(&e, &s.command_id) {
                    return Some(e);
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        match found {
            Some(e) => {
                let v: Value = serde_json::from_slice(&e.body).unwrap_or_default();
                let outcome = v["data"]["outcome"].as_str().unwrap_or("");
                let ok =
                    e.routing_key == s.expect.0 && (s.expect.1.is_empty() || outcome == s.expect.1);
                println!("{:<38} {}", s.what, event_line(&e.routing_key, &e.body));
                if !ok {
                    failures.push(format!(
                        "{}: expected {} {}",
                        s.what, s.expect.0, s.expect.1
                    ));
                }
            }
            None => {
                println!("{:<38} (no result within {:?})", s.what, args.timeout);
                failures.push(format!("{}: no result", s.what));
            }
        }
    }
    Ok(failures)
}

/// The result event of a command (a sync's `user.synced` events are not its result).
fn is_result_of(e: &ReceivedEvent, command_id: &str) -> bool {
    if e.routing_key == "user.synced" {
        return false;
    }
    let v: Value = serde_json::from_slice(&e.body).unwrap_or_default();
    v["data"]["command_id"] == command_id || v["data"]["sync_id"] == command_id
}

fn tempfile_dir() -> Result<std::path::PathBuf, ToolFailure> {
    let dir = std::env::temp_dir().join(format!(
        "lastpass-connector-demo-{}",
        Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ToolFailure::Outcome(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}
