//! The consumer loop: connect (named, so an operator or a test can find this connection),
//! declare, consume the work queues, dispatch each delivery in arrival order (one at a time per
//! email, up to `concurrency` at once), carry out its disposition, ack only after every publish
//! for it is confirmed. On connection loss: wait for in-flight work, reconnect with backoff,
//! redeclare, resume. On shutdown: cancel the consumers, finish in-flight work within the grace
//! period, close.

use super::headers;
use super::publisher::{Publisher, int_header};
use super::topology::{self, Names, TopologyOptions};
use crate::command::CommandType;
use crate::event::EventSink;
use crate::keyed::Sequencer;
use crate::lastpass::LastPass;
use crate::processor::{Disposition, Incoming, Prepared, Processor};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, select_all};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, warn};
use uuid::Uuid;

/// What the consumer needs to know about the broker.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    pub url: String,
    pub names: Names,
    /// Shown in the broker's connection list (`connection_name`).
    pub connection_name: String,
    pub concurrency: u16,
    pub topology: TopologyOptions,
    pub shutdown_grace: Duration,
    /// Publish a `users.sync` command this often.
    pub sync_interval: Option<Duration>,
}

enum End {
    Shutdown,
    Lost(String),
}

/// Runs until shutdown is signalled; reconnects on its own. Returns when every in-flight
/// delivery is settled or given back.
pub async fn run<L: LastPass>(
    settings: AmqpSettings,
    processor: Arc<Processor<L>>,
    connected: watch::Sender<bool>,
) {
    let mut shutdown = processor.shutdown.clone();
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let end = session(&settings, &processor, &connected).await;
        connected.send_replace(false);
        match end {
            Ok(End::Shutdown) => return,
            Ok(End::Lost(why)) | Err(why) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(15));
                warn!(reason = %why, retry_in = ?wait, "RabbitMQ connection lost or refused; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

type Deliveries = BoxStream<'static, (CommandType, lapin::Result<Delivery>)>;

async fn session<L: LastPass>(
    s: &AmqpSettings,
    processor: &Arc<Processor<L>>,
    connected: &watch::Sender<bool>,
) -> Result<End, String> {
    let e = |what: &'static str| move |err: lapin::Error| format!("{what}: {err}");
    let conn = Connection::connect(
        &s.url,
        ConnectionProperties::default().with_connection_name(s.connection_name.clone().into()),
    )
    .await
    .map_err(e("connect"))?;
    let result = serve(s, processor, connected, &conn).await;
    let _ = conn.close(200, "lastpass-connector stopping".into()).await;
    result
}

async fn serve<L: LastPass>(
    s: &AmqpSettings,
    processor: &Arc<Processor<L>>,
    connected: &watch::Sender<bool>,
    conn: &Connection,
) -> Result<End, String> {
    let e = |what: &'static str| move |err: lapin::Error| format!("{what}: {err}");
    let names = Arc::new(s.names.clone());
    let topo = conn.create_channel().await.map_err(e("channel"))?;
    topology::declare(&topo, &names, &s.topology)
        .await
        .map_err(e("declaring the topology"))?;
    let _ = topo.close(200, "declared".into()).await;

    let pub_ch = conn.create_channel().await.map_err(e("channel"))?;
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(e("confirm.select"))?;
    let publisher = Publisher::new(pub_ch, names.clone());

    let work = conn.create_channel().await.map_err(e("channel"))?;
    work.basic_qos(s.concurrency.saturating_mul(2), BasicQosOptions::default())
        .await
        .map_err(e("basic.qos"))?;
    let sync_ch = conn.create_channel().await.map_err(e("channel"))?;
    sync_ch
        .basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(e("basic.qos"))?;

    let instance = Uuid::new_v4().simple().to_string();
    let mut streams: Vec<Deliveries> = Vec::new();
    let mut tags = Vec::new();
    for t in CommandType::ALL {
        let ch = if t == CommandType::Sync {
            &sync_ch
        } else {
            &work
        };
        let tag = format!(
            "lastpass-connector.{}.{}",
            t.queue_suffix(),
            &instance[..12]
        );
        let consumer = ch
            .basic_consume(
                names.queue(t).into(),
                tag.clone().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(e("basic.consume"))?;
        tags.push((ch.clone(), tag));
        streams.push(consumer.map(move |d| (t, d)).boxed());
    }
    let mut deliveries = select_all(streams);
    connected.send_replace(true);
    info!(prefix = %names.prefix, connection = %s.connection_name, "consuming");

    let ticker = s.sync_interval.map(|every| {
        let publisher = publisher.clone();
        let prefix = names.prefix.clone();
        tokio::spawn(scheduled_syncs(publisher, prefix, every))
    });

    let mut shutdown = processor.shutdown.clone();
    let permits = Arc::new(Semaphore::new(usize::from(s.concurrency)));
    let mut sequencer = Sequencer::new();
    let mut tasks = JoinSet::new();
    let mut paused = false;
    let end = loop {
        if let Some(why) = reap(&mut tasks) {
            break End::Lost(why);
        }
        if !processor.gate.is_open() {
            if !paused {
                paused = true;
                info!("LastPass credentials refused: taking no new commands until they work");
            }
            if !tasks.is_empty() {
                // A command in flight keeps retrying the credentials; wait for it to succeed
                // (or end, after which one delivery is let through to probe again).
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
                    _ = processor.gate.opened() => {}
                    _ = tasks.join_next() => {}
                }
                continue;
            }
        } else if paused {
            paused = false;
            info!("LastPass credentials work again: resuming");
        }
        let permit = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let next = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break End::Shutdown,
            d = deliveries.next() => d,
        };
        let (queue, delivery) = match next {
            None => break End::Lost("the broker cancelled the consumers".into()),
            Some((_, Err(err))) => break End::Lost(err.to_string()),
            Some((q, Ok(d))) => (q, d),
        };
        let incoming = Incoming {
            body: delivery.data.clone(),
            queue,
            round: int_header(&delivery.properties, headers::RETRY_ROUND)
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
            attempts: int_header(&delivery.properties, headers::ATTEMPTS)
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
        };
        let prepared = Prepared::parse(incoming);
        let turn = prepared.key().map(|k| sequencer.enter(&k));
        let processor = processor.clone();
        let publisher = publisher.clone();
        let span = prepared.span();
        tasks.spawn(
            async move {
                let _turn = match turn {
                    Some(t) => Some(t.wait().await),
                    None => None,
                };
                let disposition = processor.process(prepared, &publisher).await;
                settle(&publisher, delivery, queue, disposition).await;
                drop(permit);
            }
            .instrument(span),
        );
    };

    if let Some(t) = ticker {
        t.abort();
    }
    if matches!(end, End::Shutdown) {
        // Take no more deliveries; whatever is prefetched but not dispatched goes back when the
        // channel closes.
        for (ch, tag) in &tags {
            let _ = ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        info!(
            in_flight = tasks.len(),
            "shutting down: finishing in-flight commands"
        );
    }
    drop(deliveries);
    let grace = s.shutdown_grace;
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            left = tasks.len(),
            "in-flight commands did not finish in time; giving them back"
        );
        tasks.abort_all();
    }
    Ok(end)
}

/// Collects finished tasks. A panicked task is a bug whose delivery would stay unacked for the
/// life of the channel: the session is restarted so the broker redelivers it, and the queue's
/// delivery limit dead-letters it if it keeps failing.
fn reap(tasks: &mut JoinSet<()>) -> Option<String> {
    while let Some(done) = tasks.try_join_next() {
        if let Err(e) = done
            && e.is_panic()
        {
            error!("a command task panicked; restarting the session so its delivery comes back");
            return Some("a command task panicked".into());
        }
    }
    None
}

/// Carries out a disposition: publish what it says, wait for the confirms, then ack. Anything
/// failing means no ack: the broker redelivers, and the ledger makes the redelivery harmless.
async fn settle(publisher: &Publisher, d: Delivery, queue: CommandType, disposition: Disposition) {
    let published = match disposition {
        Disposition::Publish(event) => publisher.publish(std::slice::from_ref(&event)).await,
        Disposition::Park {
            event,
            code,
            message,
        } => {
            let parked = publisher
                .park(
                    &d.data,
                    &d.properties,
                    queue,
                    d.routing_key.as_str(),
                    &code,
                    &message,
                )
                .await;
            match (
                publisher.start_publish(std::slice::from_ref(&event)).await,
                parked,
            ) {
                (Ok(mut pending), Ok(p)) => {
                    pending.push(p);
                    Publisher::confirm_all(pending).await
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
            let _ = d
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
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
            error!(error = %err, "publishing failed; the command is not acked and will be redelivered");
            let _ = d
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// Publishes a `users.sync` command every `every`. The command id is derived from the prefix
/// and the time slot, so replicas that tick in the same slot publish the same command.
async fn scheduled_syncs(publisher: Publisher, prefix: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let slot = chrono::Utc::now().timestamp_millis() as u128 / every.as_millis().max(1);
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{prefix}/sync/{slot}").as_bytes(),
        );
        let body = serde_json::json!({
            "command_id": id, "type": "users.sync", "requested_by": "lastpass-connector schedule",
        });
        match publisher
            .publish_command("users.sync", body.to_string().as_bytes())
            .await
        {
            Ok(()) => debug!(command_id = %id, "scheduled sync requested"),
            Err(err) => warn!(error = %err, "could not request the scheduled sync"),
        }
    }
}
