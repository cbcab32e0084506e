//! Carrying out a disposition: publish what it says, wait for the confirms, then ack. Anything
//! failing means no ack: the broker redelivers, and the ledger makes the redelivery harmless.

use crate::amqp::publisher::Publisher;
use crate::command::CommandType;
use crate::event::EventSink;
use crate::processor::Disposition;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// `broken` is cancelled when a publish fails: the broker may have closed the publishing
/// channel (a 406 closes it), and a session that cannot publish must not go on applying
/// commands, so the dispatcher ends the session and the consumer reconnects.
pub(super) async fn settle(
    publisher: &Publisher,
    d: Delivery,
    queue: CommandType,
    disposition: Disposition,
    broken: &CancellationToken,
) {
    let published = match disposition {
        Disposition::Publish(event) => publisher.publish(std::slice::from_ref(&event)).await,
        Disposition::Park(event) => {
            let code = event
                .error
                .as_ref()
                .map_or(event.kind.routing_key(), |e| e.code.as_str());
            let parked = publisher
                .park(
                    &d.data,
                    &d.properties,
                    queue,
                    d.routing_key.as_str(),
                    &event,
                )
                .await;
            match (
                publisher.start_publish(std::slice::from_ref(&event)).await,
                parked,
            ) {
                (Ok(mut pending), Ok(p)) => {
                    pending.push(p);
                    let confirmed = Publisher::confirm_all(pending).await;
                    if confirmed.is_ok() {
                        metrics::counter!(crate::telemetry::DEAD_LETTERED, "code" => code)
                            .increment(1);
                    }
                    confirmed
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Disposition::RetryLater {
            round,
            attempts,
            delay,
        } => {
            publisher
                .retry_later(&d.data, &d.properties, queue, round, attempts, delay)
                .await
        }
        Disposition::Abandon => {
            give_back(d).await;
            return;
        }
    };
    match published {
        Ok(()) => {
            if let Err(err) = d.ack(BasicAckOptions::default()).await {
                warn!(error = %err, "ack failed after the event was confirmed; the command will be redelivered and its event repeated");
            }
        }
        Err(err) => {
            error!(error = %crate::error_chain(&err), "publishing failed; the command is not acked and will be redelivered; the session restarts");
            give_back(d).await;
            broken.cancel();
        }
    }
}

async fn give_back(d: Delivery) {
    let _ = d
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}
