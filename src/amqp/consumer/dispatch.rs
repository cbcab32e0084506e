//! The dispatch loop: take deliveries in arrival order while the credentials gate is open, at
//! most `concurrency` applied at once, one at a time per email ([`crate::keyed`]); each runs as
//! a task that processes it and settles it (publishes its event, waits for the confirm, acks).
//! A command's permit is released once it is processed, so the next one is applied while its
//! event is still being confirmed; its email's turn is held until it is settled.

use super::settle::settle;
use super::setup::Session;
use super::{AmqpSettings, SessionError};
use crate::command::{Incoming, Prepared, TraceContext};
use crate::keyed::Sequencer;
use crate::lastpass::LastPass;
use crate::processor::Processor;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info};

/// Dispatches until `stop` is cancelled (`Ok`) or the session is lost (`Err`).
pub(super) async fn dispatch<L: LastPass>(
    s: &AmqpSettings,
    processor: &Arc<Processor<L>>,
    session: &mut Session,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<(), SessionError> {
    let permits = Arc::new(Semaphore::new(usize::from(s.concurrency)));
    // Cancelled by a task whose publish failed: this session can no longer be trusted to
    // publish, so it ends (and its unacked deliveries come back on the next one).
    let broken = CancellationToken::new();
    let mut sequencer = Sequencer::new();
    let mut paused = false;
    let mut active = std::collections::HashSet::new();
    loop {
        reap(tasks)?;
        if broken.is_cancelled() {
            return Err(SessionError::PublishFailed);
        }
        if !processor.gate.is_open() {
            if !paused {
                paused = true;
                metrics::gauge!(crate::telemetry::PAUSED).set(1.0);
                info!("LastPass credentials refused: taking no new commands until they work");
            }
            if !tasks.is_empty() {
                // A command in flight keeps retrying the credentials; wait for it to succeed
                // (or end, after which one delivery is let through to probe again).
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = processor.gate.opened() => {}
                    _ = tasks.join_next() => {}
                }
                continue;
            }
        } else if paused {
            paused = false;
            metrics::gauge!(crate::telemetry::PAUSED).set(0.0);
            info!("LastPass credentials work again: resuming");
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = broken.cancelled() => return Err(SessionError::PublishFailed),
            d = session.deliveries.next() => d,
        };
        let (queue, delivery) = match next {
            None => return Err(SessionError::ConsumersCancelled),
            Some((_, Err(err))) => return Err(SessionError::Delivery(err)),
            Some((q, Ok(d))) => (q, d),
        };
        if active.insert(queue) {
            // Single active consumer: the broker hands a queue's deliveries to one consumer at
            // a time, and tells it nothing else; the first delivery is the sign.
            s.health.set_active(queue, true);
            info!(queue = %s.names.queue(queue),
                "this replica is now the active consumer of the queue");
        }
        let header = |name: &str| {
            delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(name))
                .and_then(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => {
                        std::str::from_utf8(s.as_bytes()).ok().map(str::to_string)
                    }
                    lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                    _ => None,
                })
        };
        let trace = header("traceparent")
            .and_then(|tp| TraceContext::parse(&tp, header("tracestate").as_deref()));
        let incoming = Incoming {
            body: delivery.data.clone(),
            queue,
            trace,
        };
        let prepared = Prepared::parse(incoming);
        let turn = prepared.key().map(|k| sequencer.enter(&k));
        let processor = processor.clone();
        let publisher = session.publisher.clone();
        let span = prepared.span();
        let broken = broken.clone();
        tasks.spawn(
            async move {
                let started = std::time::Instant::now();
                let in_flight = metrics::gauge!(crate::telemetry::IN_FLIGHT);
                in_flight.increment(1.0);
                let _turn = match turn {
                    Some(t) => Some(t.wait().await),
                    None => None,
                };
                let disposition = processor.process(prepared, &publisher).await;
                // Applied and recorded: its permit goes to the next command while this one's
                // event is published and confirmed and its delivery acked. At most
                // `concurrency` commands are applied at once; the ones settling are bounded by
                // the prefetch (twice that).
                drop(permit);
                settle(&publisher, delivery, queue, disposition, &broken).await;
                in_flight.decrement(1.0);
                metrics::histogram!(crate::telemetry::COMMAND_SECONDS, "type" => queue.as_str())
                    .record(started.elapsed().as_secs_f64());
            }
            .instrument(span),
        );
    }
}

/// Collects finished tasks. A panicked task is a bug whose delivery would stay unacked for the
/// life of the channel: the session is restarted so the broker redelivers it, and the queue's
/// delivery limit dead-letters it if it keeps failing.
fn reap(tasks: &mut JoinSet<()>) -> Result<(), SessionError> {
    while let Some(done) = tasks.try_join_next() {
        if let Err(e) = done
            && e.is_panic()
        {
            error!("a command task panicked; restarting the session so its delivery comes back");
            return Err(SessionError::TaskPanicked);
        }
    }
    Ok(())
}
