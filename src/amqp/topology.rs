//! The exchanges and queues under a prefix P, declared idempotently at every (re)connect.
//!
//! - `P.commands` (topic): routing keys `user.provision`, `user.suspend`, `user.deprovision`,
//!   `users.sync`, bound to the quorum queues `P.provision`, `P.suspend`, `P.deprovision`,
//!   `P.sync`, each with single active consumer (one replica applies commands at a time; the
//!   broker hands the queue to another when it dies). Each has a delivery limit and
//!   dead-letters to `P.dead-letter` (at-least-once).
//! - `P.events` (topic) with alternate exchange `P.events.unrouted` (fanout) into the queue
//!   `P.events.unrouted`, so an event no queue is bound for is kept, not dropped.
//! - `P.dead-letter` (quorum queue): invalid and failed commands, unchanged, with reason headers.
//! - `P.retry.<ms>ms` (fanout exchange + classic queue with that message TTL) per delayed-retry
//!   round; an expired message dead-letters back into `P.commands` with its routing key.

use crate::command::CommandType;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// The names under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
        }
    }
    pub fn commands(&self) -> String {
        format!("{}.commands", self.prefix)
    }
    pub fn queue(&self, t: CommandType) -> String {
        format!("{}.{}", self.prefix, t.queue_suffix())
    }
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// Both the alternate exchange of `P.events` and the queue behind it.
    pub fn unrouted(&self) -> String {
        format!("{}.events.unrouted", self.prefix)
    }
    pub fn dead_letter(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }
    /// Both the exchange and the queue of one retry delay.
    pub fn retry(&self, delay: Duration) -> String {
        format!("{}.retry.{}ms", self.prefix, delay.as_millis())
    }
}

/// Settings that shape the topology.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    pub delivery_limit: u32,
    pub retry_delays: Vec<Duration>,
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares everything (idempotent: the same arguments every time).
pub async fn declare(ch: &Channel, n: &Names, o: &TopologyOptions) -> lapin::Result<()> {
    let none = FieldTable::default;
    ch.exchange_declare(n.commands().into(), ExchangeKind::Topic, durable(), none())
        .await?;

    // Events, with an alternate exchange so that nothing published is dropped.
    ch.exchange_declare(n.unrouted().into(), ExchangeKind::Fanout, durable(), none())
        .await?;
    ch.queue_declare(
        n.unrouted().into(),
        durable_queue(),
        table(&[("x-queue-type", s("quorum"))]),
    )
    .await?;
    ch.queue_bind(
        n.unrouted().into(),
        n.unrouted().into(),
        "".into(),
        QueueBindOptions::default(),
        none(),
    )
    .await?;
    ch.exchange_declare(
        n.events().into(),
        ExchangeKind::Topic,
        durable(),
        table(&[("alternate-exchange", s(&n.unrouted()))]),
    )
    .await?;

    ch.queue_declare(
        n.dead_letter().into(),
        durable_queue(),
        table(&[("x-queue-type", s("quorum"))]),
    )
    .await?;

    for t in CommandType::ALL {
        let args = vec![
            ("x-queue-type", s("quorum")),
            (
                "x-delivery-limit",
                AMQPValue::LongLongInt(i64::from(o.delivery_limit)),
            ),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s(&n.dead_letter())),
            ("x-dead-letter-strategy", s("at-least-once")),
            ("x-overflow", s("reject-publish")),
            // Every command queue, not only the sync's: see the README on replicas, and on
            // upgrading queues declared before this argument.
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
        ];
        ch.queue_declare(n.queue(t).into(), durable_queue(), table(&args))
            .await?;
        ch.queue_bind(
            n.queue(t).into(),
            n.commands().into(),
            t.as_str().into(),
            QueueBindOptions::default(),
            none(),
        )
        .await?;
    }

    for d in &o.retry_delays {
        let name = n.retry(*d);
        ch.exchange_declare(name.clone().into(), ExchangeKind::Fanout, durable(), none())
            .await?;
        ch.queue_declare(
            name.clone().into(),
            durable_queue(),
            table(&[
                (
                    "x-message-ttl",
                    AMQPValue::LongLongInt(d.as_millis() as i64),
                ),
                ("x-dead-letter-exchange", s(&n.commands())),
            ]),
        )
        .await?;
        ch.queue_bind(
            name.clone().into(),
            name.into(),
            "".into(),
            QueueBindOptions::default(),
            none(),
        )
        .await?;
    }
    Ok(())
}
