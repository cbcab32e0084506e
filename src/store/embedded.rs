//! The embedded store under `CONNECTOR_STATE_DIR`: one redb file holding completed commands with
//! the event each produced, intents (a mutating call was about to be made), and the sync
//! snapshot. Every write is a committed, fsynced transaction, so it survives a crash. The
//! directory is created 0700 and the file 0600: it holds emails and events.

use super::{
    Claim, CommandLedger, Completion, Intent, RetryState, SnapshotEntry, SnapshotStore, StoreError,
};
use crate::event::Event;
use futures_util::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
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

/// The open database, shared by the two halves of the store.
#[derive(Clone)]
struct Db(Arc<Database>);

impl Db {
    /// Runs one transaction on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.0.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }
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
    let db = Db(Arc::new(db));
    Ok((
        EmbeddedLedger {
            db: db.clone(),
            retention,
            mine: Default::default(),
        },
        EmbeddedSnapshot { db },
    ))
}

impl CommandLedger for EmbeddedLedger {
    fn completed(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Completion>, StoreError>> {
        Box::pin(self.db.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(COMPLETED)?;
            match t.get(id.to_string().as_str())? {
                Some(v) => {
                    let c: Completed = serde_json::from_slice(v.value())?;
                    Ok(Some(Completion {
                        event: c.event,
                        fingerprint: c.fingerprint,
                    }))
                }
                None => Ok(None),
            }
        }))
    }

    fn retry_state(&self, id: Uuid) -> BoxFuture<'_, Result<RetryState, StoreError>> {
        Box::pin(self.db.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(RETRIES)?;
            match t.get(id.to_string().as_str())? {
                Some(v) => Ok(serde_json::from_slice::<Retry>(v.value())?.state),
                None => Ok(RetryState::default()),
            }
        }))
    }

    fn set_retry_state(
        &self,
        id: Uuid,
        state: Option<RetryState>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.db.blocking(move |db| {
            let key = id.to_string();
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(RETRIES)?;
                match state {
                    Some(state) => {
                        let v = serde_json::to_vec(&Retry { at: now(), state })?;
                        t.insert(key.as_str(), v.as_slice())?;
                    }
                    None => {
                        t.remove(key.as_str())?;
                    }
                }
            }
            Ok(tx.commit()?)
        }))
    }

    fn record_intent(&self, id: Uuid) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.db
                .blocking(move |db| {
                    let tx = db.begin_write()?;
                    tx.open_table(INTENTS)?
                        .insert(id.to_string().as_str(), now())?;
                    Ok(tx.commit()?)
                })
                .await?;
            self.mine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
            Ok(())
        })
    }

    fn intent(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Intent>, StoreError>> {
        let mine = self
            .mine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id);
        Box::pin(self.db.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(INTENTS)?;
            Ok(t.get(id.to_string().as_str())?.map(|at| Intent {
                age: Duration::from_secs(now().saturating_sub(at.value()).max(0) as u64),
                by_another_process: !mine,
            }))
        }))
    }

    fn claim(&self, _id: Uuid) -> BoxFuture<'_, Result<Claim, StoreError>> {
        // The file is locked by this process alone; same-email commands are sequenced in memory.
        Box::pin(async { Ok(Claim::local()) })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
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
                .blocking(move |db| {
                    let key = id.to_string();
                    let tx = db.begin_write()?;
                    let recorded = {
                        let mut t = tx.open_table(COMPLETED)?;
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
                    tx.commit()?;
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
        Box::pin(self.db.blocking(move |db| {
            let tx = db.begin_write()?;
            let mut removed = 0u64;
            {
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
            }
            tx.commit()?;
            Ok(removed)
        }))
    }
}

impl SnapshotStore for EmbeddedSnapshot {
    fn snapshot_len(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.db.blocking(|db| {
            let tx = db.begin_read()?;
            Ok(tx.open_table(SNAPSHOT)?.len()?)
        }))
    }

    fn begin_staging(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.db.blocking(|db| {
            let tx = db.begin_write()?;
            tx.delete_table(STAGING)?;
            tx.open_table(STAGING)?;
            Ok(tx.commit()?)
        }))
    }

    fn stage(
        &self,
        entries: Vec<(String, SnapshotEntry)>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.db.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(STAGING)?;
                for (uid, e) in &entries {
                    let v = serde_json::to_vec(e)?;
                    t.insert(uid.as_str(), v.as_slice())?;
                }
            }
            Ok(tx.commit()?)
        }))
    }

    fn missing_from_staging(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, SnapshotEntry)>, StoreError>> {
        Box::pin(self.db.blocking(move |db| {
            let tx = db.begin_read()?;
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
        Box::pin(self.db.blocking(|db| {
            let tx = db.begin_write()?;
            tx.delete_table(SNAPSHOT)?;
            tx.rename_table(STAGING, SNAPSHOT)?;
            tx.open_table(STAGING)?;
            Ok(tx.commit()?)
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
}
