//! The embedded store under `CONNECTOR_STATE_DIR`: one redb file holding completed commands with
//! the event each produced, intents (a mutating call was about to be made), and the sync
//! snapshot. Every write is a committed, fsynced transaction, so it survives a crash. The
//! directory is created 0700 and the file 0600: it holds emails and events.
//!
//! Writes are group-committed: one writer thread owns redb's write side. A caller sends its write
//! over a channel and waits; the writer takes every write queued (at most [`MAX_BATCH`]),
//! applies them in order in one write transaction, commits it durably, and only then answers
//! each caller. A caller's write is therefore durable when its future resolves `Ok`; a failed
//! commit fails every write of its batch. Reads are short read transactions run in place: they
//! never wait for the writer or its fsync (redb holds no lock across the flush).

use super::{
    Claim, CommandLedger, Completion, Intent, Record, RetryState, SnapshotEntry, SnapshotStore,
    StoreError,
};
use crate::event::Event;
use futures_util::future::BoxFuture;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;
use uuid::Uuid;

const COMPLETED: TableDefinition<&str, &[u8]> = TableDefinition::new("completed");
const INTENTS: TableDefinition<&str, i64> = TableDefinition::new("intents");
const RETRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("retries");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const STAGING: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot_staging");

/// Page cache of the store.
const CACHE_BYTES: usize = 1 << 20;

/// The file name inside the state directory.
const FILE_NAME: &str = "ledger.redb";

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

#[derive(Serialize, Deserialize)]
struct Completed {
    at: i64,
    event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Retry {
    at: i64,
    state: RetryState,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// How the writer answers a caller once its batch's commit succeeded or failed.
type Answer = Box<dyn FnOnce(Result<(), &Arc<StoreError>>) + Send>;

/// A write that failed while applied.
enum Failed {
    /// Before writing anything: its caller is answered, the batch goes on.
    Refused,
    /// Possibly partway: the whole batch is given up.
    Broken(StoreError, Answer),
}

/// One caller's write. Given the batch's transaction it applies itself; given none (the batch
/// failed before its turn) it writes nothing. Either way it returns how to answer its caller.
type Job = Box<dyn FnOnce(Option<&WriteTransaction>) -> Result<Answer, Failed> + Send>;

/// The open database and its writer thread, shared by the two halves of the store. Dropping
/// the last handle stops the writer and waits for it, so the file is closed (and can be
/// reopened) once the store is dropped.
struct Shared {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Write transactions committed by the writer.
    #[cfg(test)]
    commits: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[derive(Clone)]
struct Db(Arc<Shared>);

impl Db {
    fn start(db: Database) -> Result<Db, StoreError> {
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel::<Job>();
        #[cfg(test)]
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let db = db.clone();
            #[cfg(test)]
            let commits = commits.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || {
                    while let Ok(first) = queue.recv() {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match queue.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                        let committed = write_batch(&db, batch);
                        #[cfg(test)]
                        if committed {
                            commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        #[cfg(not(test))]
                        let _ = committed;
                    }
                })
                .map_err(|e| StoreError::Storage(redb::StorageError::Io(e)))?
        };
        Ok(Db(Arc::new(Shared {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            #[cfg(test)]
            commits,
        })))
    }

    /// Runs one short read transaction in place.
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&self.0.db.begin_read()?)
    }

    /// Runs one read transaction on the blocking pool (for reads that may be long).
    async fn blocking_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.0.db.clone();
        tokio::task::spawn_blocking(move || f(&db.begin_read()?)).await?
    }

    /// Applies `f` in the writer's next batch; resolves once that batch is durably committed.
    /// `f` may fail with [`StoreError::Codec`] only before it writes anything: that error is
    /// its alone. Any other error gives up the whole batch.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, result) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |tx| {
            let Some(tx) = tx else {
                return Ok(answer_with(answer, None));
            };
            match f(tx) {
                Ok(v) => Ok(answer_with(answer, Some(v))),
                Err(e @ StoreError::Codec(_)) => {
                    let _ = answer.send(Err(e));
                    Err(Failed::Refused)
                }
                Err(e) => Err(Failed::Broken(e, answer_with(answer, None))),
            }
        });
        let jobs = self.0.jobs.as_ref().ok_or(StoreError::WriterStopped)?;
        jobs.send(job).map_err(|_| StoreError::WriterStopped)?;
        result.await.map_err(|_| StoreError::WriterStopped)?
    }

    #[cfg(test)]
    fn commits(&self) -> u64 {
        self.0.commits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Answers a caller with its value once its batch committed, or with the batch's failure.
fn answer_with<T: Send + 'static>(
    answer: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    value: Option<T>,
) -> Answer {
    Box::new(move |committed| {
        let _ = answer.send(match (committed, value) {
            (Ok(()), Some(v)) => Ok(v),
            // Not applied, yet committed: cannot happen (a batch that skips a write fails).
            (Ok(()), None) => Err(StoreError::WriterStopped),
            (Err(e), _) => Err(StoreError::Batch(e.clone())),
        });
    })
}

/// Applies a batch in one write transaction and commits it, then answers every caller. Returns
/// whether it committed.
fn write_batch(db: &Database, batch: Vec<Job>) -> bool {
    let mut answers = Vec::with_capacity(batch.len());
    let (tx, mut failure) = match db.begin_write() {
        Ok(tx) => (Some(tx), None),
        Err(e) => (None, Some(StoreError::from(e))),
    };
    for job in batch {
        let target = if failure.is_none() { tx.as_ref() } else { None };
        match job(target) {
            Ok(answer) => answers.push(answer),
            Err(Failed::Refused) => {}
            Err(Failed::Broken(e, answer)) => {
                answers.push(answer);
                failure = Some(e);
            }
        }
    }
    let outcome = match (tx, failure) {
        (Some(tx), None) => tx.commit().map_err(|e| Arc::new(StoreError::from(e))),
        (tx, Some(e)) => {
            if let Some(tx) = tx {
                let _ = tx.abort();
            }
            Err(Arc::new(e))
        }
        (None, None) => unreachable!("a batch without a transaction has a failure"),
    };
    for answer in answers {
        answer(outcome.as_ref().map(|_| ()));
    }
    outcome.is_ok()
}

/// The command ledger half of the embedded store.
#[derive(Clone)]
pub(crate) struct EmbeddedLedger {
    db: Db,
    retention: Duration,
    /// The intents this process recorded (and has not completed): any other intent in the file
    /// was recorded by an earlier run.
    mine: Arc<std::sync::Mutex<std::collections::HashSet<Uuid>>>,
}

/// The sync snapshot half of the embedded store.
#[derive(Clone)]
pub(crate) struct EmbeddedSnapshot {
    db: Db,
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn make_private(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Opens (or creates) the store in `dir`. Fails if another process holds it.
pub(crate) fn open(
    dir: &Path,
    retention: Duration,
) -> Result<(EmbeddedLedger, EmbeddedSnapshot), StoreError> {
    let dir_error = |source| StoreError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    create_private_dir(dir).map_err(dir_error)?;
    let path = dir.join(FILE_NAME);
    // A small page cache: the store's memory stays bounded however large the snapshot grows.
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
    make_private(&path).map_err(dir_error)?;
    let tx = db.begin_write()?;
    tx.open_table(COMPLETED)?;
    tx.open_table(INTENTS)?;
    tx.open_table(RETRIES)?;
    tx.open_table(SNAPSHOT)?;
    tx.open_table(STAGING)?;
    tx.commit()?;
    let db = Db::start(db)?;
    Ok((
        EmbeddedLedger {
            db: db.clone(),
            retention,
            mine: Default::default(),
        },
        EmbeddedSnapshot { db },
    ))
}

impl EmbeddedLedger {
    /// What the ledger holds for the command, in one short read transaction.
    fn record(&self, id: Uuid) -> Result<Record, StoreError> {
        let mine = self
            .mine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id);
        let key = id.to_string();
        self.db.read(|tx| {
            let completion = match tx.open_table(COMPLETED)?.get(key.as_str())? {
                Some(v) => {
                    let c: Completed = serde_json::from_slice(v.value())?;
                    Some(Completion {
                        event: c.event,
                        fingerprint: c.fingerprint,
                    })
                }
                None => None,
            };
            let intent = tx.open_table(INTENTS)?.get(key.as_str())?.map(|at| Intent {
                age: Duration::from_secs(now().saturating_sub(at.value()).max(0) as u64),
                by_another_process: !mine,
            });
            let retry = match tx.open_table(RETRIES)?.get(key.as_str())? {
                Some(v) => serde_json::from_slice::<Retry>(v.value())?.state,
                None => RetryState::default(),
            };
            Ok(Record {
                completion,
                intent,
                retry,
            })
        })
    }
}

impl CommandLedger for EmbeddedLedger {
    fn claim(&self, id: Uuid) -> BoxFuture<'_, Result<(Claim, Record), StoreError>> {
        // The file is locked by this process alone; same-email commands are sequenced in memory.
        Box::pin(async move { Ok((Claim::local(), self.record(id)?)) })
    }

    #[cfg(test)]
    fn look_up(&self, id: Uuid) -> BoxFuture<'_, Result<Record, StoreError>> {
        Box::pin(async move { self.record(id) })
    }

    fn set_retry_state(
        &self,
        id: Uuid,
        state: Option<RetryState>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let value = state
            .map(|state| serde_json::to_vec(&Retry { at: now(), state }))
            .transpose();
        Box::pin(async move {
            let value = value?;
            self.db
                .write(move |tx| {
                    let key = id.to_string();
                    let mut t = tx.open_table(RETRIES)?;
                    match value {
                        Some(v) => {
                            t.insert(key.as_str(), v.as_slice())?;
                        }
                        None => {
                            t.remove(key.as_str())?;
                        }
                    }
                    Ok(())
                })
                .await
        })
    }

    fn record_intent(&self, id: Uuid) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.db
                .write(move |tx| {
                    tx.open_table(INTENTS)?
                        .insert(id.to_string().as_str(), now())?;
                    Ok(())
                })
                .await?;
            self.mine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
            Ok(())
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let stopped = self.db.0.writer.as_ref().is_none_or(|w| w.is_finished());
        Box::pin(async move {
            if stopped {
                return Err(StoreError::WriterStopped);
            }
            Ok(())
        })
    }

    fn complete<'a>(
        &'a self,
        id: Uuid,
        fingerprint: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<Event, StoreError>> {
        let value = serde_json::to_vec(&Completed {
            at: now(),
            event: event.clone(),
            fingerprint: Some(fingerprint.to_string()),
        });
        let event = event.clone();
        Box::pin(async move {
            let value = value?;
            let recorded = self
                .db
                .write(move |tx| {
                    let key = id.to_string();
                    let recorded = {
                        let mut t = tx.open_table(COMPLETED)?;
                        // Read (and decode) before writing anything: a record that cannot be
                        // decoded fails this write alone.
                        let earlier = match t.get(key.as_str())? {
                            Some(v) => Some(serde_json::from_slice::<Completed>(v.value())?.event),
                            None => None,
                        };
                        match earlier {
                            Some(e) => e,
                            None => {
                                t.insert(key.as_str(), value.as_slice())?;
                                event
                            }
                        }
                    };
                    tx.open_table(INTENTS)?.remove(key.as_str())?;
                    tx.open_table(RETRIES)?.remove(key.as_str())?;
                    Ok(recorded)
                })
                .await?;
            self.mine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            Ok(recorded)
        })
    }

    fn prune(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let cutoff = now() - self.retention.as_secs() as i64;
        Box::pin(self.db.write(move |tx| {
            let mut removed = 0u64;
            let mut t = tx.open_table(COMPLETED)?;
            t.retain(|_, v| {
                let keep = serde_json::from_slice::<Completed>(v)
                    .map(|c| c.at >= cutoff)
                    .unwrap_or(false);
                removed += u64::from(!keep);
                keep
            })?;
            let mut t = tx.open_table(INTENTS)?;
            t.retain(|_, at| {
                removed += u64::from(at < cutoff);
                at >= cutoff
            })?;
            let mut t = tx.open_table(RETRIES)?;
            t.retain(|_, v| {
                let keep = serde_json::from_slice::<Retry>(v)
                    .map(|r| r.at >= cutoff)
                    .unwrap_or(false);
                removed += u64::from(!keep);
                keep
            })?;
            Ok(removed)
        }))
    }
}

impl SnapshotStore for EmbeddedSnapshot {
    fn snapshot_len(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.db.read(|tx| Ok(tx.open_table(SNAPSHOT)?.len()?)) })
    }

    fn begin_staging(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.db.write(|tx| {
            tx.delete_table(STAGING)?;
            tx.open_table(STAGING)?;
            Ok(())
        }))
    }

    fn stage(
        &self,
        entries: Vec<(String, SnapshotEntry)>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        // Encoded before the write: an entry that cannot be encoded fails this page alone.
        let values = entries
            .iter()
            .map(|(_, e)| serde_json::to_vec(e))
            .collect::<Result<Vec<_>, _>>();
        Box::pin(async move {
            let values = values?;
            self.db
                .write(move |tx| {
                    let mut t = tx.open_table(STAGING)?;
                    for ((uid, _), v) in entries.iter().zip(&values) {
                        t.insert(uid.as_str(), v.as_slice())?;
                    }
                    Ok(())
                })
                .await
        })
    }

    fn missing_from_staging(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, SnapshotEntry)>, StoreError>> {
        // May walk much of the snapshot: on the blocking pool.
        Box::pin(self.db.blocking_read(move |tx| {
            let snap = tx.open_table(SNAPSHOT)?;
            let staging = tx.open_table(STAGING)?;
            let mut out = Vec::new();
            let rows = match &after {
                Some(a) => snap.range::<&str>((
                    std::ops::Bound::Excluded(a.as_str()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => snap.iter()?,
            };
            for row in rows {
                let (k, v) = row?;
                if staging.get(k.value())?.is_none() {
                    let e: SnapshotEntry = serde_json::from_slice(v.value())?;
                    out.push((k.value().to_string(), e));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        }))
    }

    fn commit_staging(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.db.write(|tx| {
            tx.delete_table(SNAPSHOT)?;
            tx.rename_table(STAGING, SNAPSHOT)?;
            tx.open_table(STAGING)?;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_state_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _ = open(&state, Duration::from_secs(60)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(FILE_NAME)), 0o600);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_are_group_committed_and_durable() {
        const WRITES: usize = 500;
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<Uuid> = (0..WRITES).map(|_| Uuid::new_v4()).collect();
        {
            let (l, _) = open(dir.path(), Duration::from_secs(3600)).unwrap();
            let l = Arc::new(l);
            let before = l.db.commits();
            let tasks: Vec<_> = ids
                .iter()
                .map(|&id| {
                    let l = l.clone();
                    tokio::spawn(async move {
                        let e = Event::for_tests(id);
                        assert_eq!(l.complete(id, "fp", &e).await.unwrap(), e);
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let commits = l.db.commits() - before;
            assert!(
                commits < WRITES as u64,
                "{WRITES} writes in {commits} commits: not coalesced"
            );
        }
        let (l, _) = open(dir.path(), Duration::from_secs(3600)).unwrap();
        for &id in &ids {
            let c = l
                .completed(id)
                .await
                .unwrap()
                .expect("durable after a reopen");
            assert_eq!(c.event, Event::for_tests(id));
        }
    }

    #[tokio::test]
    async fn a_write_that_cannot_be_applied_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (l, _) = open(dir.path(), Duration::from_secs(3600)).unwrap();
        let bad = Uuid::new_v4();
        // A completion record that cannot be decoded makes a later completion of it fail.
        l.db.write(move |tx| {
            tx.open_table(COMPLETED)?
                .insert(bad.to_string().as_str(), b"not json".as_slice())?;
            Ok(())
        })
        .await
        .unwrap();
        let good = Uuid::new_v4();
        let (bad_event, good_event) = (Event::for_tests(bad), Event::for_tests(good));
        let (a, b) = tokio::join!(
            l.complete(bad, "fp", &bad_event),
            l.complete(good, "fp", &good_event),
        );
        assert!(matches!(a, Err(StoreError::Codec(_))), "{a:?}");
        assert_eq!(b.unwrap(), Event::for_tests(good));
        assert!(l.completed(good).await.unwrap().is_some());
    }
}
