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

/// The most header bytes a parked or retried copy carries over from the original; beyond it
/// the original headers are dropped (and `x-lpc-headers-dropped` says so), so a copy can never
/// outgrow the frame limit and make the broker close the connection.
const MAX_COPIED_HEADER_BYTES: usize = 16 * 1024;

/// Headers never copied: `CC`/`BCC` would make the connector route the copy to other queues
/// (any queue, any prefix); the broker's own death records; and our own, which are set afresh.
fn copyable(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower == "cc"
        || lower == "bcc"
        || lower == "x-death"
        || lower.starts_with("x-first-death")
        || lower.starts_with("x-last-death")
        || lower.starts_with("x-lpc-"))
}

/// Roughly how many bytes a value takes on the wire.
fn encoded_len(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::LongString(s) => 5 + s.as_bytes().len(),
        AMQPValue::ShortString(s) => 2 + s.as_str().len(),
        AMQPValue::ByteArray(b) => 5 + b.as_slice().len(),
        AMQPValue::FieldArray(a) => 5 + a.as_slice().iter().map(encoded_len).sum::<usize>(),
        AMQPValue::FieldTable(t) => 5 + table_len(t),
        _ => 9,
    }
}

fn table_len(t: &FieldTable) -> usize {
    t.inner()
        .iter()
        .map(|(k, v)| 1 + k.as_str().len() + encoded_len(v))
        .sum()
}

/// The properties of a parked or retried copy, built afresh: only what the contract names
/// (content type, message id, correlation id, the original's own safe headers, bounded) plus
/// `extra`; persistent. Never `CC`/`BCC`, `user_id` (another broker user's id makes the publish
/// fail with 406 and closes the channel), `expiration` (the copy would expire out of the
/// dead-letter queue), `reply_to` or any other property a publisher set.
fn copy_properties(original: &BasicProperties, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(h) = original.headers() {
        for (k, v) in h.inner() {
            if copyable(k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    if table_len(&headers) > MAX_COPIED_HEADER_BYTES {
        headers = FieldTable::default();
        headers.insert(
            ShortString::from(headers::HEADERS_DROPPED),
            AMQPValue::Boolean(true),
        );
    }
    for (k, v) in extra {
        headers.insert(ShortString::from(k), v);
    }
    let mut p = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(ct) = original.content_type() {
        p = p.with_content_type(ct.clone());
    }
    if let Some(id) = original.message_id() {
        p = p.with_message_id(id.clone());
    }
    if let Some(c) = original.correlation_id() {
        p = p.with_correlation_id(c.clone());
    }
    p
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
        if let Some(t) = &e.trace {
            let mut h = FieldTable::default();
            h.insert("traceparent".into(), text(&t.traceparent));
            if let Some(ts) = &t.tracestate {
                h.insert("tracestate".into(), text(ts));
            }
            p = p.with_headers(h);
        }
        if let Some(c) = e
            .correlation_id
            .as_deref()
            .and_then(|c| ShortString::try_new(c).ok())
        {
            p = p.with_correlation_id(c);
        }
        p
    }

    /// Closes the channel (at the end of a session).
    pub async fn close(&self) {
        let _ = self.channel.close(200, "stopping".into()).await;
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
        let props = copy_properties(
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
        let props = copy_properties(
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
}

impl EventSink for Publisher {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let pending = self.start_publish(events).await?;
        Self::confirm_all(pending).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn a_copy_keeps_only_what_the_contract_names() {
        let mut h = FieldTable::default();
        h.insert(
            "CC".into(),
            AMQPValue::FieldArray(vec![long("p.deprovision")].into()),
        );
        h.insert("bcc".into(), long("x"));
        h.insert("x-death".into(), long("x"));
        h.insert("x-lpc-retry-round".into(), AMQPValue::LongLongInt(99));
        h.insert("traceparent".into(), long("00-abc-def-01"));
        let original = BasicProperties::default()
            .with_headers(h)
            .with_user_id("someone-else".into())
            .with_expiration("1".into())
            .with_reply_to("elsewhere".into())
            .with_content_type("application/json".into())
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into());
        let copy = copy_properties(&original, vec![("x-lpc-error-code", long("wrong_queue"))]);
        assert!(copy.user_id().is_none());
        assert!(copy.expiration().is_none());
        assert!(copy.reply_to().is_none());
        assert_eq!(copy.delivery_mode(), &Some(2));
        assert_eq!(copy.message_id().as_ref().map(|m| m.as_str()), Some("m-1"));
        assert_eq!(
            copy.correlation_id().as_ref().map(|m| m.as_str()),
            Some("c-1")
        );
        let h = copy.headers().as_ref().unwrap().inner();
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["traceparent", "x-lpc-error-code"]);
    }

    #[test]
    fn oversized_headers_are_dropped_not_copied() {
        let mut h = FieldTable::default();
        h.insert("big".into(), long(&"x".repeat(130 * 1024)));
        let original = BasicProperties::default().with_headers(h);
        let copy = copy_properties(&original, vec![]);
        let h = copy.headers().as_ref().unwrap();
        assert!(table_len(h) < 1024);
        assert!(h.inner().contains_key(headers::HEADERS_DROPPED));
    }
}
