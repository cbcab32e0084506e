//! Channel setup for one session: declare the topology, open the confirming publisher, and
//! start one consumer per work queue (user commands on one channel with prefetch
//! 2 x concurrency; the sync on its own channel with prefetch 1).

use super::{AmqpSettings, SessionError};
use crate::amqp::publisher::Publisher;
use crate::amqp::topology;
use crate::command::CommandType;
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll, select_all};
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::sync::Arc;
use uuid::Uuid;

pub(super) type Deliveries = SelectAll<BoxStream<'static, (CommandType, lapin::Result<Delivery>)>>;

/// What a session works with.
pub(super) struct Session {
    pub publisher: Publisher,
    pub deliveries: Deliveries,
    /// Each consumer's channel and tag, to cancel them at shutdown.
    pub consumers: Vec<(Channel, String)>,
}

fn setup(what: &'static str) -> impl FnOnce(lapin::Error) -> SessionError {
    move |source| SessionError::Setup { what, source }
}

/// The broker's reason when a queue exists with other arguments (406 PRECONDITION_FAILED,
/// "inequivalent arg").
fn inequivalent_arguments(e: &lapin::Error) -> Option<String> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if amqp.get_id() == 406 && amqp.get_message().as_str().contains("inequivalent arg") =>
        {
            Some(amqp.get_message().to_string())
        }
        _ => None,
    }
}

/// Without a shared store, a second replica cannot see what the first completed: say so when
/// another consumer is already on the queues.
async fn warn_if_not_alone(ch: &Channel, names: &crate::amqp::Names) {
    let q = names.queue(CommandType::Provision);
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    if let Ok(queue) = ch
        .queue_declare(q.as_str().into(), passive, FieldTable::default())
        .await
        && queue.consumer_count() > 0
    {
        tracing::warn!(queue = %q, consumers = queue.consumer_count(),
            "another replica already consumes these queues, and CONNECTOR_STATE_URL is not set: \
             this replica cannot share completions with it (each keeps its own ledger), so a \
             command one completed can be applied again by the other. Give every replica the \
             same CONNECTOR_STATE_URL.");
    }
}

pub(super) async fn open(s: &AmqpSettings, conn: &Connection) -> Result<Session, SessionError> {
    let names = Arc::new(s.names.clone());
    let topo = conn.create_channel().await.map_err(setup("channel"))?;
    if let Err(e) = topology::declare(&topo, &names, &s.topology).await {
        return Err(match inequivalent_arguments(&e) {
            Some(reason) => SessionError::QueueArguments { reason },
            None => SessionError::Setup {
                what: "declaring the topology",
                source: e,
            },
        });
    }
    if !s.shared_state {
        warn_if_not_alone(&topo, &names).await;
    }
    let _ = topo.close(200, "declared".into()).await;

    let pub_ch = conn.create_channel().await.map_err(setup("channel"))?;
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(setup("confirm.select"))?;
    let publisher = Publisher::new(pub_ch, names.clone());

    let work = conn.create_channel().await.map_err(setup("channel"))?;
    work.basic_qos(s.concurrency.saturating_mul(2), BasicQosOptions::default())
        .await
        .map_err(setup("basic.qos"))?;
    let sync_ch = conn.create_channel().await.map_err(setup("channel"))?;
    sync_ch
        .basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(setup("basic.qos"))?;

    let instance = Uuid::new_v4().simple().to_string();
    let mut streams = Vec::new();
    let mut consumers = Vec::new();
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
            .map_err(setup("basic.consume"))?;
        consumers.push((ch.clone(), tag));
        streams.push(consumer.map(move |d| (t, d)).boxed());
    }
    Ok(Session {
        publisher,
        deliveries: select_all(streams),
        consumers,
    })
}
