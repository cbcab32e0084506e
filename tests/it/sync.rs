//! The user sync against the real RabbitMQ and the simulator.

use crate::support::simulator::{self as sim, TestSim};
use crate::support::{Broker, Running, Tap, test_retry};
use lastpass_connector::config::Config;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

const T: Duration = Duration::from_secs(60);

fn sync_command() -> (String, Value) {
    let id = Uuid::new_v4().to_string();
    (
        id.clone(),
        json!({"command_id": id, "type": "users.sync", "correlation_id": "review-1"}),
    )
}

/// Reads events until the end of sync `id` (its completion or its failure); returns the
/// `user.synced` events by uid and the final event.
async fn collect(tap: &mut Tap, id: &str) -> (HashMap<String, Value>, Value) {
    let mut synced = HashMap::new();
    loop {
        let ev = tap.take(1, T).await.remove(0);
        let ty = ev["type"].as_str().unwrap().to_string();
        if ty.ends_with(".user.synced") && ev["data"]["sync_id"] == id {
            let uid = ev["data"]["uid"].as_str().unwrap().to_string();
            assert!(synced.insert(uid, ev).is_none(), "one event per account");
        } else if ev["data"]["sync_id"] == id || ev["data"]["command_id"] == id {
            return (synced, ev);
        }
    }
}

fn expected_status(u: &sim::SimUser) -> &'static str {
    if u.disabled {
        "Suspended"
    } else if u.neverloggedin {
        "Staged"
    } else {
        "Active"
    }
}

/// A simulator with `users` accounts, a broker prefix with a tap on its events, a state dir and
/// the connector's config for them, not yet started.
async fn prepare(users: usize) -> (Broker, TestSim, Tap, tempfile::TempDir, Config) {
    let sim = TestSim::start_with(users).await;
    let broker = Broker::new(&test_retry()).await;
    let tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = broker.config(&sim, dir.path().to_path_buf(), test_retry());
    (broker, sim, tap, dir, cfg)
}

async fn setup(users: usize) -> (Broker, TestSim, Running, Tap, tempfile::TempDir) {
    let (broker, sim, tap, dir, cfg) = prepare(users).await;
    (broker, sim, Running::start(cfg).await, tap, dir)
}

#[tokio::test]
async fn a_first_sync_reports_every_account_right_and_the_next_sees_the_changes() {
    let (broker, sim, running, mut tap, _dir) = setup(250).await;
    sim.add("never@example.com", false, true);
    let users = sim.users();
    assert!(users.iter().any(|u| u.admin) && users.iter().any(|u| u.disabled));
    assert!(
        users
            .iter()
            .any(|u| u.neverloggedin && u.last_login.is_empty())
    );

    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id).await;
    assert_eq!(
        done["type"],
        "io.github.lastpass-connector.users.sync.completed"
    );
    assert_eq!(synced.len(), users.len());
    for u in &users {
        let ev = &synced[&u.uid];
        let d = &ev["data"];
        assert_eq!(ev["subject"], u.username.as_str());
        assert_eq!(d["email"], u.username.as_str());
        assert_eq!(d["account_status"], expected_status(u), "{u:?}");
        assert_eq!(d["role"], if u.admin { "Admin" } else { "User" });
        if u.last_login.is_empty() {
            assert_eq!(d["last_login"], Value::Null, "{u:?}");
        } else {
            let t = d["last_login"].as_str().unwrap();
            assert!(
                t.ends_with('Z') && t.starts_with(&u.last_login[..10]),
                "{t} vs {}",
                u.last_login
            );
        }
        assert_eq!(d["sync_id"], id.as_str());
    }
    let d = &done["data"];
    assert_eq!(d["total"], users.len());
    assert_eq!(d["admins"], users.iter().filter(|u| u.admin).count());
    assert_eq!(
        d["counts"]["Suspended"],
        users.iter().filter(|u| u.disabled).count()
    );
    assert_eq!(d["deprovisioned"], 0);

    // Two deleted, one disabled, behind the connector's back.
    let active: Vec<&sim::SimUser> = users
        .iter()
        .filter(|u| expected_status(u) == "Active")
        .collect();
    sim.delete(&active[0].username);
    sim.delete(&active[1].username);
    sim.disable(&active[2].username);
    let (id2, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id2).await;
    assert_eq!(
        synced[&active[0].uid]["data"]["account_status"],
        "Deprovisioned"
    );
    assert_eq!(
        synced[&active[1].uid]["data"]["account_status"],
        "Deprovisioned"
    );
    assert_eq!(
        synced[&active[2].uid]["data"]["account_status"],
        "Suspended"
    );
    assert_eq!(done["data"]["deprovisioned"], 2);
    assert_eq!(
        synced
            .values()
            .filter(|e| e["data"]["account_status"] == "Deprovisioned")
            .count(),
        2
    );
    running.stop().await;
}

#[tokio::test]
async fn a_sync_interrupted_by_an_outage_marks_nobody_deprovisioned() {
    let (broker, sim, running, mut tap, _dir) = setup(500).await;
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (first, _) = collect(&mut tap, &id).await;
    assert_eq!(first.len(), 500);

    let users = sim.users();
    sim.delete(&users[10].username);
    sim.delete(&users[400].username);
    // Slow pages, and an outage once the sync is under way.
    sim.faults(sim::FaultsPatch {
        latency_ms: Some(150),
        ..Default::default()
    });
    let (id2, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let ev = tap.take(1, T).await.remove(0);
    assert_eq!(ev["data"]["sync_id"], id2.as_str(), "the sync has started");
    sim.faults(sim::FaultsPatch {
        outage: Some(true),
        ..Default::default()
    });
    let (synced, end) = collect(&mut tap, &id2).await;
    assert_eq!(end["type"], "io.github.lastpass-connector.command.failed");
    assert_eq!(end["data"]["error"]["code"], "retries_exhausted");
    assert!(
        synced
            .values()
            .all(|e| e["data"]["account_status"] != "Deprovisioned"),
        "a failed sync marks nobody Deprovisioned"
    );
    assert!(
        synced.len() < 498,
        "it really stopped part-way ({} accounts)",
        synced.len()
    );

    sim.faults(sim::FaultsPatch {
        outage: Some(false),
        latency_ms: Some(0),
        ..Default::default()
    });
    let (id3, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id3).await;
    assert_eq!(done["data"]["deprovisioned"], 2);
    assert_eq!(
        synced[&users[10].uid]["data"]["account_status"],
        "Deprovisioned"
    );
    assert_eq!(
        synced[&users[400].uid]["data"]["account_status"],
        "Deprovisioned"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_renamed_user_is_the_same_account() {
    let (broker, sim, running, mut tap, _dir) = setup(20).await;
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    collect(&mut tap, &id).await;
    let u = sim.users().remove(3);
    sim.rename(&u.username, "new.name@example.com");
    let (id2, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id2).await;
    assert_eq!(synced[&u.uid]["data"]["email"], "new.name@example.com");
    assert_ne!(synced[&u.uid]["data"]["account_status"], "Deprovisioned");
    assert_eq!(done["data"]["deprovisioned"], 0);
    assert_eq!(done["data"]["total"], 20);
    running.stop().await;
}

/// Issue 10, the page-size row: LastPass documents no maximum `pagesize`, and a server may hand
/// back fewer accounts than asked for. With the simulator capping pages at 300 and the sync asking
/// for 2000, a short first page must not end the sync: all 1,000 accounts are reported.
#[tokio::test]
async fn a_sync_of_1000_accounts_with_a_page_cap_of_300_reports_all_1000() {
    let (broker, sim, mut tap, _dir, mut cfg) = prepare(1000).await;
    cfg.sync_page_size = 2000;
    sim.handle.set_quirks(sim::QuirksPatch {
        page_size_cap: Some(300),
        ..Default::default()
    });
    let running = Running::start(cfg).await;
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id).await;
    assert_eq!(
        done["type"], "io.github.lastpass-connector.users.sync.completed",
        "{done:#}"
    );
    assert_eq!(synced.len(), 1000);
    let expected: std::collections::HashSet<String> =
        sim.users().into_iter().map(|u| u.uid).collect();
    assert_eq!(
        synced
            .keys()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        expected
    );
    assert_eq!(done["data"]["total"], 1000);
    // 300 + 300 + 300 + 100, and nothing more.
    // One probe of one account at start (run checks LastPass), then 300 + 300 + 300 + 100.
    assert_eq!(sim.handle.call_counts().getuserdata, 5);
    running.stop().await;
}

/// Issue 10, the time-zone row: LastPass prints `last_login` as Eastern wall-clock time without an
/// offset. The simulator stores true instants and prints them so (daylight saving included); under
/// the default `LASTPASS_TIME_ZONE` (America/New_York) a July login (EDT, UTC-4) and a January
/// login (EST, UTC-5) come out right to the second.
#[tokio::test]
async fn july_and_january_logins_are_right_to_the_second_under_the_default_zone() {
    let (broker, sim, running, mut tap, _dir) = setup(0).await;
    sim.handle.set_quirks(sim::QuirksPatch {
        date_style: Some(sim::DateStyle::Eastern),
        ..Default::default()
    });
    let mut july = sim::SimUserSpec::active("july@example.com", "2025-07-15 13:30:15");
    july.created = Some("2025-07-01 16:00:01".into());
    let mut january = sim::SimUserSpec::active("january@example.com", "2025-01-15 14:30:15");
    january.created = Some("2024-12-31 23:59:59".into());
    let july_uid = sim.handle.add_user(july).unwrap();
    let january_uid = sim.handle.add_user(january).unwrap();
    // On the wire: the same Eastern wall-clock time for both, no offset.
    let raw = sim::raw_call(&sim.handle, "getuserdata", json!({"pagesize": 10})).await;
    assert_eq!(
        raw.body
            .matches(r#""last_login":"2025-07-15 09:30:15""#)
            .count(),
        1
    );
    assert_eq!(
        raw.body
            .matches(r#""last_login":"2025-01-15 09:30:15""#)
            .count(),
        1
    );
    assert!(raw.body.contains(r#""created":"2024-12-31 18:59:59""#));

    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, _) = collect(&mut tap, &id).await;
    let d = &synced[&july_uid]["data"];
    assert_eq!(d["last_login"], "2025-07-15T13:30:15Z");
    assert_eq!(d["created"], "2025-07-01T16:00:01Z");
    let d = &synced[&january_uid]["data"];
    assert_eq!(d["last_login"], "2025-01-15T14:30:15Z");
    assert_eq!(d["created"], "2024-12-31T23:59:59Z");
    running.stop().await;
}

/// Issue 10, the statuses row: pending invitations LastPass lists are reported as Staged
/// accounts with `invitation_pending: true`, once each, and counted.
#[tokio::test]
async fn pending_invitations_are_reported_as_staged_and_counted() {
    let (broker, sim, running, mut tap, _dir) = setup(150).await;
    sim.handle.add_invitation("Invited.One@example.com");
    sim.handle.add_invitation("invited.two@example.com");
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id).await;
    assert_eq!(synced.len(), 152);
    let inv = &synced["invitation:invited.one@example.com"];
    assert_eq!(inv["subject"], "Invited.One@example.com");
    assert_eq!(inv["data"]["account_status"], "Staged");
    assert_eq!(inv["data"]["invitation_pending"], true);
    assert_eq!(inv["data"]["last_login"], Value::Null);
    assert!(
        synced
            .values()
            .filter(|e| e["data"]["invitation_pending"] == false)
            .count()
            == 150
    );
    assert_eq!(done["data"]["total"], 152);
    assert_eq!(done["data"]["pending_invitations"], 2);

    // One accepted (now an account), one cancelled: only the cancelled one is Deprovisioned.
    sim.handle
        .add_user(sim::SimUserSpec::staged("invited.one@example.com"))
        .unwrap();
    assert!(sim::control(&sim.handle, "GET", "/state", None).await.0 == 200);
    let client = sim::client(&sim.handle);
    use lastpass_connector::lastpass::{DeleteAction, LastPass};
    for e in ["invited.one@example.com", "invited.two@example.com"] {
        client
            .delete_user(&sim::email(e), DeleteAction::CancelInvitation)
            .await
            .unwrap();
    }
    let (id2, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id2).await;
    let gone: Vec<&Value> = synced
        .values()
        .filter(|e| e["data"]["account_status"] == "Deprovisioned")
        .collect();
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert_eq!(gone[0]["subject"], "invited.two@example.com");
    assert_eq!(done["data"]["pending_invitations"], 0);
    assert_eq!(done["data"]["total"], 151);
    running.stop().await;
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Runs the connector as its own process for one sync of `users` accounts (pages of 500) and
/// returns its peak resident memory (VmHWM) in KiB.
async fn peak_rss_of_one_sync(users: usize) -> u64 {
    let sim = TestSim::start_with(users).await;
    let broker = Broker::new(&test_retry()).await;
    let mut tap = broker.tap().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = broker
        .connector_process(&sim, dir.path())
        .env("RUST_LOG", "warn")
        .env("CONNECTOR_SYNC_PAGE_SIZE", "500")
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id).await;
    let peak = vm_hwm_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(synced.len(), users);
    assert_eq!(done["data"]["total"], users);
    eprintln!(
        "sync of {users} accounts: peak RSS {peak} KiB, {:?}",
        started.elapsed()
    );
    peak
}

/// The sync holds one page at a time, not the whole list: the connector's peak resident memory
/// for 20,000 accounts is about what it is for 4,000 (the same page size, five times the pages).
#[tokio::test]
async fn a_sync_across_20000_users_keeps_memory_flat() {
    let small = peak_rss_of_one_sync(4_000).await;
    let large = peak_rss_of_one_sync(20_000).await;
    // Holding 16,000 more accounts and their events would add well over 16 MiB.
    assert!(
        large < small + 6 * 1024,
        "peak RSS grew from {small} KiB (4,000 accounts) to {large} KiB (20,000)"
    );
}

#[tokio::test]
async fn run_starts_syncs_on_a_schedule_when_asked() {
    let (_broker, _sim, mut tap, _dir, mut cfg) = prepare(30).await;
    cfg.sync_interval = Some(Duration::from_millis(1500));
    let running = Running::start(cfg).await;
    // No command is sent: the schedule requests the syncs.
    let mut completed = Vec::new();
    while completed.len() < 2 {
        let ev = tap.take(1, Duration::from_secs(20)).await.remove(0);
        if ev["type"] == "io.github.lastpass-connector.users.sync.completed" {
            assert_eq!(ev["data"]["total"], 30);
            completed.push(ev["data"]["sync_id"].as_str().unwrap().to_string());
        }
    }
    assert_ne!(completed[0], completed[1], "each slot is its own sync");
    running.stop().await;
}

#[tokio::test]
async fn a_sync_refused_by_lastpass_fails_and_commands_resume_once_credentials_work() {
    let (broker, sim, running, mut tap, _dir) = setup(10).await;
    let good = sim.provhash();
    sim.rotate("rotated");
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, end) = collect(&mut tap, &id).await;
    assert!(synced.is_empty());
    assert_eq!(end["type"], "io.github.lastpass-connector.command.failed");
    assert_eq!(end["data"]["error"]["code"], "unauthorized");
    // Consumption is paused; the next command waits, and goes through once the credentials work.
    let email = sim.users()[0].username.clone();
    let (cid, suspend) = crate::support::command("user.suspend", &email);
    broker.send_json(&suspend).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    sim.rotate(&good);
    let ev = tap.for_command(&cid, Duration::from_secs(40)).await;
    assert_eq!(ev["data"]["outcome"], "applied");
    running.stop().await;
}

#[tokio::test]
async fn the_snapshot_survives_a_restart() {
    let (broker, sim, mut tap, _dir, cfg) = prepare(40).await;
    let running = Running::start(cfg.clone()).await;
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    assert_eq!(collect(&mut tap, &id).await.0.len(), 40);
    running.stop().await;

    // Deleted while the connector was down; the restarted connector still knows it existed.
    let gone = sim.users().remove(7);
    sim.delete(&gone.username);
    let running = Running::start(cfg).await;
    let (id, cmd) = sync_command();
    broker.send_json(&cmd).await;
    let (synced, done) = collect(&mut tap, &id).await;
    assert_eq!(synced[&gone.uid]["data"]["account_status"], "Deprovisioned");
    assert_eq!(synced[&gone.uid]["subject"], gone.username.as_str());
    assert_eq!(done["data"]["deprovisioned"], 1);
    running.stop().await;
}
