//! The consumer: connect (named, so an operator or a test can find this connection), set up the
//! channels and consumers ([`setup`]), dispatch each delivery ([`dispatch`]), carry out its
//! disposition and ack ([`settle`]), and at the end of a session give back or finish what is in
//! flight ([`drain`]). On connection loss it reconnects with backoff and resumes; it returns
//! only when `stop` is cancelled.

mod dispatch;
mod drain;
mod schedule;
mod settle;
mod setup;

use super::topology::{Names, TopologyOptions};
use crate::lastpass::LastPass;
use crate::processor::Processor;
use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the consumer needs to know about the broker.
#[derive(Debug, Clone)]
pub(crate) struct AmqpSettings {
    pub url: String,
    pub names: Names,
    /// Shown in the broker's connection list (`connection_name`).
    pub connection_name: String,
    pub concurrency: u16,
    pub topology: TopologyOptions,
    pub shutdown_grace: Duration,
    /// Publish a `users.sync` command this often.
    pub sync_interval: Option<Duration>,
    /// Whether completions are shared with other replicas (`CONNECTOR_STATE_URL`): if not, a
    /// replica that finds another consumer on its queues warns.
    pub shared_state: bool,
    /// Readiness as `/readyz` reports it.
    pub health: crate::health::Health,
}

/// Why a session with the broker ended, other than a requested stop.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("cannot connect to RabbitMQ")]
    Connect(#[source] lapin::Error),
    #[error(
        "a queue of this prefix exists with other arguments than this version declares \
         (RabbitMQ: {reason}). The user-command queues now have single active consumer, which \
         RabbitMQ cannot add to an existing queue: migrate them as the README's \"Upgrading \
         queues to single active consumer\" says, or use a new CONNECTOR_PREFIX"
    )]
    QueueArguments { reason: String },
    #[error("setting up the session failed: {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker cancelled the consumers")]
    ConsumersCancelled,
    #[error("the delivery stream failed")]
    Delivery(#[source] lapin::Error),
    #[error("a command task panicked; the session restarts so its delivery comes back")]
    TaskPanicked,
    #[error("a publish failed; the session restarts with fresh channels")]
    PublishFailed,
}

/// Runs until `stop` is cancelled; reconnects on its own. Returns when every in-flight delivery
/// is settled or given back.
pub(crate) async fn run<L: LastPass>(settings: AmqpSettings, processor: Arc<Processor<L>>) {
    let stop = processor.stop.clone();
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times()
        .build();
    while !stop.is_cancelled() {
        let end = session(&settings, &processor, &stop).await;
        settings.health.set_connected(false);
        let Err(why) = end else { return };
        metrics::counter!(crate::telemetry::RECONNECTS).increment(1);
        let wait = backoff.next().unwrap_or(Duration::from_secs(15));
        warn!(error = %crate::error_chain(&why), broker = %super::endpoint(&settings.url),
            retry_in_ms = wait.as_millis() as u64, "RabbitMQ session ended; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One connection: set up, dispatch until the connection is lost or `stop` is cancelled, drain,
/// close. `Ok` means a requested stop.
async fn session<L: LastPass>(
    s: &AmqpSettings,
    processor: &Arc<Processor<L>>,
    stop: &CancellationToken,
) -> Result<(), SessionError> {
    let conn = Connection::connect(
        &s.url,
        ConnectionProperties::default().with_connection_name(s.connection_name.clone().into()),
    )
    .await
    .map_err(SessionError::Connect)?;
    let result = async {
        let mut session = setup::open(s, &conn).await?;
        s.health.set_connected(true);
        info!(prefix = %s.names.prefix, connection = %s.connection_name,
            "consuming (standby until the broker makes this replica the active consumer)");
        debug_panic_hook();
        let ticker = s.sync_interval.map(|every| {
            tokio::spawn(schedule::scheduled_syncs(
                session.publisher.clone(),
                s.names.prefix.clone(),
                every,
            ))
        });
        let mut tasks = tokio::task::JoinSet::new();
        let end = dispatch::dispatch(s, processor, &mut session, &mut tasks, stop).await;
        if let Some(t) = ticker {
            t.abort();
        }
        drain::drain(session, tasks, end.is_ok(), s.shutdown_grace).await;
        end
    }
    .await;
    let _ = conn.close(200, "lastpass-connector stopping".into()).await;
    result
}

/// Debug builds only: `LPC_DEBUG_PANIC_IN_CONSUMER=1` makes the consumer task panic once it is
/// consuming, so a test can check that the process then exits non-zero (a supervisor restarts
/// it) instead of staying up and consuming nothing. Release builds have no such switch.
fn debug_panic_hook() {
    #[cfg(debug_assertions)]
    if std::env::var_os("LPC_DEBUG_PANIC_IN_CONSUMER").is_some() {
        panic!("LPC_DEBUG_PANIC_IN_CONSUMER is set: the consumer task panics on purpose");
    }
}
