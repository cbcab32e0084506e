//! The operator's commands beside `run`: `publish` a command (and `--wait` for its result),
//! follow `events`, inspect and re-drive the `dead-letter` queue, and the one-command `demo`.
//! They use the connector's own types and the broker through [`crate::amqp::ToolBroker`].

#[cfg(feature = "simulator")]
mod bench;
mod dead_letter;
#[cfg(feature = "simulator")]
mod demo;
mod events;
mod healthcheck;
mod publish;

#[cfg(feature = "simulator")]
pub use bench::{BenchArgs, bench};
pub use dead_letter::DeadLetterArgs;
#[cfg(feature = "simulator")]
pub use demo::DemoArgs;
pub use events::EventsArgs;
pub use healthcheck::{HealthcheckArgs, healthcheck};
pub use publish::PublishArgs;

use crate::amqp::{ToolBroker, ToolError};
use serde_json::Value;

pub use dead_letter::dead_letter;
#[cfg(feature = "simulator")]
pub use demo::demo;
pub use events::events;
pub use publish::publish;

/// Where a tool finds the broker: `AMQP_URL` (environment only: it holds the password) and the
/// prefix of the connector it talks to.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Prefix P of the connector's exchanges and queues.
    #[arg(long, env = "CONNECTOR_PREFIX", default_value = "lastpass")]
    pub prefix: String,
}

/// A tool failed; `main` prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum ToolFailure {
    #[error(transparent)]
    Broker(#[from] ToolError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Outcome(String),
}

async fn connect(args: &BrokerArgs, tool: &str) -> Result<ToolBroker, ToolFailure> {
    let url = std::env::var("AMQP_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| crate::config::DEFAULT_AMQP_URL.to_string());
    crate::amqp::check_url(&url)
        .map_err(|why| ToolFailure::Usage(format!("AMQP_URL is not usable: {why}")))?;
    Ok(ToolBroker::connect(&url, &args.prefix, tool).await?)
}

/// One readable line for an event: routing key, outcome, email, status, error code, command id.
pub fn event_line(routing_key: &str, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let d = &v["data"];
    let field = |k: &str| d[k].as_str().unwrap_or("-").to_string();
    let mut line = format!(
        "{:<22} {:<12} {:<32} status={}",
        routing_key,
        field("outcome"),
        v["subject"].as_str().unwrap_or("-"),
        field("account_status"),
    );
    if let Some(code) = d["error"]["code"].as_str() {
        line.push_str(&format!(" code={code}"));
    }
    if routing_key == "users.sync.completed" {
        line.push_str(&format!(
            " total={} deprovisioned={}",
            d["total"], d["deprovisioned"]
        ));
    }
    line.push_str(&format!(
        " command_id={}",
        d["command_id"]
            .as_str()
            .or(d["sync_id"].as_str())
            .unwrap_or("-")
    ));
    line
}
