//! Two replicas on one shared state (PostgreSQL): the active one is killed with SIGKILL several
//! times while commands and their duplicates flow, and every command still has exactly one
//! effect on LastPass and one event id.

use crate::support::pg::TestDb;
use crate::support::simulator::TestSim;
use crate::support::{Broker, command, test_retry};
use lastpass_connector::simulator::FaultsPatch;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Commands sent (half provisions of new users, half deprovisions of existing ones), each twice.
const COMMANDS: usize = 150;
/// Between two publishes.
const PACE: Duration = Duration::from_millis(60);
/// When the active replica is killed, from the first publish.
const KILLS_AT: [Duration; 3] = [
    Duration::from_millis(2000),
    Duration::from_millis(4500),
    Duration::from_millis(7000),
];

struct Replica {
    child: Child,
    log: PathBuf,
}

impl Replica {
    fn start(broker: &Broker, sim: &TestSim, db: &TestDb, dir: &Path, n: usize) -> Replica {
        let log = dir.join(format!("replica-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = broker
            .connector_process(sim, &dir.join(format!("state-{n}")))
            .env("CONNECTOR_STATE_URL", db.url())
            .env("LASTPASS_TIMEOUT", "2s")
            .env("CONNECTOR_CONCURRENCY", "4")
            .env("CONNECTOR_SHUTDOWN_GRACE", "2s")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start a replica");
        Replica { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        // std's kill is SIGKILL on unix: no drain, no goodbye to the broker or the database.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `username` in a call's data (batchadd has a list of users, deluser one).
fn usernames(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(u)) = m.get("username") {
                out.push(u.to_lowercase());
            }
            m.values().for_each(|v| usernames(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| usernames(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_replica_never_applies_a_command_twice_nor_changes_its_event() {
    let broker = Arc::new(Broker::new(&test_retry()).await);
    let sim = TestSim::start().await;
    // Slow enough that a kill often lands in the middle of a LastPass call.
    sim.faults(FaultsPatch {
        latency_ms: Some(120),
        ..Default::default()
    });
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();

    let mut commands: Vec<(String, Value, String)> = Vec::new();
    for i in 0..COMMANDS {
        let (kind, email) = if i % 2 == 0 {
            ("user.provision", format!("new{i}@kill.test"))
        } else {
            let email = format!("old{i}@kill.test");
            sim.add(&email, false, false);
            ("user.deprovision", email)
        };
        let (id, body) = command(kind, &email);
        commands.push((id, body, email));
    }
    let mut tap = broker.tap().await;

    let mut replicas = VecDeque::new();
    let mut started = 0;
    for _ in 0..2 {
        started += 1;
        let r = Replica::start(&broker, &sim, &db, dir.path(), started);
        r.wait_for("consuming", Duration::from_secs(30)).await;
        replicas.push_back(r);
    }

    // Each command is published, and published again five commands later (a duplicate).
    let sender = {
        let broker = broker.clone();
        let bodies: Vec<Value> = commands.iter().map(|c| c.1.clone()).collect();
        tokio::spawn(async move {
            for i in 0..bodies.len() + 5 {
                if let Some(b) = bodies.get(i) {
                    broker.send_json(b).await;
                }
                if i >= 5 {
                    broker.send_json(&bodies[i - 5]).await;
                }
                tokio::time::sleep(PACE).await;
            }
        })
    };

    let t0 = Instant::now();
    let ids: BTreeSet<&str> = commands.iter().map(|c| c.0.as_str()).collect();
    let mut events: Vec<(Instant, Value)> = Vec::new();
    let mut kills: Vec<Instant> = Vec::new();
    let mut evented: BTreeSet<String> = BTreeSet::new();
    let deadline = t0 + Duration::from_secs(120);
    let mut done_at: Option<Instant> = None;
    loop {
        if kills.len() < KILLS_AT.len() && t0.elapsed() >= KILLS_AT[kills.len()] {
            let mut victim = replicas.pop_front().unwrap();
            assert!(
                victim.log().contains("now the active consumer"),
                "the oldest replica is the active one:\n{}",
                victim.log()
            );
            victim.kill();
            kills.push(Instant::now());
            started += 1;
            replicas.push_back(Replica::start(&broker, &sim, &db, dir.path(), started));
        }
        if let Some(v) = tap.next_within(Duration::from_millis(50)).await {
            evented.insert(v["data"]["command_id"].as_str().unwrap_or("").to_string());
            events.push((Instant::now(), v));
        }
        let all = ids.iter().all(|id| evented.contains(*id));
        if all && sender.is_finished() && kills.len() == KILLS_AT.len() {
            // A quiet moment for late duplicates' events.
            let at = *done_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    for r in &mut replicas {
        r.kill();
    }
    sender.await.unwrap();

    // One event id and one outcome per command; no command without an event.
    let mut by_command: HashMap<String, Vec<&Value>> = HashMap::new();
    for (_, e) in &events {
        by_command
            .entry(e["data"]["command_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e);
    }
    let without_event = ids
        .iter()
        .filter(|id| !by_command.contains_key(**id))
        .count();
    let mut several_ids = 0;
    for (id, evs) in &by_command {
        let event_ids: BTreeSet<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let outcomes: BTreeSet<&str> = evs
            .iter()
            .map(|e| e["data"]["outcome"].as_str().unwrap_or("?"))
            .collect();
        if event_ids.len() != 1 || outcomes != BTreeSet::from(["applied"]) {
            several_ids += 1;
            eprintln!("command {id}: event ids {event_ids:?}, outcomes {outcomes:?}");
        }
    }

    // One effect per command: one batchadd per new user, one deluser per old one.
    let mut effects: BTreeMap<String, usize> = BTreeMap::new();
    for call in sim.calls() {
        let mut names = Vec::new();
        usernames(&call.data, &mut names);
        for n in names {
            *effects.entry(n).or_default() += 1;
        }
    }
    let total_effects: usize = effects.values().sum();
    let duplicate_effects: usize = effects.values().map(|n| n.saturating_sub(1)).sum();
    let missing_effects = commands
        .iter()
        .filter(|c| !effects.contains_key(&c.2))
        .count();

    // Fail-over: from a kill to the next event of a command not answered before it.
    let failover_ms: Vec<u128> = kills
        .iter()
        .map(|k| {
            let before: BTreeSet<&str> = events
                .iter()
                .filter(|(t, _)| t < k)
                .map(|(_, e)| e["data"]["command_id"].as_str().unwrap())
                .collect();
            events
                .iter()
                .find(|(t, e)| t > k && !before.contains(e["data"]["command_id"].as_str().unwrap()))
                .map_or(u128::MAX, |(t, _)| (*t - *k).as_millis())
        })
        .collect();
    println!(
        "two replicas, {} kill -9 of the active one: commands sent {}, messages sent {} \
         (with duplicates), events {}, effects {}, duplicates of effect {}, commands without \
         an effect {}, commands without an event {}, commands with more than one event id or \
         outcome {}, fail-over ms {:?}, run {:.1} s",
        kills.len(),
        commands.len(),
        commands.len() * 2,
        events.len(),
        total_effects,
        duplicate_effects,
        missing_effects,
        without_event,
        several_ids,
        failover_ms,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(kills.len(), KILLS_AT.len());
    assert_eq!(without_event, 0, "commands without an event");
    assert_eq!(
        several_ids, 0,
        "commands with several event ids or outcomes"
    );
    assert_eq!(duplicate_effects, 0, "duplicates of effect: {effects:?}");
    assert_eq!(missing_effects, 0, "commands without an effect");
    assert_eq!(total_effects, commands.len());
    for ms in &failover_ms {
        assert!(*ms < 10_000, "fail-over within 10 s: {failover_ms:?}");
    }
}

/// A queue declared by an earlier version (without single active consumer) cannot be
/// re-declared with it: the connector says so and points at the migration, instead of a bare
/// PRECONDITION_FAILED.
#[tokio::test]
async fn a_queue_declared_without_single_active_consumer_is_named_as_the_cause() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let broker = Broker::new(&test_retry()).await;
    let sim = TestSim::start().await;
    let q = broker
        .names
        .queue(lastpass_connector::command::CommandType::Provision);
    broker
        .ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    let mut old = FieldTable::default();
    for (k, v) in [
        ("x-queue-type", s("quorum")),
        ("x-delivery-limit", AMQPValue::LongLongInt(20)),
        ("x-dead-letter-exchange", s("")),
        ("x-dead-letter-routing-key", s(&broker.names.dead_letter())),
        ("x-dead-letter-strategy", s("at-least-once")),
        ("x-overflow", s("reject-publish")),
    ] {
        old.insert(ShortString::from(k), v);
    }
    broker
        .ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            old,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("connector.log");
    let mut child = broker
        .connector_process(&sim, &dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("x-single-active-consumer") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("Upgrading queues to single active consumer")
            && text.contains("x-single-active-consumer"),
        "the cause and the way out are named:\n{text}"
    );
}
