//! The only state: the command ledger (what was completed, with its event; what was about to be
//! done) and the sync snapshot (the accounts the last complete sync saw). Two traits with two
//! backends: [`embedded`] (one redb file, one process; the default) and [`postgres`] (shared by
//! every replica, when `CONNECTOR_STATE_URL` is set).

mod embedded;
mod postgres;
#[cfg(test)]
mod tests;

pub(crate) use embedded::open as open_embedded;
pub(crate) use postgres::{PgSettings, check_url as check_state_url, open as open_postgres};

use crate::event::Event;
use crate::status::AccountStatus;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// A state store operation failed. Keeps the underlying error as its source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the state store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("state store transaction")]
    Transaction(#[from] redb::TransactionError),
    #[error("state store table")]
    Table(#[from] redb::TableError),
    #[error("state store storage")]
    Storage(#[from] redb::StorageError),
    #[error("state store commit")]
    Commit(#[from] redb::CommitError),
    #[error("a stored record cannot be read or written")]
    Codec(#[from] serde_json::Error),
    #[error("the state store's worker thread failed")]
    Worker(#[from] tokio::task::JoinError),
    #[error("state database: {what}")]
    Database {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("state database: no connection")]
    DatabasePool(#[source] deadpool_postgres::PoolError),
    #[error("state database: {0}")]
    Schema(String),
    #[error("the state store's writer stopped")]
    WriterStopped,
    #[error("state store: the batch of writes this one was committed with failed")]
    Batch(#[source] std::sync::Arc<StoreError>),
}

/// A record that a mutating call was about to be made for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Intent {
    /// How long ago it was recorded (by the store's clock).
    pub age: Duration,
    /// Recorded by another process (another replica, or an earlier run of this one), whose
    /// call may still be in flight.
    pub by_another_process: bool,
}

/// Held while a command is processed: no other replica processes the same command id until it
/// is dropped (or its process dies). Dropping it releases the claim.
pub(crate) struct Claim(#[allow(dead_code)] Option<Box<dyn Send + Sync>>);

impl Claim {
    /// A claim that guards nothing beyond this process (the embedded store is single-process,
    /// and same-email commands are already sequenced in memory).
    pub fn local() -> Claim {
        Claim(None)
    }
}

/// One account in the sync snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotEntry {
    pub email: String,
    pub status: AccountStatus,
}

/// A completed command as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    /// The event it produced, repeated verbatim for a redelivery.
    pub event: Event,
    /// What the command asked for (see `Command::fingerprint`), to tell a redelivery from a
    /// different command that reuses the id. `None` in records written before it was kept.
    pub fingerprint: Option<String>,
}

/// Where a command is in its delayed-redelivery rounds. Kept in the store, never taken from a
/// message's headers, so a publisher cannot shorten the retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct RetryState {
    /// Delayed redeliveries already done.
    pub round: u32,
    /// LastPass attempts made in earlier rounds.
    pub attempts: u32,
}

/// What the ledger holds for one command, read together in one go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Record {
    /// Its completion, if it completed (and was not pruned).
    pub completion: Option<Completion>,
    /// The intent an earlier attempt recorded, if any.
    pub intent: Option<Intent>,
    /// Its retry state (zero when it has none).
    pub retry: RetryState,
}

/// Completed commands with their events, and intents. A command id found here as completed is
/// never applied again: its stored event is repeated verbatim.
pub(crate) trait CommandLedger: Send + Sync + 'static {
    /// Claims the command id for this process, then reads what the ledger holds for it. Waits
    /// while another process holds the claim: one holder at a time per command id (and prefix),
    /// across every replica of the store. The record is read once the claim is held, so it
    /// shows everything an earlier holder wrote.
    fn claim(&self, id: Uuid) -> BoxFuture<'_, Result<(Claim, Record), StoreError>>;
    /// What the ledger holds for the command, read without claiming it.
    #[cfg(test)]
    fn look_up(&self, id: Uuid) -> BoxFuture<'_, Result<Record, StoreError>>;
    /// A completed command's record, if it completed (and was not pruned).
    #[cfg(test)]
    fn completed(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Completion>, StoreError>> {
        Box::pin(async move { Ok(self.look_up(id).await?.completion) })
    }
    /// Records, durably, that a mutating call for this command is about to be made.
    fn record_intent(&self, id: Uuid) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The intent an earlier attempt of this command recorded, if any.
    #[cfg(test)]
    fn intent(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Intent>, StoreError>> {
        Box::pin(async move { Ok(self.look_up(id).await?.intent) })
    }
    /// Records a command as completed with its event and fingerprint, durably, and clears its
    /// intent and retry state. If the command is already recorded as completed, the record is
    /// kept. Returns the event on record, the one to publish.
    fn complete<'a>(
        &'a self,
        id: Uuid,
        fingerprint: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<Event, StoreError>>;
    /// Whether the store answers (for readiness, and to wait out an outage).
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The command's retry state (zero when it has none).
    #[cfg(test)]
    fn retry_state(&self, id: Uuid) -> BoxFuture<'_, Result<RetryState, StoreError>> {
        Box::pin(async move { Ok(self.look_up(id).await?.retry) })
    }
    /// Records the command's retry state durably; `None` forgets it (a fresh start).
    fn set_retry_state(
        &self,
        id: Uuid,
        state: Option<RetryState>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Forgets completed commands and intents older than the retention. Returns how many.
    fn prune(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// The accounts of the last complete sync, keyed by uid, and the staging area of the sync in
/// progress. Only a complete sync replaces the snapshot.
pub(crate) trait SnapshotStore: Send + Sync + 'static {
    /// Number of accounts in the last complete snapshot.
    #[cfg_attr(not(test), allow(dead_code))]
    fn snapshot_len(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Starts a sync: empties the staging snapshot.
    fn begin_staging(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Adds one page of accounts to the staging snapshot.
    fn stage(&self, entries: Vec<(String, SnapshotEntry)>)
    -> BoxFuture<'_, Result<(), StoreError>>;
    /// The accounts of the last complete snapshot that the staging snapshot lacks, in uid order,
    /// at most `limit` after `after`.
    fn missing_from_staging(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, SnapshotEntry)>, StoreError>>;
    /// Ends a complete sync: the staging snapshot becomes the snapshot, atomically.
    fn commit_staging(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
