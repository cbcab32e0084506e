//! The user sync: page through `getuserdata` (one page in memory at a time), publish one
//! `user.synced` per account, a `user.synced` with `Deprovisioned` for each account the last
//! complete sync saw and this one does not, then `users.sync.completed`.
//!
//! The staging snapshot is written page by page into the ledger; only a complete sync replaces
//! the stored snapshot, so a sync that fails part-way marks nobody Deprovisioned. Accounts are
//! keyed by uid, so a renamed user (same uid, new email) is the same account.
//! Before an account is reported Deprovisioned it is looked up by email: offset paging can skip
//! an account when others are deleted mid-sync, and a lookup that finds the same uid proves it is
//! still there.
//!
//! Paging follows [`Pager`]: on while fewer distinct accounts than `total` have been seen, so a
//! server that hands back short pages is read to the end. Pending invitations LastPass lists
//! (`invited`) are reported once each, as `Staged` accounts with `invitation_pending: true` and
//! the uid `invitation:<email>`; an invitation that turns into an account is not reported
//! `Deprovisioned` (the account is reported under its own uid).

use crate::command::Meta;
use crate::event::{Event, EventFactory, EventKind, EventSink, PublishError, event_id};
use crate::lastpass::{INVITATION_UID_PREFIX, LastPass, LastPassError, Pager, User};
use crate::retry::RetryPolicy;
use crate::status::{AccountStatus, Role};
use crate::store::{SnapshotEntry, SnapshotStore, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

/// Sync settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncSettings {
    /// `getuserdata` page size.
    pub page_size: u32,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            page_size: crate::lastpass::DEFAULT_PAGE_SIZE,
        }
    }
}

/// Why a sync stopped part-way.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error(transparent)]
    LastPass(#[from] LastPassError),
    #[error("publishing the sync's events")]
    Publish(#[from] PublishError),
    #[error("recording the sync snapshot")]
    Store(#[from] StoreError),
}

#[derive(Serialize)]
struct SyncedData<'a> {
    sync_id: Uuid,
    uid: &'a str,
    email: &'a str,
    full_name: &'a str,
    account_status: AccountStatus,
    role: Option<Role>,
    last_login: Option<String>,
    created: Option<String>,
    groups: &'a [String],
    invitation_pending: bool,
}

#[derive(Serialize, Default)]
struct CompletedData {
    sync_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    total: u64,
    counts: BTreeMap<&'static str, u64>,
    admins: u64,
    deprovisioned: u64,
    pending_invitations: u64,
    duration_ms: u64,
}

fn rfc3339(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn synced_event(events: &EventFactory, meta: &Meta, user: &User) -> Event {
    let data = SyncedData {
        sync_id: meta.command_id,
        uid: &user.uid,
        email: &user.email,
        full_name: &user.full_name,
        account_status: AccountStatus::of(user),
        role: Some(Role::of(user)),
        last_login: rfc3339(user.last_login),
        created: rfc3339(user.created),
        groups: &user.groups,
        invitation_pending: user.invitation_pending,
    };
    events.build(
        EventKind::Synced,
        event_id(&format!("{}/{}", meta.command_id, user.uid)),
        Some(&user.email),
        meta.correlation_id.as_deref(),
        meta.trace.as_ref(),
        data,
    )
}

fn gone_event(events: &EventFactory, meta: &Meta, uid: &str, email: &str) -> Event {
    let data = SyncedData {
        sync_id: meta.command_id,
        uid,
        email,
        full_name: "",
        account_status: AccountStatus::Deprovisioned,
        role: None,
        last_login: None,
        created: None,
        groups: &[],
        invitation_pending: false,
    };
    events.build(
        EventKind::Synced,
        event_id(&format!("{}/{uid}", meta.command_id)),
        Some(email),
        meta.correlation_id.as_deref(),
        meta.trace.as_ref(),
        data,
    )
}

/// Runs one sync and returns its `users.sync.completed` event, not yet published. Every
/// `user.synced` event has been confirmed by the sink when this returns `Ok`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<L: LastPass, S: EventSink>(
    lp: &L,
    ledger: &dyn SnapshotStore,
    events: &EventFactory,
    settings: &SyncSettings,
    retry: &RetryPolicy,
    stop: &CancellationToken,
    meta: &Meta,
    sink: &S,
) -> Result<Event, SyncError> {
    let started = Instant::now();
    let page_size = settings.page_size.max(1);
    ledger.begin_staging().await?;
    let mut done = CompletedData {
        sync_id: meta.command_id,
        correlation_id: meta.correlation_id.clone(),
        ..Default::default()
    };
    for s in ["Active", "Suspended", "Staged", "Deprovisioned"] {
        done.counts.insert(s, 0);
    }
    let count = |done: &mut CompletedData, user: &User| {
        done.total += 1;
        *done
            .counts
            .entry(AccountStatus::of(user).as_str())
            .or_default() += 1;
        done.admins += u64::from(user.admin);
    };

    let mut pager = Pager::new(page_size);
    // Emails (lower-cased) of the invitations reported so far: LastPass may list them on every page.
    let mut invitations: HashSet<String> = HashSet::new();
    while let Some(index) = pager.next_index() {
        let mut page = retry
            .run(stop, "getuserdata (a page)", || {
                lp.list_page(index, page_size)
            })
            .await?;
        pager.accept(&mut page)?;
        let mut accounts = std::mem::take(&mut page.users);
        for email in &page.invited {
            if invitations.insert(email.trim().to_lowercase()) {
                accounts.push(User::invitation(email));
            }
        }
        let batch: Vec<Event> = accounts
            .iter()
            .map(|u| synced_event(events, meta, u))
            .collect();
        sink.publish(&batch).await?;
        drop(batch);
        let entries = accounts
            .iter()
            .map(|u| {
                count(&mut done, u);
                (
                    u.uid.clone(),
                    SnapshotEntry {
                        email: u.email.clone(),
                        status: AccountStatus::of(u),
                    },
                )
            })
            .collect();
        ledger.stage(entries).await?;
    }
    done.pending_invitations = invitations.len() as u64;

    // Accounts the last complete sync saw and this one did not.
    let mut after: Option<String> = None;
    loop {
        let missing = ledger.missing_from_staging(after.clone(), 500).await?;
        let Some((last, _)) = missing.last() else {
            break;
        };
        after = Some(last.clone());
        let mut batch = Vec::new();
        let mut staged = Vec::new();
        for (uid, entry) in missing {
            let found = match crate::email::Email::parse(&entry.email) {
                Ok(email) => {
                    retry
                        .run(stop, "getuserdata (a look-up)", || lp.find_user(&email))
                        .await?
                }
                Err(_) => None,
            };
            let accepted = uid.starts_with(INVITATION_UID_PREFIX)
                && found.as_ref().is_some_and(|u| !u.invitation_pending);
            if accepted {
                info!(uid, "invitation accepted: the account has its own uid now");
                continue;
            }
            match found.filter(|u| u.uid == uid) {
                Some(user) => {
                    info!(
                        uid,
                        "account skipped by paging found by lookup; not deprovisioned"
                    );
                    count(&mut done, &user);
                    batch.push(synced_event(events, meta, &user));
                    staged.push((
                        uid,
                        SnapshotEntry {
                            email: user.email.clone(),
                            status: AccountStatus::of(&user),
                        },
                    ));
                }
                None => {
                    done.deprovisioned += 1;
                    *done.counts.entry("Deprovisioned").or_default() += 1;
                    batch.push(gone_event(events, meta, &uid, &entry.email));
                }
            }
        }
        sink.publish(&batch).await?;
        if !staged.is_empty() {
            ledger.stage(staged).await?;
        }
    }
    ledger.commit_staging().await?;
    done.duration_ms = started.elapsed().as_millis() as u64;
    for (status, n) in &done.counts {
        metrics::gauge!(crate::telemetry::SYNC_ACCOUNTS, "status" => *status).set(*n as f64);
    }
    metrics::gauge!(crate::telemetry::LAST_SYNC).set(chrono::Utc::now().timestamp() as f64);
    info!(
        total = done.total,
        deprovisioned = done.deprovisioned,
        "sync finished"
    );
    Ok(events.build(
        EventKind::SyncCompleted,
        crate::event::result_event_id(meta.command_id, EventKind::SyncCompleted),
        None,
        meta.correlation_id.as_deref(),
        meta.trace.as_ref(),
        done,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PublishError;
    use crate::fake::FakeLastPass;
    use serde_json::Value;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Sink(Mutex<Vec<Value>>);

    impl EventSink for Sink {
        async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
            let mut v = self.0.lock().unwrap();
            for e in events {
                v.push(serde_json::from_str(&e.body).unwrap());
            }
            Ok(())
        }
    }

    fn meta() -> Meta {
        Meta {
            command_id: Uuid::new_v4(),
            correlation_id: None,
            requested_by: None,
            reason: None,
            requested_at: None,
            trace: None,
        }
    }

    fn retry() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            round_delays: vec![],
        }
    }

    async fn sync(
        lp: &FakeLastPass,
        ledger: &dyn SnapshotStore,
    ) -> Result<(Vec<Value>, Value), SyncError> {
        let sink = Sink::default();
        let done = run(
            lp,
            ledger,
            &EventFactory::new("1"),
            &SyncSettings { page_size: 3 },
            &retry(),
            &CancellationToken::new(),
            &meta(),
            &sink,
        )
        .await?;
        let events = sink.0.into_inner().unwrap();
        Ok((events, serde_json::from_str(&done.body).unwrap()))
    }

    fn status_of<'a>(events: &'a [Value], email: &str) -> &'a str {
        events
            .iter()
            .find(|e| e["subject"] == email)
            .unwrap_or_else(|| panic!("no event for {email}"))["data"]["account_status"]
            .as_str()
            .unwrap()
    }

    #[tokio::test]
    async fn statuses_deprovisions_renames_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ledger) = crate::store::open_embedded(dir.path(), Duration::from_secs(60)).unwrap();
        let ledger = &ledger;
        let lp = FakeLastPass::new();
        lp.add("active@x.io", false, false, true);
        lp.add("off@x.io", true, true, false);
        lp.add("staged@x.io", false, true, false);
        for i in 0..5 {
            lp.add(&format!("u{i}@x.io"), false, false, false);
        }
        let (events, done) = sync(&lp, ledger).await.unwrap();
        assert_eq!(events.len(), 8);
        assert_eq!(status_of(&events, "active@x.io"), "Active");
        assert_eq!(status_of(&events, "off@x.io"), "Suspended");
        assert_eq!(status_of(&events, "staged@x.io"), "Staged");
        assert_eq!(done["data"]["total"], 8);
        assert_eq!(done["data"]["admins"], 1);
        assert_eq!(done["data"]["deprovisioned"], 0);
        assert_eq!(done["data"]["counts"]["Active"], 6);

        // Two deleted, one renamed (same uid), one disabled.
        lp.remove("u0@x.io");
        lp.remove("u1@x.io");
        lp.update("u2@x.io", |u| u.email = "renamed@x.io".into());
        lp.update("u3@x.io", |u| u.disabled = true);
        // A sync that fails part-way marks nobody deprovisioned and keeps the snapshot.
        lp.fail_next([
            LastPassError::Transient {
                reason: "x".into(),
                retry_after: None,
            },
            LastPassError::Transient {
                reason: "x".into(),
                retry_after: None,
            },
        ]);
        assert!(sync(&lp, ledger).await.is_err());
        assert_eq!(ledger.snapshot_len().await.unwrap(), 8);

        let (events, done) = sync(&lp, ledger).await.unwrap();
        assert_eq!(status_of(&events, "u0@x.io"), "Deprovisioned");
        assert_eq!(status_of(&events, "u1@x.io"), "Deprovisioned");
        assert_eq!(status_of(&events, "u3@x.io"), "Suspended");
        assert_eq!(status_of(&events, "renamed@x.io"), "Active");
        assert!(
            !events.iter().any(|e| e["subject"] == "u2@x.io"),
            "a rename is not a deprovision"
        );
        assert_eq!(done["data"]["deprovisioned"], 2);
        assert_eq!(done["data"]["total"], 6);
        assert_eq!(ledger.snapshot_len().await.unwrap(), 6);

        // The next sync does not report them again.
        let (events, done) = sync(&lp, ledger).await.unwrap();
        assert_eq!(done["data"]["deprovisioned"], 0);
        assert!(
            events
                .iter()
                .all(|e| e["data"]["account_status"] != "Deprovisioned")
        );
    }

    #[tokio::test]
    async fn event_ids_are_deterministic_per_sync_and_uid() {
        let lp = FakeLastPass::new();
        lp.add("a@x.io", false, false, false);
        let f = EventFactory::new("1");
        let m = meta();
        let u = lp.get("a@x.io").unwrap();
        assert_eq!(synced_event(&f, &m, &u).id, synced_event(&f, &m, &u).id);
        assert_ne!(
            synced_event(&f, &m, &u).id,
            synced_event(&f, &meta(), &u).id
        );
    }

    #[tokio::test]
    async fn pending_invitations_are_reported_once_as_staged_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ledger) = crate::store::open_embedded(dir.path(), Duration::from_secs(60)).unwrap();
        let lp = FakeLastPass::new();
        for i in 0..7 {
            lp.add(&format!("u{i}@x.io"), false, false, false);
        }
        // The fake lists the invitations on every page (3 pages of 3).
        lp.invite("inv@x.io");
        lp.invite("gone@x.io");
        let (events, done) = sync(&lp, &ledger).await.unwrap();
        let invitations: Vec<&Value> = events
            .iter()
            .filter(|e| e["data"]["invitation_pending"] == true)
            .collect();
        assert_eq!(invitations.len(), 2);
        assert_eq!(status_of(&events, "inv@x.io"), "Staged");
        assert_eq!(invitations[0]["data"]["uid"], "invitation:gone@x.io");
        assert_eq!(done["data"]["total"], 9);
        assert_eq!(done["data"]["counts"]["Staged"], 2);
        assert_eq!(done["data"]["pending_invitations"], 2);

        // One invitation is accepted (now an account), one is cancelled.
        lp.accept_invitation("inv@x.io");
        lp.cancel_invitation("gone@x.io");
        let (events, done) = sync(&lp, &ledger).await.unwrap();
        assert_eq!(status_of(&events, "inv@x.io"), "Staged");
        let gone: Vec<&Value> = events
            .iter()
            .filter(|e| e["data"]["account_status"] == "Deprovisioned")
            .collect();
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0]["subject"], "gone@x.io");
        assert_eq!(done["data"]["pending_invitations"], 0);
        assert_eq!(done["data"]["total"], 8);
    }
}
