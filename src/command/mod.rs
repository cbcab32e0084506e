//! Commands as they arrive on the wire, parsed once into a closed type.
//!
//! A command is a JSON object (UTF-8, at most [`MAX_COMMAND_BYTES`]):
//! `command_id` (UUID) and `type` are required; `user.email` for every user command,
//! `user.first_name` and `user.last_name` for provision; `correlation_id`, `requested_by`,
//! `reason`, `requested_at` are optional and copied into the events. Unknown fields are ignored.
//! Anything else is a [`Rejection`] naming what is wrong.

mod delivery;

pub(crate) use delivery::{Incoming, Prepared};

use crate::email::Email;
use crate::lastpass::NewUser;
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// Commands larger than this are rejected unread.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Longest accepted free-text field (names, correlation id, reason, ...).
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest accepted first or last name.
pub const MAX_NAME_LEN: usize = 128;

/// The command types, each with its routing key on `P.commands` and its own queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    Provision,
    Suspend,
    Deprovision,
    Sync,
}

impl CommandType {
    pub const ALL: [CommandType; 4] = [
        CommandType::Provision,
        CommandType::Suspend,
        CommandType::Deprovision,
        CommandType::Sync,
    ];

    /// The `type` field, which is also the routing key on `P.commands`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::Provision => "user.provision",
            CommandType::Suspend => "user.suspend",
            CommandType::Deprovision => "user.deprovision",
            CommandType::Sync => "users.sync",
        }
    }

    /// The suffix of the queue this type is consumed from: `P.<suffix>`.
    pub fn queue_suffix(self) -> &'static str {
        match self {
            CommandType::Provision => "provision",
            CommandType::Suspend => "suspend",
            CommandType::Deprovision => "deprovision",
            CommandType::Sync => "sync",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for CommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields every command carries, copied into its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub command_id: Uuid,
    pub correlation_id: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339, as sent.
    pub requested_at: Option<String>,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Provision(NewUser),
    Suspend(Email),
    Deprovision(Email),
    Sync,
}

/// A valid command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub meta: Meta,
    pub action: Action,
}

impl Command {
    pub fn command_type(&self) -> CommandType {
        match self.action {
            Action::Provision(_) => CommandType::Provision,
            Action::Suspend(_) => CommandType::Suspend,
            Action::Deprovision(_) => CommandType::Deprovision,
            Action::Sync => CommandType::Sync,
        }
    }

    /// What the command asks for, in one string: its type, email and names. Two commands with
    /// the same id and the same fingerprint are the same command (a redelivery); the same id
    /// with another fingerprint is a different decision reusing the id.
    pub(crate) fn fingerprint(&self) -> String {
        let (first, last) = match &self.action {
            Action::Provision(u) => (u.first_name.as_str(), u.last_name.as_str()),
            _ => ("", ""),
        };
        let email = self.email().map(Email::as_str).unwrap_or("");
        format!(
            "{}\u{1f}{email}\u{1f}{first}\u{1f}{last}",
            self.command_type()
        )
    }

    /// The email a user command is about (`None` for sync).
    pub fn email(&self) -> Option<&Email> {
        match &self.action {
            Action::Provision(u) => Some(&u.email),
            Action::Suspend(e) | Action::Deprovision(e) => Some(e),
            Action::Sync => None,
        }
    }

    /// Parses a message body that arrived on the queue of `queue_type`.
    /// A command whose `type` belongs to another queue is rejected (a misrouted deprovision must
    /// never delete anyone).
    pub fn parse(body: &[u8], queue_type: CommandType) -> Result<Command, Rejection> {
        let mut r = Rejection::new(RejectCode::NotJson, String::new());
        if body.len() > MAX_COMMAND_BYTES {
            r.code = RejectCode::TooLarge;
            r.message = format!(
                "message is {} bytes; the limit is {MAX_COMMAND_BYTES}",
                body.len()
            );
            return Err(r);
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                r.message = format!("body is not UTF-8 JSON: {e}");
                return Err(r);
            }
        };
        let Value::Object(obj) = value else {
            r.code = RejectCode::NotAnObject;
            r.message = "body is JSON but not an object".into();
            return Err(r);
        };
        // Copy what can be read into the rejection first, so even a rejected command's event
        // carries its id, type, correlation id and email where they are readable.
        r.command_id = obj
            .get("command_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        r.command_type = obj.get("type").and_then(Value::as_str).map(clip);
        r.correlation_id = obj.get("correlation_id").and_then(Value::as_str).map(clip);
        r.email = obj
            .get("user")
            .and_then(|u| u.get("email"))
            .and_then(Value::as_str)
            .map(clip);

        match parse_object(&obj, queue_type) {
            Ok(c) => Ok(c),
            Err((code, message)) => {
                r.code = code;
                r.message = message;
                Err(r)
            }
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_TEXT_LEN).collect()
}

type Invalid = (RejectCode, String);

fn parse_object(obj: &Map<String, Value>, queue_type: CommandType) -> Result<Command, Invalid> {
    let command_id = match obj.get("command_id") {
        None | Some(Value::Null) => return Err(missing("command_id")),
        Some(Value::String(s)) => {
            Uuid::parse_str(s).map_err(|_| invalid("command_id", "must be a UUID".to_string()))?
        }
        Some(_) => return Err(invalid("command_id", "must be a string".into())),
    };
    let type_str = match obj.get("type") {
        None | Some(Value::Null) => return Err(missing("type")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(invalid("type", "must be a string".into())),
    };
    let Some(command_type) = CommandType::parse(type_str) else {
        return Err((
            RejectCode::UnknownType,
            format!(
                "unknown command type {:?}; expected one of user.provision, user.suspend, \
                 user.deprovision, users.sync",
                clip(type_str)
            ),
        ));
    };
    if command_type != queue_type {
        return Err((
            RejectCode::WrongQueue,
            format!(
                "a {command_type} command arrived on the {} queue; it is not applied",
                queue_type.queue_suffix()
            ),
        ));
    }
    let meta = Meta {
        command_id,
        correlation_id: optional_text(obj, "correlation_id")?,
        requested_by: optional_text(obj, "requested_by")?,
        reason: optional_text(obj, "reason")?,
        requested_at: match optional_text(obj, "requested_at")? {
            Some(t) => {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map_err(|_| invalid("requested_at", "must be an RFC 3339 timestamp".into()))?;
                Some(t)
            }
            None => None,
        },
    };
    let action = match command_type {
        CommandType::Sync => Action::Sync,
        user_command => {
            let user = match obj.get("user") {
                None | Some(Value::Null) => return Err(missing("user")),
                Some(Value::Object(u)) => u,
                Some(_) => return Err(invalid("user", "must be an object".into())),
            };
            let email = match user.get("email") {
                None | Some(Value::Null) => return Err(missing("user.email")),
                Some(Value::String(s)) => Email::parse(s)
                    .map_err(|e| (RejectCode::InvalidEmail, format!("user.email: {e}")))?,
                Some(_) => return Err(invalid("user.email", "must be a string".into())),
            };
            match user_command {
                CommandType::Provision => Action::Provision(NewUser {
                    email,
                    first_name: name(user, "user.first_name", "first_name")?,
                    last_name: name(user, "user.last_name", "last_name")?,
                }),
                CommandType::Suspend => Action::Suspend(email),
                CommandType::Deprovision => Action::Deprovision(email),
                CommandType::Sync => unreachable!("handled above"),
            }
        }
    };
    Ok(Command { meta, action })
}

fn missing(field: &str) -> Invalid {
    (
        RejectCode::MissingField,
        format!("required field {field} is missing"),
    )
}

fn invalid(field: &str, why: String) -> Invalid {
    (RejectCode::InvalidField, format!("{field} {why}"))
}

fn optional_text(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_TEXT_LEN => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(invalid(
            field,
            format!("is longer than {MAX_TEXT_LEN} characters"),
        )),
        Some(_) => Err(invalid(field, "must be a string".into())),
    }
}

fn name(user: &Map<String, Value>, path: &str, field: &str) -> Result<String, Invalid> {
    match user.get(field) {
        None | Some(Value::Null) => Err(missing(path)),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                Err(invalid(path, "must not be empty".into()))
            } else if s.chars().count() > MAX_NAME_LEN {
                Err(invalid(
                    path,
                    format!("is longer than {MAX_NAME_LEN} characters"),
                ))
            } else if s.chars().any(char::is_control) {
                Err(invalid(path, "must not contain control characters".into()))
            } else {
                Ok(s.to_string())
            }
        }
        Some(_) => Err(invalid(path, "must be a string".into())),
    }
}

/// Why a message is not a valid command (the `error.code` of `command.rejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    TooLarge,
    NotJson,
    NotAnObject,
    MissingField,
    InvalidField,
    InvalidEmail,
    UnknownType,
    WrongQueue,
    /// A command id already completed by a command that asked for something else.
    CommandIdConflict,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::TooLarge => "too_large",
            RejectCode::NotJson => "not_json",
            RejectCode::NotAnObject => "not_an_object",
            RejectCode::MissingField => "missing_field",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::InvalidEmail => "invalid_email",
            RejectCode::UnknownType => "unknown_type",
            RejectCode::WrongQueue => "wrong_queue",
            RejectCode::CommandIdConflict => "command_id_conflict",
        }
    }
}

/// A message that is not a valid command, with whatever of it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
    pub command_id: Option<Uuid>,
    pub command_type: Option<String>,
    pub correlation_id: Option<String>,
    pub email: Option<String>,
}

impl Rejection {
    /// A valid command whose id was already used by a different command.
    pub(crate) fn conflict(command: &Command) -> Rejection {
        Rejection {
            code: RejectCode::CommandIdConflict,
            message: format!(
                "command_id {} was already used by a different command; this one is not \
                 applied (use a new command_id for a new decision)",
                command.meta.command_id
            ),
            command_id: Some(command.meta.command_id),
            command_type: Some(command.command_type().as_str().to_string()),
            correlation_id: command.meta.correlation_id.clone(),
            email: command.email().map(|e| e.to_string()),
        }
    }

    fn new(code: RejectCode, message: String) -> Self {
        Rejection {
            code,
            message,
            command_id: None,
            command_type: None,
            correlation_id: None,
            email: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    fn parse(v: Value, q: CommandType) -> Result<Command, Rejection> {
        Command::parse(&serde_json::to_vec(&v).unwrap(), q)
    }

    #[test]
    fn parses_the_documented_provision() {
        let c = parse(
            json!({"command_id": ID, "type": "user.provision",
                   "user": {"email": "Jane@Example.com", "first_name": "Jane", "last_name": "Doe"},
                   "correlation_id": "offboarding-run-8812", "requested_by": "workday-offboarding",
                   "reason": "last day 2026-11-30", "requested_at": "2026-11-28T12:00:00Z",
                   "something_new": [1, 2]}),
            CommandType::Provision,
        )
        .unwrap();
        assert_eq!(c.meta.command_id.to_string(), ID);
        assert_eq!(
            c.meta.correlation_id.as_deref(),
            Some("offboarding-run-8812")
        );
        let Action::Provision(u) = &c.action else {
            panic!("not a provision")
        };
        assert_eq!(u.email.as_str(), "jane@example.com");
        assert_eq!(u.full_name(), "Jane Doe");
    }

    #[test]
    fn suspend_and_deprovision_need_only_email() {
        for (t, q) in [
            ("user.suspend", CommandType::Suspend),
            ("user.deprovision", CommandType::Deprovision),
        ] {
            let c = parse(
                json!({"command_id": ID, "type": t, "user": {"email": "a@b.co"}}),
                q,
            )
            .unwrap();
            assert_eq!(c.command_type(), q);
            assert_eq!(c.email().unwrap().as_str(), "a@b.co");
        }
        let c = parse(
            json!({"command_id": ID, "type": "users.sync"}),
            CommandType::Sync,
        )
        .unwrap();
        assert_eq!(c.action, Action::Sync);
    }

    fn code(body: &[u8], q: CommandType) -> RejectCode {
        Command::parse(body, q).unwrap_err().code
    }

    #[test]
    fn every_kind_of_invalid_message_is_named() {
        let s = CommandType::Suspend;
        assert_eq!(code(b"not json", s), RejectCode::NotJson);
        assert_eq!(code(&[0xff, 0xfe], s), RejectCode::NotJson);
        assert_eq!(code(b"[1,2]", s), RejectCode::NotAnObject);
        assert_eq!(code(b"\"x\"", s), RejectCode::NotAnObject);
        assert_eq!(
            code(&vec![b' '; MAX_COMMAND_BYTES + 1], s),
            RejectCode::TooLarge
        );
        let cases = [
            (
                json!({"type": "user.suspend", "user": {"email": "a@b.co"}}),
                RejectCode::MissingField,
            ),
            (
                json!({"command_id": 5, "type": "user.suspend", "user": {"email": "a@b.co"}}),
                RejectCode::InvalidField,
            ),
            (
                json!({"command_id": "nope", "type": "user.suspend", "user": {"email": "a@b.co"}}),
                RejectCode::InvalidField,
            ),
            (
                json!({"command_id": ID, "user": {"email": "a@b.co"}}),
                RejectCode::MissingField,
            ),
            (
                json!({"command_id": ID, "type": "user.explode", "user": {"email": "a@b.co"}}),
                RejectCode::UnknownType,
            ),
            (
                json!({"command_id": ID, "type": "user.deprovision", "user": {"email": "a@b.co"}}),
                RejectCode::WrongQueue,
            ),
            (
                json!({"command_id": ID, "type": "user.suspend"}),
                RejectCode::MissingField,
            ),
            (
                json!({"command_id": ID, "type": "user.suspend", "user": "a@b.co"}),
                RejectCode::InvalidField,
            ),
            (
                json!({"command_id": ID, "type": "user.suspend", "user": {}}),
                RejectCode::MissingField,
            ),
            (
                json!({"command_id": ID, "type": "user.suspend", "user": {"email": 7}}),
                RejectCode::InvalidField,
            ),
            (
                json!({"command_id": ID, "type": "user.suspend", "user": {"email": "not-an-email"}}),
                RejectCode::InvalidEmail,
            ),
            (
                json!({"command_id": ID, "type": "user.suspend", "user": {"email": "a@b.co"}, "correlation_id": 9}),
                RejectCode::InvalidField,
            ),
            (
                json!({"command_id": ID, "type": "user.suspend", "user": {"email": "a@b.co"}, "requested_at": "yesterday"}),
                RejectCode::InvalidField,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(code(&serde_json::to_vec(&v).unwrap(), s), want, "for {v}");
        }
        let p = CommandType::Provision;
        let no_last = json!({"command_id": ID, "type": "user.provision", "user": {"email": "a@b.co", "first_name": "A"}});
        assert_eq!(
            code(&serde_json::to_vec(&no_last).unwrap(), p),
            RejectCode::MissingField
        );
        let blank = json!({"command_id": ID, "type": "user.provision", "user": {"email": "a@b.co", "first_name": " ", "last_name": "B"}});
        assert_eq!(
            code(&serde_json::to_vec(&blank).unwrap(), p),
            RejectCode::InvalidField
        );
    }

    #[test]
    fn a_rejection_keeps_what_it_could_read() {
        let r = parse(
            json!({"command_id": ID, "type": "user.deprovision", "correlation_id": "c-1",
                   "user": {"email": "a@b.co"}}),
            CommandType::Suspend,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::WrongQueue);
        assert_eq!(r.command_id.unwrap().to_string(), ID);
        assert_eq!(r.command_type.as_deref(), Some("user.deprovision"));
        assert_eq!(r.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(r.email.as_deref(), Some("a@b.co"));
    }
}
