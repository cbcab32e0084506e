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
        wait_for_log(&self.log, needle, timeout).await
    }

    fn kill(&mut self) {
        // std's kill is SIGKILL on unix: no drain, no goodbye to the broker or the database.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica is killed when its test ends, also when the test fails, so none outlives it.
impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_for_log(log: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log within {timeout:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    // Kill to the survivor's "now the active consumer" (its first delivery).
    let mut takeover_ms: Vec<u128> = Vec::new();
    let mut pending: Option<Instant> = None;
    loop {
        if let Some(k) = pending
            && replicas[0].log().contains("now the active consumer")
        {
            takeover_ms.push(k.elapsed().as_millis());
            pending = None;
        }
        if kills.len() < KILLS_AT.len() && t0.elapsed() >= KILLS_AT[kills.len()] {
            let mut victim = replicas.pop_front().unwrap();
            assert!(
                victim.log().contains("now the active consumer"),
                "the oldest replica is the active one:\n{}",
                victim.log()
            );
            assert!(
                !replicas[0].log().contains("now the active consumer"),
                "the survivor was a standby:\n{}",
                replicas[0].log()
            );
            victim.kill();
            kills.push(Instant::now());
            pending = Some(Instant::now());
            started += 1;
            replicas.push_back(Replica::start(&broker, &sim, &db, dir.path(), started));
        }
        if let Some(v) = tap.next_within(Duration::from_millis(50)).await {
            evented.insert(v["data"]["command_id"].as_str().unwrap_or("").to_string());
            events.push((Instant::now(), v));
        }
        let all = ids.iter().all(|id| evented.contains(*id));
        if all && sender.is_finished() && kills.len() == KILLS_AT.len() && pending.is_none() {
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
    // How often a replica found a fresh intent of a killed one and waited its call out.
    let waited_out: usize = (1..=started)
        .map(|n| {
            std::fs::read_to_string(dir.path().join(format!("replica-{n}.log")))
                .unwrap_or_default()
                .matches("waiting until its call can no longer land")
                .count()
        })
        .sum();
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

    // From a kill to the next event of a command not answered before it (an event the victim
    // had published just before it died can come first).
    let next_event_ms: Vec<u128> = kills
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
         outcome {}, fail-over ms (kill to the survivor's first delivery) {:?}, kill to the next \
         new event ms {:?}, in-flight calls waited out {}, run {:.1} s",
        kills.len(),
        commands.len(),
        commands.len() * 2,
        events.len(),
        total_effects,
        duplicate_effects,
        missing_effects,
        without_event,
        several_ids,
        takeover_ms,
        next_event_ms,
        waited_out,
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
    assert_eq!(
        takeover_ms.len(),
        KILLS_AT.len(),
        "every kill was taken over"
    );
    for ms in &takeover_ms {
        assert!(*ms < 10_000, "fail-over within 10 s: {takeover_ms:?}");
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
    let child = broker
        .connector_process(&sim, &dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let replica = Replica { child, log };
    // lapin's own line about the closed channel names the argument first: wait for the
    // connector's explanation.
    replica
        .wait_for(
            "Upgrading queues to single active consumer",
            Duration::from_secs(20),
        )
        .await;
    let text = replica.log();
    assert!(
        text.lines()
            .any(|l| l.contains("Upgrading queues to single active consumer")
                && l.contains("x-single-active-consumer")),
        "the cause and the way out are named in one line:\n{text}"
    );
}

/// A TCP proxy to the test PostgreSQL that a test can take down (refusing new connections and
/// cutting the open ones) and bring back, to play a database outage without touching the
/// server others use.
struct DbProxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl DbProxy {
    async fn start() -> DbProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let mut cut = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        DbProxy { port, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

/// The status code of `GET path` on the connector's health address.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

async fn wait_status(port: u16, want: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = http_status(port, "/readyz").await;
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz {got:?}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An unreachable database makes the replica not ready; it consumes nothing until it can
/// record, and a command whose completion cannot be recorded is not acked: it is applied and
/// answered once, after the database is back.
#[tokio::test]
async fn an_unreachable_database_makes_the_replica_not_ready_and_loses_no_command() {
    let broker = Broker::new(&test_retry()).await;
    let sim = TestSim::start().await;
    let db = TestDb::create().await;
    let proxy = DbProxy::start().await;
    let health_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = db.url().replace(":5432/", &format!(":{}/", proxy.port));
    assert_ne!(url, db.url());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("connector.log");
    let child = broker
        .connector_process(&sim, &dir.path().join("state"))
        .env("CONNECTOR_STATE_URL", &url)
        .env("CONNECTOR_HTTP_ADDR", format!("127.0.0.1:{health_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _replica = Replica {
        child,
        log: log.clone(),
    };
    let mut tap = broker.tap().await;

    // Down from the start: not ready, retrying, consuming nothing.
    wait_for_log(
        &log,
        "the state database cannot be reached",
        Duration::from_secs(20),
    )
    .await;
    wait_status(health_port, 503, Duration::from_secs(5)).await;
    let (first, body) = command("user.provision", "first@outage.test");
    broker.send_json(&body).await;
    tap.expect_none(Duration::from_millis(1500)).await;

    // Back: it migrates, becomes ready, and answers the waiting command.
    proxy.set_up(true);
    let e = tap.for_command(&first, Duration::from_secs(30)).await;
    assert_eq!(e["data"]["outcome"], "applied");
    wait_status(health_port, 200, Duration::from_secs(5)).await;

    // Down in the middle: the command is neither answered nor acked while it cannot be recorded.
    proxy.set_up(false);
    let (second, body) = command("user.provision", "second@outage.test");
    broker.send_json(&body).await;
    wait_status(health_port, 503, Duration::from_secs(20)).await;
    tap.expect_none(Duration::from_secs(2)).await;

    // Back again: given back to the broker, redelivered, applied and answered once.
    proxy.set_up(true);
    let e = tap.for_command(&second, Duration::from_secs(30)).await;
    assert_eq!(e["data"]["outcome"], "applied");
    wait_status(health_port, 200, Duration::from_secs(10)).await;
    tap.expect_none(Duration::from_secs(1)).await;
    assert_eq!(sim.mutations("batchadd"), 2, "one batchadd per command");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the state store answers again"), "{text}");
}

/// Two replicas without CONNECTOR_STATE_URL: the second one says it cannot share completions.
#[tokio::test]
async fn a_second_replica_without_shared_state_warns_that_it_cannot_share_completions() {
    let broker = Broker::new(&test_retry()).await;
    let sim = TestSim::start().await;
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let child = broker
            .connector_process(&sim, &dir.path().join(name))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Replica { child, log }
    };
    let mut first = start("first");
    first.wait_for("consuming", Duration::from_secs(30)).await;
    let mut second = start("second");
    second
        .wait_for("cannot share completions", Duration::from_secs(30))
        .await;
    first.kill();
    second.kill();
    assert!(
        !first.log().contains("cannot share completions"),
        "the first replica was alone: {}",
        first.log()
    );
}
