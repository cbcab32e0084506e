//! `lastpass-connector publish`: build a command, publish it to `P.commands`, print its id;
//! with `--wait`, print its result event and exit non-zero when it failed or was rejected.

use super::{BrokerArgs, ToolFailure, connect, event_line};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Wait for the command's result event, print it, and exit 1 if it failed or was rejected.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "60s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
    /// Print the raw CloudEvent (with `--wait`).
    #[arg(long)]
    pub json: bool,
    /// A raw command from a file (its `type` is the routing key) instead of a subcommand.
    #[arg(long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Who asks (the command's `requested_by`).
    #[arg(long, default_value = "lastpass-connector publish")]
    pub requested_by: String,
    #[command(subcommand)]
    pub command: Option<PublishCommand>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum PublishCommand {
    /// Create a (non-admin) LastPass user.
    Provision {
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
    },
    /// Block a user's login, keeping data and membership.
    Suspend {
        #[arg(long)]
        email: String,
    },
    /// Delete a user and their data; the license is reclaimed.
    Deprovision {
        #[arg(long)]
        email: String,
    },
    /// Report every account.
    Sync,
}

/// The command JSON for a subcommand.
pub(crate) fn build(command: &PublishCommand, requested_by: &str) -> Value {
    let id = Uuid::new_v4();
    let mut v = match command {
        PublishCommand::Provision {
            email,
            first_name,
            last_name,
        } => json!({"type": "user.provision",
            "user": {"email": email, "first_name": first_name, "last_name": last_name}}),
        PublishCommand::Suspend { email } => {
            json!({"type": "user.suspend", "user": {"email": email}})
        }
        PublishCommand::Deprovision { email } => {
            json!({"type": "user.deprovision", "user": {"email": email}})
        }
        PublishCommand::Sync => json!({"type": "users.sync"}),
    };
    v["command_id"] = json!(id);
    v["requested_by"] = json!(requested_by);
    v
}

pub async fn publish(args: PublishArgs) -> Result<(), ToolFailure> {
    let command = match (&args.file, &args.command) {
        (Some(_), Some(_)) => {
            return Err(ToolFailure::Usage(
                "give either --file or a subcommand, not both".into(),
            ));
        }
        (Some(path), None) => {
            let text = std::fs::read(path)
                .map_err(|e| ToolFailure::Usage(format!("{}: {e}", path.display())))?;
            serde_json::from_slice::<Value>(&text)
                .map_err(|e| ToolFailure::Usage(format!("{}: not JSON: {e}", path.display())))?
        }
        (None, Some(c)) => build(c, &args.requested_by),
        (None, None) => {
            return Err(ToolFailure::Usage(
                "say what to publish: provision, suspend, deprovision, sync, or --file FILE".into(),
            ));
        }
    };
    let routing_key = command["type"]
        .as_str()
        .ok_or_else(|| ToolFailure::Usage("the command has no string `type`".into()))?
        .to_string();
    let id = command["command_id"].as_str().unwrap_or("").to_string();
    let broker = connect(&args.broker, "publish").await?;
    // Follow before publishing, so the result cannot be missed.
    let events = if args.wait {
        Some(broker.follow_events().await?)
    } else {
        None
    };
    broker
        .publish_command(&routing_key, command.to_string().as_bytes(), &[])
        .await?;
    println!("{id}");
    let Some(events) = events else {
        broker.close().await;
        return Ok(());
    };
    let mut events = std::pin::pin!(events);
    let wanted = async {
        while let Some(e) = events.next().await {
            let v: Value = serde_json::from_slice(&e.body).unwrap_or_default();
            let d = &v["data"];
            if d["command_id"] == id.as_str() || d["sync_id"] == id.as_str() {
                if e.routing_key == "user.synced" {
                    continue;
                }
                return Some((e, v));
            }
        }
        None
    };
    let found = tokio::time::timeout(args.timeout, wanted).await;
    broker.close().await;
    let (event, value) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return Err(ToolFailure::Outcome("the event stream ended".into())),
        Err(_) => {
            return Err(ToolFailure::Outcome(format!(
                "no result for command {id} within {:?} (is the connector running under prefix {:?}?)",
                args.timeout, args.broker.prefix
            )));
        }
    };
    if args.json {
        println!("{}", String::from_utf8_lossy(&event.body));
    } else {
        println!("{}", event_line(&event.routing_key, &event.body));
    }
    match value["data"]["outcome"].as_str() {
        Some("failed") | Some("rejected") => Err(ToolFailure::Outcome(format!(
            "the command was {}: {}",
            value["data"]["outcome"].as_str().unwrap_or(""),
            value["data"]["error"]["message"].as_str().unwrap_or("")
        ))),
        _ => Ok(()),
    }
}
