//! The embedded state under `CONNECTOR_STATE_DIR` (one redb file): completed commands with the
//! event each produced, intents (a mutating call was about to be made), and the last complete
//! sync snapshot. Every write is a committed, fsynced transaction, so it survives a crash.

use crate::event::Event;
use crate::status::AccountStatus;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const COMPLETED: TableDefinition<&str, &[u8]> = TableDefinition::new("completed");
const INTENTS: TableDefinition<&str, i64> = TableDefinition::new("intents");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const STAGING: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot_staging");

/// Page cache of the store.
const CACHE_BYTES: usize = 1 << 20;

/// The file name inside the state directory.
pub const FILE_NAME: &str = "ledger.redb";

#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct LedgerError(String);

fn err(e: impl std::fmt::Display) -> LedgerError {
    LedgerError(e.to_string())
}

#[derive(Serialize, Deserialize)]
struct Completed {
    at: i64,
    event: Event,
}

/// One account in the sync snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    pub email: String,
    pub status: AccountStatus,
}

/// Handle to the store; cheap to clone. Every method runs its transaction on the blocking pool.
#[derive(Clone)]
pub struct Ledger {
    db: Arc<Database>,
    retention: Duration,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Ledger {
    /// Opens (or creates) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path, retention: Duration) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        // A small page cache: the store's memory stays bounded however large the snapshot grows.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(COMPLETED).map_err(err)?;
        tx.open_table(INTENTS).map_err(err)?;
        tx.open_table(SNAPSHOT).map_err(err)?;
        tx.open_table(STAGING).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Ledger {
            db: Arc::new(db),
            retention,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(err)?
    }

    /// The event of a completed command, if it completed (and was not pruned).
    pub async fn completed(&self, id: Uuid) -> Result<Option<Event>, LedgerError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(COMPLETED).map_err(err)?;
            match t.get(id.to_string().as_str()).map_err(err)? {
                Some(v) => {
                    let c: Completed = serde_json::from_slice(v.value()).map_err(err)?;
                    Ok(Some(c.event))
                }
                None => Ok(None),
            }
        })
        .await
    }

    /// Records that a mutating call for this command is about to be made.
    pub async fn record_intent(&self, id: Uuid) -> Result<(), LedgerError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(INTENTS)
                .map_err(err)?
                .insert(id.to_string().as_str(), now())
                .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    /// Whether an earlier attempt of this command recorded an intent.
    pub async fn had_intent(&self, id: Uuid) -> Result<bool, LedgerError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(INTENTS).map_err(err)?;
            Ok(t.get(id.to_string().as_str()).map_err(err)?.is_some())
        })
        .await
    }

    /// Records a command as completed with its event; it will never be applied again.
    pub async fn complete(&self, id: Uuid, event: &Event) -> Result<(), LedgerError> {
        let value = serde_json::to_vec(&Completed {
            at: now(),
            event: event.clone(),
        })
        .map_err(err)?;
        self.blocking(move |db| {
            let key = id.to_string();
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(COMPLETED)
                .map_err(err)?
                .insert(key.as_str(), value.as_slice())
                .map_err(err)?;
            tx.open_table(INTENTS)
                .map_err(err)?
                .remove(key.as_str())
                .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    /// Forgets completed commands and intents older than the retention. Returns how many.
    pub async fn prune(&self) -> Result<u64, LedgerError> {
        let cutoff = now() - self.retention.as_secs() as i64;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            let mut removed = 0u64;
            {
                let mut t = tx.open_table(COMPLETED).map_err(err)?;
                t.retain(|_, v| {
                    let keep = serde_json::from_slice::<Completed>(v)
                        .map(|c| c.at >= cutoff)
                        .unwrap_or(false);
                    removed += u64::from(!keep);
                    keep
                })
                .map_err(err)?;
                let mut t = tx.open_table(INTENTS).map_err(err)?;
                t.retain(|_, at| {
                    removed += u64::from(at < cutoff);
                    at >= cutoff
                })
                .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(removed)
        })
        .await
    }

    // --- the sync snapshot -----------------------------------------------------------------

    /// Number of accounts in the last complete snapshot.
    pub async fn snapshot_len(&self) -> Result<u64, LedgerError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            tx.open_table(SNAPSHOT).map_err(err)?.len().map_err(err)
        })
        .await
    }

    /// The whole last complete snapshot (for tests and small tools; the sync never loads it).
    pub async fn snapshot(&self) -> Result<Vec<(String, SnapshotEntry)>, LedgerError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(SNAPSHOT).map_err(err)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let e: SnapshotEntry = serde_json::from_slice(v.value()).map_err(err)?;
                out.push((k.value().to_string(), e));
            }
            Ok(out)
        })
        .await
    }

    /// Starts a sync: empties the staging snapshot.
    pub async fn begin_staging(&self) -> Result<(), LedgerError> {
        self.blocking(|db| {
            let tx = db.begin_write().map_err(err)?;
            tx.delete_table(STAGING).map_err(err)?;
            tx.open_table(STAGING).map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    /// Adds one page of accounts to the staging snapshot.
    pub async fn stage(&self, entries: Vec<(String, SnapshotEntry)>) -> Result<(), LedgerError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(STAGING).map_err(err)?;
                for (uid, e) in &entries {
                    let v = serde_json::to_vec(e).map_err(err)?;
                    t.insert(uid.as_str(), v.as_slice()).map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    /// The accounts of the last complete snapshot that the staging snapshot lacks (and that were
    /// not already Deprovisioned), in uid order, at most `limit` after `after`.
    pub async fn missing_from_staging(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(String, SnapshotEntry)>, LedgerError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let snap = tx.open_table(SNAPSHOT).map_err(err)?;
            let staging = tx.open_table(STAGING).map_err(err)?;
            let mut out = Vec::new();
            let rows = match &after {
                Some(a) => snap
                    .range::<&str>((
                        std::ops::Bound::Excluded(a.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .map_err(err)?,
                None => snap.iter().map_err(err)?,
            };
            for row in rows {
                let (k, v) = row.map_err(err)?;
                if staging.get(k.value()).map_err(err)?.is_none() {
                    let e: SnapshotEntry = serde_json::from_slice(v.value()).map_err(err)?;
                    out.push((k.value().to_string(), e));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Ends a complete sync: the staging snapshot becomes the snapshot, atomically.
    pub async fn commit_staging(&self) -> Result<(), LedgerError> {
        self.blocking(|db| {
            let tx = db.begin_write().map_err(err)?;
            tx.delete_table(SNAPSHOT).map_err(err)?;
            tx.rename_table(STAGING, SNAPSHOT).map_err(err)?;
            tx.open_table(STAGING).map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Uuid) -> Event {
        Event {
            id,
            routing_key: "user.suspended".into(),
            body: "{}".into(),
            correlation_id: None,
        }
    }

    #[tokio::test]
    async fn completed_commands_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            let l = Ledger::open(dir.path(), Duration::from_secs(3600)).unwrap();
            assert_eq!(l.completed(id).await.unwrap(), None);
            l.record_intent(id).await.unwrap();
            assert!(l.had_intent(id).await.unwrap());
            l.complete(id, &event(id)).await.unwrap();
            assert!(
                !l.had_intent(id).await.unwrap(),
                "completion clears the intent"
            );
        }
        let l = Ledger::open(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(l.completed(id).await.unwrap(), Some(event(id)));
    }

    #[tokio::test]
    async fn pruning_forgets_only_what_is_older_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let keep = Ledger::open(dir.path(), Duration::from_secs(3600)).unwrap();
        keep.complete(id, &event(id)).await.unwrap();
        assert_eq!(keep.prune().await.unwrap(), 0);
        assert!(keep.completed(id).await.unwrap().is_some());
        drop(keep);
        // A retention of zero with a clock a second later forgets it.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let forget = Ledger::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(forget.prune().await.unwrap(), 1);
        assert!(forget.completed(id).await.unwrap().is_none());
    }

    fn entry(email: &str) -> SnapshotEntry {
        SnapshotEntry {
            email: email.into(),
            status: AccountStatus::Active,
        }
    }

    #[tokio::test]
    async fn staging_replaces_the_snapshot_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path(), Duration::from_secs(60)).unwrap();
        l.begin_staging().await.unwrap();
        l.stage(vec![
            ("1".into(), entry("a@x.io")),
            ("2".into(), entry("b@x.io")),
        ])
        .await
        .unwrap();
        l.commit_staging().await.unwrap();
        assert_eq!(l.snapshot_len().await.unwrap(), 2);

        // An interrupted sync leaves the snapshot alone.
        l.begin_staging().await.unwrap();
        l.stage(vec![("2".into(), entry("b@x.io"))]).await.unwrap();
        assert_eq!(l.snapshot_len().await.unwrap(), 2);
        let missing = l.missing_from_staging(None, 10).await.unwrap();
        assert_eq!(missing, vec![("1".to_string(), entry("a@x.io"))]);
        // A restart of the sync starts the staging over.
        l.begin_staging().await.unwrap();
        assert_eq!(l.missing_from_staging(None, 10).await.unwrap().len(), 2);
        assert_eq!(
            l.missing_from_staging(Some("1".into()), 10).await.unwrap(),
            vec![("2".to_string(), entry("b@x.io"))]
        );
    }
}
