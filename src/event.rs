//! Result events: CloudEvents 1.0 in structured JSON mode, with deterministic ids.

use crate::command::{Command, CommandType, RejectCode, Rejection, TraceContext};
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

/// Every kind of event, by its routing key on `P.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "user.provisioned")]
    Provisioned,
    #[serde(rename = "user.suspended")]
    Suspended,
    #[serde(rename = "user.deprovisioned")]
    Deprovisioned,
    #[serde(rename = "user.reactivated")]
    Reactivated,
    #[serde(rename = "command.failed")]
    Failed,
    #[serde(rename = "command.rejected")]
    Rejected,
    #[serde(rename = "user.synced")]
    Synced,
    #[serde(rename = "users.sync.completed")]
    SyncCompleted,
    /// What a user command would have done (`run --dry-run`); nothing was changed.
    #[serde(rename = "command.dry_run")]
    DryRun,
}

impl EventKind {
    #[cfg(test)]
    pub const ALL: [EventKind; 9] = [
        EventKind::Provisioned,
        EventKind::Suspended,
        EventKind::Deprovisioned,
        EventKind::Reactivated,
        EventKind::Failed,
        EventKind::Rejected,
        EventKind::Synced,
        EventKind::SyncCompleted,
        EventKind::DryRun,
    ];

    /// The routing key on `P.events`; the CloudEvents `type` is [`TYPE_PREFIX`] + this.
    pub fn routing_key(self) -> &'static str {
        match self {
            EventKind::Provisioned => "user.provisioned",
            EventKind::Suspended => "user.suspended",
            EventKind::Deprovisioned => "user.deprovisioned",
            EventKind::Reactivated => "user.reactivated",
            EventKind::Failed => "command.failed",
            EventKind::Rejected => "command.rejected",
            EventKind::Synced => "user.synced",
            EventKind::SyncCompleted => "users.sync.completed",
            EventKind::DryRun => "command.dry_run",
        }
    }

    /// The event that reports a successful command of this type.
    fn success_of(t: CommandType) -> EventKind {
        match t {
            CommandType::Provision => EventKind::Provisioned,
            CommandType::Suspend => EventKind::Suspended,
            CommandType::Deprovision => EventKind::Deprovisioned,
            CommandType::Reactivate => EventKind::Reactivated,
            CommandType::Sync => EventKind::SyncCompleted,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.routing_key())
    }
}

/// An event ready to publish: its kind (routing key), its serialized body, and, for a failure
/// or a rejection, the error it reports (so nobody parses the body to learn it). Stored as is in
/// the command ledger, to be repeated verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Event {
    pub id: Uuid,
    #[serde(rename = "routing_key")]
    pub kind: EventKind,
    /// The CloudEvent, serialized (structured mode).
    pub body: String,
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The command's trace context, also set as AMQP headers on the published event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

#[cfg(test)]
impl Event {
    /// A minimal event for store tests.
    pub fn for_tests(id: Uuid) -> Event {
        Event {
            id,
            kind: EventKind::Suspended,
            body: "{}".into(),
            correlation_id: None,
            error: None,
            trace: None,
        }
    }
}

/// A deterministic event id: the same name always gives the same id.
pub(crate) fn event_id(name: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// The id of the event a command's result carries when it ends as `kind`.
pub(crate) fn result_event_id(command_id: Uuid, kind: EventKind) -> Uuid {
    event_id(&format!("{command_id}/{}", kind.routing_key()))
}

/// Where events are published. Implemented over AMQP with publisher confirms; `Ok` means every
/// event was confirmed by the broker.
pub(crate) trait EventSink: Send + Sync {
    fn publish(&self, events: &[Event]) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Publishing failed: not confirmed, nacked, or returned unroutable.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker, the channel or the connection failed.
    #[error("publish failed")]
    Amqp(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The message was returned as unroutable (`mandatory`).
    #[error("returned by the broker: {code} {text}")]
    Returned { code: u16, text: String },
    #[error("nacked by the broker")]
    Nacked,
    #[error("the channel is not in confirm mode")]
    NotConfirming,
}

#[derive(Serialize)]
struct CloudEvent<'a, D: Serialize> {
    specversion: &'static str,
    id: Uuid,
    source: &'a str,
    #[serde(rename = "type")]
    ty: String,
    /// Omitted when there is none: the CloudEvents schema allows no `null` here.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    /// The CloudEvents distributed-tracing extension, from the command's trace context.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<&'a str>,
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
    /// `run --dry-run`: looked up, nothing changed; `command.dry_run` says what would have been
    /// done. Never the outcome of a [`Resolution`] (that is the prediction's own outcome).
    DryRun,
}

impl Outcome {
    /// As spelled in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::AlreadyDone => "already_done",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
            Outcome::DryRun => "dry_run",
        }
    }
}

/// Why a valid command failed (the `error.code` of `command.failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    /// Suspend or reactivate of an email LastPass does not know.
    UserNotFound,
    /// Provision of an email whose account is suspended (it is not re-enabled: that is
    /// `user.reactivate`).
    AccountSuspended,
    /// `batchadd` answered, but afterwards LastPass has neither the user nor an invitation.
    NotCreated,
    /// Suspend or reactivate of someone who is only invited: there is no account to change yet.
    InvitationPending,
    /// LastPass stayed unavailable through every retry round.
    RetriesExhausted,
    /// LastPass refused the request for good.
    LastpassRejected,
    /// LastPass refused the API credentials (a sync reports this; commands pause instead).
    Unauthorized,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::UserNotFound => "user_not_found",
            FailureCode::AccountSuspended => "account_suspended",
            FailureCode::NotCreated => "not_created",
            FailureCode::InvitationPending => "invitation_pending",
            FailureCode::RetriesExhausted => "retries_exhausted",
            FailureCode::LastpassRejected => "lastpass_rejected",
            FailureCode::Unauthorized => "unauthorized",
        }
    }
}

/// The `error.code` of a failed or rejected command: a [`FailureCode`] or a [`RejectCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorCode {
    Failure(FailureCode),
    Reject(RejectCode),
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Failure(c) => c.as_str(),
            ErrorCode::Reject(c) => c.as_str(),
        }
    }
}

impl From<FailureCode> for ErrorCode {
    fn from(c: FailureCode) -> Self {
        ErrorCode::Failure(c)
    }
}

impl From<RejectCode> for ErrorCode {
    fn from(c: RejectCode) -> Self {
        ErrorCode::Reject(c)
    }
}

/// The `error` of a failed or rejected command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl ErrorInfo {
    pub fn new(code: impl Into<ErrorCode>, message: impl Into<String>, retryable: bool) -> Self {
        ErrorInfo {
            code: code.into(),
            message: message.into(),
            retryable,
        }
    }
}

/// The result of applying a user command, before it becomes an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub outcome: Outcome,
    pub account_status: Option<AccountStatus>,
    pub license_reclaimed: bool,
    /// The person is only invited (LastPass made an invitation, not an account).
    pub invitation_pending: bool,
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
    /// Present (and `true`) only when the person is only invited.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    invitation_pending: bool,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorInfo>,
    /// Only in `command.dry_run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<DryRunData<'a>>,
}

impl<'a> CommandData<'a> {
    /// The fields every event about a valid user command carries, with `outcome` and the rest
    /// of what happened to be filled in (the defaults are those of a command that changed
    /// nothing).
    fn of(cmd: &'a Command, outcome: Outcome, attempts: u32) -> Self {
        CommandData {
            command_id: Some(cmd.meta.command_id),
            command_type: Some(cmd.command_type().as_str()),
            correlation_id: cmd.meta.correlation_id.as_deref(),
            requested_by: cmd.meta.requested_by.as_deref(),
            reason: cmd.meta.reason.as_deref(),
            requested_at: cmd.meta.requested_at.as_deref(),
            email: cmd.email().map(|e| e.as_str()),
            outcome,
            account_status: None,
            license_reclaimed: false,
            invitation_pending: false,
            attempts,
            error: None,
            dry_run: None,
        }
    }
}

/// `data.dry_run` of `command.dry_run`: what the real run would do and report.
#[derive(Serialize)]
struct DryRunData<'a> {
    /// The LastPass call that would change something (`batchadd`, `deluser`, `enableuser`), or
    /// `None` when nothing would change.
    would_call: Option<&'static str>,
    /// The `deleteaction` of a `deluser`; absent for the other calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    deleteaction: Option<u8>,
    outcome: Outcome,
    account_status: Option<AccountStatus>,
    license_reclaimed: bool,
    invitation_pending: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorInfo>,
}

/// Builds events for one LastPass account.
#[derive(Debug, Clone)]
pub(crate) struct EventFactory {
    source: String,
}

impl EventFactory {
    /// `source` names the connector and the account: `urn:lastpass-connector:cid:<cid>`.
    pub fn new(cid: &str) -> Self {
        EventFactory {
            source: format!("urn:lastpass-connector:cid:{cid}"),
        }
    }

    /// A CloudEvent with the given routing key, id, subject and data.
    pub fn build<D: Serialize>(
        &self,
        kind: EventKind,
        id: Uuid,
        subject: Option<&str>,
        correlation_id: Option<&str>,
        trace: Option<&TraceContext>,
        data: D,
    ) -> Event {
        let ce = CloudEvent {
            specversion: "1.0",
            id,
            source: &self.source,
            ty: format!("{TYPE_PREFIX}{kind}"),
            subject: subject.filter(|s| !s.is_empty()),
            traceparent: trace.map(|t| t.traceparent.as_str()),
            tracestate: trace.and_then(|t| t.tracestate.as_deref()),
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            datacontenttype: "application/json",
            data,
        };
        Event {
            id,
            kind,
            body: serde_json::to_string(&ce).expect("events always serialize"),
            correlation_id: correlation_id.map(str::to_string),
            error: None,
            trace: trace.cloned(),
        }
    }

    /// The result event of a valid user command. The id depends only on the command id and the
    /// routing key, so a redelivered command yields the same id.
    pub fn command_result(&self, cmd: &Command, r: &Resolution, attempts: u32) -> Event {
        let kind = match r.outcome {
            Outcome::Applied | Outcome::AlreadyDone => EventKind::success_of(cmd.command_type()),
            Outcome::Failed => EventKind::Failed,
            Outcome::Rejected => EventKind::Rejected,
            // Built by `dry_run`, never from a resolution; kept apart from the success kinds.
            Outcome::DryRun => EventKind::DryRun,
        };
        let data = CommandData {
            account_status: r.account_status,
            license_reclaimed: r.license_reclaimed,
            invitation_pending: r.invitation_pending,
            error: r.error.as_ref(),
            ..CommandData::of(cmd, r.outcome, attempts)
        };
        let mut event = self.for_command(cmd, kind, data);
        event.error = r.error.clone();
        event
    }

    /// `command.dry_run` for a user command previewed in a dry run: `outcome` `dry_run`, the
    /// account as it is now (nothing was changed: `account_status` is its current status,
    /// `license_reclaimed` false), and in `dry_run` the call the real run would make and what it
    /// would report. Its id, from the command id and `command.dry_run`, differs from the id of the
    /// real result, and it carries no `error` (a predicted failure is in `dry_run.error`).
    pub fn dry_run(&self, cmd: &Command, p: &crate::apply::Preview, attempts: u32) -> Event {
        let r = &p.predicted;
        let data = CommandData {
            account_status: p.status_now,
            invitation_pending: p.invited_now,
            dry_run: Some(DryRunData {
                would_call: p.would.as_ref().map(|a| a.api_command()),
                deleteaction: p
                    .would
                    .as_ref()
                    .and_then(|a| a.delete_action())
                    .map(|d| d as u8),
                outcome: r.outcome,
                account_status: r.account_status,
                license_reclaimed: r.license_reclaimed,
                invitation_pending: r.invitation_pending,
                error: r.error.as_ref(),
            }),
            ..CommandData::of(cmd, Outcome::DryRun, attempts)
        };
        self.for_command(cmd, EventKind::DryRun, data)
    }

    /// An event of `kind` about a valid user command: its id from the command id and the kind
    /// (a redelivery yields the same id), its subject, correlation and trace from the command.
    fn for_command(&self, cmd: &Command, kind: EventKind, data: CommandData<'_>) -> Event {
        self.build(
            kind,
            result_event_id(cmd.meta.command_id, kind),
            cmd.email().map(|e| e.as_str()),
            cmd.meta.correlation_id.as_deref(),
            cmd.meta.trace.as_ref(),
            data,
        )
    }

    /// `command.rejected` for a message that is not a valid command. Its id comes from the
    /// command id when one is readable, else from the body itself, so a redelivery repeats it.
    pub fn rejected(&self, r: &Rejection, body: &[u8]) -> Event {
        let kind = EventKind::Rejected;
        let id = match r.command_id {
            Some(cid) => result_event_id(cid, kind),
            None => Uuid::new_v5(&ID_NAMESPACE, body),
        };
        let error = ErrorInfo::new(r.code, r.message.clone(), false);
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
            invitation_pending: false,
            attempts: 0,
            error: Some(&error),
            dry_run: None,
        };
        let mut event = self.build(
            kind,
            id,
            r.email.as_deref(),
            r.correlation_id.as_deref(),
            r.trace.as_deref(),
            data,
        );
        event.error = Some(error);
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            invitation_pending: false,
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
        assert_eq!(a.kind, EventKind::Suspended);
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
                invitation_pending: false,
                error: Some(ErrorInfo::new(
                    FailureCode::UserNotFound,
                    "no such user",
                    false,
                )),
            },
            1,
        );
        assert_eq!(failed.kind, EventKind::Failed);
        assert_eq!(
            failed.error.as_ref().unwrap().code.as_str(),
            "user_not_found"
        );
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
