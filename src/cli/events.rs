//! `lastpass-connector events`: follow `P.events` live on a temporary queue, one readable line
//! per event (`--json` for the raw CloudEvent).

use super::{BrokerArgs, ToolFailure, connect, event_line};
use futures_util::StreamExt;

#[derive(clap::Args, Debug, Clone)]
pub struct EventsArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Print each raw CloudEvent, one JSON document per line.
    #[arg(long)]
    pub json: bool,
}

pub async fn events(
    args: EventsArgs,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), ToolFailure> {
    let broker = connect(&args.broker, "events").await?;
    let events = broker.follow_events().await?;
    let mut events = std::pin::pin!(events);
    loop {
        let next = tokio::select! {
            e = events.next() => e,
            _ = stop.cancelled() => break,
        };
        let Some(e) = next else { break };
        if args.json {
            println!("{}", String::from_utf8_lossy(&e.body));
        } else {
            println!("{}", event_line(&e.routing_key, &e.body));
        }
    }
    broker.close().await;
    Ok(())
}
