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
    /// SIGINT or SIGTERM: the tool stopped early, after removing what it had declared.
    #[error("interrupted; everything it declared is removed")]
    Interrupted,
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

/// One readable line for an event: routing key, outcome, email, status, error code, command id;
/// for `command.dry_run` also what the real run would do.
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
    if routing_key == "command.dry_run" {
        // What the real run would do: the call (with its deleteaction), the outcome and status.
        let p = &d["dry_run"];
        let call = match (p["would_call"].as_str(), p["deleteaction"].as_u64()) {
            (Some(c), Some(a)) => format!("{c}:{a}"),
            (Some(c), None) => c.to_string(),
            (None, _) => "none".to_string(),
        };
        line.push_str(&format!(
            " would_call={call} would_be={} would_status={}",
            p["outcome"].as_str().unwrap_or("-"),
            p["account_status"].as_str().unwrap_or("-"),
        ));
        if let Some(code) = p["error"]["code"].as_str() {
            line.push_str(&format!(" would_fail={code}"));
        }
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

#[cfg(test)]
mod tests {
    use super::event_line;
    use serde_json::json;

    #[test]
    fn a_dry_run_line_says_what_would_be_done() {
        let body = json!({"subject": "jane@example.com", "data": {
            "command_id": "c1", "outcome": "dry_run", "account_status": "Active",
            "dry_run": {"would_call": "deluser", "deleteaction": 0, "outcome": "applied",
                "account_status": "Suspended"}}});
        let line = event_line("command.dry_run", body.to_string().as_bytes());
        assert!(line.starts_with("command.dry_run"), "{line}");
        assert!(
            line.contains("dry_run") && line.contains("status=Active"),
            "{line}"
        );
        assert!(
            line.contains("would_call=deluser:0 would_be=applied would_status=Suspended"),
            "{line}"
        );
        let body = json!({"subject": "x@example.com", "data": {"outcome": "dry_run",
            "dry_run": {"would_call": null, "outcome": "failed", "account_status": null,
                "error": {"code": "user_not_found"}}}});
        let line = event_line("command.dry_run", body.to_string().as_bytes());
        assert!(
            line.contains(
                "would_call=none would_be=failed would_status=- would_fail=user_not_found"
            ),
            "{line}"
        );
    }
}
