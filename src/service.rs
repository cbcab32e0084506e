//! `lastpass-connector run`: wires the configuration into a LastPass client, the store, the
//! processor and the AMQP consumer, and runs until `stop` is cancelled, or until the consumer
//! ends or panics on its own, which is an error (the process exits non-zero and its supervisor
//! restarts it, rather than staying up consuming nothing).

use crate::amqp::{self, AmqpSettings, Names, TopologyOptions};
use crate::check::CheckState;
use crate::config::{Config, ConfigError};
use crate::event::EventFactory;
use crate::gate::Gate;
use crate::health::Health;
use crate::lastpass::{Client, LastPassError};
use crate::processor::Processor;
use crate::store::{CommandLedger, PgSettings, SnapshotStore, StoreError};
use crate::sync::SyncSettings;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Why `run` failed: at startup (the message names the cause), or later because the consumer
/// died.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the LastPass client cannot be built")]
    Client(#[source] LastPassError),
    #[error("cannot serve the HTTP endpoints on CONNECTOR_HTTP_ADDR {addr}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A check at start found a cause that cannot fix itself (exit 2).
    #[error("{0}")]
    Startup(String),
    #[error("the consumer task panicked: {0}")]
    ConsumerPanicked(String),
    #[error("the consumer task ended without being asked to stop")]
    ConsumerEnded,
}

/// Runs the connector until `stop` is cancelled, then stops taking deliveries, finishes (or
/// gives back) what is in flight, and returns `Ok`. Returns `Err` at once if the consumer task
/// ends or panics before that.
pub async fn run(config: Config, stop: CancellationToken) -> Result<(), RunError> {
    for item in crate::check::check(&config).await {
        match item.state {
            CheckState::Ok => info!(check = item.what, "{}", item.detail),
            CheckState::Failing => {
                warn!(
                    check = item.what,
                    "{}; continuing, it is retried", item.detail
                )
            }
            CheckState::Fatal => {
                return Err(RunError::Startup(format!("{}: {}", item.what, item.detail)));
            }
        }
    }
    let provhash = config.provhash.load()?;
    let client = Client::new(config.client_config(provhash)).map_err(RunError::Client)?;
    let health = Health::default();
    let gate = Gate::default();
    let listener = crate::http::bind(config.http_addr)
        .await
        .map_err(|source| RunError::Http {
            addr: config.http_addr,
            source,
        })?;
    crate::telemetry::handle();
    let tasks = TaskTracker::new();
    tasks.spawn(crate::http::serve(
        listener,
        crate::http::Endpoints {
            health: health.clone(),
            gate: gate.clone(),
            stop: stop.clone(),
        },
    ));
    let Some((ledger, snapshot)) = open_store(&config, &stop).await? else {
        info!("stopped before the state store could be opened");
        tasks.close();
        tasks.wait().await;
        return Ok(());
    };
    let store_ok = health.store_flag();
    store_ok.store(true, Ordering::Relaxed);

    let reload = {
        let client = client.clone();
        let source = config.provhash.clone();
        Arc::new(move || match source.load() {
            Ok(p) => client.set_provhash(p),
            Err(e) => warn!(error = %e, "could not re-read the provhash"),
        })
    };
    let lastpass = Arc::new(client);
    let batcher = (config.batch_max > 1).then(|| {
        crate::batch::Batcher::new(
            lastpass.clone(),
            crate::batch::BatchSettings {
                max: usize::from(config.batch_max),
                window: config.batch_window,
                page_size: config.sync_page_size,
            },
        )
    });
    let processor = Arc::new(Processor {
        lastpass,
        ledger: ledger.clone(),
        snapshot,
        events: EventFactory::new(&config.cid),
        retry: config.retry.clone(),
        sync: SyncSettings {
            page_size: config.sync_page_size,
        },
        gate,
        reload_credentials: reload,
        stop: stop.clone(),
        in_flight_window: config.lastpass_timeout + IN_FLIGHT_MARGIN,
        store_ok: store_ok.clone(),
        batcher,
        dry_run: config.dry_run,
    });
    let settings = AmqpSettings {
        url: config.amqp_url.clone(),
        names: Names::new(&config.prefix),
        connection_name: format!(
            "lastpass-connector {} pid {}",
            config.prefix,
            std::process::id()
        ),
        concurrency: config.concurrency,
        topology: TopologyOptions {
            delivery_limit: config.delivery_limit,
            retry_delays: config.retry.round_delays.clone(),
        },
        shutdown_grace: config.shutdown_grace,
        sync_interval: config.sync_interval,
        shared_state: config.state_url.is_some(),
        health,
    };

    info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = crate::GIT_COMMIT,
        prefix = %config.prefix,
        cid = %config.cid,
        api = %config.api_url,
        dry_run = config.dry_run,
        "starting"
    );
    if config.dry_run {
        warn!(
            dry_run = true,
            "dry-run mode: user commands are only looked up and answered with command.dry_run; \
             nothing is changed in LastPass and nothing is recorded as completed (syncs, which \
             only read, run as usual)"
        );
    }
    tasks.spawn(prune_periodically(ledger, stop.clone()));
    let mut consumer = tasks.spawn(amqp::run(settings, processor));
    tasks.close();

    let result = tokio::select! {
        ended = &mut consumer => {
            // The consumer returns on its own only once `stop` is cancelled.
            if stop.is_cancelled() { consumer_result(ended) } else {
                let err = consumer_result(ended).err().unwrap_or(RunError::ConsumerEnded);
                error!(error = %err, "the consumer died; stopping so that a supervisor restarts the process");
                Err(err)
            }
        }
        _ = stop.cancelled() => {
            info!("shutdown requested");
            consumer_result(consumer.await)
        }
    };
    stop.cancel();
    tasks.wait().await;
    info!("stopped");
    result
}

/// Added to the LastPass timeout: how long after another process recorded an intent its call
/// may still land.
const IN_FLIGHT_MARGIN: Duration = Duration::from_secs(2);

type Stores = (Arc<dyn CommandLedger>, Arc<dyn SnapshotStore>);

/// Opens the configured store: the embedded one (an error is fatal), or the shared one in
/// PostgreSQL, retried with backoff while the database cannot be reached (the replica consumes
/// nothing meanwhile). `None` if `stop` was cancelled first.
async fn open_store(config: &Config, stop: &CancellationToken) -> Result<Option<Stores>, RunError> {
    let Some(url) = &config.state_url else {
        let (l, s) = crate::store::open_embedded(&config.state_dir, config.ledger_retention)?;
        info!(
            state_dir = %config.state_dir.display(),
            "CONNECTOR_STATE_URL is not set: completed commands are kept in this process's \
             embedded store and cannot be shared; a second replica on the same queues would \
             apply again what this one completed. Run replicas with CONNECTOR_STATE_URL."
        );
        return Ok(Some((Arc::new(l), Arc::new(s))));
    };
    let settings = PgSettings {
        url: url.clone(),
        prefix: config.prefix.clone(),
        retention: config.ledger_retention,
        concurrency: usize::from(config.concurrency),
    };
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match crate::store::open_postgres(&settings).await {
            Ok((l, s)) => {
                info!("state store: PostgreSQL, shared by every replica of this prefix");
                return Ok(Some((Arc::new(l), Arc::new(s))));
            }
            // A URL the driver refuses, a schema newer than this version: retrying cannot help.
            Err(e @ StoreError::Schema(_)) => return Err(e.into()),
            Err(e) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(15));
                warn!(error = %crate::error_chain(&e), retry_in_ms = wait.as_millis() as u64,
                    "the state database cannot be reached; not ready, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return Ok(None),
                }
            }
        }
    }
}

fn consumer_result(r: Result<(), tokio::task::JoinError>) -> Result<(), RunError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            Err(RunError::ConsumerPanicked(text))
        }
        Err(_) => Err(RunError::ConsumerEnded),
    }
}

async fn prune_periodically(ledger: Arc<dyn CommandLedger>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match ledger.prune().await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "pruned the ledger"),
            Err(e) => warn!(error = %crate::error_chain(&e), "could not prune the ledger"),
        }
    }
}

/// Cancels `stop` at SIGTERM or SIGINT.
pub fn cancel_on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        termination().await;
        stop.cancel();
    });
}

async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
