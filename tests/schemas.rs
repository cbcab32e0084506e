//! The published contract (`schemas/*.json`, JSON Schema draft 2020-12) against the code:
//! every schema is a valid schema; every event the service emits validates against the schema of
//! its routing key; and each command schema accepts exactly what `Command::parse` accepts on that
//! queue, as far as JSON Schema can express it.

#[path = "support/schemas.rs"]
mod schemas;

use lastpass_connector::command::{Command, CommandType, RejectCode};
use lastpass_connector::event::{
    ErrorInfo, Event, EventFactory, EventSink, Outcome, PublishError, Resolution,
};
use lastpass_connector::fake::FakeLastPass;
use lastpass_connector::lastpass::LastPassError;
use lastpass_connector::ledger::Ledger;
use lastpass_connector::processor::{
    Disposition, Gate, Incoming, Prepared, Processor, RetryPolicy,
};
use lastpass_connector::status::AccountStatus;
use lastpass_connector::sync::SyncSettings;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

const COMMAND_SCHEMAS: [&str; 4] = [
    "command.user.provision.json",
    "command.user.suspend.json",
    "command.user.deprovision.json",
    "command.users.sync.json",
];
const EVENT_SCHEMAS: [&str; 7] = [
    "event.user.provisioned.json",
    "event.user.suspended.json",
    "event.user.deprovisioned.json",
    "event.command.failed.json",
    "event.command.rejected.json",
    "event.user.synced.json",
    "event.users.sync.completed.json",
];

// ---------------------------------------------------------------------------------------------
// 1. The schemas themselves.

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema_that_compiles() {
    let docs = schemas::documents();
    for name in COMMAND_SCHEMAS.iter().chain(&EVENT_SCHEMAS) {
        assert!(docs.contains_key(*name), "schemas/{name} is missing");
    }
    for (name, doc) in docs {
        assert_eq!(doc["$schema"], DRAFT_2020_12, "{name}: $schema");
        assert_eq!(
            doc["$id"].as_str(),
            Some(format!("{}{name}", schemas::ID_BASE).as_str()),
            "{name}: $id"
        );
        for key in ["title", "description"] {
            assert!(
                doc[key].as_str().is_some_and(|s| !s.trim().is_empty()),
                "{name}: needs a {key}"
            );
        }
        if let Err(e) = jsonschema::draft202012::meta::validate(doc) {
            panic!("schemas/{name} is not a valid draft 2020-12 schema: {e}");
        }
        if let Err(e) = schemas::compile(doc) {
            panic!("schemas/{name} does not compile: {e}");
        }
    }
    // Compiled once, with the cross-file references resolved offline.
    assert_eq!(schemas::validators().len(), docs.len());
}

#[test]
fn the_examples_in_the_schemas_are_valid() {
    for (name, doc) in schemas::documents() {
        for example in doc["examples"].as_array().into_iter().flatten() {
            schemas::assert_valid(name, example);
            if name.starts_with("event.") {
                assert_eq!(schemas::event_schema_file(example), *name);
                schemas::assert_valid("cloudevent.json", example);
            }
            if let Some(ty) = name
                .strip_prefix("command.")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(CommandType::parse)
            {
                let body = serde_json::to_vec(example).unwrap();
                Command::parse(&body, ty)
                    .unwrap_or_else(|r| panic!("{name}: example rejected by the parser: {r:?}"));
            }
        }
    }
}

#[test]
fn a_reference_to_an_unknown_file_fails_offline() {
    let schema = json!({
        "$schema": DRAFT_2020_12,
        "$id": format!("{}probe.json", schemas::ID_BASE),
        "$ref": "no-such-file.json"
    });
    assert!(schemas::compile(&schema).is_err());
}

// ---------------------------------------------------------------------------------------------
// 2. The schemas accept what the service emits.

fn body(e: &Event) -> Value {
    serde_json::from_str(&e.body).unwrap_or_else(|err| panic!("event body is not JSON: {err}"))
}

/// Validates an emitted event against its schema and the envelope, and checks that its type and
/// its routing key agree.
fn check_event(e: &Event) -> Value {
    let v = body(e);
    assert_eq!(
        v["type"].as_str(),
        Some(format!("{}{}", schemas::EVENT_TYPE_PREFIX, e.routing_key).as_str()),
        "type and routing key"
    );
    assert_eq!(v["id"].as_str(), Some(e.id.to_string().as_str()));
    schemas::assert_event_valid(&v);
    schemas::assert_valid("cloudevent.json", &v);
    v
}

fn parse(v: &Value, q: CommandType) -> Command {
    Command::parse(&serde_json::to_vec(v).unwrap(), q)
        .unwrap_or_else(|r| panic!("{v} should parse on {q}: {r:?}"))
}

fn resolution(
    outcome: Outcome,
    status: Option<AccountStatus>,
    license_reclaimed: bool,
    error: Option<(&str, bool)>,
) -> Resolution {
    Resolution {
        outcome,
        account_status: status,
        license_reclaimed,
        error: error
            .map(|(code, retryable)| ErrorInfo::new(code, format!("because {code}"), retryable)),
    }
}

#[test]
fn factory_events_for_every_row_of_the_semantics_table_match_their_schemas() {
    use AccountStatus::*;
    use Outcome::*;
    let f = EventFactory::new("12345678");
    let documented = json!({"command_id": ID, "type": "user.provision",
        "user": {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"},
        "correlation_id": "offboarding-run-8812", "requested_by": "workday-offboarding",
        "reason": "last day 2026-11-30", "requested_at": "2026-11-28T12:00:00Z"});
    let bare_provision = json!({"command_id": ID, "type": "user.provision",
        "user": {"email": " Jane@Example.COM ", "first_name": " Jane ", "last_name": "Doe"}});
    let suspend = json!({"command_id": ID, "type": "user.suspend",
        "user": {"email": "jane@example.com"}, "correlation_id": "run-1"});
    let deprovision = json!({"command_id": "{1B4E28BA-2FA1-11D2-883F-0016D3CCA427}",
        "type": "user.deprovision", "user": {"email": "jane@example.com"},
        "requested_at": "2026-11-30 17:00:00.5+01:00", "correlation_id": null});
    let sync = json!({"command_id": ID, "type": "users.sync",
        "requested_by": "lastpass-connector schedule"});

    let provision_rows = [
        resolution(Applied, Some(Staged), false, None),
        resolution(AlreadyDone, Some(Active), false, None),
        resolution(AlreadyDone, Some(Staged), false, None),
        // The race where batchadd was refused but the user exists after all.
        resolution(Applied, Some(Suspended), false, None),
        resolution(
            Failed,
            Some(Suspended),
            false,
            Some(("account_suspended", false)),
        ),
        resolution(Failed, None, false, Some(("lastpass_rejected", false))),
        resolution(Failed, None, false, Some(("retries_exhausted", true))),
    ];
    let suspend_rows = [
        resolution(Applied, Some(Suspended), false, None),
        resolution(AlreadyDone, Some(Suspended), false, None),
        resolution(Failed, None, false, Some(("user_not_found", false))),
        resolution(Failed, None, false, Some(("lastpass_rejected", false))),
        resolution(Failed, None, false, Some(("retries_exhausted", true))),
    ];
    let deprovision_rows = [
        resolution(Applied, Some(Deprovisioned), true, None),
        resolution(AlreadyDone, Some(Deprovisioned), false, None),
        resolution(Failed, None, false, Some(("lastpass_rejected", false))),
        resolution(Failed, None, false, Some(("retries_exhausted", true))),
    ];
    // A sync that fails part-way (processor::process_sync): attempts 1, no email.
    let sync_rows = [
        resolution(Failed, None, false, Some(("unauthorized", true))),
        resolution(Failed, None, false, Some(("retries_exhausted", true))),
        resolution(Failed, None, false, Some(("lastpass_rejected", false))),
    ];
    let cases: [(&Value, CommandType, &[Resolution]); 5] = [
        (&documented, CommandType::Provision, &provision_rows),
        (&bare_provision, CommandType::Provision, &provision_rows),
        (&suspend, CommandType::Suspend, &suspend_rows),
        (&deprovision, CommandType::Deprovision, &deprovision_rows),
        (&sync, CommandType::Sync, &sync_rows),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (cmd, q, rows) in cases {
        let cmd = parse(cmd, q);
        for r in rows {
            let attempts = if q == CommandType::Sync { 1 } else { 3 };
            let v = check_event(&f.command_result(&cmd, r, attempts));
            seen.insert(schemas::event_schema_file(&v));
        }
    }
    for file in &EVENT_SCHEMAS[..4] {
        assert!(seen.contains(*file), "no event checked against {file}");
    }

    // The schemas are tight: what the table forbids is refused.
    let cmd = parse(&suspend, CommandType::Suspend);
    let wrong = [
        // A suspension never leaves another status.
        resolution(Applied, Some(Active), false, None),
        // Success events carry no error.
        Resolution {
            error: Some(ErrorInfo::new("user_not_found", "x", false)),
            ..resolution(Applied, Some(Suspended), false, None)
        },
        // retries_exhausted is retryable.
        resolution(Failed, None, false, Some(("retries_exhausted", false))),
        // Unknown failure code.
        resolution(Failed, None, false, Some(("exploded", false))),
        // account_suspended answers provision only and reports Suspended.
        resolution(
            Failed,
            Some(Suspended),
            false,
            Some(("account_suspended", false)),
        ),
    ];
    for r in &wrong {
        let v = body(&f.command_result(&cmd, r, 1));
        schemas::assert_invalid(&schemas::event_schema_file(&v), &v);
    }
    let dep = parse(&deprovision, CommandType::Deprovision);
    let v = body(&f.command_result(
        &dep,
        &resolution(Applied, Some(Deprovisioned), false, None),
        1,
    ));
    schemas::assert_invalid("event.user.deprovisioned.json", &v);
}

#[test]
fn rejections_match_the_rejected_schema() {
    use CommandType::*;
    let f = EventFactory::new("1");
    let too_large = vec![b' '; lastpass_connector::command::MAX_COMMAND_BYTES + 1];
    let mut bodies: Vec<(Vec<u8>, CommandType, RejectCode)> = vec![
        (too_large, Suspend, RejectCode::TooLarge),
        (b"garbage".to_vec(), Suspend, RejectCode::NotJson),
        (vec![0xff, 0xfe], Provision, RejectCode::NotJson),
        (b"[1,2]".to_vec(), Sync, RejectCode::NotAnObject),
    ];
    for (v, q, code) in invalid_commands() {
        bodies.push((serde_json::to_vec(&v).unwrap(), q, code));
    }
    // Long strings are cut to 1024 characters in the event.
    bodies.push((
        serde_json::to_vec(&json!({"command_id": ID, "type": "x".repeat(5000),
            "correlation_id": "c".repeat(5000), "user": {"email": "\u{e9}".repeat(3000)}}))
        .unwrap(),
        Deprovision,
        RejectCode::UnknownType,
    ));
    let mut without_id = 0;
    for (b, q, code) in &bodies {
        let r = Command::parse(b, *q).expect_err("an invalid message must be rejected");
        let shown = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
        assert_eq!(r.code, *code, "for {shown}");
        let e = f.rejected(&r, b);
        assert_eq!(e.routing_key, "command.rejected");
        let v = check_event(&e);
        if v["data"]["command_id"].is_null() {
            without_id += 1;
        }
    }
    assert!(
        without_id >= 4,
        "rejections without a command_id are covered"
    );
}

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl EventSink for Collect {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        self.0.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

impl Collect {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Harness {
    lp: Arc<FakeLastPass>,
    processor: Processor<FakeLastPass>,
    sink: Collect,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lp = Arc::new(FakeLastPass::new());
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        let processor = Processor {
            lastpass: lp.clone(),
            ledger: Ledger::open(dir.path(), Duration::from_secs(3600)).unwrap(),
            events: EventFactory::new("12345678"),
            retry: RetryPolicy {
                attempts: 2,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                round_delays: vec![],
            },
            sync: SyncSettings { page_size: 2 },
            gate: Gate::default(),
            reload_credentials: Arc::new(|| {}),
            shutdown,
        };
        Harness {
            lp,
            processor,
            sink: Collect::default(),
            _shutdown: tx,
            _dir: dir,
        }
    }

    /// Processes one message and returns every event it produced, each checked against its
    /// schema; the last one is the result event.
    async fn run(&self, command: &Value, queue: CommandType) -> Vec<Value> {
        let incoming = Incoming {
            body: serde_json::to_vec(command).unwrap(),
            queue,
            round: 0,
            attempts: 0,
        };
        let result = match self
            .processor
            .process(Prepared::parse(incoming), &self.sink)
            .await
        {
            Disposition::Publish(e) | Disposition::Park { event: e, .. } => e,
            other => panic!("expected an event for {command}, got {other:?}"),
        };
        let mut events: Vec<Value> = self.sink.take().iter().map(check_event).collect();
        events.push(check_event(&result));
        events
    }

    async fn result(&self, command: &Value, queue: CommandType) -> Value {
        self.run(command, queue).await.pop().unwrap()
    }
}

fn user_command(ty: &str, email: &str) -> Value {
    json!({"command_id": uuid::Uuid::new_v4(), "type": ty,
        "user": {"email": email, "first_name": "Jane", "last_name": "Doe"},
        "correlation_id": "corr-1", "reason": "test"})
}

/// An event's routing key, outcome and error code.
type Summary<'a> = (&'a str, &'a str, Option<&'a str>);

fn outcome(v: &Value) -> Summary<'_> {
    let key = v["type"]
        .as_str()
        .and_then(|t| t.strip_prefix(schemas::EVENT_TYPE_PREFIX))
        .unwrap();
    let outcome = v["data"]["outcome"].as_str().unwrap_or("");
    (key, outcome, v["data"]["error"]["code"].as_str())
}

#[tokio::test]
async fn events_from_the_processor_match_their_schemas() {
    use CommandType::*;
    let h = Harness::new();
    h.lp.add("active@example.com", false, false, false);
    h.lp.add("off@example.com", true, false, false);

    let cases: Vec<(Value, CommandType, Summary)> = vec![
        (
            user_command("user.provision", "New@Example.com"),
            Provision,
            ("user.provisioned", "applied", None),
        ),
        (
            user_command("user.provision", "active@example.com"),
            Provision,
            ("user.provisioned", "already_done", None),
        ),
        (
            user_command("user.provision", "new@example.com"),
            Provision,
            ("user.provisioned", "already_done", None),
        ),
        (
            user_command("user.provision", "off@example.com"),
            Provision,
            ("command.failed", "failed", Some("account_suspended")),
        ),
        (
            user_command("user.suspend", "active@example.com"),
            Suspend,
            ("user.suspended", "applied", None),
        ),
        (
            user_command("user.suspend", "active@example.com"),
            Suspend,
            ("user.suspended", "already_done", None),
        ),
        (
            user_command("user.suspend", "nobody@example.com"),
            Suspend,
            ("command.failed", "failed", Some("user_not_found")),
        ),
        (
            user_command("user.deprovision", "active@example.com"),
            Deprovision,
            ("user.deprovisioned", "applied", None),
        ),
        (
            user_command("user.deprovision", "active@example.com"),
            Deprovision,
            ("user.deprovisioned", "already_done", None),
        ),
        (
            json!({"command_id": ID, "type": "user.suspend", "user": {"email": "a@b.co"}}),
            Deprovision,
            ("command.rejected", "rejected", Some("wrong_queue")),
        ),
        (
            json!({"type": "user.suspend", "user": {"email": "a@b.co"}}),
            Suspend,
            ("command.rejected", "rejected", Some("missing_field")),
        ),
    ];
    for (cmd, q, want) in &cases {
        let v = h.result(cmd, *q).await;
        assert_eq!(outcome(&v), *want, "for {cmd}");
    }

    // A completed command id is answered with its stored event.
    let again = h.result(&cases[0].0, Provision).await;
    assert_eq!(outcome(&again), ("user.provisioned", "applied", None));

    // LastPass refuses the request: lastpass_rejected.
    h.lp.fail_next([LastPassError::Rejected("quota".into())]);
    let v = h
        .result(&user_command("user.suspend", "off@example.com"), Suspend)
        .await;
    assert_eq!(
        outcome(&v),
        ("command.failed", "failed", Some("lastpass_rejected"))
    );

    // LastPass stays unavailable through every attempt (no delayed rounds configured).
    let transient = || LastPassError::Transient {
        reason: "503".into(),
        retry_after: None,
    };
    h.lp.fail_next([transient(), transient()]);
    let v = h
        .result(
            &user_command("user.deprovision", "off@example.com"),
            Deprovision,
        )
        .await;
    assert_eq!(
        outcome(&v),
        ("command.failed", "failed", Some("retries_exhausted"))
    );
    assert_eq!(v["data"]["error"]["retryable"], true);
}

#[tokio::test]
async fn sync_events_match_their_schemas() {
    use chrono::{TimeZone, Utc};
    let h = Harness::new();
    h.lp.add("Admin@Example.com", false, false, true);
    h.lp.add("off@example.com", true, false, false);
    h.lp.add("staged@example.com", false, true, false);
    h.lp.add("gone@example.com", false, false, false);
    h.lp.add("renamed@example.com", false, false, false);
    h.lp.update("Admin@Example.com", |u| {
        u.full_name = "Ada Admin".into();
        u.last_login = Some(Utc.with_ymd_and_hms(2026, 11, 27, 8, 14, 3).unwrap());
        u.created = Some(Utc.with_ymd_and_hms(2024, 2, 1, 10, 0, 0).unwrap());
        u.groups = vec!["Engineering".into(), "VPN".into()];
    });

    let sync = |correlation: Option<&str>| {
        let mut c = json!({"command_id": uuid::Uuid::new_v4(), "type": "users.sync"});
        if let Some(id) = correlation {
            c["correlation_id"] = json!(id);
        }
        c
    };
    let first = h.run(&sync(Some("nightly")), CommandType::Sync).await;
    assert_eq!(first.len(), 6, "five user.synced and users.sync.completed");
    let done = first.last().unwrap();
    assert_eq!(outcome(done).0, "users.sync.completed");
    assert_eq!(done["data"]["correlation_id"], "nightly");
    assert_eq!(done["data"]["total"], 5);

    h.lp.remove("gone@example.com");
    h.lp.update("renamed@example.com", |u| {
        u.email = "new-name@example.com".into()
    });
    let second = h.run(&sync(None), CommandType::Sync).await;
    let gone = second
        .iter()
        .find(|e| e["subject"] == "gone@example.com")
        .expect("a user.synced for the deleted account");
    assert_eq!(gone["data"]["account_status"], "Deprovisioned");
    let done = second.last().unwrap();
    assert!(done["data"].get("correlation_id").is_none());
    assert_eq!(done["data"]["deprovisioned"], 1);

    // A synced event that breaks its rules is refused.
    let mut bad = gone.clone();
    bad["data"]["role"] = json!("User");
    schemas::assert_invalid("event.user.synced.json", &bad);
    let mut bad = done.clone();
    bad["subject"] = json!("someone@example.com");
    schemas::assert_invalid("event.users.sync.completed.json", &bad);

    // A sync that fails part-way ends with command.failed.
    let transient = || LastPassError::Transient {
        reason: "503".into(),
        retry_after: None,
    };
    for (errors, code) in [
        (vec![LastPassError::Unauthorized], "unauthorized"),
        (vec![transient(), transient()], "retries_exhausted"),
        (
            vec![LastPassError::Rejected("no".into())],
            "lastpass_rejected",
        ),
    ] {
        h.lp.fail_next(errors);
        let v = h.result(&sync(Some("c")), CommandType::Sync).await;
        assert_eq!(outcome(&v), ("command.failed", "failed", Some(code)));
        assert_eq!(v["subject"], Value::Null);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The command schemas accept what the parser accepts, and refuse what it refuses.
//
// `too_large` (a body over 64 KiB) and `not_json` (bytes that are not UTF-8 JSON) cannot be
// expressed in JSON Schema, which validates a JSON value, not bytes; they are left out here
// (their rejection events are covered above).
//
// Known places where the schema is looser than the parser, so also left out: calendar validity
// of requested_at (2026-02-30T00:00:00Z matches the pattern), and the byte-length limits on
// non-ASCII email addresses (the parser counts bytes, JSON Schema counts characters).

const QUEUES: [CommandType; 4] = CommandType::ALL;

fn schema_of(q: CommandType) -> String {
    schemas::command_schema_file(q.as_str())
}

/// Valid commands and the queue that accepts them.
fn valid_commands() -> Vec<(Value, CommandType)> {
    use CommandType::*;
    let long = "r".repeat(1024);
    vec![
        // The documented example.
        (
            json!({"command_id": ID, "type": "user.provision",
                "user": {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"},
                "correlation_id": "offboarding-run-8812", "requested_by": "workday-offboarding",
                "reason": "last day 2026-11-30", "requested_at": "2026-11-28T12:00:00Z"}),
            Provision,
        ),
        // Unknown fields, mixed case, padding.
        (
            json!({"command_id": ID, "type": "user.provision",
                "user": {"email": "  Jane@Example.com ", "first_name": " Mary Ann ", "last_name": "Zoë-Ünal",
                         "department": "ops"},
                "something_new": [1, 2]}),
            Provision,
        ),
        (
            json!({"command_id": ID, "type": "user.provision",
                "user": {"email": format!("{}@{}.com", "a".repeat(64), "b".repeat(185)),
                         "first_name": "n".repeat(128), "last_name": "D"}}),
            Provision,
        ),
        (
            json!({"command_id": ID, "type": "user.suspend", "user": {"email": "a@b.co"}}),
            Suspend,
        ),
        (
            json!({"command_id": ID, "type": "user.deprovision", "user": {"email": "first.last+tag@mail.example.co.uk"}}),
            Deprovision,
        ),
        (json!({"command_id": ID, "type": "users.sync"}), Sync),
        // The scheduled sync.
        (
            json!({"command_id": ID, "type": "users.sync", "requested_by": "lastpass-connector schedule"}),
            Sync,
        ),
        // A sync ignores `user`.
        (
            json!({"command_id": ID, "type": "users.sync", "user": 5}),
            Sync,
        ),
        // Nulls are the same as absent.
        (
            json!({"command_id": ID, "type": "user.suspend", "user": {"email": "a@b.co"},
                "correlation_id": null, "requested_by": null, "reason": null, "requested_at": null}),
            Suspend,
        ),
        (
            json!({"command_id": ID, "type": "user.suspend", "user": {"email": "a@b.co"},
                "correlation_id": long, "requested_by": "", "reason": "r".repeat(1024)}),
            Suspend,
        ),
        // Every spelling of a UUID the parser takes.
        (
            json!({"command_id": ID.to_uppercase(), "type": "users.sync"}),
            Sync,
        ),
        (
            json!({"command_id": ID.replace('-', ""), "type": "users.sync"}),
            Sync,
        ),
        (
            json!({"command_id": format!("{{{ID}}}"), "type": "users.sync"}),
            Sync,
        ),
        (
            json!({"command_id": format!("URN:uuid:{ID}"), "type": "users.sync"}),
            Sync,
        ),
        // RFC 3339 variants chrono accepts.
        (
            json!({"command_id": ID, "type": "users.sync", "requested_at": "2026-11-28T12:00:00.123456789+01:00"}),
            Sync,
        ),
        (
            json!({"command_id": ID, "type": "users.sync", "requested_at": "2026-11-28 12:00:00z"}),
            Sync,
        ),
        (
            json!({"command_id": ID, "type": "users.sync", "requested_at": "2026-11-28t12:00:00-23:59"}),
            Sync,
        ),
        (
            json!({"command_id": ID, "type": "users.sync", "requested_at": "2016-12-31T23:59:60Z"}),
            Sync,
        ),
    ]
}

/// Invalid commands, each with the code the parser gives it on the suspend queue (or, for the
/// provision-only fields, the provision queue).
fn invalid_commands() -> Vec<(Value, CommandType, RejectCode)> {
    use CommandType::*;
    use RejectCode::*;
    let s = |user: Value| json!({"command_id": ID, "type": "user.suspend", "user": user});
    let p = |user: Value| json!({"command_id": ID, "type": "user.provision", "user": user});
    let with = |field: &str, value: Value| {
        let mut c = s(json!({"email": "a@b.co"}));
        c[field] = value;
        c
    };
    let mut cases = vec![
        // Not an object.
        (json!([1, 2]), Suspend, NotAnObject),
        (json!("x"), Suspend, NotAnObject),
        (json!(5), Suspend, NotAnObject),
        (Value::Null, Suspend, NotAnObject),
        // command_id
        (
            json!({"type": "user.suspend", "user": {"email": "a@b.co"}}),
            Suspend,
            MissingField,
        ),
        (with("command_id", Value::Null), Suspend, MissingField),
        (with("command_id", json!(5)), Suspend, InvalidField),
        (with("command_id", json!("nope")), Suspend, InvalidField),
        (
            with("command_id", json!(format!("{ID}0"))),
            Suspend,
            InvalidField,
        ),
        (
            with("command_id", json!(ID.replace('a', "g"))),
            Suspend,
            InvalidField,
        ),
        (
            with("command_id", json!(format!("{{{}}}", ID.replace('-', "")))),
            Suspend,
            InvalidField,
        ),
        (
            with("command_id", json!(format!("urn:uid:{ID}"))),
            Suspend,
            InvalidField,
        ),
        // type
        (
            json!({"command_id": ID, "user": {"email": "a@b.co"}}),
            Suspend,
            MissingField,
        ),
        (with("type", Value::Null), Suspend, MissingField),
        (with("type", json!(5)), Suspend, InvalidField),
        (with("type", json!("user.explode")), Suspend, UnknownType),
        (with("type", json!("User.Suspend")), Suspend, UnknownType),
        (with("type", json!("user.deprovision")), Suspend, WrongQueue),
        (with("type", json!("users.sync")), Suspend, WrongQueue),
        // user
        (
            json!({"command_id": ID, "type": "user.suspend"}),
            Suspend,
            MissingField,
        ),
        (s(Value::Null), Suspend, MissingField),
        (s(json!("a@b.co")), Suspend, InvalidField),
        (s(json!(["a@b.co"])), Suspend, InvalidField),
        (s(json!({})), Suspend, MissingField),
        (s(json!({"email": null})), Suspend, MissingField),
        (s(json!({"email": 7})), Suspend, InvalidField),
        // optional text
        (with("correlation_id", json!(9)), Suspend, InvalidField),
        (
            with("correlation_id", json!("c".repeat(1025))),
            Suspend,
            InvalidField,
        ),
        (with("requested_by", json!({})), Suspend, InvalidField),
        (with("reason", json!(["why"])), Suspend, InvalidField),
        (
            with("reason", json!("é".repeat(1025))),
            Suspend,
            InvalidField,
        ),
        // requested_at
        (
            with("requested_at", json!("yesterday")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!(1764331200)),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28T12:00:00")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28T12:00Z")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-13-01T00:00:00Z")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28T24:00:00Z")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28T12:00:00.Z")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28T12:00:00+24:00")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28T12:00:00+0100")),
            Suspend,
            InvalidField,
        ),
        (
            with("requested_at", json!("2026-11-28T12:00:00Z ")),
            Suspend,
            InvalidField,
        ),
        (
            with(
                "requested_at",
                json!(format!("2026-11-28T12:00:00.{}Z", "1".repeat(1010))),
            ),
            Suspend,
            InvalidField,
        ),
        // first and last name (provision only)
        (
            p(json!({"email": "a@b.co", "first_name": "A"})),
            Provision,
            MissingField,
        ),
        (
            p(json!({"email": "a@b.co", "last_name": "B"})),
            Provision,
            MissingField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": null, "last_name": "B"})),
            Provision,
            MissingField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": 5, "last_name": "B"})),
            Provision,
            InvalidField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": "", "last_name": "B"})),
            Provision,
            InvalidField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": " ", "last_name": "B"})),
            Provision,
            InvalidField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": "A", "last_name": "\t\n "})),
            Provision,
            InvalidField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": "A", "last_name": "n".repeat(129)})),
            Provision,
            InvalidField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": "Ja\u{7}ne", "last_name": "B"})),
            Provision,
            InvalidField,
        ),
        (
            p(json!({"email": "a@b.co", "first_name": "A", "last_name": "B\u{85}C"})),
            Provision,
            InvalidField,
        ),
        (p(json!({"email": "a@b.co"})), Provision, MissingField),
        (
            p(json!({"first_name": "A", "last_name": "B"})),
            Provision,
            MissingField,
        ),
    ];
    for bad in [
        "",
        "   ",
        "jane",
        "@example.com",
        "jane@",
        "jane@example",
        "jane@@example.com",
        "ja@ne@example.com",
        "ja ne@example.com",
        "jane@exam ple.com",
        "jane@.example.com",
        "jane@example..com",
        "jane@example.com.",
        "ja\u{1}ne@example.com",
        "jane@example.com\u{7f}",
    ] {
        cases.push((s(json!({"email": bad})), Suspend, InvalidEmail));
        cases.push((
            p(json!({"email": bad, "first_name": "A", "last_name": "B"})),
            Provision,
            InvalidEmail,
        ));
    }
    let long_local = format!("{}@example.com", "a".repeat(65));
    let too_long = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
    for bad in [long_local, too_long] {
        cases.push((s(json!({"email": bad})), Suspend, InvalidEmail));
    }
    cases
}

#[test]
fn command_schemas_accept_exactly_what_the_parser_accepts() {
    for q in QUEUES {
        assert!(schemas::documents().contains_key(&schema_of(q)));
    }
    for (cmd, accepted_on) in valid_commands() {
        let body = serde_json::to_vec(&cmd).unwrap();
        for q in QUEUES {
            let parsed = Command::parse(&body, q);
            if q == accepted_on {
                parsed.unwrap_or_else(|r| panic!("{cmd} should parse on {q}: {r:?}"));
                schemas::assert_valid(&schema_of(q), &cmd);
                schemas::assert_valid("command.json", &cmd);
            } else {
                // Any other queue refuses it (wrong_queue), and so does its schema.
                assert!(parsed.is_err(), "{cmd} must not parse on {q}");
                schemas::assert_invalid(&schema_of(q), &cmd);
            }
        }
    }
}

#[test]
fn command_schemas_reject_what_the_parser_rejects() {
    for (cmd, q, code) in invalid_commands() {
        let body = serde_json::to_vec(&cmd).unwrap();
        let rejection = Command::parse(&body, q)
            .expect_err(&format!("{cmd} must be rejected on the {q} queue"));
        assert_eq!(rejection.code, code, "rejection code of {cmd}");
        schemas::assert_invalid(&schema_of(q), &cmd);
        if code == RejectCode::WrongQueue {
            // Valid on its own queue; the other queues are covered by the test above.
            continue;
        }
        // Invalid whatever queue it arrives on, for the parser and the schemas alike.
        for q in QUEUES {
            assert!(
                Command::parse(&body, q).is_err(),
                "{cmd} must not parse on {q}"
            );
            schemas::assert_invalid(&schema_of(q), &cmd);
        }
    }
}

#[test]
fn known_gaps_are_still_rejected_by_the_parser() {
    // Looser in the schema than in the parser (see the comment above `QUEUES`): the parser
    // still rejects these, which is what matters for the service.
    for cmd in [
        json!({"command_id": ID, "type": "users.sync", "requested_at": "2026-02-30T00:00:00Z"}),
        json!({"command_id": ID, "type": "user.suspend",
            "user": {"email": format!("{}@example.com", "é".repeat(40))}}),
    ] {
        let body = serde_json::to_vec(&cmd).unwrap();
        let q = CommandType::parse(cmd["type"].as_str().unwrap()).unwrap();
        assert!(Command::parse(&body, q).is_err(), "{cmd}");
    }
}

#[test]
fn the_event_schemas_refuse_what_the_service_never_emits() {
    let f = EventFactory::new("12345678");
    let cmd = parse(
        &json!({"command_id": ID, "type": "user.provision",
            "user": {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"}}),
        CommandType::Provision,
    );
    let ok = body(&f.command_result(
        &cmd,
        &resolution(Outcome::Applied, Some(AccountStatus::Staged), false, None),
        1,
    ));
    schemas::assert_event_valid(&ok);
    type Mutation = fn(&mut Value);
    let mutations: [(&str, Mutation); 14] = [
        ("extension attribute", |v| v["traceparent"] = json!("00-x")),
        ("missing subject", |v| {
            v.as_object_mut().unwrap().remove("subject");
        }),
        ("specversion", |v| v["specversion"] = json!("0.3")),
        ("source", |v| v["source"] = json!("urn:other:cid:1")),
        ("id", |v| v["id"] = json!("not-a-uuid")),
        ("time", |v| v["time"] = json!("2026-11-28T12:00:00+01:00")),
        ("datacontenttype", |v| {
            v["datacontenttype"] = json!("application/cloudevents+json")
        }),
        ("extra data field", |v| v["data"]["extra"] = json!(1)),
        ("missing correlation_id", |v| {
            v["data"].as_object_mut().unwrap().remove("correlation_id");
        }),
        ("null requested_by", |v| {
            v["data"]["requested_by"] = Value::Null
        }),
        ("outcome", |v| v["data"]["outcome"] = json!("failed")),
        ("status", |v| {
            v["data"]["account_status"] = json!("Deprovisioned")
        }),
        ("attempts", |v| v["data"]["attempts"] = json!(-1)),
        ("upper-case email", |v| {
            v["data"]["email"] = json!("Jane@example.com");
            v["subject"] = json!("Jane@example.com");
        }),
    ];
    for (what, mutate) in mutations {
        let mut v = ok.clone();
        mutate(&mut v);
        assert!(
            !schemas::validator("event.user.provisioned.json").is_valid(&v),
            "{what}: accepted\n{v:#}"
        );
    }
    // The failed event of a user command names its user; a failed sync has none.
    let failed = body(&f.command_result(
        &cmd,
        &resolution(
            Outcome::Failed,
            None,
            false,
            Some(("lastpass_rejected", false)),
        ),
        1,
    ));
    schemas::assert_event_valid(&failed);
    let mut v = failed.clone();
    v["subject"] = Value::Null;
    v["data"]["email"] = Value::Null;
    schemas::assert_invalid("event.command.failed.json", &v);
    let mut v = failed;
    v["data"]["error"]["code"] = json!("unauthorized");
    v["data"]["error"]["retryable"] = json!(true);
    schemas::assert_invalid("event.command.failed.json", &v);
}
