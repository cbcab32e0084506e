//! A delivery as the processor sees it: the body, the queue it came from and its retry state,
//! parsed once into a valid command or a rejection.

use super::{Command, CommandType, Rejection, TraceContext};
use tracing::info_span;

/// A delivery, before parsing. Only the body and the queue count: no header steers the
/// connector (the retry state lives in the store).
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub body: Vec<u8>,
    /// The queue it arrived on.
    pub queue: CommandType,
    /// Its W3C trace context headers, when well-formed.
    pub trace: Option<TraceContext>,
}

/// A parsed delivery, ready to be sequenced and processed.
pub(crate) enum Prepared {
    Invalid { rejection: Rejection, body: Vec<u8> },
    Valid { command: Command },
}

impl Prepared {
    pub fn parse(incoming: Incoming) -> Prepared {
        match Command::parse(&incoming.body, incoming.queue) {
            Ok(mut command) => {
                command.meta.trace = incoming.trace;
                Prepared::Valid { command }
            }
            Err(mut rejection) => {
                rejection.trace = incoming.trace.map(Box::new);
                Prepared::Invalid {
                    rejection,
                    body: incoming.body,
                }
            }
        }
    }

    /// The tracing span of this delivery: command id, correlation id and email on every line.
    pub fn span(&self) -> tracing::Span {
        match self {
            Prepared::Invalid { rejection, .. } => info_span!(
                "command",
                command_id = rejection
                    .command_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                correlation_id = rejection.correlation_id.as_deref().unwrap_or(""),
                email = rejection.email.as_deref().unwrap_or(""),
                command_type = rejection.command_type.as_deref().unwrap_or(""),
                traceparent = rejection
                    .trace
                    .as_ref()
                    .map_or("", |t| t.traceparent.as_str())
            ),
            Prepared::Valid { command, .. } => info_span!("command",
                command_id = %command.meta.command_id,
                correlation_id = command.meta.correlation_id.as_deref().unwrap_or(""),
                email = command.email().map(|e| e.as_str()).unwrap_or(""),
                command_type = command.command_type().as_str(),
                traceparent = command.meta.trace.as_ref().map_or("", |t| t.traceparent.as_str())),
        }
    }

    /// Commands with the same key are applied one at a time, in arrival order: the email for a
    /// user command, one key for all syncs, none for an invalid message.
    pub fn key(&self) -> Option<String> {
        match self {
            Prepared::Invalid { .. } => None,
            Prepared::Valid { command, .. } => Some(match command.email() {
                Some(e) => e.to_string(),
                None => "\u{0}sync".to_string(),
            }),
        }
    }
}
