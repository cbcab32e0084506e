//! Result events: CloudEvents 1.0 in structured JSON mode, with deterministic ids.

use crate::command::{Command, Rejection};
use crate::status::AccountStatus;
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use uuid::Uuid;

/// `type` of every event is this prefix followed by its routing key.
pub const TYPE_PREFIX: &str = "io.github.lastpass-connector.";
/// The content type of an event body.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Namespace of the name-based (v5) event ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c617374_7061_5c73_8063_6f6e6e656374);

/// An event ready to publish: its routing key on `P.events` and its serialized body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    pub routing_key: String,
    /// The CloudEvent, serialized (structured mode).
    pub body: String,
    pub correlation_id: Option<String>,
}

/// A deterministic event id: the same name always gives the same id.
pub fn event_id(name: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// Where events are published. Implemented over AMQP with publisher confirms; `Ok` means every
/// event was confirmed by the broker.
pub trait EventSink: Send + Sync {
    fn publish(&self, events: &[Event]) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Publishing failed: not confirmed, nacked, or returned unroutable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event not confirmed by the broker: {0}")]
pub struct PublishError(pub String);

#[derive(Serialize)]
struct CloudEvent<'a, D: Serialize> {
    specversion: &'static str,
    id: Uuid,
    source: &'a str,
    #[serde(rename = "type")]
    ty: String,
    subject: Option<&'a str>,
    time: String,
    datacontenttype: &'static str,
    data: D,
}

/// What happened to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    AlreadyDone,
    Failed,
    Rejected,
}

/// The `error` of a failed or rejected command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl ErrorInfo {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        ErrorInfo {
            code: code.to_string(),
            message: message.into(),
            retryable,
        }
    }
}

/// The result of applying a user command, before it becomes an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub outcome: Outcome,
    pub account_status: Option<AccountStatus>,
    pub license_reclaimed: bool,
    pub error: Option<ErrorInfo>,
}

#[derive(Serialize)]
struct CommandData<'a> {
    command_id: Option<Uuid>,
    command_type: Option<&'a str>,
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_at: Option<&'a str>,
    email: Option<&'a str>,
    outcome: Outcome,
    account_status: Option<AccountStatus>,
    license_reclaimed: bool,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorInfo>,
}

/// Builds events for one LastPass account.
#[derive(Debug, Clone)]
pub struct EventFactory {
    source: String,
}

impl EventFactory {
    /// `source` names the connector and the account: `urn:lastpass-connector:cid:<cid>`.
    pub fn new(cid: &str) -> Self {
        EventFactory {
            source: format!("urn:lastpass-connector:cid:{cid}"),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// A CloudEvent with the given routing key, id, subject and data.
    pub fn build<D: Serialize>(
        &self,
        routing_key: &str,
        id: Uuid,
        subject: Option<&str>,
        correlation_id: Option<&str>,
        data: D,
    ) -> Event {
        let ce = CloudEvent {
            specversion: "1.0",
            id,
            source: &self.source,
            ty: format!("{TYPE_PREFIX}{routing_key}"),
            subject,
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            datacontenttype: "application/json",
            data,
        };
        Event {
            id,
            routing_key: routing_key.to_string(),
            body: serde_json::to_string(&ce).expect("events always serialize"),
            correlation_id: correlation_id.map(str::to_string),
        }
    }

    /// The result event of a valid user command. The id depends only on the command id and the
    /// routing key, so a redelivered command yields the same id.
    pub fn command_result(&self, cmd: &Command, r: &Resolution, attempts: u32) -> Event {
        let routing_key = match r.outcome {
            Outcome::Applied | Outcome::AlreadyDone => match cmd.command_type() {
                crate::command::CommandType::Provision => "user.provisioned",
                crate::command::CommandType::Suspend => "user.suspended",
                crate::command::CommandType::Deprovision => "user.deprovisioned",
                crate::command::CommandType::Sync => "users.sync.completed",
            },
            Outcome::Failed => "command.failed",
            Outcome::Rejected => "command.rejected",
        };
        let id = event_id(&format!("{}/{routing_key}", cmd.meta.command_id));
        let email = cmd.email().map(|e| e.as_str());
        let data = CommandData {
            command_id: Some(cmd.meta.command_id),
            command_type: Some(cmd.command_type().as_str()),
            correlation_id: cmd.meta.correlation_id.as_deref(),
            requested_by: cmd.meta.requested_by.as_deref(),
            reason: cmd.meta.reason.as_deref(),
            requested_at: cmd.meta.requested_at.as_deref(),
            email,
            outcome: r.outcome,
            account_status: r.account_status,
            license_reclaimed: r.license_reclaimed,
            attempts,
            error: r.error.as_ref(),
        };
        self.build(
            routing_key,
            id,
            email,
            cmd.meta.correlation_id.as_deref(),
            data,
        )
    }

    /// `command.rejected` for a message that is not a valid command. Its id comes from the
    /// command id when one is readable, else from the body itself, so a redelivery repeats it.
    pub fn rejected(&self, r: &Rejection, body: &[u8]) -> Event {
        let routing_key = "command.rejected";
        let id = match r.command_id {
            Some(cid) => event_id(&format!("{cid}/{routing_key}")),
            None => Uuid::new_v5(&ID_NAMESPACE, body),
        };
        let error = ErrorInfo::new(r.code.as_str(), r.message.clone(), false);
        let data = CommandData {
            command_id: r.command_id,
            command_type: r.command_type.as_deref(),
            correlation_id: r.correlation_id.as_deref(),
            requested_by: None,
            reason: None,
            requested_at: None,
            email: r.email.as_deref(),
            outcome: Outcome::Rejected,
            account_status: None,
            license_reclaimed: false,
            attempts: 0,
            error: Some(&error),
        };
        self.build(
            routing_key,
            id,
            r.email.as_deref(),
            r.correlation_id.as_deref(),
            data,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, CommandType};
    use serde_json::{Value, json};

    fn suspend() -> Command {
        let body = json!({"command_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "type": "user.suspend", "user": {"email": "jane@example.com"},
            "correlation_id": "run-1"});
        Command::parse(body.to_string().as_bytes(), CommandType::Suspend).unwrap()
    }

    #[test]
    fn a_command_result_is_a_cloudevent_with_a_stable_id() {
        let f = EventFactory::new("12345678");
        let r = Resolution {
            outcome: Outcome::Applied,
            account_status: Some(AccountStatus::Suspended),
            license_reclaimed: false,
            error: None,
        };
        let a = f.command_result(&suspend(), &r, 1);
        let again = f.command_result(
            &suspend(),
            &Resolution {
                outcome: Outcome::AlreadyDone,
                ..r.clone()
            },
            2,
        );
        assert_eq!(a.id, again.id, "a redelivery yields the same id");
        assert_eq!(a.routing_key, "user.suspended");
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "io.github.lastpass-connector.user.suspended");
        assert_eq!(v["source"], "urn:lastpass-connector:cid:12345678");
        assert_eq!(v["subject"], "jane@example.com");
        assert_eq!(v["id"], a.id.to_string());
        assert_eq!(v["data"]["outcome"], "applied");
        assert_eq!(v["data"]["account_status"], "Suspended");
        assert_eq!(v["data"]["correlation_id"], "run-1");
        assert!(v["data"].get("error").is_none());

        let failed = f.command_result(
            &suspend(),
            &Resolution {
                outcome: Outcome::Failed,
                account_status: None,
                license_reclaimed: false,
                error: Some(ErrorInfo::new("user_not_found", "no such user", false)),
            },
            1,
        );
        assert_eq!(failed.routing_key, "command.failed");
        assert_ne!(failed.id, a.id);
        let v: Value = serde_json::from_str(&failed.body).unwrap();
        assert_eq!(v["data"]["error"]["code"], "user_not_found");
        assert_eq!(v["data"]["account_status"], Value::Null);
    }

    #[test]
    fn a_rejection_without_command_id_gets_an_id_from_its_body() {
        let f = EventFactory::new("1");
        let r = Command::parse(b"garbage", CommandType::Suspend).unwrap_err();
        let a = f.rejected(&r, b"garbage");
        let b = f.rejected(&r, b"garbage");
        let c = f.rejected(&r, b"other garbage");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["data"]["outcome"], "rejected");
        assert_eq!(v["data"]["error"]["code"], "not_json");
        assert_eq!(v["data"]["command_id"], Value::Null);
    }
}
