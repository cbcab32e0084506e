//! `lastpass-connector bench`: the connector (this binary's `run`, as its own process) against
//! the in-process simulator and the real RabbitMQ. Publishes N commands of a mix while it runs
//! and measures until every result event has arrived: commands/s, publish-to-event latency
//! (p50/p95/p99), LastPass calls per command, the connector's CPU seconds per 1,000 commands and
//! peak RSS; then, in the same run, the floor (a bare lapin loop doing the AMQP part of the same
//! work) and the connector as a fraction of it. Cleans up everything it declared. The simulator
//! runs on a thread of its own (LastPass is not on the connector's machine).

use super::{BrokerArgs, ToolFailure, connect};
use crate::amqp::TopologyOptions;
use crate::retry::RetryPolicy;
use crate::simulator::{Faults, SimUserSpec, Simulator, SimulatorConfig, SimulatorHandle};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Commands to publish.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Command types, used in turn: provision, suspend, deprovision.
    #[arg(long, default_value = "provision,suspend,deprovision")]
    pub mix: String,
    /// CONNECTOR_CONCURRENCY of the connector (and the floor's prefetch).
    #[arg(long, default_value_t = 64)]
    pub concurrency: u16,
    /// Simulated LastPass latency per call.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// The simulator answers HTTP 429 to calls above this many per second (LastPass's
    /// throttling), to measure the call budget.
    #[arg(long, value_name = "RPS")]
    pub rate_limit_rps: Option<f64>,
    /// Extra environment for the connector (`NAME=VALUE`, repeatable), e.g.
    /// `--env CONNECTOR_BATCH_MAX=1`.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Skip the floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Publish every command before the connector starts, and time from its first result event
    /// to its last: the floor's own conditions (its input is queued before it starts, nothing
    /// publishes while it runs, and its output lands in a quorum queue nobody reads meanwhile:
    /// the events are counted there, and read after). No latencies are reported then.
    #[arg(long)]
    pub preload: bool,
    /// Give up when the results take longer than this.
    #[arg(long, default_value = "10m", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Declare everything under this prefix instead of a fresh `bench-<random>` (it is all
    /// deleted at the end either way).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Instead of commands: one `users.sync` over this many simulated accounts (time,
    /// accounts/s, LastPass calls, the connector's peak RSS).
    #[arg(long, value_name = "ACCOUNTS")]
    pub sync: Option<usize>,
}

fn mix(s: &str) -> Result<Vec<&'static str>, ToolFailure> {
    s.split(',')
        .map(|t| match t.trim() {
            "provision" => Ok("user.provision"),
            "suspend" => Ok("user.suspend"),
            "deprovision" => Ok("user.deprovision"),
            other => Err(ToolFailure::Usage(format!(
                "unknown command type in --mix: {other:?}"
            ))),
        })
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat; here shifted by the two before the comm's ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds spent so far by the whole machine, the local RabbitMQ node (`beam.smp`, if one
/// runs here) and this process (the simulator, the publisher and the event reader).
struct MachineCpu {
    /// (busy, all) from the first line of /proc/stat; idle and iowait are not busy.
    machine: Option<(f64, f64)>,
    broker: Option<f64>,
    bench: f64,
}

impl MachineCpu {
    fn now(bench_pid: u32) -> MachineCpu {
        let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            let v: Vec<f64> = stat
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|x| x.parse().ok())
                .collect();
            let all: f64 = v.iter().sum();
            let idle = v.get(3)? + v.get(4)?;
            Some(((all - idle) / 100.0, all / 100.0))
        });
        let mut broker = None;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "beam.smp")
            {
                *broker.get_or_insert(0.0) += cpu_seconds(pid);
            }
        }
        MachineCpu {
            machine,
            broker,
            bench: cpu_seconds(bench_pid),
        }
    }

    fn since(&self, before: &MachineCpu) -> MachineCpu {
        MachineCpu {
            machine: self
                .machine
                .zip(before.machine)
                .map(|(a, b)| (a.0 - b.0, a.1 - b.1)),
            broker: self.broker.zip(before.broker).map(|(a, b)| a - b),
            bench: self.bench - before.bench,
        }
    }

    /// Per 1,000 commands: CPU seconds of each part, what the rest of the machine took (kernel
    /// threads writing the broker's files away, other processes) and how idle it was.
    fn per_1000(&self, connector: f64, done: usize) -> Value {
        let k = 1000.0 / done.max(1) as f64;
        // /proc counts in hundredths of a second: three decimals say all there is.
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        let busy = self.machine.map(|m| m.0);
        json!({
            "connector": r(connector * k),
            "broker": self.broker.map(|b| r(b * k)),
            "bench_and_simulator": r(self.bench * k),
            "rest": busy.zip(self.broker).map(|(m, b)| r((m - connector - b - self.bench) * k)),
            "machine_busy": busy.map(|m| r(m * k)),
            "idle_fraction": self.machine.map(|(busy, all)| r(1.0 - busy / all.max(1e-9))),
        })
    }
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The fields of a result event the bench reads.
#[derive(Default, serde::Deserialize)]
struct ResultFields<'a> {
    #[serde(borrow, default)]
    data: ResultData<'a>,
}

#[derive(Default, serde::Deserialize)]
struct ResultData<'a> {
    #[serde(borrow, default)]
    command_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    sync_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    outcome: Option<std::borrow::Cow<'a, str>>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl ResultFields<'_> {
    /// The command (or sync) a result event answers, and its outcome; `None` for the sync's
    /// per-account `user.synced` events.
    fn of(e: &crate::amqp::ReceivedEvent) -> Option<(String, String)> {
        if e.routing_key == "user.synced" {
            return None;
        }
        let v: ResultFields = serde_json::from_slice(&e.body).unwrap_or_default();
        let id = v.data.command_id.or(v.data.sync_id).unwrap_or_default();
        Some((
            id.into_owned(),
            v.data.outcome.unwrap_or_default().into_owned(),
        ))
    }
}

/// One run of the floor over `args.n` messages: messages per second.
async fn floor_rate(prefix: &str, args: &BenchArgs) -> Result<f64, ToolFailure> {
    let body = vec![b'x'; 700];
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| crate::config::DEFAULT_AMQP_URL.into());
    let d = crate::amqp::floor(&url, prefix, args.n, args.concurrency, &body).await?;
    Ok(args.n as f64 / d.as_secs_f64().max(1e-9))
}

/// Runs one benchmark. Whatever ends it (its end, a failure, SIGINT or SIGTERM through `stop`),
/// the connector is stopped before its queues go, then everything declared under the prefix is
/// deleted (the floor's queues included), the simulator stopped and the state removed.
pub async fn bench(args: BenchArgs, stop: CancellationToken) -> Result<(), ToolFailure> {
    let kinds = mix(&args.mix)?;
    let own = OwnThread::start(SimulatorConfig {
        users: args.sync.unwrap_or(0),
        faults: Faults {
            latency_ms: args.latency_ms,
            rate_limit_rps: args.rate_limit_rps,
            ..Faults::default()
        },
        ..SimulatorConfig::default()
    })
    .await?;
    let sim = own.handle.clone();
    let run_id = &Uuid::new_v4().simple().to_string()[..8];
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench-{run_id}"));
    let n = if args.sync.is_some() { 1 } else { args.n };
    let mut commands: Vec<(String, Vec<u8>, String)> = Vec::with_capacity(n);
    if args.sync.is_some() {
        let id = Uuid::new_v4().to_string();
        let body = json!({"command_id": id, "type": "users.sync"});
        commands.push(("users.sync".into(), body.to_string().into_bytes(), id));
    }
    for i in 0..if args.sync.is_some() { 0 } else { args.n } {
        let kind = kinds[i % kinds.len()];
        let id = Uuid::new_v4().to_string();
        let email = format!("u{i}-{run_id}@example.com");
        let body = if kind == "user.provision" {
            json!({"command_id": id, "type": kind,
                "user": {"email": email, "first_name": "Bench", "last_name": format!("User {i}")}})
        } else {
            sim.add_user(SimUserSpec::active(&email, "2026-11-20 09:30:00"))
                .map_err(|e| ToolFailure::Outcome(format!("simulator: {e:?}")))?;
            json!({"command_id": id, "type": kind, "user": {"email": email}})
        };
        commands.push((kind.to_string(), body.to_string().into_bytes(), id));
    }
    sim.add_user(SimUserSpec::active(
        "warmup@example.com",
        "2026-11-20 09:30:00",
    ))
    .map_err(|e| ToolFailure::Outcome(format!("simulator: {e:?}")))?;

    let dir = std::env::temp_dir().join(format!("lastpass-connector-bench-{run_id}"));
    let provhash = dir.join("provhash");
    let broker = async {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&provhash, sim.provhash()))
            .map_err(|e| ToolFailure::Outcome(format!("{}: {e}", dir.display())))?;
        connect(
            &BrokerArgs {
                prefix: prefix.clone(),
            },
            "bench",
        )
        .await
    }
    .await;
    let broker = match broker {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let delays = RetryPolicy::default().round_delays;
    let mut child = None;
    let run = Run {
        args: &args,
        sim: &sim,
        prefix: &prefix,
        dir: &dir,
        provhash: &provhash,
        broker: &broker,
        delays: &delays,
        n,
    };
    let outcome = tokio::select! {
        r = run.measure(commands, &mut child) => r,
        _ = stop.cancelled() => Err(ToolFailure::Interrupted),
    };
    if let Some(c) = child.take() {
        stop_connector(c).await;
    }
    let cleaned = match broker
        .delete_queues(&crate::amqp::bench_queues(&prefix))
        .await
    {
        Ok(()) => broker.delete_topology(&delays).await,
        Err(e) => Err(e),
    };
    broker.close().await;
    own.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    cleaned.map_err(ToolFailure::from)
}

/// The simulator on a thread of its own with a single-threaded runtime: it stands in for a
/// LastPass that is not on the connector's machine, so it should take as little of it as it can;
/// on the bench's own runtime, its answers woke the runtime's second worker thread again and
/// again (a context switch each).
struct OwnThread {
    handle: SimulatorHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl OwnThread {
    async fn start(config: SimulatorConfig) -> Result<OwnThread, ToolFailure> {
        let (started, handle) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("simulator".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Simulator::start_local(config).await {
                        Ok(sim) => {
                            let _ = started.send(Ok(sim.clone()));
                            let _ = stopped.await;
                            sim.shutdown().await;
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| ToolFailure::Outcome(format!("simulator: {e}")))?;
        let handle = match handle.await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(ToolFailure::Outcome(format!("simulator: {e}"))),
            Err(_) => return Err(ToolFailure::Outcome("simulator: its thread ended".into())),
        };
        Ok(OwnThread {
            handle,
            stop,
            thread,
        })
    }

    /// Stops the simulator and waits for its thread.
    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// What one measurement works with.
struct Run<'a> {
    args: &'a BenchArgs,
    sim: &'a SimulatorHandle,
    prefix: &'a str,
    dir: &'a std::path::Path,
    provhash: &'a std::path::Path,
    broker: &'a crate::amqp::ToolBroker,
    delays: &'a [Duration],
    n: usize,
}

/// The commands sent and not yet answered, with when each was sent; for those answered, their
/// publish-to-event latency and outcome, and when the first and the last answer arrived.
struct Arrivals {
    sent: HashMap<String, Instant>,
    latencies: Vec<f64>,
    outcomes: HashMap<String, usize>,
    first: Option<Instant>,
    last: Instant,
}

impl Arrivals {
    /// A result event for `id` arrived at `at` (one for a command not sent, or already
    /// answered, is not counted).
    fn arrived(&mut self, id: &str, at: Instant, outcome: String) {
        if let Some(t) = self.sent.remove(id) {
            self.latencies
                .push(at.duration_since(t).as_secs_f64() * 1000.0);
            *self.outcomes.entry(outcome).or_default() += 1;
            self.first.get_or_insert(at);
            self.last = at;
        }
    }
}

/// Stops the connector the way an operator would (SIGTERM, which lets it finish what is in
/// flight), and kills it if it is still there after 30 s.
async fn stop_connector(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    })
    .await;
}

impl Run<'_> {
    /// The measurement and its report; puts the connector's process in `child` while it runs.
    async fn measure(
        &self,
        commands: Vec<(String, Vec<u8>, String)>,
        child_slot: &mut Option<std::process::Child>,
    ) -> Result<(), ToolFailure> {
        let Run {
            args,
            sim,
            prefix,
            dir,
            provhash,
            broker,
            delays,
            n,
        } = *self;
        let measure_floor = !args.no_floor && args.sync.is_none();
        let floor_before = if measure_floor {
            Some(floor_rate(prefix, args).await?)
        } else {
            None
        };
        broker
            .declare(&TopologyOptions {
                delivery_limit: 20,
                retry_delays: delays.to_vec(),
            })
            .await?;
        // Queued first, the events are held in a queue and counted there while the connector
        // works, and read only after: as the floor's output, which nobody reads. Published while
        // running, each is read as it comes, for its latency.
        let hold = args.preload && args.sync.is_none();
        let held = crate::amqp::held_events_queue(prefix);
        let events = if hold {
            broker.hold_events(&held).await?;
            None
        } else {
            Some(broker.follow_events().await?)
        };

        if args.preload {
            for chunk in commands.chunks(500) {
                let batch: Vec<(String, Vec<u8>)> = chunk
                    .iter()
                    .map(|(k, b, _)| (k.clone(), b.clone()))
                    .collect();
                broker.publish_commands(&batch).await?;
            }
        }
        let calls_at_start = sim.call_counts();

        let exe = std::env::current_exe().map_err(|e| ToolFailure::Outcome(format!("{e}")))?;
        let mut child = std::process::Command::new(exe);
        child
            .arg("run")
            .env("LASTPASS_API_URL", sim.api_url())
            .env("LASTPASS_CID", sim.cid())
            .env("LASTPASS_PROVHASH_FILE", provhash)
            .env("CONNECTOR_PREFIX", prefix)
            .env("CONNECTOR_STATE_DIR", dir.join("state"))
            .env("CONNECTOR_CONCURRENCY", args.concurrency.to_string())
            .env("CONNECTOR_HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        for kv in &args.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| ToolFailure::Usage(format!("--env wants NAME=VALUE, got {kv:?}")))?;
            child.env(k, v);
        }
        let child = child_slot.insert(
            child
                .spawn()
                .map_err(|e| ToolFailure::Outcome(format!("{e}")))?,
        );
        let pid = child.id();

        // Results arrive on a task of their own while the commands are published.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant, String)>();
        let reader = events.map(|events| {
            tokio::spawn(async move {
                let mut events = std::pin::pin!(events);
                while let Some(e) = events.next().await {
                    // Only the fields the bench needs, borrowed: the reader is part of the
                    // measuring machine, and a full `Value` per event costs it CPU the connector
                    // then lacks.
                    let Some((id, outcome)) = ResultFields::of(&e) else {
                        continue;
                    };
                    if tx.send((id, Instant::now(), outcome)).is_err() {
                        break;
                    }
                }
            })
        });

        if !args.preload {
            // Warm up: the connector is consuming once this is answered.
            let warm_id = Uuid::new_v4().to_string();
            let warm = json!({"command_id": warm_id, "type": "user.suspend", "user": {"email": "warmup@example.com"}});
            broker
                .publish_command("user.suspend", warm.to_string().as_bytes(), &[])
                .await?;
            let warmed = tokio::time::timeout(Duration::from_secs(60), async {
                while let Some((id, _, _)) = rx.recv().await {
                    if id == warm_id {
                        return true;
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            if !warmed {
                return Err(ToolFailure::Outcome(
                    "the connector did not answer the warm-up command".into(),
                ));
            }
        }
        // The whole machine's CPU while the connector works: who else shares the two cores.
        let machine_before = MachineCpu::now(std::process::id());
        let (calls_before, cpu_before) = if args.preload {
            (calls_at_start, 0.0)
        } else {
            (sim.call_counts(), cpu_seconds(pid))
        };

        let started = Instant::now();
        let mut arrivals = Arrivals {
            sent: HashMap::with_capacity(args.n),
            latencies: Vec::with_capacity(args.n),
            outcomes: HashMap::new(),
            first: None,
            last: started,
        };
        if args.preload {
            for (_, _, id) in &commands {
                arrivals.sent.insert(id.clone(), started);
            }
        }
        for chunk in commands.chunks(500).filter(|_| !args.preload) {
            let now = Instant::now();
            for (_, _, id) in chunk {
                arrivals.sent.insert(id.clone(), now);
            }
            let batch: Vec<(String, Vec<u8>)> = chunk
                .iter()
                .map(|(k, b, _)| (k.clone(), b.clone()))
                .collect();
            broker.publish_commands(&batch).await?;
            while let Ok((id, at, outcome)) = rx.try_recv() {
                arrivals.arrived(&id, at, outcome);
            }
        }
        let deadline = started + args.timeout;
        // Held: from the first event counted to the N-th, read every 5 ms.
        let mut window = None;
        if hold {
            let mut first = None;
            loop {
                let count = broker.held(&held).await? as usize;
                let now = Instant::now();
                if count > 0 {
                    first.get_or_insert(now);
                }
                if count >= n || now >= deadline {
                    window = Some((first.unwrap_or(started), now));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        while !hold && !arrivals.sent.is_empty() && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some((id, at, outcome))) => arrivals.arrived(&id, at, outcome),
                Ok(None) => break,
                Err(_) => {}
            }
        }
        let cpu = cpu_seconds(pid) - cpu_before;
        let machine = MachineCpu::now(std::process::id()).since(&machine_before);
        if hold {
            // Now, outside the window, which commands the held events answer, and how.
            let events = broker.read_held(&held).await?;
            let mut events = std::pin::pin!(events);
            while !arrivals.sent.is_empty() {
                match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                    Ok(Some(e)) => {
                        if let Some((id, outcome)) = ResultFields::of(&e) {
                            arrivals.arrived(&id, Instant::now(), outcome);
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let Arrivals {
            sent,
            mut latencies,
            outcomes,
            first,
            last,
        } = arrivals;
        // Preloaded, the connector's start is not its throughput: from its first result to its last,
        // as the floor times from its first delivery to its last ack.
        let (from, to) = match window {
            Some(w) => w,
            None if args.preload => (first.unwrap_or(started), last),
            None => (started, last),
        };
        let elapsed = to.duration_since(from).as_secs_f64().max(1e-9);
        if args.preload {
            latencies.clear();
        }
        let rss = peak_rss_kib(pid);
        let calls_after = sim.call_counts();
        let rate_limited = calls_after.rate_limited - calls_before.rate_limited;
        let by_call = [
            (
                "getuserdata",
                calls_after.getuserdata - calls_before.getuserdata,
            ),
            ("deluser", calls_after.deluser - calls_before.deluser),
            ("batchadd", calls_after.batchadd - calls_before.batchadd),
            (
                "enableuser",
                calls_after.enableuser - calls_before.enableuser,
            ),
        ];
        let calls: u64 = by_call.iter().map(|(_, n)| n).sum();
        let by_call: serde_json::Map<String, Value> = by_call
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        let missing = sent.len();

        if let Some(c) = child_slot.take() {
            stop_connector(c).await;
        }
        if let Some(r) = reader {
            r.abort();
        }

        let done = n - missing;
        let machine = machine.per_1000(cpu, done);
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let rate = done as f64 / elapsed;
        let floor_after = if measure_floor {
            Some(floor_rate(prefix, args).await?)
        } else {
            None
        };
        // The floor once before the connector and once after, averaged: the broker is slower right
        // after a run (it is still writing that run's messages away), faster on a fresh start.
        let floor = floor_before.zip(floor_after).map(|(a, b)| (a + b) / 2.0);

        if let Some(accounts) = args.sync {
            let report = json!({
                "sync_accounts": accounts, "seconds": elapsed,
                "accounts_per_s": accounts as f64 / elapsed,
                "lastpass_calls": calls, "peak_rss_kib": rss, "cpu_s": cpu,
                "completed": done == 1,
            });
            if args.json {
                println!("{report}");
            } else {
                println!(
                    "sync of {accounts} accounts: {elapsed:.2} s ({:.0} accounts/s), {calls} LastPass calls, connector CPU {cpu:.2} s, peak RSS {rss} KiB",
                    accounts as f64 / elapsed
                );
            }
            return if done == 1 {
                Ok(())
            } else {
                Err(ToolFailure::Outcome(format!(
                    "the sync did not complete within {:?}",
                    args.timeout
                )))
            };
        }
        let pct = |p: f64| (!latencies.is_empty()).then(|| percentile(&latencies, p));
        let report = json!({
            "n": args.n, "mix": args.mix, "concurrency": args.concurrency,
            "latency_ms": args.latency_ms, "env": args.env,
            "completed": done, "missing": missing, "outcomes": outcomes,
            "seconds": elapsed, "commands_per_s": rate,
            "preload": args.preload,
            "p50_ms": pct(50.0), "p95_ms": pct(95.0), "p99_ms": pct(99.0),
            "lastpass_calls": calls, "calls_per_command": calls as f64 / done.max(1) as f64,
            "calls_by_endpoint": by_call,
            "rate_limit_rps": args.rate_limit_rps, "answered_429": rate_limited,
            "cpu_s_per_1000": cpu * 1000.0 / done.max(1) as f64, "peak_rss_kib": rss,
            "floor_per_s": floor, "fraction_of_floor": floor.map(|f| rate / f),
            "floor_before_per_s": floor_before, "floor_after_per_s": floor_after,
            "machine_cpu_s_per_1000": machine,
        });
        if args.json {
            println!("{report}");
        } else {
            println!(
                "commands            {done} of {} ({}; concurrency {}, latency {} ms)",
                args.n, args.mix, args.concurrency, args.latency_ms
            );
            println!("outcomes            {outcomes:?}");
            println!("throughput          {rate:.0} commands/s over {elapsed:.2} s");
            if latencies.is_empty() {
                println!("publish -> event    not measured (--preload)");
            } else {
                println!(
                    "publish -> event    p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                    percentile(&latencies, 50.0),
                    percentile(&latencies, 95.0),
                    percentile(&latencies, 99.0)
                );
            }
            println!(
                "LastPass calls      {calls} ({:.2} per command)",
                calls as f64 / done.max(1) as f64
            );
            if let Some(rps) = args.rate_limit_rps {
                println!(
                    "answered 429        {rate_limited} (the simulator throttles above {rps} calls/s)"
                );
            }
            println!(
                "connector CPU       {:.2} s per 1,000 commands",
                cpu * 1000.0 / done.max(1) as f64
            );
            println!("connector peak RSS  {} KiB", rss);
            let m = &machine;
            println!(
                "machine CPU         {} s per 1,000 commands: connector {}, broker {}, bench and simulator {}, rest {}; idle {}",
                m["machine_busy"],
                m["connector"],
                m["broker"],
                m["bench_and_simulator"],
                m["rest"],
                m["idle_fraction"]
            );
            if let Some(f) = floor {
                println!(
                    "floor (bare lapin)  {f:.0} messages/s (before the connector {:.0}, after {:.0}); the connector is {:.2} of it",
                    floor_before.unwrap_or_default(),
                    floor_after.unwrap_or_default(),
                    rate / f
                );
            }
        }
        if missing > 0 {
            return Err(ToolFailure::Outcome(format!(
                "{missing} command(s) had no result within {:?}",
                args.timeout
            )));
        }
        Ok(())
    }
}
