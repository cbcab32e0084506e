//! The shared store in PostgreSQL (`CONNECTOR_STATE_URL`): the same ledger and snapshot as the
//! embedded store, in tables every replica of a prefix reads and writes, so a command completed
//! by one replica is a completed command for all of them.
//!
//! - Every table has a `prefix` column: several prefixes (deployments) share one database.
//! - The schema is created and migrated at start by versioned migrations in one transaction
//!   under an advisory lock, so two replicas starting at once apply each migration once.
//! - Times are the database's (`now()`), so replicas with skewed clocks agree on ages.
//! - A command is claimed with a session-level advisory lock held on a dedicated connection for
//!   as long as the command is processed: a second replica waits for it, and the lock goes
//!   with the connection when the holder dies.
//! - TLS (rustls with the platform's roots) when the URL says `sslmode=require`.
//! - Group commit: intents and completions, the two writes on every command's path, go to one
//!   writer task that takes whatever is queued (at most [`MAX_BATCH`]) and writes it in one
//!   transaction with set-based statements, so concurrent commands share one commit (one WAL
//!   flush). A caller's write is durable when its future resolves `Ok`; a failed transaction
//!   fails every write of its batch (the caller gives its delivery back, as for any store error).

use super::{
    Claim, CommandLedger, Completion, Intent, Record, RetryState, SnapshotEntry, SnapshotStore,
    StoreError,
};
use crate::event::Event;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tracing::info;
use uuid::Uuid;

/// What opening the shared store needs.
#[derive(Clone)]
pub(crate) struct PgSettings {
    /// `postgres://…` (it may hold a password).
    pub url: SecretString,
    pub prefix: String,
    pub retention: Duration,
    /// Commands processed at once: each holds one claim connection.
    pub concurrency: usize,
}

/// The schema, version by version. A migration is never edited once released: add one.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "ledger and sync snapshot",
    r#"
CREATE TABLE lpc_completed (
    prefix      text        NOT NULL,
    command_id  uuid        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    fingerprint text,
    event       text        NOT NULL,
    PRIMARY KEY (prefix, command_id)
);
CREATE INDEX lpc_completed_at ON lpc_completed (prefix, at);
CREATE TABLE lpc_intents (
    prefix     text        NOT NULL,
    command_id uuid        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    owner      text        NOT NULL,
    PRIMARY KEY (prefix, command_id)
);
CREATE TABLE lpc_retries (
    prefix     text        NOT NULL,
    command_id uuid        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    round      integer     NOT NULL,
    attempts   integer     NOT NULL,
    PRIMARY KEY (prefix, command_id)
);
CREATE TABLE lpc_snapshot (
    prefix text             NOT NULL,
    uid    text COLLATE "C" NOT NULL,
    entry  text             NOT NULL,
    PRIMARY KEY (prefix, uid)
);
CREATE TABLE lpc_snapshot_staging (
    prefix text             NOT NULL,
    uid    text COLLATE "C" NOT NULL,
    entry  text             NOT NULL,
    PRIMARY KEY (prefix, uid)
);
"#,
)];

#[cfg(test)]
pub(crate) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The advisory lock that serialises migrations ("lpc_migr").
const MIGRATION_LOCK: i64 = 0x6c70_635f_6d69_6772;

/// How often a claim held by another replica is tried again.
const CLAIM_POLL: Duration = Duration::from_millis(200);

/// Takes a command's claim (`$1` its lock key) without waiting.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";

/// What the ledger holds for one command (`$1` the prefix, `$2` the command id, `$3` this
/// process as intents record it), in one statement that always answers one row.
const LOOK_UP: &str = "SELECT c.event, c.fingerprint, i.owner <> $3, \
     extract(epoch FROM now() - i.at)::float8, r.round, r.attempts \
     FROM (VALUES (1)) AS one (x) \
     LEFT JOIN lpc_completed c ON c.prefix = $1 AND c.command_id = $2 \
     LEFT JOIN lpc_intents i ON i.prefix = $1 AND i.command_id = $2 \
     LEFT JOIN lpc_retries r ON r.prefix = $1 AND r.command_id = $2";

/// Decodes a [`LOOK_UP`] row.
fn record_from(row: &tokio_postgres::Row) -> Result<Record, StoreError> {
    let completion = match row.get::<_, Option<&str>>(0) {
        Some(event) => Some(Completion {
            event: serde_json::from_str(event)?,
            fingerprint: row.get(1),
        }),
        None => None,
    };
    // `owner` is never NULL in its table: NULL here means there is no intent.
    let intent = row
        .get::<_, Option<bool>>(2)
        .map(|by_another_process| Intent {
            by_another_process,
            age: Duration::try_from_secs_f64(row.get::<_, Option<f64>>(3).unwrap_or(0.0).max(0.0))
                .unwrap_or(Duration::MAX),
        });
    let retry = match (row.get::<_, Option<i32>>(4), row.get::<_, Option<i32>>(5)) {
        (Some(round), Some(attempts)) => RetryState {
            round: round.max(0) as u32,
            attempts: attempts.max(0) as u32,
        },
        _ => RetryState::default(),
    };
    Ok(Record {
        completion,
        intent,
        retry,
    })
}

/// Checks that `url` is a PostgreSQL URL the driver accepts, before anything connects. The
/// reason never repeats the URL (it may hold a password).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("it must start with postgres:// or postgresql://".into());
    }
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    if config.get_hosts().is_empty() {
        return Err("it names no host".into());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    // A replica that loses its database quietly (no RST) finds out within a minute, and a
    // claim it held is released by the server as soon as the server notices.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(15));
    Ok(config)
}

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Database { what, source }
}

fn build_pool(
    config: tokio_postgres::Config,
    size: usize,
    recycling_method: RecyclingMethod,
) -> Result<Pool, StoreError> {
    let mc = ManagerConfig { recycling_method };
    let manager = if matches!(config.get_ssl_mode(), SslMode::Require) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        use rustls_platform_verifier::ConfigVerifierExt;
        let tls = rustls::ClientConfig::with_platform_verifier()
            .map_err(|e| StoreError::Schema(format!("cannot set up TLS: {e}")))?;
        Manager::from_config(
            config,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            mc,
        )
    } else {
        // sslmode=disable or prefer: plain TCP (TLS only when the URL requires it).
        Manager::from_config(config, NoTls, mc)
    };
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Schema(format!("cannot build the connection pool: {e}")))
}

/// Most writes in one group-committed transaction.
const MAX_BATCH: usize = 256;

/// A write the writer task commits together with the others queued.
enum PgWrite {
    Intent(Uuid),
    Complete {
        id: Uuid,
        fingerprint: String,
        event: String,
    },
}

/// The writer's answer: for a completion, the event recorded earlier, if one was.
type WriteReply = tokio::sync::oneshot::Sender<Result<Option<String>, StoreError>>;

struct Shared {
    pool: Pool,
    /// To the writer task (which ends when this is dropped).
    writes: tokio::sync::mpsc::UnboundedSender<(PgWrite, WriteReply)>,
    /// Transactions the writer committed.
    #[cfg(test)]
    commits: Arc<std::sync::atomic::AtomicU64>,
    /// Connections that hold claims (advisory locks), one per command in flight.
    claims: Pool,
    prefix: String,
    /// This process, as recorded with its intents.
    owner: String,
}

impl Shared {
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(StoreError::DatabasePool)
    }

    /// Queues `write` for the writer's next transaction; resolves once that is committed.
    async fn write(&self, write: PgWrite) -> Result<Option<String>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writes
            .send((write, reply))
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// The writer task: one transaction for whatever writes are queued, then every caller answered.
async fn writer(
    pool: Pool,
    prefix: String,
    owner: String,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<(PgWrite, WriteReply)>,
    #[cfg(test)] commits: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        match write_batch(&pool, &prefix, &owner, &batch).await {
            Ok(earlier) => {
                #[cfg(test)]
                commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (write, reply) in batch {
                    let recorded = match write {
                        PgWrite::Complete { id, .. } => earlier.get(&id).cloned(),
                        PgWrite::Intent(_) => None,
                    };
                    let _ = reply.send(Ok(recorded));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Batch(e.clone())));
                }
            }
        }
    }
}

/// Writes a batch in one transaction, one statement per kind of write: the intents, then the
/// completions (each keeps the first event recorded for its command: the earlier ones are
/// returned by command id), then the intents and retry states the completions end.
async fn write_batch(
    pool: &Pool,
    prefix: &String,
    owner: &String,
    batch: &[(PgWrite, WriteReply)],
) -> Result<std::collections::HashMap<Uuid, String>, StoreError> {
    let mut intents: Vec<Uuid> = Vec::new();
    let (mut ids, mut fingerprints, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for (write, _) in batch {
        match write {
            PgWrite::Intent(id) if !intents.contains(id) => intents.push(*id),
            PgWrite::Intent(_) => {}
            PgWrite::Complete {
                id,
                fingerprint,
                event,
            } if !ids.contains(id) => {
                ids.push(*id);
                fingerprints.push(fingerprint.as_str());
                events.push(event.as_str());
            }
            PgWrite::Complete { .. } => {}
        }
    }
    let mut c = pool.get().await.map_err(StoreError::DatabasePool)?;
    let tx = c.transaction().await.map_err(db("begin"))?;
    if !intents.is_empty() {
        let st = tx
            .prepare_cached(
                "INSERT INTO lpc_intents (prefix, command_id, at, owner) \
                 SELECT $1::text, id, now(), $3::text FROM unnest($2::uuid[]) AS t(id) \
                 ON CONFLICT (prefix, command_id) DO UPDATE SET at = now(), owner = excluded.owner",
            )
            .await
            .map_err(db("recording intents"))?;
        tx.execute(&st, &[prefix, &intents, owner])
            .await
            .map_err(db("recording intents"))?;
    }
    let mut earlier = std::collections::HashMap::new();
    if !ids.is_empty() {
        let st = tx
            .prepare_cached(
                "INSERT INTO lpc_completed (prefix, command_id, at, fingerprint, event) \
                 SELECT $1::text, c.id, now(), c.f, c.e \
                 FROM unnest($2::uuid[], $3::text[], $4::text[]) AS c(id, f, e) \
                 ON CONFLICT (prefix, command_id) DO NOTHING RETURNING command_id",
            )
            .await
            .map_err(db("recording completions"))?;
        let inserted: std::collections::HashSet<Uuid> = tx
            .query(&st, &[prefix, &ids, &fingerprints, &events])
            .await
            .map_err(db("recording completions"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let others: Vec<Uuid> = ids
            .iter()
            .filter(|id| !inserted.contains(id))
            .copied()
            .collect();
        if !others.is_empty() {
            for row in tx
                .query(
                    "SELECT command_id, event FROM lpc_completed \
                     WHERE prefix = $1 AND command_id = ANY($2)",
                    &[prefix, &others],
                )
                .await
                .map_err(db("reading completions"))?
            {
                earlier.insert(row.get::<_, Uuid>(0), row.get::<_, String>(1));
            }
        }
        for sql in [
            "DELETE FROM lpc_intents WHERE prefix = $1 AND command_id = ANY($2)",
            "DELETE FROM lpc_retries WHERE prefix = $1 AND command_id = ANY($2)",
        ] {
            let st = tx
                .prepare_cached(sql)
                .await
                .map_err(db("clearing intents"))?;
            tx.execute(&st, &[prefix, &ids])
                .await
                .map_err(db("clearing intents"))?;
        }
    }
    tx.commit().await.map_err(db("committing"))?;
    Ok(earlier)
}

/// The command ledger half of the shared store.
#[derive(Clone)]
pub(crate) struct PgLedger {
    s: Arc<Shared>,
    retention: Duration,
}

/// The sync snapshot half of the shared store.
#[derive(Clone)]
pub(crate) struct PgSnapshot {
    s: Arc<Shared>,
}

/// Connects, creates or migrates the schema, and returns the two halves. Fails (for the caller
/// to retry) when the database cannot be reached.
pub(crate) async fn open(settings: &PgSettings) -> Result<(PgLedger, PgSnapshot), StoreError> {
    let mut config = parse_url(settings.url.expose_secret()).map_err(StoreError::Schema)?;
    if config.get_application_name().is_none() {
        config.application_name(format!("lastpass-connector {}", settings.prefix));
    }
    let pool = build_pool(
        config.clone(),
        settings.concurrency.clamp(1, 8) + 2,
        RecyclingMethod::Fast,
    )?;
    // A claim's connection goes back to the pool only once it is unlocked (see `PgClaim`).
    let claims = build_pool(config, settings.concurrency + 1, RecyclingMethod::Fast)?;
    migrate(&pool).await?;
    let owner = format!(
        "{} pid {} {}",
        hostname(),
        std::process::id(),
        Uuid::new_v4().simple()
    );
    let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(test)]
    let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(writer(
        pool.clone(),
        settings.prefix.clone(),
        owner.clone(),
        queue,
        #[cfg(test)]
        commits.clone(),
    ));
    let s = Arc::new(Shared {
        pool,
        writes,
        #[cfg(test)]
        commits,
        claims,
        prefix: settings.prefix.clone(),
        owner,
    });
    Ok((
        PgLedger {
            s: s.clone(),
            retention: settings.retention,
        },
        PgSnapshot { s },
    ))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(StoreError::DatabasePool)?;
    let tx = client.transaction().await.map_err(db("begin"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db("locking for migrations"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS lpc_schema_migrations (
            version     integer     PRIMARY KEY,
            description text        NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db("creating lpc_schema_migrations"))?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM lpc_schema_migrations",
            &[],
        )
        .await
        .map_err(db("reading the schema version"))?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Schema(format!(
            "the schema is at version {current}, newer than this connector knows ({latest}): \
             a newer connector migrated it; run that version"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(db("applying a migration"))?;
        tx.execute(
            "INSERT INTO lpc_schema_migrations (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await
        .map_err(db("recording a migration"))?;
        info!(version, description, "state database migrated");
    }
    tx.commit().await.map_err(db("committing migrations"))
}

/// The advisory lock key of a command id under a prefix.
fn lock_key(prefix: &str, id: Uuid) -> i64 {
    let name = Uuid::new_v5(&id, prefix.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&name.as_bytes()[..8]);
    i64::from_be_bytes(b)
}

/// A claim's connection, from before its lock is asked for until it is released. Dropping it
/// unlocks everything the connection holds and only then gives the connection back to the pool;
/// should that fail or never finish (the runtime stopping), the connection is closed instead,
/// which unlocks too. So a connection in the pool never holds a lock, even when the claiming
/// future was dropped halfway.
struct PgClaim(Option<Object>);

impl Drop for PgClaim {
    fn drop(&mut self) {
        let closing = Closing(self.0.take());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(closing.unlock());
        }
        // Without a runtime, `closing` is dropped here: the connection is closed.
    }
}

/// Closes the connection it holds when dropped (taking it out of the pool).
struct Closing(Option<Object>);

impl Closing {
    /// Unlocks everything the connection holds, then gives it back to the pool; should the
    /// unlock fail, or this future be dropped first, the connection is closed instead.
    async fn unlock(mut self) {
        if let Some(c) = &self.0
            && c.batch_execute("SELECT pg_advisory_unlock_all()")
                .await
                .is_ok()
        {
            // Clean: back to the pool.
            drop(self.0.take());
        }
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
impl PgLedger {
    /// Transactions the writer committed.
    pub(crate) fn commits(&self) -> u64 {
        self.s.commits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl CommandLedger for PgLedger {
    fn claim(&self, id: Uuid) -> BoxFuture<'_, Result<(Claim, Record), StoreError>> {
        Box::pin(async move {
            let key = lock_key(&self.s.prefix, id);
            let claim = PgClaim(Some(
                self.s
                    .claims
                    .get()
                    .await
                    .map_err(StoreError::DatabasePool)?,
            ));
            let c = claim.0.as_ref().expect("set above");
            let lock = c
                .prepare_cached(TRY_LOCK)
                .await
                .map_err(db("claiming a command"))?;
            let look = c
                .prepare_cached(LOOK_UP)
                .await
                .map_err(db("reading the ledger"))?;
            let mut waiting = false;
            loop {
                // Pipelined on one connection (one round trip). PostgreSQL runs them in order,
                // and the look-up, a statement of its own with its own snapshot, sees all that
                // was committed before the lock was taken: everything an earlier holder wrote.
                let lock_params: [&(dyn ToSql + Sync); 1] = [&key];
                let look_params: [&(dyn ToSql + Sync); 3] = [&self.s.prefix, &id, &self.s.owner];
                let (got, row) = tokio::join!(
                    c.query_one(&lock, &lock_params),
                    c.query_one(&look, &look_params)
                );
                let got: bool = got.map_err(db("claiming a command"))?.get(0);
                if got {
                    let record = record_from(&row.map_err(db("reading the ledger"))?)?;
                    return Ok((Claim(Some(Box::new(claim))), record));
                }
                if !waiting {
                    waiting = true;
                    info!("another replica is processing this command; waiting for it");
                }
                tokio::time::sleep(CLAIM_POLL).await;
            }
        })
    }

    #[cfg(test)]
    fn look_up(&self, id: Uuid) -> BoxFuture<'_, Result<Record, StoreError>> {
        Box::pin(async move {
            let c = self.s.client().await?;
            let look = c
                .prepare_cached(LOOK_UP)
                .await
                .map_err(db("reading the ledger"))?;
            let row = c
                .query_one(&look, &[&self.s.prefix, &id, &self.s.owner])
                .await
                .map_err(db("reading the ledger"))?;
            record_from(&row)
        })
    }

    fn record_intent(&self, id: Uuid) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.s.write(PgWrite::Intent(id)).await?;
            Ok(())
        })
    }

    fn complete<'a>(
        &'a self,
        id: Uuid,
        fingerprint: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<Event, StoreError>> {
        Box::pin(async move {
            let value = serde_json::to_string(event)?;
            let earlier = self
                .s
                .write(PgWrite::Complete {
                    id,
                    fingerprint: fingerprint.to_string(),
                    event: value,
                })
                .await?;
            match earlier {
                Some(json) => Ok(serde_json::from_str(&json)?),
                None => Ok(event.clone()),
            }
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let c = self.s.client().await?;
            c.simple_query("SELECT 1")
                .await
                .map_err(db("checking the connection"))?;
            Ok(())
        })
    }

    fn set_retry_state(
        &self,
        id: Uuid,
        state: Option<RetryState>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let c = self.s.client().await?;
            let p = &self.s.prefix;
            match state {
                Some(s) => {
                    let round = i32::try_from(s.round).unwrap_or(i32::MAX);
                    let attempts = i32::try_from(s.attempts).unwrap_or(i32::MAX);
                    c.execute(
                        "INSERT INTO lpc_retries (prefix, command_id, at, round, attempts) \
                         VALUES ($1, $2, now(), $3, $4) ON CONFLICT (prefix, command_id) \
                         DO UPDATE SET at = now(), round = excluded.round, attempts = excluded.attempts",
                        &[p, &id, &round, &attempts],
                    )
                    .await
                }
                None => {
                    c.execute(
                        "DELETE FROM lpc_retries WHERE prefix = $1 AND command_id = $2",
                        &[p, &id],
                    )
                    .await
                }
            }
            .map_err(db("writing a retry state"))?;
            Ok(())
        })
    }

    fn prune(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let c = self.s.client().await?;
            let retention = secs(self.retention);
            let mut removed = 0;
            for sql in [
                "DELETE FROM lpc_completed WHERE prefix = $1 AND at < now() - $2 * interval '1 second'",
                "DELETE FROM lpc_intents WHERE prefix = $1 AND at < now() - $2 * interval '1 second'",
                "DELETE FROM lpc_retries WHERE prefix = $1 AND at < now() - $2 * interval '1 second'",
            ] {
                removed += c
                    .execute(sql, &[&self.s.prefix, &retention])
                    .await
                    .map_err(db("pruning"))?;
            }
            Ok(removed)
        })
    }
}

impl SnapshotStore for PgSnapshot {
    fn snapshot_len(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let c = self.s.client().await?;
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM lpc_snapshot WHERE prefix = $1",
                    &[&self.s.prefix],
                )
                .await
                .map_err(db("counting the snapshot"))?
                .get(0);
            Ok(n.max(0) as u64)
        })
    }

    fn begin_staging(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let c = self.s.client().await?;
            c.execute(
                "DELETE FROM lpc_snapshot_staging WHERE prefix = $1",
                &[&self.s.prefix],
            )
            .await
            .map_err(db("emptying the staging snapshot"))?;
            Ok(())
        })
    }

    fn stage(
        &self,
        entries: Vec<(String, SnapshotEntry)>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // One statement per page; a uid twice in a page keeps its last entry.
            let mut page = BTreeMap::new();
            for (uid, e) in entries {
                page.insert(uid, serde_json::to_string(&e)?);
            }
            let (uids, values): (Vec<String>, Vec<String>) = page.into_iter().unzip();
            let c = self.s.client().await?;
            c.execute(
                "INSERT INTO lpc_snapshot_staging (prefix, uid, entry) \
                 SELECT $1, u, e FROM unnest($2::text[], $3::text[]) AS t(u, e) \
                 ON CONFLICT (prefix, uid) DO UPDATE SET entry = excluded.entry",
                &[&self.s.prefix, &uids, &values],
            )
            .await
            .map_err(db("staging a page"))?;
            Ok(())
        })
    }

    fn missing_from_staging(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, SnapshotEntry)>, StoreError>> {
        Box::pin(async move {
            let c = self.s.client().await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = c
                .query(
                    "SELECT s.uid, s.entry FROM lpc_snapshot s \
                     WHERE s.prefix = $1 AND ($2::text IS NULL OR s.uid > $2) \
                     AND NOT EXISTS (SELECT 1 FROM lpc_snapshot_staging t \
                                     WHERE t.prefix = $1 AND t.uid = s.uid) \
                     ORDER BY s.uid LIMIT $3",
                    &[&self.s.prefix, &after, &limit],
                )
                .await
                .map_err(db("comparing the snapshots"))?;
            rows.iter()
                .map(|row| {
                    let entry: SnapshotEntry = serde_json::from_str(row.get::<_, &str>(1))?;
                    Ok((row.get::<_, String>(0), entry))
                })
                .collect()
        })
    }

    fn commit_staging(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut c = self.s.client().await?;
            let tx = c.transaction().await.map_err(db("begin"))?;
            let p = &self.s.prefix;
            for sql in [
                "DELETE FROM lpc_snapshot WHERE prefix = $1",
                "INSERT INTO lpc_snapshot (prefix, uid, entry) \
                 SELECT prefix, uid, entry FROM lpc_snapshot_staging WHERE prefix = $1",
                "DELETE FROM lpc_snapshot_staging WHERE prefix = $1",
            ] {
                tx.execute(sql, &[p])
                    .await
                    .map_err(db("replacing the snapshot"))?;
            }
            tx.commit().await.map_err(db("committing the snapshot"))
        })
    }
}

/// A database of its own for one test: the integration tests' helper, included so both
/// kinds of test share one.
#[cfg(test)]
#[path = "../../tests/it/support/pg.rs"]
pub(crate) mod test_db;
