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

use crate::command::Meta;
use crate::event::{Event, EventFactory, EventSink, event_id};
use crate::lastpass::{LastPass, LastPassError, User};
use crate::ledger::{Ledger, SnapshotEntry};
use crate::processor::RetryPolicy;
use crate::status::{AccountStatus, Role};
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

/// Sync settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
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
pub enum SyncError {
    #[error(transparent)]
    LastPass(LastPassError),
    #[error("publishing: {0}")]
    Publish(String),
    #[error("state store: {0}")]
    Ledger(String),
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
    };
    events.build(
        "user.synced",
        event_id(&format!("{}/{}", meta.command_id, user.uid)),
        Some(&user.email),
        meta.correlation_id.as_deref(),
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
    };
    events.build(
        "user.synced",
        event_id(&format!("{}/{uid}", meta.command_id)),
        Some(email),
        meta.correlation_id.as_deref(),
        data,
    )
}

fn backoff(retry: &RetryPolicy) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(retry.min_delay)
        .with_max_delay(retry.max_delay)
        .with_jitter()
        .with_max_times(retry.attempts.saturating_sub(1))
}

/// Runs one sync and returns its `users.sync.completed` event, not yet published. Every
/// `user.synced` event has been confirmed by the sink when this returns `Ok`.
pub async fn run<L: LastPass, S: EventSink>(
    lp: &L,
    ledger: &Ledger,
    events: &EventFactory,
    settings: &SyncSettings,
    retry: &RetryPolicy,
    meta: &Meta,
    sink: &S,
) -> Result<Event, SyncError> {
    let started = Instant::now();
    let page_size = settings.page_size.max(1);
    let ledger_err = |e: crate::ledger::LedgerError| SyncError::Ledger(e.to_string());
    ledger.begin_staging().await.map_err(ledger_err)?;
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
        *done.counts.entry(AccountStatus::of(user).as_str()).or_default() += 1;
        done.admins += u64::from(user.admin);
    };

    let mut index = 0u32;
    loop {
        let page = (|| lp.list_page(index, page_size))
            .retry(backoff(retry))
            .when(LastPassError::is_transient)
            .adjust(|e, d| d.map(|d| e.retry_after().map_or(d, |ra| ra.max(d))))
            .notify(|e, d| warn!(error = %e, retry_in = ?d, page = index, "getuserdata failed; retrying"))
            .await
            .map_err(SyncError::LastPass)?;
        let batch: Vec<Event> = page
            .users
            .iter()
            .map(|u| synced_event(events, meta, u))
            .collect();
        sink.publish(&batch)
            .await
            .map_err(|e| SyncError::Publish(e.to_string()))?;
        drop(batch);
        let entries = page
            .users
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
        ledger.stage(entries).await.map_err(ledger_err)?;
        done.pending_invitations = done.pending_invitations.max(page.invited.len() as u64);
        let seen = (u64::from(index) + 1) * u64::from(page_size);
        if (page.users.len() as u64) < u64::from(page_size) || seen >= page.total {
            break;
        }
        index += 1;
    }

    // Accounts the last complete sync saw and this one did not.
    let mut after: Option<String> = None;
    loop {
        let missing = ledger
            .missing_from_staging(after.clone(), 500)
            .await
            .map_err(ledger_err)?;
        let Some((last, _)) = missing.last() else {
            break;
        };
        after = Some(last.clone());
        let mut batch = Vec::new();
        let mut staged = Vec::new();
        for (uid, entry) in missing {
            let still_there = match crate::email::Email::parse(&entry.email) {
                Ok(email) => (|| lp.find_user(&email))
                    .retry(backoff(retry))
                    .when(LastPassError::is_transient)
                    .await
                    .map_err(SyncError::LastPass)?
                    .filter(|u| u.uid == uid),
                Err(_) => None,
            };
            match still_there {
                Some(user) => {
                    info!(uid, "account skipped by paging found by lookup; not deprovisioned");
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
        sink.publish(&batch)
            .await
            .map_err(|e| SyncError::Publish(e.to_string()))?;
        if !staged.is_empty() {
            ledger.stage(staged).await.map_err(ledger_err)?;
        }
    }
    ledger.commit_staging().await.map_err(ledger_err)?;
    done.duration_ms = started.elapsed().as_millis() as u64;
    info!(
        total = done.total,
        deprovisioned = done.deprovisioned,
        "sync finished"
    );
    Ok(events.build(
        "users.sync.completed",
        event_id(&format!("{}/users.sync.completed", meta.command_id)),
        None,
        meta.correlation_id.as_deref(),
        done,
    ))
}
