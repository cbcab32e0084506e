//! Publishing with publisher confirms. `mandatory` is set on every publish, and a returned
//! (unroutable) message counts as a failure, as does a nack.

use super::headers;
use super::topology::Names;
use crate::command::CommandType;
use crate::event::{CONTENT_TYPE, Event, EventSink, PublishError};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};
use std::sync::Arc;
use std::time::Duration;

/// A confirm-mode channel and the names it publishes to. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Publisher {
    channel: Channel,
    names: Arc<Names>,
}

fn failed(e: lapin::Error) -> PublishError {
    PublishError::Amqp(Box::new(e))
}

async fn confirmed(confirm: PublisherConfirm) -> Result<(), PublishError> {
    match confirm.await.map_err(failed)? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => Err(PublishError::Returned {
            code: r.reply_code,
            text: r.reply_text.to_string(),
        }),
        Confirmation::Nack(None) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::NotConfirming),
    }
}

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    }
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// The original message's properties with extra headers, persistent.
fn with_headers(original: &BasicProperties, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut h = original.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        h.insert(ShortString::from(k), v);
    }
    original.clone().with_headers(h).with_delivery_mode(2)
}

fn text(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

impl Publisher {
    /// `channel` must already be in confirm mode.
    pub fn new(channel: Channel, names: Arc<Names>) -> Self {
        Publisher { channel, names }
    }

    fn event_properties(e: &Event) -> BasicProperties {
        let mut p = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(e.id.to_string().into())
            .with_app_id("lastpass-connector".into())
            .with_timestamp(now_ms() / 1000);
        // The AMQP property is a short string (255 bytes at most); a longer correlation id is
        // still in the event's data, just not in the property.
        if let Some(c) = e
            .correlation_id
            .as_deref()
            .and_then(|c| ShortString::try_new(c).ok())
        {
            p = p.with_correlation_id(c);
        }
        p
    }

    /// Publishes a copy of a delivery to `P.dead-letter`, unchanged but for the reason headers
    /// (the `error` of `event`, the failure or rejection it was parked with).
    pub async fn park(
        &self,
        body: &[u8],
        properties: &BasicProperties,
        queue: CommandType,
        routing_key: &str,
        event: &Event,
    ) -> Result<PublisherConfirm, PublishError> {
        let (code, message) = match &event.error {
            Some(e) => (e.code.as_str(), e.message.as_str()),
            None => (event.kind.routing_key(), ""),
        };
        let props = with_headers(
            properties,
            vec![
                (headers::ERROR_CODE, text(code)),
                (headers::ERROR_MESSAGE, text(message)),
                (headers::ORIGINAL_QUEUE, text(&self.names.queue(queue))),
                (headers::ORIGINAL_ROUTING_KEY, text(routing_key)),
                (headers::PARKED_AT, text(&chrono::Utc::now().to_rfc3339())),
            ],
        );
        self.channel
            .basic_publish(
                "".into(),
                self.names.dead_letter().into(),
                mandatory(),
                body,
                props,
            )
            .await
            .map_err(failed)
    }

    /// Publishes a copy of a delivery to the retry queue of `delay`; it comes back to the work
    /// queue of `queue` when the delay has passed.
    pub async fn retry_later(
        &self,
        body: &[u8],
        properties: &BasicProperties,
        queue: CommandType,
        round: u32,
        attempts: u32,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let props = with_headers(
            properties,
            vec![
                (
                    headers::RETRY_ROUND,
                    AMQPValue::LongLongInt(i64::from(round)),
                ),
                (
                    headers::ATTEMPTS,
                    AMQPValue::LongLongInt(i64::from(attempts)),
                ),
            ],
        );
        // The routing key is the command type's, so the copy dead-letters back into the right
        // queue even if the original was published straight to the queue.
        self.publish_confirmed(self.names.retry(delay), queue.as_str(), body, props)
            .await
    }

    /// One mandatory publish, waited for until the broker confirms it.
    async fn publish_confirmed(
        &self,
        exchange: String,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                mandatory(),
                body,
                props,
            )
            .await
            .map_err(failed)?;
        confirmed(confirm).await
    }

    /// Publishes events without waiting for their confirms.
    pub async fn start_publish(
        &self,
        events: &[Event],
    ) -> Result<Vec<PublisherConfirm>, PublishError> {
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            pending.push(
                self.channel
                    .basic_publish(
                        self.names.events().into(),
                        e.kind.routing_key().into(),
                        mandatory(),
                        e.body.as_bytes(),
                        Self::event_properties(e),
                    )
                    .await
                    .map_err(failed)?,
            );
        }
        Ok(pending)
    }

    /// Waits for every confirm; the first failure wins.
    pub async fn confirm_all(pending: Vec<PublisherConfirm>) -> Result<(), PublishError> {
        let results = futures_util::future::join_all(pending.into_iter().map(confirmed)).await;
        results.into_iter().collect()
    }

    /// Publishes a raw command (for the scheduled sync and tools).
    pub async fn publish_command(
        &self,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        self.publish_confirmed(self.names.commands(), routing_key, body, props)
            .await
    }

    pub(super) fn headers_of(properties: &BasicProperties) -> Option<&FieldTable> {
        properties.headers().as_ref()
    }
}

impl EventSink for Publisher {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let pending = self.start_publish(events).await?;
        Self::confirm_all(pending).await
    }
}

/// Reads an integer header, whatever integer type the publisher used.
pub(super) fn int_header(properties: &BasicProperties, name: &str) -> Option<i64> {
    let v = Publisher::headers_of(properties)?.inner().get(name)?;
    match v {
        AMQPValue::ShortShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        AMQPValue::LongUInt(i) => Some(i64::from(*i)),
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}
