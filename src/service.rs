//! `lastpass-connector run`: wires the configuration into a LastPass client, the ledger, the
//! processor and the AMQP consumer, and runs until the shutdown future resolves.

use crate::amqp::{self, AmqpSettings, Names, TopologyOptions};
use crate::config::Config;
use crate::event::EventFactory;
use crate::lastpass::{Client, ClientConfig};
use crate::ledger::Ledger;
use crate::processor::{Gate, Processor};
use crate::sync::SyncSettings;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Startup failed (the process exits non-zero; the message names the cause).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("LastPass client: {0}")]
    Client(String),
}

/// Runs the connector until `shutdown` resolves, then stops taking deliveries, finishes (or
/// gives back) what is in flight, and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let provhash = config.provhash.load()?;
    let client = Client::new(ClientConfig {
        api_url: config.api_url.clone(),
        cid: config.cid.clone(),
        provhash,
        timeout: config.lastpass_timeout,
    })
    .map_err(|e| StartError::Client(e.to_string()))?;
    let ledger = Ledger::open(&config.state_dir, config.ledger_retention)?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let reload = {
        let client = client.clone();
        let source = config.provhash.clone();
        Arc::new(move || match source.load() {
            Ok(p) => client.set_provhash(p),
            Err(e) => warn!(error = %e, "could not re-read the provhash"),
        })
    };
    let processor = Arc::new(Processor {
        lastpass: Arc::new(client),
        ledger: ledger.clone(),
        events: EventFactory::new(&config.cid),
        retry: config.retry.clone(),
        sync: SyncSettings {
            page_size: config.sync_page_size,
        },
        gate: Gate::default(),
        reload_credentials: reload,
        shutdown: stop_rx.clone(),
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
    };
    let (connected_tx, _connected_rx) = watch::channel(false);

    let pruner = tokio::spawn(prune_periodically(ledger));
    info!(prefix = %config.prefix, cid = %config.cid, api = %config.api_url, "starting");
    let consumer = tokio::spawn(amqp::run(settings, processor, connected_tx));
    shutdown.await;
    info!("shutdown requested");
    stop_tx.send_replace(true);
    let _ = consumer.await;
    pruner.abort();
    info!("stopped");
    Ok(())
}

async fn prune_periodically(ledger: Ledger) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match ledger.prune().await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "pruned the ledger"),
            Err(e) => warn!(error = %e, "could not prune the ledger"),
        }
    }
}

/// Resolves at SIGTERM or SIGINT.
pub async fn termination() {
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
