//! Everything that knows lapin: the topology, the confirming publisher, and the consumer
//! (connect, set up, dispatch, carry out each disposition of the processor, ack, drain,
//! reconnect).

mod consumer;
mod floor;
mod publisher;
mod tools;
mod topology;

pub(crate) use consumer::{AmqpSettings, run};
pub use floor::floor;
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
