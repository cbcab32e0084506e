//! Everything that knows lapin: the topology, the confirming publisher, and the consumer
//! (connect, set up, dispatch, carry out each disposition of the processor, ack, drain,
//! reconnect).

mod consumer;
mod floor;
mod publisher;
mod tools;
mod topology;

pub(crate) use consumer::{AmqpSettings, run};
pub(crate) use floor::held_events_queue;
pub use floor::{bench_queues, floor};
pub use tools::{ParkedMessage, ReceivedEvent, ToolBroker, ToolError};
pub use topology::{Names, TopologyOptions, declare as declare_topology};

/// Checks that `url` is an AMQP URL lapin can use (scheme, host, port, vhost), before anything
/// connects: a typo is a configuration error, not an endless reconnect loop.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err("it must start with amqp:// or amqps://".into());
    }
    url.parse::<lapin::uri::AMQPUri>().map(|_| ())
}

/// What a connection attempt says about the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrokerCheck {
    Reachable,
    /// The broker answered and refused (ACCESS_REFUSED, an unknown vhost): a wrong `AMQP_URL`;
    /// retrying cannot help.
    Refused(String),
    /// Nobody answered (down, starting, a network problem): it may come back.
    Unreachable(String),
}

/// `host:port` of an AMQP URL, for log lines (never the credentials).
pub(crate) fn endpoint(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(u) => format!("{}:{}", u.authority.host, u.authority.port),
        Err(_) => "?".into(),
    }
}

/// Connects once and closes: does the broker take this URL?
pub(crate) async fn check_broker(url: &str, name: &str) -> BrokerCheck {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        lapin::Connection::connect(url, props),
    )
    .await
    {
        Err(_) => BrokerCheck::Unreachable(format!("no answer from {} within 10 s", endpoint(url))),
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "check".into()).await;
            BrokerCheck::Reachable
        }
        Ok(Err(e)) if e.is_io_error() => {
            BrokerCheck::Unreachable(format!("{}: {e}", endpoint(url)))
        }
        Ok(Err(e)) => BrokerCheck::Refused(format!("{}: {e}", endpoint(url))),
    }
}

/// Headers the connector reads and writes.
pub mod headers {
    /// Delayed redeliveries already done.
    pub const RETRY_ROUND: &str = "x-lpc-retry-round";
    /// LastPass attempts made in earlier rounds.
    pub const ATTEMPTS: &str = "x-lpc-attempts";
    /// On a parked message: the `error.code` of its event.
    pub const ERROR_CODE: &str = "x-lpc-error-code";
    /// On a parked message: a human-readable reason.
    pub const ERROR_MESSAGE: &str = "x-lpc-error-message";
    /// On a parked message: the queue it was consumed from.
    pub const ORIGINAL_QUEUE: &str = "x-lpc-original-queue";
    /// On a parked message: its original routing key.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-lpc-original-routing-key";
    /// On a parked message: when it was parked (RFC 3339).
    pub const PARKED_AT: &str = "x-lpc-parked-at";
    /// On a parked or retried copy: the original headers were too large and were dropped.
    pub const HEADERS_DROPPED: &str = "x-lpc-headers-dropped";
}
