//! Commands as they arrive on the wire, parsed once into a closed type.
//!
//! A command is a JSON object (UTF-8, at most [`MAX_COMMAND_BYTES`]):
//! `command_id` (UUID) and `type` are required; `user.email` for every user command,
//! `user.first_name` and `user.last_name` for provision; `correlation_id`, `requested_by`,
//! `reason`, `requested_at` are optional and copied into the events. Unknown fields are ignored.
//! A key that appears twice in one object, at any depth, is rejected (never "the last one wins":
//! two readers of the same message must not see two different commands). Names must not contain
//! control characters, zero-width characters or bidi controls (they go to LastPass).
//! Anything else is a [`Rejection`] naming what is wrong.

// A rejection is this module's other normal answer, built once per invalid message and carried
// in a `Result`: its size there costs nothing that matters.
#![allow(clippy::result_large_err)]

mod delivery;

pub(crate) use delivery::{Incoming, Prepared};

use crate::email::{Email, is_invisible};
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
    Reactivate,
    Sync,
}

impl CommandType {
    pub const ALL: [CommandType; 5] = [
        CommandType::Provision,
        CommandType::Suspend,
        CommandType::Deprovision,
        CommandType::Reactivate,
        CommandType::Sync,
    ];

    /// The `type` field, which is also the routing key on `P.commands`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::Provision => "user.provision",
            CommandType::Suspend => "user.suspend",
            CommandType::Deprovision => "user.deprovision",
            CommandType::Reactivate => "user.reactivate",
            CommandType::Sync => "users.sync",
        }
    }

    /// The suffix of the queue this type is consumed from: `P.<suffix>`.
    pub fn queue_suffix(self) -> &'static str {
        match self {
            CommandType::Provision => "provision",
            CommandType::Suspend => "suspend",
            CommandType::Deprovision => "deprovision",
            CommandType::Reactivate => "reactivate",
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

/// W3C trace context of a command (its `traceparent` and `tracestate` AMQP headers), carried to
/// every event it produces and into its log lines, so a workflow's trace continues through the
/// connector. Only well-formed values are kept; anything else is ignored, never an error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceContext {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// `traceparent` must be `version-traceid-parentid-flags` in lower-case hex (55 characters
    /// for version 00), with neither id all zeros; `tracestate` at most 512 printable ASCII
    /// characters (else dropped).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let parts: Vec<&str> = traceparent.trim().split('-').collect();
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return None;
        };
        let ok = hex(version, 2)
            && *version != "ff"
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && hex(flags, 2);
        ok.then(|| TraceContext {
            traceparent: traceparent.trim().to_string(),
            tracestate: tracestate
                .map(str::trim)
                .filter(|t| {
                    !t.is_empty() && t.len() <= 512 && t.bytes().all(|b| (0x20..0x7f).contains(&b))
                })
                .map(str::to_string),
        })
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
    /// From the delivery's headers, not the body.
    pub trace: Option<TraceContext>,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Provision(NewUser),
    Suspend(Email),
    Deprovision(Email),
    /// Re-enable a suspended account (`enableuser`).
    Reactivate(Email),
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
            Action::Reactivate(_) => CommandType::Reactivate,
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
            Action::Suspend(e) | Action::Deprovision(e) | Action::Reactivate(e) => Some(e),
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
        let (value, duplicates) = match strict_json::parse(body) {
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
        // carries its id, type, correlation id and email where they are readable. A field that
        // is (or is inside) a duplicated key is not readable: which of its values is meant?
        let readable = |path: &[&str]| !duplicates.covers(path);
        let top = |key: &str| obj.get(key).filter(|_| readable(&[key]));
        r.command_id = top("command_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        r.command_type = top("type").and_then(Value::as_str).map(clip);
        r.correlation_id = top("correlation_id").and_then(Value::as_str).map(clip);
        r.email = obj
            .get("user")
            .and_then(|u| u.get("email"))
            .filter(|_| readable(&["user", "email"]))
            .and_then(Value::as_str)
            .map(clip);

        if let Some(first) = duplicates.first() {
            r.code = RejectCode::InvalidField;
            r.message = format!(
                "key {:?} appears more than once in its object; every key must be unique",
                strict_json::show_path(first)
            );
            return Err(r);
        }

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
                 user.deprovision, user.reactivate, users.sync",
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
        trace: None,
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
                CommandType::Reactivate => Action::Reactivate(email),
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
            } else if s.chars().any(is_invisible) {
                // They would reach LastPass's fullname and hide or reorder what admins see.
                Err(invalid(
                    path,
                    "must not contain zero-width characters or bidi controls".into(),
                ))
            } else {
                Ok(s.to_string())
            }
        }
        Some(_) => Err(invalid(path, "must be a string".into())),
    }
}

/// JSON parsing that notices a repeated key, which `serde_json::Value` silently resolves to the
/// last value.
mod strict_json {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};
    use std::fmt;

    /// A path into the document: object keys, and array indices as `[i]`.
    pub(super) type Path = Vec<String>;

    /// At most this many repeated keys are recorded (each with its path, keys cut to
    /// [`MAX_KEY_CHARS`] characters), so that a body full of repeated keys costs no more memory
    /// than a few of them.
    const MAX_RECORDED: usize = 16;
    const MAX_KEY_CHARS: usize = 64;

    /// The keys that appeared more than once in their object, in document order.
    #[derive(Debug, Default)]
    pub(super) struct Duplicates {
        recorded: Vec<Path>,
        /// More than [`MAX_RECORDED`]: then any path may be one of them.
        overflowed: bool,
    }

    impl Duplicates {
        pub(super) fn first(&self) -> Option<&Path> {
            self.recorded.first()
        }

        /// Whether the value at `path` is, or is inside, a repeated key (so which of its values
        /// is meant is unknown). `path` has keys only, no array index.
        pub(super) fn covers(&self, path: &[&str]) -> bool {
            self.overflowed
                || self
                    .recorded
                    .iter()
                    .any(|d| d.len() <= path.len() && d.iter().zip(path).all(|(a, b)| a == b))
        }

        fn record(&mut self, at: &[String]) {
            let at: Path = at
                .iter()
                .map(|k| k.chars().take(MAX_KEY_CHARS).collect())
                .collect();
            if self.recorded.contains(&at) {
                return;
            }
            if self.recorded.len() < MAX_RECORDED {
                self.recorded.push(at);
            } else {
                self.overflowed = true;
            }
        }
    }

    /// Parses `body` as one JSON value (the same syntax, depth limit and trailing-characters rule
    /// as `serde_json::from_slice`), and notes every key that appears more than once in its
    /// object. The value keeps the last of the repeated ones, but must not be used as a command
    /// when there is any.
    pub(super) fn parse(body: &[u8]) -> Result<(Value, Duplicates), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let mut state = State::default();
        // serde_json's own recursion limit (128 levels) still applies: it is in the deserializer.
        let value = Node(&mut state).deserialize(&mut de)?;
        de.end()?;
        Ok((value, state.duplicates))
    }

    /// A path as a publisher writes it: `user.email`, `items[0].name`.
    pub(super) fn show_path(path: &[String]) -> String {
        let mut out = String::new();
        for seg in path {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    #[derive(Default)]
    struct State {
        /// Where the visitor is now.
        path: Path,
        duplicates: Duplicates,
    }

    struct Node<'s>(&'s mut State);

    impl<'de> DeserializeSeed<'de> for Node<'_> {
        type Value = Value;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Node<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            loop {
                self.0.path.push(format!("[{}]", items.len()));
                let item = seq.next_element_seed(Node(&mut *self.0));
                self.0.path.pop();
                match item? {
                    Some(v) => items.push(v),
                    None => return Ok(Value::Array(items)),
                }
            }
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut obj = Map::new();
            // The key as decoded: `"type"` and `"typ\u0065"` are the same key.
            while let Some(key) = map.next_key::<String>()? {
                self.0.path.push(key);
                let value = map.next_value_seed(Node(&mut *self.0));
                let value = value?;
                let key = self.0.path.last().cloned().unwrap_or_default();
                if obj.contains_key(&key) {
                    self.0.duplicates.record(&self.0.path);
                }
                self.0.path.pop();
                obj.insert(key, value);
            }
            Ok(Value::Object(obj))
        }
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
    /// From the delivery's headers (boxed: a rejection travels in a `Result`'s error).
    pub trace: Option<Box<TraceContext>>,
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
            trace: command.meta.trace.clone().map(Box::new),
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
            trace: None,
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
    fn suspend_deprovision_and_reactivate_need_only_email() {
        for (t, q) in [
            ("user.suspend", CommandType::Suspend),
            ("user.deprovision", CommandType::Deprovision),
            ("user.reactivate", CommandType::Reactivate),
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

    fn provision_named(first: &str, last: &str) -> Result<Command, Rejection> {
        parse(
            json!({"command_id": ID, "type": "user.provision",
                   "user": {"email": "a@b.co", "first_name": first, "last_name": last}}),
            CommandType::Provision,
        )
    }

    #[test]
    fn names_with_zero_width_or_bidi_characters_are_rejected() {
        let invisible = [
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', // zero-width
            '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
            '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', // bidi controls
        ];
        for c in invisible {
            for (first, last, field) in [
                (format!("Ja{c}ne"), "Doe".to_string(), "user.first_name"),
                ("Jane".to_string(), format!("Doe{c}"), "user.last_name"),
                (format!("{c}Jane"), "Doe".to_string(), "user.first_name"),
            ] {
                let r = provision_named(&first, &last).unwrap_err();
                assert_eq!(r.code, RejectCode::InvalidField, "{c:?} in {field}");
                assert!(r.message.starts_with(field), "{}", r.message);
                assert!(!r.message.contains(c), "{}", r.message);
                // What could be read is still in the rejection.
                assert_eq!(r.command_id.unwrap().to_string(), ID);
                assert_eq!(r.email.as_deref(), Some("a@b.co"));
            }
        }
    }

    #[test]
    fn names_with_ordinary_non_ascii_letters_are_accepted() {
        for (first, last) in [
            ("Zoë", "Zoë-Ünal"),
            ("José María", "Ñúñez"),
            ("Łukasz", "Żółć"),
            ("Søren", "Ærø"),
            ("Ахмед", "Ширин"),
            ("美咲", "佐藤"),
            ("Nguyễn", "Thị Minh"),
            ("أحمد", "علي"), // right-to-left letters are fine; only the controls are refused
        ] {
            let c =
                provision_named(first, last).unwrap_or_else(|r| panic!("{first} {last}: {r:?}"));
            let Action::Provision(u) = c.action else {
                panic!("not a provision")
            };
            assert_eq!(u.full_name(), format!("{first} {last}"));
        }
    }

    fn dup(body: &str, q: CommandType) -> Rejection {
        let r = Command::parse(body.as_bytes(), q).expect_err(body);
        assert_eq!(r.code, RejectCode::InvalidField, "{body}: {}", r.message);
        r
    }

    #[test]
    fn a_duplicated_type_is_rejected_not_the_last_one_taken() {
        // Whichever value a reader would take, the command must not be applied.
        for (first, second) in [
            ("user.suspend", "user.deprovision"),
            ("user.deprovision", "user.suspend"),
            ("user.deprovision", "user.deprovision"),
        ] {
            let body = format!(
                r#"{{"command_id":"{ID}","type":"{first}","user":{{"email":"a@b.co"}},"type":"{second}"}}"#
            );
            for q in [CommandType::Suspend, CommandType::Deprovision] {
                let r = dup(&body, q);
                assert!(r.message.contains("\"type\""), "{}", r.message);
                // An ambiguous field is not copied into the rejection; the others are.
                assert_eq!(r.command_type, None);
                assert_eq!(r.command_id.unwrap().to_string(), ID);
                assert_eq!(r.email.as_deref(), Some("a@b.co"));
            }
        }
    }

    #[test]
    fn a_duplicated_key_inside_user_is_rejected() {
        let body = format!(
            r#"{{"command_id":"{ID}","type":"user.deprovision","correlation_id":"c-1",
                "user":{{"email":"nancy@example.com","email":"boss@example.com"}}}}"#
        );
        let r = dup(&body, CommandType::Deprovision);
        assert!(r.message.contains("\"user.email\""), "{}", r.message);
        assert_eq!(r.email, None);
        assert_eq!(r.command_id.unwrap().to_string(), ID);
        assert_eq!(r.command_type.as_deref(), Some("user.deprovision"));
        assert_eq!(r.correlation_id.as_deref(), Some("c-1"));

        // `user` itself twice: nothing inside it is readable either.
        let body = format!(
            r#"{{"command_id":"{ID}","type":"user.suspend",
                "user":{{"email":"a@b.co"}},"user":{{"email":"c@d.co"}}}}"#
        );
        let r = dup(&body, CommandType::Suspend);
        assert!(r.message.contains("\"user\""), "{}", r.message);
        assert_eq!(r.email, None);

        // A repeated command_id leaves the rejection without one.
        let body = format!(
            r#"{{"command_id":"{ID}","command_id":"2b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "type":"users.sync"}}"#
        );
        let r = dup(&body, CommandType::Sync);
        assert_eq!(r.command_id, None);
        assert_eq!(r.command_type.as_deref(), Some("users.sync"));
    }

    #[test]
    fn a_duplicated_key_at_any_depth_is_rejected() {
        let p = CommandType::Provision;
        let user = r#""user":{"email":"a@b.co","first_name":"A","last_name":"B"}"#;
        for (extra, path) in [
            // In fields the parser reads...
            (r#""reason":"x","reason":"y""#, "reason"),
            (
                r#""requested_at":"2026-01-01T00:00:00Z","requested_at":"2026-01-02T00:00:00Z""#,
                "requested_at",
            ),
            // ...and in fields it ignores, however deep.
            (r#""something_new":{"a":1,"a":1}"#, "something_new.a"),
            (r#""x":[0,{"y":[{"z":null,"z":null}]}]"#, "x[1].y[0].z"),
            // The same key spelled with an escape is the same key.
            (r#""typ\u0065":"user.provision""#, "type"),
            (r#""\u0074ype":"user.provision""#, "type"),
        ] {
            let body = format!(r#"{{"command_id":"{ID}","type":"user.provision",{user},{extra}}}"#);
            let r = dup(&body, p);
            assert!(
                r.message.contains(&format!("{path:?}")),
                "{body}: {}",
                r.message
            );
        }
        let body = format!(
            r#"{{"command_id":"{ID}","type":"user.provision",
                "user":{{"email":"a@b.co","first_name":"A","last_name":"B","last_name":"C"}}}}"#
        );
        let r = dup(&body, p);
        assert!(r.message.contains("\"user.last_name\""), "{}", r.message);
        assert_eq!(r.email.as_deref(), Some("a@b.co"));
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine() {
        let body = format!(
            r#"{{"command_id":"{ID}","type":"user.suspend","user":{{"email":"a@b.co","type":"x"}},
                "meta":{{"email":"c@d.co","user":{{"email":"e@f.co"}}}},"list":[{{"email":1}},{{"email":2}}]}}"#
        );
        let c = Command::parse(body.as_bytes(), CommandType::Suspend).unwrap();
        assert_eq!(c.email().unwrap().as_str(), "a@b.co");
    }

    #[test]
    fn many_duplicated_keys_cost_little_and_hide_every_field() {
        let mut body =
            format!(r#"{{"command_id":"{ID}","type":"user.suspend","user":{{"email":"a@b.co"}}"#);
        for i in 0..2000 {
            body.push_str(&format!(r#","k{i}":0,"k{i}":0"#));
        }
        body.push('}');
        let r = dup(&body, CommandType::Suspend);
        // The first one is named; past the recorded few, no field is trusted.
        assert!(r.message.contains("\"k0\""), "{}", r.message);
        assert_eq!(r.command_id, None);
        assert_eq!(r.email, None);
    }

    #[test]
    fn duplicate_keys_keep_the_order_of_the_other_rejections() {
        let s = CommandType::Suspend;
        // Too large is decided before reading, duplicates or not.
        let mut big = br#"{"type":1,"type":2,"pad":""#.to_vec();
        big.resize(MAX_COMMAND_BYTES + 10, b'x');
        big.extend_from_slice(b"\"}");
        assert_eq!(code(&big, s), RejectCode::TooLarge);
        // Broken JSON is not_json, even after a repeated key.
        assert_eq!(code(br#"{"type":1,"type":2"#, s), RejectCode::NotJson);
        assert_eq!(code(br#"{"type":1,"type":2} x"#, s), RejectCode::NotJson);
        assert_eq!(code(b"{\"a\":\"\xff\",\"a\":1}", s), RejectCode::NotJson);
        // Not an object is named as such.
        assert_eq!(code(br#"[{"a":1,"a":2}]"#, s), RejectCode::NotAnObject);
        // Nesting deeper than serde_json's limit is refused, not a stack overflow.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(code(deep.as_bytes(), s), RejectCode::TooLarge);
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(code(deep.as_bytes(), s), RejectCode::NotJson);
    }

    #[test]
    fn strict_parsing_reads_json_as_serde_json_does() {
        for body in [
            r#"{"a":[1,-2,3.5,1e300,18446744073709551615,-9223372036854775808,true,false,null],
                "b":{"c":"\u00e9\ud83d\ude00\n","d":{}},"e":[],"f":"","g":0.1}"#,
            r#"  {"k" : "v" }  "#,
            r#""just a string""#,
            "[1,[2,[3,{}]]]",
            "-0",
        ] {
            let (strict, dups) = strict_json::parse(body.as_bytes()).unwrap();
            let plain: Value = serde_json::from_str(body).unwrap();
            assert_eq!(strict, plain, "{body}");
            assert!(dups.first().is_none());
        }
        for bad in [
            "",
            "{",
            "{}{}",
            "[1,]",
            r#"{"a" 1}"#,
            "1e400",
            "nul",
            "{\"a\":1,}",
        ] {
            assert!(strict_json::parse(bad.as_bytes()).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad:?}");
        }
    }
}
