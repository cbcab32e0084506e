//! `lastpass-connector dead-letter`: list, show, re-drive and purge the parked commands of
//! `P.dead-letter`.

use super::{BrokerArgs, ToolFailure, connect};
use crate::amqp::ParkedMessage;
use crate::amqp::headers;
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct DeadLetterArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(subcommand)]
    pub action: DeadLetterAction,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum DeadLetterAction {
    /// One line per parked command: command id, type, email, code, parked at.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One parked command whole: its headers and its body.
    Show { command_id: String },
    /// Republish parked commands to P.commands with their original routing key and a fresh
    /// retry budget; each parked copy is removed only after the republish is confirmed.
    Redrive {
        /// Only those parked with this error code (e.g. retries_exhausted).
        #[arg(long)]
        code: Option<String>,
        /// Only this command id.
        #[arg(long)]
        id: Option<String>,
        /// Show what would be re-driven; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove every parked command.
    Purge {
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

fn field(body: &[u8], pointer: &str) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "-".into())
}

fn line(m: &ParkedMessage) -> String {
    format!(
        "{:<36} {:<17} {:<32} {:<20} {}",
        field(&m.body, "/command_id"),
        field(&m.body, "/type"),
        field(&m.body, "/user/email"),
        m.header(headers::ERROR_CODE).unwrap_or("-"),
        m.header(headers::PARKED_AT).unwrap_or("-"),
    )
}

pub async fn dead_letter(args: DeadLetterArgs) -> Result<(), ToolFailure> {
    let broker = connect(&args.broker, "dead-letter").await?;
    let result = match args.action {
        DeadLetterAction::List { limit } => {
            for m in broker.dead_letters(limit).await? {
                println!("{}", line(&m));
            }
            Ok(())
        }
        DeadLetterAction::Show { command_id } => {
            let all = broker.dead_letters(usize::MAX).await?;
            match all
                .iter()
                .find(|m| field(&m.body, "/command_id") == command_id)
            {
                Some(m) => {
                    for (k, v) in &m.headers {
                        println!("{k}: {v}");
                    }
                    println!();
                    println!("{}", String::from_utf8_lossy(&m.body));
                    Ok(())
                }
                None => Err(ToolFailure::Outcome(format!(
                    "no parked command with id {command_id}"
                ))),
            }
        }
        DeadLetterAction::Redrive { code, id, dry_run } => {
            let chosen = broker
                .redrive(
                    |m| {
                        code.as_deref()
                            .is_none_or(|c| m.header(headers::ERROR_CODE) == Some(c))
                            && id
                                .as_deref()
                                .is_none_or(|i| field(&m.body, "/command_id") == i)
                    },
                    dry_run,
                )
                .await?;
            for m in &chosen {
                println!(
                    "{}{}",
                    if dry_run {
                        "would re-drive "
                    } else {
                        "re-driven "
                    },
                    line(m)
                );
            }
            println!("{} command(s)", chosen.len());
            Ok(())
        }
        DeadLetterAction::Purge { yes } => {
            if yes {
                let n = broker.purge_dead_letters().await?;
                println!("purged {n} parked command(s)");
                Ok(())
            } else {
                Err(ToolFailure::Usage(
                    "purge removes every parked command for good: add --yes".into(),
                ))
            }
        }
    };
    broker.close().await;
    result
}
