//! The broker side of the operator's tools (`publish`, `events`, `dead-letter`, `demo`): a
//! confirmed publisher of commands, a live follower of `P.events` on a temporary queue (and, for
//! the benchmark, a durable queue that holds them to be counted), and the dead-letter queue read,
//! re-driven and purged. lapin stays in this module.

use super::headers;
use super::topology::{self, Names, TopologyOptions};
use crate::command::CommandType;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::BTreeMap;
use std::time::Duration;

/// A broker operation of a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("RabbitMQ: {what}")]
    Amqp {
        what: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker did not confirm the message: {0}")]
    NotConfirmed(String),
}

fn amqp(what: &'static str) -> impl FnOnce(lapin::Error) -> ToolError {
    move |source| ToolError::Amqp { what, source }
}

/// A connection for one tool run, under one prefix.
pub struct ToolBroker {
    conn: Connection,
    ch: Channel,
    names: Names,
}

/// A message read from `P.dead-letter`.
#[derive(Debug, Clone)]
pub struct ParkedMessage {
    pub body: Vec<u8>,
    /// Every header, as text.
    pub headers: BTreeMap<String, String>,
}

impl ParkedMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One event as `events` shows it.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub routing_key: String,
    pub body: Vec<u8>,
}

fn text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn headers_of(p: &BasicProperties) -> BTreeMap<String, String> {
    p.headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), text(v)))
                .collect()
        })
        .unwrap_or_default()
}

impl ToolBroker {
    pub async fn connect(url: &str, prefix: &str, tool: &str) -> Result<ToolBroker, ToolError> {
        let conn = Connection::connect(
            url,
            ConnectionProperties::default()
                .with_connection_name(format!("lastpass-connector {tool} {prefix}").into()),
        )
        .await
        .map_err(amqp("connecting"))?;
        let ch = conn
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("confirm.select"))?;
        Ok(ToolBroker {
            conn,
            ch,
            names: Names::new(prefix),
        })
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Declares the connector's topology (what `run` declares), for tools that may run first.
    pub async fn declare(&self, options: &TopologyOptions) -> Result<(), ToolError> {
        topology::declare(&self.ch, &self.names, options)
            .await
            .map_err(amqp("declaring the topology"))
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), ToolError> {
        let confirm = self
            .ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await
            .map_err(amqp("publishing"))?
            .await
            .map_err(amqp("waiting for the confirm"))?;
        if !confirm.is_ack() {
            return Err(ToolError::NotConfirmed("nacked".into()));
        }
        if let Some(r) = confirm.take_message() {
            return Err(ToolError::NotConfirmed(format!(
                "returned: {} {} (is the connector's topology declared under this prefix?)",
                r.reply_code, r.reply_text
            )));
        }
        Ok(())
    }

    /// Publishes a command body to `P.commands` with its routing key, persistent, confirmed.
    pub async fn publish_command(
        &self,
        routing_key: &str,
        body: &[u8],
        extra_headers: &[(&str, &str)],
    ) -> Result<(), ToolError> {
        let mut h = FieldTable::default();
        for (k, v) in extra_headers {
            h.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(h);
        self.publish(&self.names.commands(), routing_key, body, props)
            .await
    }

    /// Publishes many commands, pipelined: every publish is sent, then the confirms are
    /// awaited in batches. Returns when all are confirmed.
    pub async fn publish_commands(&self, commands: &[(String, Vec<u8>)]) -> Result<(), ToolError> {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        for chunk in commands.chunks(500) {
            let mut pending = Vec::with_capacity(chunk.len());
            for (routing_key, body) in chunk {
                pending.push(
                    self.ch
                        .basic_publish(
                            self.names.commands().into(),
                            routing_key.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            body,
                            props.clone(),
                        )
                        .await
                        .map_err(amqp("publishing"))?,
                );
            }
            for p in pending {
                let c = p.await.map_err(amqp("waiting for the confirm"))?;
                if !c.is_ack() || c.take_message().is_some() {
                    return Err(ToolError::NotConfirmed("nacked or returned".into()));
                }
            }
        }
        Ok(())
    }

    /// Follows every event of this prefix on a temporary queue (exclusive, auto-deleted).
    pub async fn follow_events(
        &self,
    ) -> Result<impl futures_util::Stream<Item = ReceivedEvent> + use<>, ToolError> {
        let ch = self.channel().await?;
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp("declaring a temporary queue"))?;
        self.bind_events(&ch, q.name().as_str()).await?;
        consume(ch, q.name().as_str()).await
    }

    /// Keeps every event of this prefix in the durable quorum queue `queue` (the kind the
    /// benchmark's floor publishes into), to be counted with [`ToolBroker::held`] and read with
    /// [`ToolBroker::read_held`]. Deleted by its caller; should that be killed first, the
    /// broker drops it a minute after its last use.
    pub async fn hold_events(&self, queue: &str) -> Result<(), ToolError> {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert("x-expires".into(), AMQPValue::LongUInt(60_000));
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .map_err(amqp("declaring a queue for the events"))?;
        self.bind_events(&self.ch, queue).await
    }

    /// How many messages `queue` holds.
    pub async fn held(&self, queue: &str) -> Result<u32, ToolError> {
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .map_err(amqp("counting the events held"))
    }

    async fn channel(&self) -> Result<Channel, ToolError> {
        self.conn
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))
    }

    /// Takes the events held in `queue` (see [`ToolBroker::hold_events`]), as they come.
    pub async fn read_held(
        &self,
        queue: &str,
    ) -> Result<impl futures_util::Stream<Item = ReceivedEvent> + use<>, ToolError> {
        consume(self.channel().await?, queue).await
    }

    async fn bind_events(&self, ch: &Channel, queue: &str) -> Result<(), ToolError> {
        ch.queue_bind(
            queue.into(),
            self.names.events().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp("binding a queue to P.events"))
    }

    /// The next parked message on `ch`, not acked (it goes back when the channel closes unless
    /// its delivery is acked).
    async fn next_parked(
        &self,
        ch: &Channel,
    ) -> Result<Option<(ParkedMessage, lapin::message::Delivery)>, ToolError> {
        let got = ch
            .basic_get(
                self.names.dead_letter().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .map_err(amqp("reading P.dead-letter"))?;
        Ok(got.map(|m| {
            let parked = ParkedMessage {
                headers: headers_of(&m.delivery.properties),
                body: m.delivery.data.clone(),
            };
            (parked, m.delivery)
        }))
    }

    /// Reads up to `limit` parked messages without removing them (they go back when the
    /// channel closes).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<ParkedMessage>, ToolError> {
        let ch = self.channel().await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((parked, _)) = self.next_parked(&ch).await? else {
                break;
            };
            out.push(parked);
        }
        let _ = ch.close(200, "read".into()).await;
        Ok(out)
    }

    /// Re-drives the parked messages `select` chooses: each is republished to `P.commands` with
    /// its original routing key and fresh properties (no `x-lpc-*` header), and the parked copy
    /// is acked only after that publish is confirmed. The others go back to the queue. Returns
    /// the re-driven messages. With `dry_run`, nothing is published or removed.
    pub async fn redrive(
        &self,
        select: impl Fn(&ParkedMessage) -> bool,
        dry_run: bool,
    ) -> Result<Vec<ParkedMessage>, ToolError> {
        let ch = self.channel().await?;
        let mut redriven = Vec::new();
        while let Some((parked, delivery)) = self.next_parked(&ch).await? {
            if !select(&parked) {
                continue;
            }
            let routing_key = parked
                .header(headers::ORIGINAL_ROUTING_KEY)
                .map(str::to_string)
                .or_else(|| {
                    parked
                        .header(headers::ORIGINAL_QUEUE)
                        .and_then(|q| q.rsplit('.').next())
                        .and_then(|suffix| {
                            CommandType::ALL
                                .into_iter()
                                .find(|t| t.queue_suffix() == suffix)
                        })
                        .map(|t| t.as_str().to_string())
                });
            let Some(routing_key) = routing_key else {
                continue;
            };
            if !dry_run {
                let props = BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2);
                self.publish(&self.names.commands(), &routing_key, &parked.body, props)
                    .await?;
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(amqp("acking the parked copy"))?;
            }
            redriven.push(parked);
        }
        // Closing the channel gives back every message not acked.
        let _ = ch.close(200, "redriven".into()).await;
        Ok(redriven)
    }

    /// Empties `P.dead-letter`; returns how many messages were removed.
    pub async fn purge_dead_letters(&self) -> Result<u32, ToolError> {
        self.ch
            .queue_purge(
                self.names.dead_letter().into(),
                QueuePurgeOptions::default(),
            )
            .await
            .map_err(amqp("purging P.dead-letter"))
    }

    /// Deletes every queue and exchange of this prefix (the demo's clean-up).
    pub async fn delete_topology(&self, retry_delays: &[Duration]) -> Result<(), ToolError> {
        let n = &self.names;
        let mut queues: Vec<String> = CommandType::ALL.iter().map(|t| n.queue(*t)).collect();
        queues.push(n.dead_letter());
        queues.push(n.unrouted());
        let mut exchanges = vec![n.commands(), n.events(), n.unrouted()];
        for d in retry_delays {
            queues.push(n.retry(*d));
            exchanges.push(n.retry(*d));
        }
        self.delete_queues(&queues).await?;
        for x in exchanges {
            self.ch
                .exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(amqp("deleting an exchange"))?;
        }
        Ok(())
    }

    /// Deletes these queues (a queue that is not there is no error).
    pub async fn delete_queues(&self, names: &[String]) -> Result<(), ToolError> {
        for q in names {
            self.ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(amqp("deleting a queue"))?;
        }
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// Every message of `queue`, acked as it is taken (no_ack), on `ch` (kept open by the stream).
async fn consume(
    ch: Channel,
    queue: &str,
) -> Result<impl futures_util::Stream<Item = ReceivedEvent> + use<>, ToolError> {
    let consumer = ch
        .basic_consume(
            queue.into(),
            "lastpass-connector-events".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("consuming"))?;
    Ok(consumer.filter_map(move |d| {
        let _keep_channel_open = &ch;
        let out = d.ok().map(|d| ReceivedEvent {
            routing_key: d.routing_key.to_string(),
            body: d.data,
        });
        async move { out }
    }))
}
