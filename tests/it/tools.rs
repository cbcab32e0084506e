//! The operator's tools as an operator runs them (the real binary): `publish --wait` for every
//! command type, `dead-letter` list and re-drive, and `demo`.

use crate::support::simulator::{self as sim, TestSim};
use crate::support::{Broker, Running, amqp_url, command, test_retry};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn tool(prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lastpass-connector"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AMQP_URL", amqp_url())
        .env("CONNECTOR_PREFIX", prefix)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn tool_async(prefix: String, args: Vec<&'static str>) -> Output {
    tokio::task::spawn_blocking(move || tool(&prefix, &args))
        .await
        .unwrap()
}

#[tokio::test]
async fn publish_wait_round_trips_every_command_type() {
    let sim = TestSim::start().await;
    sim.add("ada@example.com", false, false);
    sim.add("grace@example.com", false, false);
    let broker = Broker::new(&test_retry()).await;
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(broker.config(&sim, dir.path().to_path_buf(), test_retry())).await;
    let p = broker.prefix().to_string();
    let cases: Vec<(Vec<&'static str>, &str, bool)> = vec![
        (
            vec![
                "publish",
                "--wait",
                "provision",
                "--email",
                "new@example.com",
                "--first-name",
                "New",
                "--last-name",
                "Hire",
            ],
            "user.provisioned",
            true,
        ),
        (
            vec!["publish", "--wait", "suspend", "--email", "ada@example.com"],
            "user.suspended",
            true,
        ),
        (
            vec![
                "publish",
                "--wait",
                "deprovision",
                "--email",
                "grace@example.com",
            ],
            "user.deprovisioned",
            true,
        ),
        (
            vec!["publish", "--wait", "sync"],
            "users.sync.completed",
            true,
        ),
        // A failed command exits non-zero.
        (
            vec![
                "publish",
                "--wait",
                "suspend",
                "--email",
                "nobody@example.com",
            ],
            "command.failed",
            false,
        ),
    ];
    for (args, routing_key, ok) in cases {
        let out = tool_async(p.clone(), args.clone()).await;
        let text = stdout(&out);
        assert_eq!(
            out.status.success(),
            ok,
            "{args:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = text.lines();
        let id = lines.next().unwrap_or_default();
        assert_eq!(id.len(), 36, "the command id first: {text}");
        let result = lines.next().unwrap_or_default();
        assert!(result.starts_with(routing_key), "{args:?}: {text}");
        assert!(result.contains(id), "{text}");
    }
    assert!(sim.user("new@example.com").is_some());
    assert!(sim.user("ada@example.com").unwrap().disabled);
    assert!(sim.user("grace@example.com").is_none());
    running.stop().await;
}

#[tokio::test]
async fn dead_letter_redrive_brings_an_exhausted_command_to_applied_with_fresh_attempts() {
    let sim = TestSim::start().await;
    sim.add("a@example.com", false, false);
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(broker.config(&sim, dir.path().to_path_buf(), test_retry())).await;
    sim.faults(sim::FaultsPatch {
        outage: Some(true),
        ..Default::default()
    });
    let (id, cmd) = command("user.suspend", "a@example.com");
    broker.send_json(&cmd).await;
    let failed = tap.for_command(&id, T).await;
    assert_eq!(failed["data"]["error"]["code"], "retries_exhausted");
    let p = broker.prefix().to_string();

    let list = tool_async(p.clone(), vec!["dead-letter", "list"]).await;
    assert!(list.status.success());
    let listed = stdout(&list);
    assert!(
        listed.contains(&id) && listed.contains("retries_exhausted"),
        "{listed}"
    );

    let dry = tool_async(
        p.clone(),
        vec![
            "dead-letter",
            "redrive",
            "--code",
            "retries_exhausted",
            "--dry-run",
        ],
    )
    .await;
    assert!(stdout(&dry).contains("would re-drive"), "{}", stdout(&dry));
    tap.expect_none(Duration::from_millis(500)).await;

    sim.faults(sim::FaultsPatch {
        outage: Some(false),
        ..Default::default()
    });
    let redrive = tool_async(
        p.clone(),
        vec!["dead-letter", "redrive", "--code", "retries_exhausted"],
    )
    .await;
    assert!(
        redrive.status.success(),
        "{}",
        String::from_utf8_lossy(&redrive.stderr)
    );
    assert!(
        stdout(&redrive).contains("1 command(s)"),
        "{}",
        stdout(&redrive)
    );
    let applied = tap.for_command(&id, T).await;
    assert_eq!(applied["data"]["outcome"], "applied");
    assert_eq!(applied["data"]["attempts"], 1, "a fresh retry budget");
    assert!(sim.user("a@example.com").unwrap().disabled);
    let after = tool_async(p, vec!["dead-letter", "list"]).await;
    assert!(!stdout(&after).contains(&id), "the parked copy is gone");
    running.stop().await;
}

#[tokio::test]
async fn the_demo_runs_and_exits_0() {
    let out = tool_async("unused".into(), vec!["demo"]).await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("demo complete"), "{text}");
    for row in [
        "user.provisioned",
        "user.suspended",
        "user.deprovisioned",
        "command.rejected",
        "users.sync.completed",
    ] {
        assert!(text.contains(row), "{row} in {text}");
    }
}

#[tokio::test]
async fn the_benchmark_runs_on_a_tiny_n() {
    let out = tool_async(
        "unused".into(),
        vec![
            "bench",
            "--n",
            "30",
            "--concurrency",
            "8",
            "--json",
            "--env",
            "CONNECTOR_BATCH_MAX=1",
        ],
    )
    .await;
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON report");
    assert_eq!(v["completed"], 30);
    assert_eq!(v["missing"], 0);
    assert!(v["commands_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["floor_per_s"].as_f64().unwrap() > 0.0);
    // Unbatched (batching is `consumer::provisions_in_flight_together_share_a_batchadd`): a
    // provision looks, acts and confirms its batchadd with one more look (3); a suspend and a
    // deprovision of an active user make their deluser only (1 each).
    let calls = v["calls_per_command"].as_f64().unwrap();
    assert!(
        (calls - 5.0 / 3.0).abs() < 1e-9,
        "{calls} calls per command"
    );
    // The same calls by endpoint: 10 provisions look twice and add once, 20 deluser.
    let by = &v["calls_by_endpoint"];
    assert_eq!(
        (
            by["getuserdata"].as_u64(),
            by["batchadd"].as_u64(),
            by["deluser"].as_u64()
        ),
        (Some(20), Some(10), Some(20)),
        "{by}"
    );
    // Who shared the machine: the connector's own share is what `cpu_s_per_1000` says, and
    // the machine as a whole was at least that busy.
    let m = &v["machine_cpu_s_per_1000"];
    let connector = m["connector"].as_f64().unwrap();
    assert!(
        (connector - v["cpu_s_per_1000"].as_f64().unwrap()).abs() < 0.002,
        "{m}"
    );
    assert!(
        m["machine_busy"].as_f64().unwrap() >= connector - 0.02,
        "{m}"
    );
}

/// Queued first, the bench counts the result events in a quorum queue of its own (as the floor
/// counts its output) and reads them only after the timed window: every command is still
/// accounted for by its own event, and the queue is gone afterwards.
#[tokio::test]
async fn a_queued_first_benchmark_reads_every_event_it_held() {
    let prefix = format!("bpre{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let args = [
        "bench",
        "--n",
        "30",
        "--concurrency",
        "8",
        "--preload",
        "--no-floor",
        "--json",
        "--prefix",
        &prefix,
    ]
    .map(String::from);
    let out =
        tokio::task::spawn_blocking(move || tool("unused", &args.each_ref().map(String::as_str)))
            .await
            .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON report");
    assert_eq!(v["preload"], true);
    assert_eq!(
        (v["completed"].as_u64(), v["missing"].as_u64()),
        (Some(30), Some(0))
    );
    assert_eq!(v["outcomes"], serde_json::json!({"applied": 30}), "{v}");
    assert!(v["commands_per_s"].as_f64().unwrap() > 0.0);
    let conn = crate::support::connect().await;
    for q in bench_queues(&prefix) {
        assert_eq!(
            crate::support::consumers(&conn, &q).await,
            None,
            "{q} is still there"
        );
    }
    let _ = conn.close(200, "checked".into()).await;
}

async fn check_or_run(sim: &TestSim, verb: &'static str, api_url: &str, provhash: &str) -> Output {
    let (cid, api_url, provhash) = (sim.cid(), api_url.to_string(), provhash.to_string());
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("chk{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Command::new(env!("CARGO_BIN_EXE_lastpass-connector"))
            .arg(verb)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AMQP_URL", amqp_url())
            .env("LASTPASS_API_URL", api_url)
            .env("LASTPASS_CID", cid)
            .env("LASTPASS_PROVHASH", provhash)
            .env("CONNECTOR_PREFIX", prefix)
            .env("CONNECTOR_STATE_DIR", dir.path())
            .env("CONNECTOR_HTTP_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn check_says_what_works_and_what_does_not() {
    let sim = TestSim::start_with(3).await;
    let (api, good) = (sim.api_url(), sim.provhash());
    let ok = check_or_run(&sim, "check", &api, &good).await;
    let text = stdout(&ok);
    assert!(
        ok.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.contains("ok    RabbitMQ") && text.contains("ok    LastPass"),
        "{text}"
    );
    assert!(text.contains("3 account(s)"), "{text}");

    let wrong = check_or_run(&sim, "check", &api, "not-the-provhash").await;
    let text = stdout(&wrong);
    assert!(!wrong.status.success(), "{text}");
    assert!(
        text.contains("FAIL  LastPass") && text.contains("refused the credentials"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-provhash"),
        "the secret is never printed: {text}"
    );

    let typo = format!("{api}x");
    let not_found = check_or_run(&sim, "check", &typo, &good).await;
    let text = stdout(&not_found);
    assert!(!not_found.status.success(), "{text}");
    assert!(
        text.contains("LASTPASS_API_URL") && text.contains("404"),
        "{text}"
    );

    // `run` stops at once, exit 2, on what cannot fix itself.
    let run = check_or_run(&sim, "run", &typo, &good).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("LASTPASS_API_URL"), "{stderr}");
}

/// The queues a bench under `prefix` declares (the connector's topology, the floor's, and the
/// held events').
fn bench_queues(prefix: &str) -> Vec<String> {
    use lastpass_connector::amqp::Names;
    use lastpass_connector::command::CommandType;
    let n = Names::new(prefix);
    let mut q: Vec<String> = CommandType::ALL.iter().map(|t| n.queue(*t)).collect();
    q.extend([n.dead_letter(), n.unrouted()]);
    q.extend(lastpass_connector::amqp::bench_queues(prefix));
    q
}

/// SIGINT in the middle of a run: the bench stops its connector, deletes every queue and
/// exchange it declared, and exits 130. Before, it died leaving its topology and thousands of
/// messages on the broker.
#[tokio::test]
async fn an_interrupted_benchmark_removes_everything_it_declared() {
    let prefix = format!("bint{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Stderr to a file, not a pipe: a connector left running would hold a pipe open for ever.
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_lastpass-connector"))
        .args([
            "bench",
            "--n",
            "3000",
            "--concurrency",
            "8",
            "--latency-ms",
            "100",
            "--no-floor",
            // Queued first: its held events' queue is there too when it is interrupted.
            "--preload",
            "--json",
            "--prefix",
            &prefix,
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AMQP_URL", amqp_url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the binary runs");
    let conn = crate::support::connect().await;
    let suspend = lastpass_connector::amqp::Names::new(&prefix)
        .queue(lastpass_connector::command::CommandType::Suspend);
    // Running once its connector consumes; the 3,000 commands then take about a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while crate::support::consumers(&conn, &suspend)
        .await
        .unwrap_or(0)
        == 0
    {
        assert!(bench.try_wait().unwrap().is_none(), "the bench ended early");
        assert!(
            std::time::Instant::now() < deadline,
            "the bench's connector did not start consuming within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = bench.kill();
            panic!("the bench did not exit within 60 s of SIGINT");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Gone, and still gone a moment later: a connector left running would declare them again.
    for wait in [0, 2] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        for q in bench_queues(&prefix) {
            assert_eq!(
                crate::support::consumers(&conn, &q).await,
                None,
                "{q} is still there"
            );
        }
    }
    let ch = conn.create_channel().await.unwrap();
    let events = lastpass_connector::amqp::Names::new(&prefix).events();
    let exchange = ch
        .exchange_declare(
            events.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    assert!(exchange.is_err(), "{events} is still there");
    let _ = conn.close(200, "checked".into()).await;
}
