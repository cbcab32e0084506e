//! Shared test support: the real RabbitMQ under a random prefix, an event tap, the connector run
//! in process, and cleanup that leaves nothing behind (even when a test panics).

pub mod pg;
pub mod schemas;
pub mod simulator;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lastpass_connector::amqp::{Names, TopologyOptions, declare_topology};
use lastpass_connector::command::CommandType;
use lastpass_connector::config::Config;
use lastpass_connector::retry::RetryPolicy;
use lastpass_connector::{CancellationToken, RunError};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A fresh prefix, so tests run in parallel without seeing each other.
pub fn random_prefix() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Retry settings short enough for tests: 2 attempts in process, then rounds of 0.4 s, 0.8 s,
/// 1.6 s (about 3 s of budget).
pub fn test_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        round_delays: vec![
            Duration::from_millis(400),
            Duration::from_millis(800),
            Duration::from_millis(1600),
        ],
    }
}

pub async fn connect() -> Connection {
    match Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "RabbitMQ is not reachable at {} ({e}). These tests need the real broker: start it \
             with `rabbitmq-server -detached && rabbitmqctl await_startup` (or \
             `docker compose up -d rabbitmq`), or point AMQP_URL at one.",
            amqp_url()
        ),
    }
}

/// The broker as a test sees it, under its own prefix.
pub struct Broker {
    pub conn: Connection,
    pub ch: Channel,
    pub names: Names,
    pub options: TopologyOptions,
}

impl Broker {
    /// Connects and declares the connector's topology under a fresh prefix.
    pub async fn new(retry: &RetryPolicy) -> Broker {
        let conn = connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let names = Names::new(&random_prefix());
        let options = TopologyOptions {
            delivery_limit: 20,
            retry_delays: retry.round_delays.clone(),
        };
        declare_topology(&ch, &names, &options).await.unwrap();
        Broker {
            conn,
            ch,
            names,
            options,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.names.prefix
    }

    /// A queue bound to every event of this prefix; every event read is checked against its
    /// JSON Schema.
    pub async fn tap(&self) -> Tap {
        let ch = self.conn.create_channel().await.unwrap();
        let q = format!("{}.tap.{}", self.names.prefix, Uuid::new_v4().simple());
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            q.as_str().into(),
            self.names.events().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(
                q.as_str().into(),
                "tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Tap {
            _ch: ch,
            consumer,
            buffer: VecDeque::new(),
        }
    }

    /// Publishes a command body to `P.commands` with this routing key, persistent, confirmed.
    pub async fn send(&self, routing_key: &str, body: &[u8]) {
        self.send_with(routing_key, body, FieldTable::default())
            .await
    }

    pub async fn send_with(&self, routing_key: &str, body: &[u8], headers: FieldTable) {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        self.send_on(&self.ch, routing_key, body, props).await
    }

    /// Publishes to `P.commands` on `ch` (a confirm channel, perhaps of another broker user)
    /// with exactly these properties, and asserts the broker confirmed and routed it.
    pub async fn send_on(
        &self,
        ch: &Channel,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let c = ch
            .basic_publish(
                self.names.commands().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            c.is_ack() && c.take_message().is_none(),
            "command not routed"
        );
    }

    /// Publishes a JSON command on the routing key named by its `type`.
    pub async fn send_json(&self, command: &Value) {
        let rk = command["type"]
            .as_str()
            .expect("command has a type")
            .to_string();
        self.send(&rk, command.to_string().as_bytes()).await
    }

    /// Reads up to `n` messages from `P.dead-letter`, waiting at most `timeout` for them.
    pub async fn dead_letters(&self, n: usize, timeout: Duration) -> Vec<Parked> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            match self
                .ch
                .basic_get(
                    self.names.dead_letter().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap()
            {
                Some(m) => out.push(Parked {
                    body: m.delivery.data.clone(),
                    headers: m.delivery.properties.headers().clone().unwrap_or_default(),
                }),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        out
    }

    /// The connector binary's `run`, configured by environment as an operator would, against
    /// `sim` under this prefix, with the test retry delays. Add more `.env(..)` as needed.
    pub fn connector_process(
        &self,
        sim: &simulator::TestSim,
        state_dir: &std::path::Path,
    ) -> std::process::Command {
        let delays = test_retry()
            .round_delays
            .iter()
            .map(|d| format!("{}ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lastpass-connector"));
        c.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "text")
            .env("LASTPASS_API_URL", sim.api_url())
            .env("LASTPASS_CID", sim.cid())
            .env("LASTPASS_PROVHASH", sim.provhash())
            .env("CONNECTOR_PREFIX", self.prefix())
            .env("CONNECTOR_STATE_DIR", state_dir)
            .env("CONNECTOR_RETRY_DELAYS", delays)
            .env("AMQP_URL", amqp_url())
            .env("CONNECTOR_HTTP_ADDR", "127.0.0.1:0")
            .stdin(std::process::Stdio::null());
        c
    }

    /// A connector configuration against `sim` under this prefix, built by the same parser as
    /// `lastpass-connector run` (the provhash through a file, as an operator should pass it;
    /// `AMQP_URL`, never a flag, from this process's environment like [`amqp_url`]).
    pub fn config(
        &self,
        sim: &simulator::TestSim,
        state_dir: PathBuf,
        retry: RetryPolicy,
    ) -> Config {
        let provhash_file = state_dir.with_extension("provhash");
        std::fs::write(&provhash_file, sim.provhash()).expect("write the provhash file");
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let delays = retry
            .round_delays
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(",");
        let args: Vec<String> = [
            ("--lastpass-api-url", sim.api_url()),
            ("--lastpass-cid", sim.cid()),
            (
                "--lastpass-provhash-file",
                provhash_file.display().to_string(),
            ),
            ("--lastpass-timeout", "2s".into()),
            ("--prefix", self.names.prefix.clone()),
            ("--state-dir", state_dir.display().to_string()),
            ("--concurrency", "4".into()),
            ("--ledger-retention", "1h".into()),
            ("--retry-attempts", retry.attempts.to_string()),
            ("--retry-min-delay", ms(retry.min_delay)),
            ("--retry-max-delay", ms(retry.max_delay)),
            ("--retry-delays", delays),
            ("--delivery-limit", self.options.delivery_limit.to_string()),
            ("--sync-page-size", "100".into()),
            ("--shutdown-grace", "10s".into()),
            ("--http-addr", "127.0.0.1:0".into()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
        let config = Config::parse_from(args).expect("a valid test configuration");
        assert_eq!(config.retry, retry, "the parser keeps the retry policy");
        config
    }
}

impl Drop for Broker {
    /// Deletes every queue and exchange of this prefix, on a thread of its own so that it also
    /// runs while a failed test unwinds.
    fn drop(&mut self) {
        let names = self.names.clone();
        let delays = self.options.retry_delays.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(conn) =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else {
                    return;
                };
                let mut queues: Vec<String> =
                    CommandType::ALL.iter().map(|t| names.queue(*t)).collect();
                queues.push(names.dead_letter());
                queues.push(names.unrouted());
                let mut exchanges = vec![names.commands(), names.events(), names.unrouted()];
                // Also the default delays, in case a test ran the binary without setting them.
                let defaults = RetryPolicy::default().round_delays;
                for d in delays.into_iter().chain(defaults) {
                    queues.push(names.retry(d));
                    exchanges.push(names.retry(d));
                }
                for q in queues {
                    let _ = ch
                        .queue_delete(q.into(), QueueDeleteOptions::default())
                        .await;
                }
                for x in exchanges {
                    let _ = ch
                        .exchange_delete(x.into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        })
        .join();
    }
}

/// A message read from `P.dead-letter`.
pub struct Parked {
    pub body: Vec<u8>,
    pub headers: FieldTable,
}

impl Parked {
    pub fn header(&self, name: &str) -> Option<String> {
        match self.headers.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// Reads events published under a prefix.
pub struct Tap {
    _ch: Channel,
    consumer: lapin::Consumer,
    buffer: VecDeque<Value>,
}

impl Tap {
    async fn read(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = tokio::time::timeout(left, self.consumer.next())
            .await
            .ok()??;
        let d = d.expect("tap delivery");
        let v: Value = serde_json::from_slice(&d.data).expect("event is JSON");
        schemas::assert_event_valid(&v);
        Some(v)
    }

    /// The next `n` events, or panics after `timeout`.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out: Vec<Value> = Vec::new();
        while out.len() < n {
            if let Some(v) = self.buffer.pop_front() {
                out.push(v);
                continue;
            }
            match self.read(deadline).await {
                Some(v) => out.push(v),
                None => panic!(
                    "expected {n} events within {timeout:?}, got {}: {out:#?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// The event for this command id (other events are kept for later).
    pub async fn for_command(&mut self, command_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        if let Some(i) = self
            .buffer
            .iter()
            .position(|v| v["data"]["command_id"] == command_id)
        {
            return self.buffer.remove(i).unwrap();
        }
        loop {
            match self.read(deadline).await {
                Some(v) if v["data"]["command_id"] == command_id => return v,
                Some(v) => self.buffer.push_back(v),
                None => panic!(
                    "no event for command {command_id} within {timeout:?}; other events: {:#?}",
                    self.buffer
                ),
            }
        }
    }

    /// The next event, or `None` if none arrives within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.buffer.pop_front() {
            return Some(v);
        }
        self.read(Instant::now() + timeout).await
    }

    /// Asserts that no event arrives for `quiet`.
    pub async fn expect_none(&mut self, quiet: Duration) {
        if let Some(v) = self.buffer.pop_front() {
            panic!("unexpected event: {v:#}");
        }
        if let Some(v) = self.read(Instant::now() + quiet).await {
            panic!("unexpected event: {v:#}");
        }
    }
}

/// The connector, run in this process until stopped.
pub struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

/// The consumers of a queue, or `None` if it does not exist. A passive declare of a missing
/// queue closes its channel, so each look has a channel of its own.
pub async fn consumers(conn: &lapin::Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.unwrap();
    let found = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.consumer_count());
    if found.is_some() {
        let _ = ch.close(200, "looked".into()).await;
    }
    found
}

impl Running {
    /// Starts the connector and returns once it consumes (its checks at start are done by
    /// then, so a test's faults never meet them).
    pub async fn start(config: Config) -> Running {
        init_test_log();
        let stop = CancellationToken::new();
        let queue = Names::new(&config.prefix).queue(CommandType::Suspend);
        let task = tokio::spawn(lastpass_connector::run(config, stop.clone()));
        let running = Running { stop, task };
        let conn = connect().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if consumers(&conn, &queue).await.unwrap_or(0) > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline && !running.task.is_finished(),
                "the connector did not start consuming within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = conn.close(200, "started".into()).await;
        running
    }

    /// Signals shutdown and waits for the connector to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("connector stops within 30 s")
            .expect("connector task did not panic")
            .expect("connector ran and stopped cleanly");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// `TEST_LOG=1` (or a filter such as `TEST_LOG=lastpass_connector=debug`) shows the connector's
/// logs of in-process runs, captured per test so a failing test prints them.
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let Ok(filter) = std::env::var("TEST_LOG") else {
        return;
    };
    ONCE.call_once(|| {
        let filter = if filter == "1" || filter.is_empty() {
            "info".to_string()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

pub fn command(kind: &str, email: &str) -> (String, Value) {
    let id = Uuid::new_v4().to_string();
    let mut v = serde_json::json!({
        "command_id": id, "type": kind, "user": {"email": email},
        "correlation_id": format!("test-{kind}"), "requested_by": "tests",
    });
    if kind == "user.provision" {
        v["user"]["first_name"] = "Jane".into();
        v["user"]["last_name"] = "Doe".into();
    }
    (id, v)
}
