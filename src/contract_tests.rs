//! The published contract (`schemas/*.json`) against what the code emits: every event the
//! factory, the processor and the sync produce validates against the schema of its routing key,
//! against the shared envelope, and against the CloudEvents specification's own schema. These
//! drive internals (the processor over a fake LastPass), so they are unit tests; the schemas'
//! own checks and the command schemas against the parser are in `tests/it/schemas.rs`.

#[path = "../tests/it/support/schemas.rs"]
#[allow(dead_code)]
mod schemas;

use crate::command::{Command, CommandType, Incoming, Prepared, RejectCode};
use crate::event::{
    ErrorCode, ErrorInfo, Event, EventFactory, EventKind, EventSink, Outcome, PublishError,
    Resolution,
};
use crate::fake::FakeLastPass;
use crate::gate::Gate;
use crate::lastpass::LastPassError;
use crate::processor::{Disposition, Processor};
use crate::retry::RetryPolicy;
use crate::status::AccountStatus;
use crate::sync::SyncSettings;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

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
        Some(format!("{}{}", schemas::EVENT_TYPE_PREFIX, e.kind).as_str()),
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
        invitation_pending: false,
        error: error.map(|(code, retryable)| {
            let code: ErrorCode = serde_json::from_value(json!(code))
                .unwrap_or_else(|e| panic!("{code} is not a known error code: {e}"));
            ErrorInfo::new(code, format!("because {code:?}"), retryable)
        }),
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
    for file in [
        "event.user.provisioned.json",
        "event.user.suspended.json",
        "event.user.deprovisioned.json",
        "event.command.failed.json",
    ] {
        assert!(seen.contains(file), "no event checked against {file}");
    }

    // The schemas are tight: what the table forbids is refused.
    let cmd = parse(&suspend, CommandType::Suspend);
    let wrong = [
        // A suspension never leaves another status.
        resolution(Applied, Some(Active), false, None),
        // Success events carry no error.
        Resolution {
            error: Some(ErrorInfo::new(
                crate::event::FailureCode::UserNotFound,
                "x",
                false,
            )),
            ..resolution(Applied, Some(Suspended), false, None)
        },
        // retries_exhausted is retryable.
        resolution(Failed, None, false, Some(("retries_exhausted", false))),
        // (An unknown failure code can no longer be built: codes are the FailureCode enum.)
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
    let too_large = vec![b' '; crate::command::MAX_COMMAND_BYTES + 1];
    let mut bodies: Vec<(Vec<u8>, CommandType, RejectCode)> = vec![
        (too_large, Suspend, RejectCode::TooLarge),
        (b"garbage".to_vec(), Suspend, RejectCode::NotJson),
        (vec![0xff, 0xfe], Provision, RejectCode::NotJson),
        (b"[1,2]".to_vec(), Sync, RejectCode::NotAnObject),
    ];
    for case in schemas::command_fixtures("commands.invalid.json") {
        let q = CommandType::parse(&case.queue).expect("a known queue");
        let code: RejectCode =
            serde_json::from_value(json!(case.code.expect("a code"))).expect("a known code");
        let v = case.command;
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
        assert_eq!(e.kind, EventKind::Rejected);
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
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lp = Arc::new(FakeLastPass::new());
        let (ledger, snapshot) =
            crate::store::open_embedded(dir.path(), Duration::from_secs(3600)).unwrap();
        let processor = Processor {
            lastpass: lp.clone(),
            ledger: Arc::new(ledger),
            snapshot: Arc::new(snapshot),
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
            stop: CancellationToken::new(),
            in_flight_window: Duration::from_secs(3),
            store_ok: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            batcher: None,
            dry_run: false,
        };
        Harness {
            lp,
            processor,
            sink: Collect::default(),
            _dir: dir,
        }
    }

    /// Processes one message and returns every event it produced, each checked against its
    /// schema; the last one is the result event.
    async fn run(&self, command: &Value, queue: CommandType) -> Vec<Value> {
        let incoming = Incoming {
            body: serde_json::to_vec(command).unwrap(),
            queue,
            trace: None,
        };
        let result = match self
            .processor
            .process(Prepared::parse(incoming), &self.sink)
            .await
        {
            Disposition::Publish(e) | Disposition::Park(e) => e,
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

    // Invitations, OK-with-message and reactivation (issue 10).
    h.lp.exists_elsewhere("invited@example.com");
    h.lp.add("back@example.com", true, false, false);
    let more: Vec<(Value, CommandType, Summary)> = vec![
        (
            user_command("user.provision", "invited@example.com"),
            Provision,
            ("user.provisioned", "applied", None),
        ),
        (
            user_command("user.suspend", "invited@example.com"),
            Suspend,
            ("command.failed", "failed", Some("invitation_pending")),
        ),
        (
            user_command("user.reactivate", "invited@example.com"),
            Reactivate,
            ("command.failed", "failed", Some("invitation_pending")),
        ),
        (
            user_command("user.deprovision", "invited@example.com"),
            Deprovision,
            ("user.deprovisioned", "applied", None),
        ),
        (
            user_command("user.reactivate", "back@example.com"),
            Reactivate,
            ("user.reactivated", "applied", None),
        ),
        (
            user_command("user.reactivate", "back@example.com"),
            Reactivate,
            ("user.reactivated", "already_done", None),
        ),
        (
            user_command("user.reactivate", "nobody@example.com"),
            Reactivate,
            ("command.failed", "failed", Some("user_not_found")),
        ),
    ];
    for (cmd, q, want) in &more {
        let v = h.result(cmd, *q).await;
        assert_eq!(outcome(&v), *want, "for {cmd}");
        if cmd["user"]["email"] == "invited@example.com"
            && v["data"]["command_type"] != "user.deprovision"
        {
            assert_eq!(v["data"]["invitation_pending"], true, "{v}");
            assert_eq!(v["data"]["account_status"], "Staged", "{v}");
        } else {
            assert!(v["data"].get("invitation_pending").is_none(), "{v}");
        }
    }
    h.lp.skip_next_add("1 user(s) skipped");
    let v = h
        .result(
            &user_command("user.provision", "skipped@example.com"),
            Provision,
        )
        .await;
    assert_eq!(
        outcome(&v),
        ("command.failed", "failed", Some("not_created"))
    );

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

#[tokio::test]
async fn dry_run_events_for_every_row_match_their_schema() {
    use CommandType::*;
    let mut h = Harness::new();
    h.processor.dry_run = true;
    h.lp.add("active@example.com", false, false, false);
    h.lp.add("off@example.com", true, false, false);
    h.lp.invite("inv@example.com");
    // (command, queue, would_call, deleteaction, predicted outcome, predicted error code)
    type Row = (
        &'static str,
        &'static str,
        CommandType,
        Value,
        Value,
        &'static str,
        Value,
    );
    let rows: Vec<Row> = vec![
        (
            "user.provision",
            "new@example.com",
            Provision,
            json!("batchadd"),
            Value::Null,
            "applied",
            Value::Null,
        ),
        (
            "user.provision",
            "active@example.com",
            Provision,
            Value::Null,
            Value::Null,
            "already_done",
            Value::Null,
        ),
        (
            "user.provision",
            "inv@example.com",
            Provision,
            Value::Null,
            Value::Null,
            "already_done",
            Value::Null,
        ),
        (
            "user.provision",
            "off@example.com",
            Provision,
            Value::Null,
            Value::Null,
            "failed",
            json!("account_suspended"),
        ),
        (
            "user.suspend",
            "active@example.com",
            Suspend,
            json!("deluser"),
            json!(0),
            "applied",
            Value::Null,
        ),
        (
            "user.suspend",
            "off@example.com",
            Suspend,
            Value::Null,
            Value::Null,
            "already_done",
            Value::Null,
        ),
        (
            "user.suspend",
            "inv@example.com",
            Suspend,
            Value::Null,
            Value::Null,
            "failed",
            json!("invitation_pending"),
        ),
        (
            "user.suspend",
            "nobody@example.com",
            Suspend,
            Value::Null,
            Value::Null,
            "failed",
            json!("user_not_found"),
        ),
        (
            "user.deprovision",
            "active@example.com",
            Deprovision,
            json!("deluser"),
            json!(2),
            "applied",
            Value::Null,
        ),
        (
            "user.deprovision",
            "inv@example.com",
            Deprovision,
            json!("deluser"),
            json!(3),
            "applied",
            Value::Null,
        ),
        (
            "user.deprovision",
            "nobody@example.com",
            Deprovision,
            Value::Null,
            Value::Null,
            "already_done",
            Value::Null,
        ),
        (
            "user.reactivate",
            "off@example.com",
            Reactivate,
            json!("enableuser"),
            Value::Null,
            "applied",
            Value::Null,
        ),
        (
            "user.reactivate",
            "active@example.com",
            Reactivate,
            Value::Null,
            Value::Null,
            "already_done",
            Value::Null,
        ),
        (
            "user.reactivate",
            "inv@example.com",
            Reactivate,
            Value::Null,
            Value::Null,
            "failed",
            json!("invitation_pending"),
        ),
        (
            "user.reactivate",
            "nobody@example.com",
            Reactivate,
            Value::Null,
            Value::Null,
            "failed",
            json!("user_not_found"),
        ),
    ];
    let mut seen = Vec::new();
    for (ty, email, q, call, action, predicted, code) in rows {
        let v = h.result(&user_command(ty, email), q).await;
        let d = &v["data"]["dry_run"];
        assert_eq!(outcome(&v), ("command.dry_run", "dry_run", None), "{v}");
        assert_eq!(
            (
                &d["would_call"],
                &d["deleteaction"],
                d["outcome"].as_str(),
                &d["error"]["code"]
            ),
            (&call, &action, Some(predicted), &code),
            "{ty} {email}: {v}"
        );
        seen.push(v);
    }
    // A look LastPass refuses for good: the real run would fail lastpass_rejected.
    h.lp.fail_next([LastPassError::Rejected("no".into())]);
    let v = h
        .result(
            &user_command("user.deprovision", "active@example.com"),
            Deprovision,
        )
        .await;
    assert_eq!(v["data"]["dry_run"]["error"]["code"], "lastpass_rejected");
    assert!(h.lp.mutations().is_empty(), "a dry run changes nothing");

    // The schema is tight: what a dry run never says is refused.
    let suspend = seen[4].clone();
    type Mutation = fn(&mut Value);
    let mutations: [(&str, Mutation); 9] = [
        ("no prediction", |v| {
            v["data"].as_object_mut().unwrap().remove("dry_run");
        }),
        ("another outcome", |v| {
            v["data"]["outcome"] = json!("applied")
        }),
        (
            "a top-level error",
            |v| {
                v["data"]["error"] =
                    json!({"code": "user_not_found", "message": "x", "retryable": false})
            },
        ),
        ("a license reclaimed now", |v| {
            v["data"]["license_reclaimed"] = json!(true)
        }),
        ("deluser without deleteaction", |v| {
            v["data"]["dry_run"]
                .as_object_mut()
                .unwrap()
                .remove("deleteaction");
        }),
        ("a suspend that deletes", |v| {
            v["data"]["dry_run"]["deleteaction"] = json!(2)
        }),
        ("a suspend that enables", |v| {
            v["data"]["dry_run"]["would_call"] = json!("enableuser");
            v["data"]["dry_run"]
                .as_object_mut()
                .unwrap()
                .remove("deleteaction");
        }),
        ("a call predicted to fail", |v| {
            v["data"]["dry_run"]["outcome"] = json!("failed");
            v["data"]["dry_run"]["error"] =
                json!({"code": "user_not_found", "message": "x", "retryable": false});
        }),
        ("a sync", |v| {
            v["data"]["command_type"] = json!("users.sync");
        }),
    ];
    for (what, mutate) in mutations {
        let mut v = suspend.clone();
        mutate(&mut v);
        assert!(
            !schemas::validator("event.command.dry_run.json").is_valid(&v),
            "{what}: accepted\n{v:#}"
        );
    }
    // And no other event may carry a prediction.
    let mut applied = suspend.clone();
    applied["type"] = json!("io.github.lastpass-connector.user.suspended");
    applied["data"]["outcome"] = json!("applied");
    applied["data"]["account_status"] = json!("Suspended");
    schemas::assert_invalid("event.user.suspended.json", &applied);
    applied["data"].as_object_mut().unwrap().remove("dry_run");
    schemas::assert_event_valid(&applied);
}

#[test]
fn every_event_kind_is_covered_by_a_schema() {
    for kind in EventKind::ALL {
        let file = format!("event.{kind}.json");
        assert!(
            schemas::documents().contains_key(&file),
            "no schema for {kind}"
        );
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
