//! The command consumer against the real RabbitMQ and the LastPass simulator, each test under its
//! own prefix: every row of the semantics table, duplicates and late redeliveries, transient
//! faults, retries exhausted, the auth-error pause, invalid messages, a cut connection and
//! SIGTERM with commands in flight.

use crate::support::simulator::{self as sim, TestSim};
use crate::support::{Broker, Running, command, test_retry};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

/// A simulator with these `(email, disabled, never_logged_in)` users, a fresh prefix, a tap and
/// the connector running in process.
pub(crate) async fn setup(
    users: &[(&str, bool, bool)],
) -> (
    Broker,
    TestSim,
    Running,
    crate::support::Tap,
    tempfile::TempDir,
) {
    setup_with(users, |_| {}).await
}

/// [`setup`], with the connector's configuration changed by `tweak` first.
pub(crate) async fn setup_with(
    users: &[(&str, bool, bool)],
    tweak: impl FnOnce(&mut lastpass_connector::config::Config),
) -> (
    Broker,
    TestSim,
    Running,
    crate::support::Tap,
    tempfile::TempDir,
) {
    let sim = TestSim::start().await;
    for (email, disabled, never) in users {
        sim.add(email, *disabled, *never);
    }
    let broker = Broker::new(&test_retry()).await;
    let tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = broker.config(&sim, dir.path().to_path_buf(), test_retry());
    tweak(&mut config);
    let running = Running::start(config).await;
    (broker, sim, running, tap, dir)
}

fn data(ev: &Value) -> &Value {
    &ev["data"]
}

fn routing(ev: &Value) -> &str {
    ev["type"]
        .as_str()
        .unwrap()
        .strip_prefix("io.github.lastpass-connector.")
        .unwrap()
}

/// Sends one command and checks its event against a row of the semantics table: routing key,
/// outcome and account_status. Returns the event and the command sent.
async fn row(
    broker: &Broker,
    tap: &mut crate::support::Tap,
    kind: &str,
    email: &str,
    want: (&str, &str, Value),
) -> (Value, Value) {
    let (id, cmd) = command(kind, email);
    broker.send_json(&cmd).await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(
        (
            routing(&ev),
            &data(&ev)["outcome"],
            &data(&ev)["account_status"]
        ),
        (want.0, &Value::from(want.1), &want.2),
        "{kind} {email}: {ev:#}"
    );
    (ev, cmd)
}

#[tokio::test]
async fn provision_rows_of_the_semantics_table() {
    let (broker, sim, running, mut tap, _dir) = setup(&[
        ("present@example.com", false, false),
        ("suspended@example.com", true, false),
    ])
    .await;

    // absent -> batchadd -> applied, Staged
    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.provision",
        "New.Person@Example.com",
        ("user.provisioned", "applied", "Staged".into()),
    )
    .await;
    assert_eq!(ev["subject"], "new.person@example.com");
    assert_eq!(data(&ev)["license_reclaimed"], false);
    assert_eq!(data(&ev)["correlation_id"], "test-user.provision");
    let u = sim.user("new.person@example.com").expect("user created");
    assert_eq!(u.fullname, "Jane Doe");
    assert!(!u.admin && !u.disabled && u.neverloggedin && u.password_reset_required);

    // present, enabled -> no call -> already_done, its status
    row(
        &broker,
        &mut tap,
        "user.provision",
        "present@example.com",
        ("user.provisioned", "already_done", "Active".into()),
    )
    .await;

    // present, disabled -> no call -> failed account_suspended, parked
    let (ev, cmd) = row(
        &broker,
        &mut tap,
        "user.provision",
        "suspended@example.com",
        ("command.failed", "failed", "Suspended".into()),
    )
    .await;
    assert_eq!(data(&ev)["error"]["code"], "account_suspended");
    let parked = broker.dead_letters(1, T).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].header("x-lpc-error-code").as_deref(),
        Some("account_suspended")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&parked[0].body).unwrap(),
        cmd
    );

    assert_eq!(sim.mutations("batchadd"), 1, "exactly one batchadd");
    assert!(!sim.user("suspended@example.com").unwrap().admin);
    running.stop().await;
}

#[tokio::test]
async fn suspend_rows_of_the_semantics_table() {
    let (broker, sim, running, mut tap, _dir) = setup(&[
        ("enabled@example.com", false, false),
        ("disabled@example.com", true, false),
    ])
    .await;

    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.suspend",
        "ENABLED@example.com",
        ("user.suspended", "applied", "Suspended".into()),
    )
    .await;
    assert_eq!(data(&ev)["license_reclaimed"], false);
    assert!(
        sim.user("enabled@example.com").unwrap().disabled,
        "login blocked"
    );

    row(
        &broker,
        &mut tap,
        "user.suspend",
        "disabled@example.com",
        ("user.suspended", "already_done", "Suspended".into()),
    )
    .await;

    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.suspend",
        "nobody@example.com",
        ("command.failed", "failed", Value::Null),
    )
    .await;
    assert_eq!(data(&ev)["error"]["code"], "user_not_found");
    assert_eq!(data(&ev)["error"]["retryable"], false);
    let parked = broker.dead_letters(1, T).await;
    assert_eq!(
        parked[0].header("x-lpc-error-code").as_deref(),
        Some("user_not_found")
    );

    // One deluser 0 per row: its answer tells them apart (enabled: done; disabled: "already
    // disabled"; absent: "no such user", then one look). No look before acting (issue 12).
    assert_eq!(
        sim.mutations("deluser"),
        3,
        "one deluser per suspend, whatever the row"
    );
    running.stop().await;
}

#[tokio::test]
async fn deprovision_rows_of_the_semantics_table() {
    let (broker, sim, running, mut tap, _dir) = setup(&[
        ("leaver@example.com", false, false),
        ("off@example.com", true, false),
    ])
    .await;

    for email in ["leaver@example.com", "off@example.com"] {
        let (ev, _) = row(
            &broker,
            &mut tap,
            "user.deprovision",
            email,
            ("user.deprovisioned", "applied", "Deprovisioned".into()),
        )
        .await;
        assert_eq!(data(&ev)["license_reclaimed"], true);
        assert!(sim.user(email).is_none(), "{email} deleted");
    }

    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.deprovision",
        "leaver@example.com",
        ("user.deprovisioned", "already_done", "Deprovisioned".into()),
    )
    .await;
    assert_eq!(data(&ev)["license_reclaimed"], false);
    // One deluser 2 per deprovision: the absent one answers "no such user" (issue 12: no look
    // before acting).
    assert_eq!(sim.mutations("deluser"), 3);
    assert!(
        sim.calls()
            .iter()
            .all(|c| c.cmd != "deluser" || c.data["deleteaction"] == 2)
    );
    running.stop().await;
}

/// Issue 10, the invitation row: `batchadd` of someone who already has a LastPass account answers
/// OK but makes a pending invitation, no user. The connector looks after the batchadd and reports
/// it; suspend refuses it; deprovision cancels it with `deleteaction` 3.
#[tokio::test]
async fn an_invitation_is_provisioned_then_deprovisioned_with_deleteaction_3() {
    let (broker, sim, running, mut tap, _dir) = setup(&[]).await;
    sim.handle.flag_existing_account("has.account@example.com");

    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.provision",
        "has.account@example.com",
        ("user.provisioned", "applied", "Staged".into()),
    )
    .await;
    assert_eq!(data(&ev)["invitation_pending"], true, "{ev:#}");
    assert!(sim.user("has.account@example.com").is_none(), "no user");
    assert_eq!(sim.handle.invited(), ["has.account@example.com"]);

    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.suspend",
        "has.account@example.com",
        ("command.failed", "failed", "Staged".into()),
    )
    .await;
    assert_eq!(data(&ev)["error"]["code"], "invitation_pending");
    assert_eq!(data(&ev)["invitation_pending"], true);

    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.deprovision",
        "has.account@example.com",
        ("user.deprovisioned", "applied", "Deprovisioned".into()),
    )
    .await;
    assert_eq!(data(&ev)["license_reclaimed"], true);
    assert!(sim.handle.invited().is_empty(), "invitation cancelled");
    let deletes: Vec<Value> = sim
        .calls()
        .into_iter()
        .filter(|c| c.cmd == "deluser")
        .map(|c| c.data)
        .collect();
    // The suspend tried deleteaction 0 and the deprovision 2 (both "no such user": an
    // invitation is no user), then a look found the invitation and deleteaction 3 cancelled it.
    assert_eq!(
        deletes,
        [
            json!({"username": "has.account@example.com", "deleteaction": 0}),
            json!({"username": "has.account@example.com", "deleteaction": 2}),
            json!({"username": "has.account@example.com", "deleteaction": 3})
        ]
    );

    row(
        &broker,
        &mut tap,
        "user.deprovision",
        "has.account@example.com",
        ("user.deprovisioned", "already_done", "Deprovisioned".into()),
    )
    .await;
    assert_eq!(sim.mutations("batchadd"), 1);
    running.stop().await;
}

/// Issue 10: `batchadd` answers OK with a `message` (throttled or skipped users) and creates
/// nobody: the look-up afterwards finds nobody, so the command fails `not_created`, quoting it.
#[tokio::test]
async fn an_ok_batchadd_with_a_message_that_created_nobody_fails_not_created() {
    let (broker, sim, running, mut tap, _dir) = setup(&[]).await;
    sim.handle.set_quirks(sim::QuirksPatch {
        batchadd_ok_message: Some("1 user(s) skipped: throttled".into()),
        ..Default::default()
    });
    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.provision",
        "late@example.com",
        ("command.failed", "failed", Value::Null),
    )
    .await;
    assert_eq!(data(&ev)["error"]["code"], "not_created");
    assert_eq!(data(&ev)["error"]["retryable"], false);
    let message = data(&ev)["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1 user(s) skipped: throttled"),
        "{message}"
    );
    let parked = broker.dead_letters(1, T).await;
    assert_eq!(
        parked[0].header("x-lpc-error-code").as_deref(),
        Some("not_created")
    );
    assert!(sim.user("late@example.com").is_none());
    running.stop().await;
}

/// Issue 10: `user.reactivate` on `P.reactivate` (enableuser), every row, through the broker;
/// every event read is checked against its schema by the tap.
#[tokio::test]
async fn reactivate_rows_through_the_broker() {
    let (broker, sim, running, mut tap, _dir) = setup(&[
        ("revoked@example.com", true, false),
        ("revoked.never@example.com", true, true),
        ("enabled@example.com", false, false),
    ])
    .await;
    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.reactivate",
        "Revoked@Example.com",
        ("user.reactivated", "applied", "Active".into()),
    )
    .await;
    assert_eq!(ev["subject"], "revoked@example.com");
    assert_eq!(data(&ev)["command_type"], "user.reactivate");
    assert!(!sim.user("revoked@example.com").unwrap().disabled);
    row(
        &broker,
        &mut tap,
        "user.reactivate",
        "revoked.never@example.com",
        ("user.reactivated", "applied", "Staged".into()),
    )
    .await;
    row(
        &broker,
        &mut tap,
        "user.reactivate",
        "enabled@example.com",
        ("user.reactivated", "already_done", "Active".into()),
    )
    .await;
    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.reactivate",
        "nobody@example.com",
        ("command.failed", "failed", Value::Null),
    )
    .await;
    assert_eq!(data(&ev)["error"]["code"], "user_not_found");
    assert_eq!(sim.mutations("enableuser"), 2);

    // Suspend then provision: provisioning still refuses, and says what to send instead.
    row(
        &broker,
        &mut tap,
        "user.suspend",
        "enabled@example.com",
        ("user.suspended", "applied", "Suspended".into()),
    )
    .await;
    let (ev, _) = row(
        &broker,
        &mut tap,
        "user.provision",
        "enabled@example.com",
        ("command.failed", "failed", "Suspended".into()),
    )
    .await;
    assert_eq!(data(&ev)["error"]["code"], "account_suspended");
    assert!(
        data(&ev)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user.reactivate")
    );
    row(
        &broker,
        &mut tap,
        "user.reactivate",
        "enabled@example.com",
        ("user.reactivated", "applied", "Active".into()),
    )
    .await;
    // A reactivate on another queue is refused: wrong_queue, never applied.
    let (id, cmd) = crate::support::command("user.reactivate", "revoked@example.com");
    broker
        .send("user.suspend", cmd.to_string().as_bytes())
        .await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(data(&ev)["error"]["code"], "wrong_queue");
    running.stop().await;
}

#[tokio::test]
async fn a_duplicate_changes_lastpass_once_and_repeats_the_same_event() {
    let (broker, sim, running, mut tap, _dir) = setup(&[("dup@example.com", false, false)]).await;
    let (id, cmd) = command("user.suspend", "dup@example.com");
    broker.send_json(&cmd).await;
    broker.send_json(&cmd).await;
    let first = tap.for_command(&id, T).await;
    let second = tap.for_command(&id, T).await;
    assert_eq!(first["id"], second["id"], "same event id");
    assert_eq!(first, second, "the stored event is repeated verbatim");
    assert_eq!(sim.mutations("deluser"), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_late_redelivery_never_deletes_a_new_account_with_the_same_email() {
    let (broker, sim, running, mut tap, _dir) =
        setup(&[("reused@example.com", false, false)]).await;
    // X: deprovision the old account.
    let (x, deprovision) = command("user.deprovision", "reused@example.com");
    broker.send_json(&deprovision).await;
    let first = tap.for_command(&x, T).await;
    assert_eq!(data(&first)["outcome"], "applied");
    // Y: provision a new account with the same email.
    let (y, provision) = command("user.provision", "reused@example.com");
    broker.send_json(&provision).await;
    assert_eq!(data(&tap.for_command(&y, T).await)["outcome"], "applied");
    let new_uid = sim.user("reused@example.com").expect("new account").uid;
    // X again, late.
    broker.send_json(&deprovision).await;
    let again = tap.for_command(&x, T).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        data(&again)["outcome"],
        "applied",
        "the original outcome is repeated"
    );
    let still = sim
        .user("reused@example.com")
        .expect("the new account survives");
    assert_eq!(still.uid, new_uid);
    assert_eq!(sim.mutations("deluser"), 1);
    running.stop().await;
}

#[tokio::test]
async fn the_ledger_survives_a_restart() {
    let sim = TestSim::start().await;
    sim.add("restart@example.com", false, false);
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = broker.config(&sim, dir.path().to_path_buf(), test_retry());
    let running = Running::start(cfg.clone()).await;
    let (id, cmd) = command("user.deprovision", "restart@example.com");
    broker.send_json(&cmd).await;
    let first = tap.for_command(&id, T).await;
    running.stop().await;
    // Someone re-creates the account; the old command arrives again after a restart.
    sim.add("restart@example.com", false, false);
    let running = Running::start(cfg).await;
    broker.send_json(&cmd).await;
    let again = tap.for_command(&id, T).await;
    assert_eq!(first["id"], again["id"]);
    assert!(sim.user("restart@example.com").is_some());
    assert_eq!(sim.mutations("deluser"), 1);
    running.stop().await;
}

#[tokio::test]
async fn commands_for_one_email_apply_in_arrival_order() {
    let (broker, sim, running, mut tap, _dir) = setup(&[]).await;
    sim.faults(sim::FaultsPatch {
        latency_ms: Some(50),
        ..Default::default()
    });
    let (p, provision) = command("user.provision", "order@example.com");
    let (s, suspend) = command("user.suspend", "order@example.com");
    let (d, deprovision) = command("user.deprovision", "order@example.com");
    broker.send_json(&provision).await;
    broker.send_json(&suspend).await;
    broker.send_json(&deprovision).await;
    assert_eq!(data(&tap.for_command(&p, T).await)["outcome"], "applied");
    assert_eq!(data(&tap.for_command(&s, T).await)["outcome"], "applied");
    assert_eq!(data(&tap.for_command(&d, T).await)["outcome"], "applied");
    let cmds: Vec<String> = sim
        .calls()
        .iter()
        .map(|c| match c.cmd.as_str() {
            "deluser" => format!("deluser {}", c.data["deleteaction"]),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(cmds, ["batchadd", "deluser 0", "deluser 2"]);
    running.stop().await;
}

#[tokio::test]
async fn transient_faults_are_retried_until_the_command_applies() {
    let (broker, sim, running, mut tap, _dir) = setup(&[
        ("a@example.com", false, false),
        ("b@example.com", false, false),
        ("c@example.com", false, false),
    ])
    .await;

    // 503s: more than the in-process attempts, so a delayed redelivery happens too.
    sim.faults(sim::FaultsPatch {
        fail_next: Some(3),
        ..Default::default()
    });
    let (id, cmd) = command("user.suspend", "a@example.com");
    broker.send_json(&cmd).await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(data(&ev)["outcome"], "applied");
    assert!(data(&ev)["attempts"].as_u64().unwrap() >= 4, "{ev:#}");

    // 429 with an HTML body and Retry-After: 1 s.
    sim.faults(sim::FaultsPatch {
        rate_limit_next: Some(1),
        retry_after_secs: Some(1),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let (id, cmd) = command("user.suspend", "b@example.com");
    broker.send_json(&cmd).await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(data(&ev)["outcome"], "applied");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );

    // An outage shorter than the retry budget.
    sim.faults(sim::FaultsPatch {
        outage: Some(true),
        ..Default::default()
    });
    let (id, cmd) = command("user.suspend", "c@example.com");
    broker.send_json(&cmd).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!sim.user("c@example.com").unwrap().disabled);
    sim.faults(sim::FaultsPatch {
        outage: Some(false),
        ..Default::default()
    });
    let ev = tap.for_command(&id, T).await;
    assert_eq!(data(&ev)["outcome"], "applied");
    assert!(sim.user("c@example.com").unwrap().disabled);

    tap.expect_none(Duration::from_millis(300)).await;
    assert!(
        broker
            .dead_letters(1, Duration::from_millis(200))
            .await
            .is_empty()
    );
    running.stop().await;
}

#[tokio::test]
async fn retries_exhausted_fail_the_command_and_park_it() {
    let (broker, sim, running, mut tap, _dir) = setup(&[("down@example.com", false, false)]).await;
    sim.faults(sim::FaultsPatch {
        outage: Some(true),
        ..Default::default()
    });
    let (id, cmd) = command("user.suspend", "down@example.com");
    broker.send_json(&cmd).await;
    let ev = tap.for_command(&id, Duration::from_secs(30)).await;
    assert_eq!(routing(&ev), "command.failed");
    assert_eq!(data(&ev)["error"]["code"], "retries_exhausted");
    assert_eq!(data(&ev)["error"]["retryable"], true);
    // 2 attempts in process per round, 1 + 3 rounds.
    assert_eq!(data(&ev)["attempts"], 8);
    let parked = broker.dead_letters(1, T).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&parked[0].body).unwrap(),
        cmd
    );
    assert_eq!(
        parked[0].header("x-lpc-error-code").as_deref(),
        Some("retries_exhausted")
    );
    assert_eq!(
        parked[0].header("x-lpc-original-queue"),
        Some(format!("{}.suspend", broker.prefix()))
    );
    assert!(!sim.user("down@example.com").unwrap().disabled);
    running.stop().await;
}

#[tokio::test]
async fn an_auth_error_pauses_consumption_and_fails_no_command() {
    let (broker, sim, running, mut tap, _dir) = setup(&[
        ("p1@example.com", false, false),
        ("p2@example.com", false, false),
    ])
    .await;
    let good = sim.provhash();
    sim.rotate("rotated-elsewhere");
    let (id1, c1) = command("user.suspend", "p1@example.com");
    let (id2, c2) = command("user.suspend", "p2@example.com");
    broker.send_json(&c1).await;
    broker.send_json(&c2).await;
    // Nothing happens, nothing fails, while the credentials are refused.
    tap.expect_none(Duration::from_secs(3)).await;
    assert!(!sim.user("p1@example.com").unwrap().disabled);
    // The credentials work again: the connector resumes on its own.
    sim.rotate(&good);
    for id in [&id1, &id2] {
        let ev = tap.for_command(id, Duration::from_secs(40)).await;
        assert_eq!(data(&ev)["outcome"], "applied");
    }
    assert!(sim.user("p2@example.com").unwrap().disabled);
    assert!(
        broker
            .dead_letters(1, Duration::from_millis(200))
            .await
            .is_empty()
    );
    running.stop().await;
}

#[tokio::test]
async fn every_kind_of_invalid_message_is_rejected_and_parked() {
    let (broker, sim, running, mut tap, _dir) = setup(&[("ok@example.com", false, false)]).await;
    let id = "0b4e28ba-2fa1-41d2-883f-0016d3cca427";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("user.suspend", b"this is not json".to_vec(), "not_json"),
        ("user.suspend", b"[1,2,3]".to_vec(), "not_an_object"),
        ("user.suspend", json!({"type": "user.suspend", "user": {"email": "ok@example.com"}}).to_string().into_bytes(), "missing_field"),
        ("user.suspend", json!({"command_id": 42, "type": "user.suspend", "user": {"email": "ok@example.com"}}).to_string().into_bytes(), "invalid_field"),
        ("user.suspend", json!({"command_id": id, "type": "user.suspend", "user": {"email": "not an email"}}).to_string().into_bytes(), "invalid_email"),
        ("user.provision", json!({"command_id": id, "type": "user.provision", "user": {"email": "ok@example.com"}}).to_string().into_bytes(), "missing_field"),
        // A deprovision routed to the suspend queue must never delete anyone.
        ("user.suspend", json!({"command_id": id, "type": "user.deprovision", "user": {"email": "ok@example.com"}}).to_string().into_bytes(), "wrong_queue"),
        ("user.deprovision", json!({"command_id": id, "type": "user.explode", "user": {"email": "ok@example.com"}}).to_string().into_bytes(), "unknown_type"),
        ("user.suspend", vec![b' '; 70 * 1024], "too_large"),
    ];
    for (rk, body, _) in &cases {
        broker.send(rk, body).await;
    }
    let events = tap.take(cases.len(), T).await;
    let mut codes: Vec<String> = events
        .iter()
        .map(|e| {
            assert_eq!(routing(e), "command.rejected");
            assert_eq!(data(e)["outcome"], "rejected");
            data(e)["error"]["code"].as_str().unwrap().to_string()
        })
        .collect();
    let mut want: Vec<String> = cases.iter().map(|c| c.2.to_string()).collect();
    codes.sort();
    want.sort();
    assert_eq!(codes, want);
    let parked = broker.dead_letters(cases.len(), T).await;
    assert_eq!(parked.len(), cases.len(), "every invalid message is parked");
    for p in &parked {
        let code = p.header("x-lpc-error-code").unwrap();
        let case = cases
            .iter()
            .find(|c| c.1 == p.body)
            .expect("parked body unchanged");
        assert_eq!(code, case.2);
    }
    // The consumer keeps going, and nothing reached LastPass.
    assert_eq!(sim.mutations("deluser"), 0);
    let (id, cmd) = command("user.suspend", "ok@example.com");
    broker.send_json(&cmd).await;
    assert_eq!(data(&tap.for_command(&id, T).await)["outcome"], "applied");
    running.stop().await;
}

pub(crate) fn close_connection_named(fragment: &str) -> bool {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "--silent"])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = false;
    for line in text.lines().filter(|l| l.contains(fragment)) {
        let pid = line.split_whitespace().next().unwrap();
        let st = std::process::Command::new("rabbitmqctl")
            .args([
                "close_connection",
                pid,
                "test: cut the connector's connection",
            ])
            .status()
            .unwrap();
        closed |= st.success();
    }
    closed
}

#[tokio::test]
async fn a_cut_connection_loses_no_command() {
    let (broker, sim, running, mut tap, _dir) = setup(&[]).await;
    let n = 30;
    let mut ids = Vec::new();
    for i in 0..n {
        sim.add(&format!("cut{i}@example.com"), false, false);
    }
    sim.faults(sim::FaultsPatch {
        latency_ms: Some(30),
        ..Default::default()
    });
    for i in 0..n {
        let (id, cmd) = command("user.suspend", &format!("cut{i}@example.com"));
        broker.send_json(&cmd).await;
        ids.push(id);
    }
    // Let some commands complete, then cut the connector's own connection.
    let early: Vec<String> = tap
        .take(3, T)
        .await
        .iter()
        .map(|e| data(e)["command_id"].as_str().unwrap().to_string())
        .collect();
    let name = format!("lastpass-connector {} pid", broker.prefix());
    let mut cut = false;
    for _ in 0..20 {
        if close_connection_named(&name) {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut, "found and closed the connector's connection");
    for i in 0..n {
        assert!(
            wait_until(Duration::from_secs(30), || sim
                .user(&format!("cut{i}@example.com"))
                .unwrap()
                .disabled)
            .await,
            "cut{i} suspended"
        );
    }
    for id in ids.iter().filter(|id| !early.contains(id)) {
        tap.for_command(id, Duration::from_secs(30)).await;
    }
    assert_eq!(
        sim.mutations("deluser"),
        n,
        "every command acted exactly once"
    );
    running.stop().await;
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test]
async fn a_long_correlation_id_is_carried_without_breaking_the_publish() {
    let (broker, _sim, running, mut tap, _dir) = setup(&[("long@example.com", false, false)]).await;
    let (id, mut cmd) = command("user.suspend", "long@example.com");
    let long = "c".repeat(1000);
    cmd["correlation_id"] = long.clone().into();
    broker.send_json(&cmd).await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(data(&ev)["outcome"], "applied");
    assert_eq!(data(&ev)["correlation_id"], long.as_str());
    running.stop().await;
}

/// A command's W3C trace context reaches its event, as CloudEvents attributes and AMQP headers.
#[tokio::test]
async fn a_commands_traceparent_is_carried_to_its_event() {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let (broker, _sim, running, mut tap, _dir) = setup(&[("t@example.com", false, false)]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent)),
    );
    headers.insert(
        "tracestate".into(),
        AMQPValue::LongString(LongString::from("vendor=value")),
    );
    let (id, cmd) = command("user.suspend", "t@example.com");
    broker
        .send_with("user.suspend", cmd.to_string().as_bytes(), headers)
        .await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(ev["traceparent"], traceparent);
    assert_eq!(ev["tracestate"], "vendor=value");
    // A malformed one is ignored, not copied.
    let mut bad = FieldTable::default();
    bad.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from("00-zz\nforged-01")),
    );
    let (id, cmd) = command("user.suspend", "t@example.com");
    broker
        .send_with("user.suspend", cmd.to_string().as_bytes(), bad)
        .await;
    let ev = tap.for_command(&id, T).await;
    assert!(ev.get("traceparent").is_none(), "{ev:#}");
    running.stop().await;
}

/// Issue 12: with no `CONNECTOR_LASTPASS_MAX_RPS`, a burst against a LastPass that answers 429
/// above 20 calls/s finishes, acts once per command, and the adaptive budget keeps the 429s
/// under 10% of the calls.
#[tokio::test]
async fn a_burst_against_a_rate_limit_adapts_and_applies_every_command_once() {
    let (broker, sim, running, mut tap, _dir) = setup(&[]).await;
    let n = 60;
    for i in 0..n {
        sim.add(&format!("burst{i}@example.com"), false, false);
    }
    sim.faults(sim::FaultsPatch {
        rate_limit_rps: Some(Some(20.0)),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..n {
        let (id, cmd) = command("user.suspend", &format!("burst{i}@example.com"));
        broker.send_json(&cmd).await;
        ids.push(id);
    }
    for id in &ids {
        let ev = tap.for_command(id, Duration::from_secs(60)).await;
        assert_eq!(data(&ev)["outcome"], "applied", "{ev}");
    }
    let took = started.elapsed();
    assert_eq!(
        sim.mutations("deluser"),
        n,
        "every command acted exactly once"
    );
    let counts = sim.handle.call_counts();
    let calls = counts.getuserdata + counts.deluser + counts.batchadd + counts.enableuser;
    let all = calls + counts.rate_limited;
    eprintln!(
        "burst of {n} suspends at 20/s: {all} calls, {} answered 429, {took:?}",
        counts.rate_limited
    );
    assert!(
        counts.rate_limited * 10 < all,
        "429s under 10% of the calls: {counts:?}"
    );
    running.stop().await;
}

/// Issue 12: provisions in flight together share one `batchadd` (and their looks), and each is
/// still answered on its own, with its own outcome.
#[tokio::test]
async fn provisions_in_flight_together_share_a_batchadd() {
    let (broker, sim, running, mut tap, _dir) =
        setup_with(&[("present@example.com", false, false)], |c| {
            c.concurrency = 16;
            c.batch_window = Duration::from_secs(2);
            // A call budget is in force (as after LastPass's first 429): calls are rationed, so
            // a batch waits for every provision in flight, even one still in its look (without
            // a budget it waits only for those between calls, and batches follow the arrival
            // jitter).
            c.lastpass_max_rps = Some(1000.0);
        })
        .await;
    // Each call takes 300 ms, so the provisions published below are in flight together.
    sim.faults(sim::FaultsPatch {
        latency_ms: Some(300),
        ..Default::default()
    });
    let total = |c: lastpass_connector::simulator::CallCounts| {
        c.getuserdata + c.deluser + c.batchadd + c.enableuser
    };
    let calls_before = total(sim.handle.call_counts());
    let mut ids = Vec::new();
    for i in 0..12 {
        let (id, cmd) = command("user.provision", &format!("batch{i}@example.com"));
        broker.send_json(&cmd).await;
        ids.push(id);
    }
    let (present, cmd) = command("user.provision", "present@example.com");
    broker.send_json(&cmd).await;
    for (i, id) in ids.iter().enumerate() {
        let ev = tap.for_command(id, T).await;
        assert_eq!(data(&ev)["outcome"], "applied", "{ev:#}");
        assert_eq!(data(&ev)["account_status"], "Staged", "{ev:#}");
        assert!(sim.user(&format!("batch{i}@example.com")).is_some());
    }
    let ev = tap.for_command(&present, T).await;
    assert_eq!(data(&ev)["outcome"], "already_done", "{ev:#}");
    let batchadds = sim.mutations("batchadd");
    assert!(
        batchadds <= 2,
        "12 provisions in flight together made {batchadds} batchadd calls"
    );
    let calls = total(sim.handle.call_counts()) - calls_before;
    eprintln!("13 provisions in flight together: {calls} LastPass calls, {batchadds} batchadd");
    assert!(
        calls <= 20,
        "13 provisions made {calls} LastPass calls (39 one at a time)"
    );
    running.stop().await;
}
