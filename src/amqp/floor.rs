//! The floor of the benchmark: the AMQP part of the connector's work with nothing else — consume
//! from a quorum queue with prefetch `concurrency`, publish one persistent confirmed event per
//! message, ack after the confirm. What the connector does beyond this is its own cost.

use super::tools::ToolError;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

fn amqp(what: &'static str) -> impl FnOnce(lapin::Error) -> ToolError {
    move |source| ToolError::Amqp { what, source }
}

/// The floor's input and output queues under `prefix` (deleted by [`floor`] itself, and by a
/// bench interrupted while the floor ran).
fn queues(prefix: &str) -> [String; 2] {
    [format!("{prefix}.floor.in"), format!("{prefix}.floor.out")]
}

/// The quorum queue a queued-first benchmark under `prefix` holds the connector's result events
/// in, as the floor's output holds its messages.
pub(crate) fn held_events_queue(prefix: &str) -> String {
    format!("{prefix}.bench.events")
}

/// Every queue a benchmark under `prefix` declares besides the connector's topology: the
/// floor's two and the held events'. The bench deletes them at its end, also when interrupted.
pub fn bench_queues(prefix: &str) -> [String; 3] {
    let [input, output] = queues(prefix);
    [input, output, held_events_queue(prefix)]
}

/// Runs the bare loop over `n` messages of `body`; returns the time from the first delivery to
/// the last ack. Declares and deletes its own queues under `prefix`.
pub async fn floor(
    url: &str,
    prefix: &str,
    n: usize,
    concurrency: u16,
    body: &[u8],
) -> Result<Duration, ToolError> {
    let conn = Connection::connect(
        url,
        ConnectionProperties::default()
            .with_connection_name(format!("lastpass-connector bench floor {prefix}").into()),
    )
    .await
    .map_err(amqp("connecting"))?;
    let [input, output] = queues(prefix);
    let setup = conn.create_channel().await.map_err(amqp("channel"))?;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    // Deleted below; should this process be killed first, the broker drops them a minute after
    // their last use instead of keeping thousands of messages for ever.
    quorum.insert("x-expires".into(), AMQPValue::LongUInt(60_000));
    for q in [&input, &output] {
        setup
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                quorum.clone(),
            )
            .await
            .map_err(amqp("declaring the floor queues"))?;
    }
    let result = run(&conn, &input, &output, n, concurrency, body).await;
    // On a fresh channel: the setup channel may have been closed by an error in the run.
    drop(setup);
    let cleanup = conn.create_channel().await.map_err(amqp("channel"));
    for q in [&input, &output] {
        let deleted = match &cleanup {
            Ok(ch) => ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = deleted {
            tracing::warn!(queue = %q, error = %e, "could not delete a floor queue");
        }
    }
    let _ = conn.close(200, "floor done".into()).await;
    result
}

async fn run(
    conn: &Connection,
    input: &str,
    output: &str,
    n: usize,
    concurrency: u16,
    body: &[u8],
) -> Result<Duration, ToolError> {
    // Fill the input queue first, confirmed in batches.
    let filler = conn.create_channel().await.map_err(amqp("channel"))?;
    filler
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp("confirm.select"))?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for _ in chunk {
            pending.push(
                filler
                    .basic_publish(
                        "".into(),
                        input.into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .map_err(amqp("publishing"))?,
            );
        }
        for p in pending {
            p.await.map_err(amqp("confirm"))?;
        }
    }
    let work = conn.create_channel().await.map_err(amqp("channel"))?;
    work.basic_qos(concurrency, BasicQosOptions::default())
        .await
        .map_err(amqp("basic.qos"))?;
    let publisher = conn.create_channel().await.map_err(amqp("channel"))?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(amqp("confirm.select"))?;
    let mut consumer = work
        .basic_consume(
            input.into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp("consuming"))?;
    let permits = Arc::new(Semaphore::new(usize::from(concurrency)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = None;
    for _ in 0..n {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("open semaphore");
        let Some(d) = consumer.next().await else {
            break;
        };
        let d = d.map_err(amqp("delivery"))?;
        started.get_or_insert_with(Instant::now);
        let publisher = publisher.clone();
        let output = output.to_string();
        tasks.spawn(async move {
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    output.as_str().into(),
                    BasicPublishOptions::default(),
                    &d.data,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            confirm.await?;
            d.ack(BasicAckOptions::default()).await?;
            drop(permit);
            Ok::<(), lapin::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("floor task").map_err(amqp("publish or ack"))?;
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}
