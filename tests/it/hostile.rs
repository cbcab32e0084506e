//! Hostile publishers (issue 8): what a publisher controls besides the body (headers and
//! properties) never steers the connector. Each test fails on the code before the fix.

use crate::support::simulator::{self as sim, TestSim};
use crate::support::{Broker, Running, amqp_url, command, test_retry};
use lapin::options::ConfirmSelectOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const T: Duration = Duration::from_secs(15);

async fn setup(
    users: &[&str],
) -> (
    Broker,
    TestSim,
    Running,
    crate::support::Tap,
    tempfile::TempDir,
) {
    let users: Vec<(&str, bool, bool)> = users.iter().map(|u| (*u, false, false)).collect();
    crate::consumer::setup(&users).await
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Finding 1: CC/BCC on a misrouted deprovision must not make the connector deliver it to the
/// deprovision queue when it parks the message.
#[tokio::test]
async fn cc_and_bcc_are_never_copied_into_a_parked_message() {
    let (broker, sim, running, mut tap, _dir) = setup(&["victim@example.com"]).await;
    let id = Uuid::new_v4().to_string();
    let body = json!({"command_id": id, "type": "user.deprovision",
        "user": {"email": "victim@example.com"}});
    let mut headers = FieldTable::default();
    let deprovision_queue = format!("{}.deprovision", broker.prefix());
    headers.insert(
        "CC".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![long(&deprovision_queue)])),
    );
    headers.insert(
        "BCC".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![long(&deprovision_queue)])),
    );
    broker
        .send_with("user.suspend", body.to_string().as_bytes(), headers)
        .await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(ev["data"]["error"]["code"], "wrong_queue");
    let parked = broker.dead_letters(1, T).await;
    assert_eq!(parked.len(), 1);
    assert!(parked[0].header("CC").is_none() && parked[0].header("BCC").is_none());
    // Long enough for a copy delivered to the deprovision queue to have been applied.
    tap.expect_none(Duration::from_secs(2)).await;
    assert!(
        sim.user("victim@example.com").is_some(),
        "the user was deleted"
    );
    assert_eq!(sim.mutations("deluser"), 0);
    running.stop().await;
}

/// Findings 4 and 3: `expiration` is not copied (the parked copy stays in the dead-letter
/// queue), and headers near the frame limit are dropped from the copy instead of closing the
/// connection.
#[tokio::test]
async fn expiration_and_oversized_headers_do_not_follow_a_parked_message() {
    let (broker, _sim, running, mut tap, _dir) = setup(&["ok@example.com"]).await;
    let mut headers = FieldTable::default();
    headers.insert("padding".into(), long(&"p".repeat(120 * 1024)));
    broker
        .send_on(
            &broker.ch,
            "user.suspend",
            b"not json",
            BasicProperties::default()
                .with_expiration("500".into())
                .with_headers(headers),
        )
        .await;
    let ev = tap.take(1, T).await;
    assert_eq!(ev[0]["data"]["error"]["code"], "not_json");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let parked = broker.dead_letters(1, T).await;
    assert_eq!(
        parked.len(),
        1,
        "the parked copy expired out of the dead-letter queue"
    );
    assert!(parked[0].header("padding").is_none());
    assert_eq!(
        parked[0].header("x-lpc-headers-dropped").as_deref(),
        Some("Boolean(true)")
    );
    // The connection survived: the next command is applied and answered.
    let (id, cmd) = command("user.suspend", "ok@example.com");
    broker.send_json(&cmd).await;
    assert_eq!(tap.for_command(&id, T).await["data"]["outcome"], "applied");
    running.stop().await;
}

/// Finding 6: a publisher cannot skip the delayed retries with a forged retry round.
#[tokio::test]
async fn a_forged_retry_round_does_not_shorten_the_retry_budget() {
    let (broker, sim, running, mut tap, _dir) = setup(&["a@example.com"]).await;
    sim.faults(sim::FaultsPatch {
        outage: Some(true),
        ..Default::default()
    });
    let (id, cmd) = command("user.suspend", "a@example.com");
    let mut headers = FieldTable::default();
    headers.insert("x-lpc-retry-round".into(), AMQPValue::LongLongInt(99));
    headers.insert("x-lpc-attempts".into(), AMQPValue::LongLongInt(i64::MAX));
    broker
        .send_with("user.suspend", cmd.to_string().as_bytes(), headers)
        .await;
    let ev = tap.for_command(&id, Duration::from_secs(30)).await;
    assert_eq!(ev["data"]["error"]["code"], "retries_exhausted");
    let policy = test_retry();
    let budget = policy.attempts * (policy.round_delays.len() + 1);
    assert_eq!(
        ev["data"]["attempts"],
        json!(budget),
        "every round was run, and the attempts were counted from zero"
    );
    running.stop().await;
}

/// Finding 7: a reused command_id with a different command is rejected, not answered with the
/// first command's event.
#[tokio::test]
async fn a_reused_command_id_for_another_user_is_rejected_and_parked() {
    let (broker, sim, running, mut tap, _dir) = setup(&["x@example.com", "y@example.com"]).await;
    let (id, mut cmd) = command("user.suspend", "x@example.com");
    broker.send_json(&cmd).await;
    let first = tap.for_command(&id, T).await;
    assert_eq!(first["data"]["outcome"], "applied");
    cmd["user"]["email"] = "y@example.com".into();
    broker.send_json(&cmd).await;
    let second = tap.for_command(&id, T).await;
    assert_eq!(second["data"]["outcome"], "rejected");
    assert_eq!(second["data"]["error"]["code"], "command_id_conflict");
    assert_eq!(second["subject"], "y@example.com");
    assert!(
        !sim.user("y@example.com").unwrap().disabled,
        "y was suspended"
    );
    let parked = broker.dead_letters(1, T).await;
    assert_eq!(
        parked[0].header("x-lpc-error-code").as_deref(),
        Some("command_id_conflict")
    );
    running.stop().await;
}

/// A broker user of this test's own, deleted even when the test fails.
struct TempBrokerUser {
    name: String,
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TempBrokerUser {
    fn create() -> TempBrokerUser {
        let name = format!("lpc-test-{}", &Uuid::new_v4().simple().to_string()[..10]);
        rabbitmqctl(&["add_user", &name, "temporary-password"]);
        let user = TempBrokerUser { name };
        rabbitmqctl(&["set_permissions", "-p", "/", &user.name, ".*", ".*", ".*"]);
        user
    }

    fn url(&self) -> String {
        let base = amqp_url();
        let rest = base
            .split_once('@')
            .map(|(_, r)| r)
            .unwrap_or("127.0.0.1:5672/%2f");
        format!("amqp://{}:temporary-password@{rest}", self.name)
    }
}

impl Drop for TempBrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// Finding 2: a message whose `user_id` names another broker user (set legitimately by that
/// user) must not wedge the connector's publishing when it is parked.
#[tokio::test]
async fn a_foreign_user_id_does_not_wedge_the_publisher() {
    let (broker, sim, running, mut tap, _dir) = setup(&["ok@example.com"]).await;
    let other = TempBrokerUser::create();
    let conn = Connection::connect(&other.url(), ConnectionProperties::default())
        .await
        .expect("the temporary broker user connects");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    broker
        .send_on(
            &ch,
            "user.suspend",
            b"{\"not\": \"a command\"}",
            BasicProperties::default().with_user_id(other.name.as_str().into()),
        )
        .await;
    let ev = tap.take(1, T).await;
    assert_eq!(ev[0]["data"]["outcome"], "rejected");
    // The connector still publishes: a command after it gets its event.
    let (id, cmd) = command("user.suspend", "ok@example.com");
    broker.send_json(&cmd).await;
    let ev: Value = tap.for_command(&id, T).await;
    assert_eq!(ev["data"]["outcome"], "applied");
    assert!(sim.user("ok@example.com").unwrap().disabled);
    let _ = conn.close(200, "done".into()).await;
    running.stop().await;
}

/// Finding 5: a look-alike address (the Kelvin sign folds to `k` under Unicode rules) never
/// reaches another account; a zero-width character is refused too.
#[tokio::test]
async fn a_look_alike_email_never_reaches_another_account() {
    let (broker, sim, running, mut tap, _dir) = setup(&["nancy.clark9@example.com"]).await;
    for email in [
        "nancy.clar\u{212A}9@example.com",
        "nancy.clark9\u{200B}@example.com",
    ] {
        let (id, cmd) = command("user.deprovision", email);
        broker.send_json(&cmd).await;
        let ev = tap.for_command(&id, T).await;
        assert_eq!(ev["data"]["error"]["code"], "invalid_email", "{email:?}");
    }
    assert!(sim.user("nancy.clark9@example.com").is_some(), "deleted");
    assert_eq!(sim.mutations("deluser"), 0);
    running.stop().await;
}

/// Finding 8: a key given twice is rejected, never "the last one wins".
#[tokio::test]
async fn a_duplicated_key_is_rejected_not_the_last_value_taken() {
    let (broker, sim, running, mut tap, _dir) = setup(&["dup@example.com"]).await;
    let id = Uuid::new_v4().to_string();
    let body = format!(
        r#"{{"command_id":"{id}","type":"user.suspend","type":"user.deprovision","user":{{"email":"dup@example.com"}}}}"#
    );
    broker.send("user.deprovision", body.as_bytes()).await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(ev["data"]["outcome"], "rejected");
    assert_eq!(ev["data"]["error"]["code"], "invalid_field");
    tap.expect_none(Duration::from_millis(500)).await;
    assert!(sim.user("dup@example.com").is_some());
    assert_eq!(sim.mutations("deluser"), 0);
    running.stop().await;
}

/// Finding 10: with text logs, a newline inside a rejected email cannot start a forged line.
#[tokio::test]
async fn a_newline_in_a_rejected_field_cannot_forge_a_log_line() {
    let sim = TestSim::start().await;
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = broker
        .connector_process(&sim, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (id, cmd) = command("user.suspend", "x@example.com\nERROR forged: admin deleted");
    broker.send_json(&cmd).await;
    let ev = tap.for_command(&id, T).await;
    assert_eq!(ev["data"]["error"]["code"], "invalid_email");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("rejected an invalid message"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR forged")),
        "a forged line:\n{log}"
    );
}
