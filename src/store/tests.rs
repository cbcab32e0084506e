//! One suite for every backend: each test is a function of a [`Backend`], run once against the
//! embedded store and once against PostgreSQL (a database of its own, created and dropped; the
//! test fails, never skips, when PostgreSQL is unreachable).

use super::postgres::test_db::TestDb;
use super::*;
use crate::status::AccountStatus;
use std::sync::Arc;

/// Where a test's state lives; `open` may be called again to "restart" on the same state.
enum Backend {
    Embedded(tempfile::TempDir),
    Postgres(TestDb),
}

type Opened = (Arc<dyn CommandLedger>, Arc<dyn SnapshotStore>);

impl Backend {
    async fn open(&self, retention: Duration) -> Opened {
        self.open_prefix("test", retention).await
    }

    async fn open_prefix(&self, prefix: &str, retention: Duration) -> Opened {
        match self {
            Backend::Embedded(dir) => {
                let (l, s) = open_embedded(&dir.path().join(prefix), retention).unwrap();
                (Arc::new(l), Arc::new(s))
            }
            Backend::Postgres(db) => {
                let (l, s) = open_postgres(&PgSettings {
                    url: db.url().into(),
                    prefix: prefix.into(),
                    retention,
                    concurrency: 4,
                })
                .await
                .unwrap();
                (Arc::new(l), Arc::new(s))
            }
        }
    }
}

async fn embedded() -> Backend {
    Backend::Embedded(tempfile::tempdir().unwrap())
}

async fn postgres() -> Backend {
    Backend::Postgres(TestDb::create().await)
}

/// Runs each listed test against both backends: `embedded::name` and `postgres::name`.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::embedded().await).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::postgres().await).await
            })*
        }
    };
}

suite!(
    completed_commands_survive_a_reopen,
    pruning_forgets_only_what_is_older_than_the_retention,
    staging_replaces_the_snapshot_only_when_committed,
    the_first_completion_recorded_is_the_one_kept,
    an_intent_of_an_earlier_process_is_reported_as_another_process,
    prefixes_sharing_a_store_do_not_see_each_other,
    a_claim_reads_the_whole_record_of_its_command,
);

fn event(id: Uuid) -> Event {
    Event::for_tests(id)
}

const HOUR: Duration = Duration::from_secs(3600);

async fn completed_commands_survive_a_reopen(b: Backend) {
    let id = Uuid::new_v4();
    {
        let (l, _) = b.open(HOUR).await;
        assert_eq!(l.completed(id).await.unwrap(), None);
        assert_eq!(l.intent(id).await.unwrap(), None);
        l.record_intent(id).await.unwrap();
        let intent = l.intent(id).await.unwrap().expect("an intent");
        assert!(!intent.by_another_process, "{intent:?}");
        assert!(intent.age < Duration::from_secs(2), "{intent:?}");
        let state = RetryState {
            round: 2,
            attempts: 5,
        };
        l.set_retry_state(id, Some(state)).await.unwrap();
        assert_eq!(l.retry_state(id).await.unwrap(), state);
        assert_eq!(l.complete(id, "fp", &event(id)).await.unwrap(), event(id));
        assert_eq!(
            l.intent(id).await.unwrap(),
            None,
            "completion clears the intent"
        );
        assert_eq!(
            l.retry_state(id).await.unwrap(),
            RetryState::default(),
            "and the retry state"
        );
    }
    let (l, _) = b.open(HOUR).await;
    let c = l.completed(id).await.unwrap().unwrap();
    assert_eq!(c.event, event(id));
    assert_eq!(c.fingerprint.as_deref(), Some("fp"));
    l.check().await.unwrap();
}

async fn pruning_forgets_only_what_is_older_than_the_retention(b: Backend) {
    let id = Uuid::new_v4();
    let (keep, _) = b.open(HOUR).await;
    keep.complete(id, "fp", &event(id)).await.unwrap();
    assert_eq!(keep.prune().await.unwrap(), 0);
    assert!(keep.completed(id).await.unwrap().is_some());
    drop(keep);
    // A retention of zero with a clock a second later forgets it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (forget, _) = b.open(Duration::ZERO).await;
    assert_eq!(forget.prune().await.unwrap(), 1);
    assert!(forget.completed(id).await.unwrap().is_none());
}

async fn the_first_completion_recorded_is_the_one_kept(b: Backend) {
    let (l, _) = b.open(HOUR).await;
    let id = Uuid::new_v4();
    let first = event(id);
    let mut second = event(id);
    second.body = r#"{"other":true}"#.into();
    assert_eq!(l.complete(id, "fp", &first).await.unwrap(), first);
    // A replica that finished the same command later gets the first event back to publish.
    assert_eq!(l.complete(id, "fp", &second).await.unwrap(), first);
    assert_eq!(l.completed(id).await.unwrap().unwrap().event, first);
}

async fn an_intent_of_an_earlier_process_is_reported_as_another_process(b: Backend) {
    let id = Uuid::new_v4();
    let (l, _) = b.open(HOUR).await;
    l.record_intent(id).await.unwrap();
    drop(l);
    let (l, _) = b.open(HOUR).await;
    let intent = l
        .intent(id)
        .await
        .unwrap()
        .expect("the intent outlives the process");
    assert!(intent.by_another_process, "{intent:?}");
    // Recorded again by this process, it is this process's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    l.record_intent(id).await.unwrap();
    assert!(!l.intent(id).await.unwrap().unwrap().by_another_process);
}

async fn a_claim_reads_the_whole_record_of_its_command(b: Backend) {
    let (l, _) = b.open(HOUR).await;
    let (fresh, retried, done) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (_c, record) = l.claim(fresh).await.unwrap();
    assert_eq!(record, Record::default());
    let state = RetryState {
        round: 2,
        attempts: 7,
    };
    l.set_retry_state(retried, Some(state)).await.unwrap();
    l.record_intent(retried).await.unwrap();
    let (_c, record) = l.claim(retried).await.unwrap();
    assert_eq!(record.retry, state);
    assert!(record.completion.is_none());
    let intent = record.intent.expect("the intent is part of the record");
    assert!(!intent.by_another_process, "{intent:?}");
    l.record_intent(done).await.unwrap();
    l.set_retry_state(done, Some(state)).await.unwrap();
    l.complete(done, "fp", &event(done)).await.unwrap();
    let (_c, record) = l.claim(done).await.unwrap();
    let completion = record.completion.expect("completed");
    assert_eq!(completion.event, event(done));
    assert_eq!(completion.fingerprint.as_deref(), Some("fp"));
    // Completing clears the intent and the retry state.
    assert_eq!((record.intent, record.retry), (None, RetryState::default()));
}

async fn prefixes_sharing_a_store_do_not_see_each_other(b: Backend) {
    let (a, sa) = b.open_prefix("a", HOUR).await;
    let (other, so) = b.open_prefix("b", HOUR).await;
    let id = Uuid::new_v4();
    a.complete(id, "fp", &event(id)).await.unwrap();
    a.record_intent(Uuid::new_v4()).await.unwrap();
    assert!(other.completed(id).await.unwrap().is_none());
    sa.begin_staging().await.unwrap();
    sa.stage(vec![("1".into(), entry("a@x.io"))]).await.unwrap();
    sa.commit_staging().await.unwrap();
    assert_eq!(so.snapshot_len().await.unwrap(), 0);
    assert_eq!(sa.snapshot_len().await.unwrap(), 1);
}

fn entry(email: &str) -> SnapshotEntry {
    SnapshotEntry {
        email: email.into(),
        status: AccountStatus::Active,
    }
}

async fn staging_replaces_the_snapshot_only_when_committed(b: Backend) {
    let (_, l) = b.open(Duration::from_secs(60)).await;
    l.begin_staging().await.unwrap();
    l.stage(vec![
        ("1".into(), entry("a@x.io")),
        ("2".into(), entry("b@x.io")),
        ("10".into(), entry("c@x.io")),
    ])
    .await
    .unwrap();
    l.commit_staging().await.unwrap();
    assert_eq!(l.snapshot_len().await.unwrap(), 3);

    // An interrupted sync leaves the snapshot alone.
    l.begin_staging().await.unwrap();
    l.stage(vec![("2".into(), entry("b@x.io"))]).await.unwrap();
    assert_eq!(l.snapshot_len().await.unwrap(), 3);
    let missing = l.missing_from_staging(None, 10).await.unwrap();
    assert_eq!(
        missing,
        vec![
            ("1".to_string(), entry("a@x.io")),
            ("10".to_string(), entry("c@x.io"))
        ],
        "in byte order of the uid"
    );
    // A restart of the sync starts the staging over.
    l.begin_staging().await.unwrap();
    assert_eq!(l.missing_from_staging(None, 10).await.unwrap().len(), 3);
    assert_eq!(
        l.missing_from_staging(Some("1".into()), 1).await.unwrap(),
        vec![("10".to_string(), entry("c@x.io"))]
    );
}

/// PostgreSQL only: the claims and the migrations are about several processes.
mod shared {
    use super::*;

    /// One database (dropped with the first value) opened by two replicas.
    async fn two_replicas() -> (Backend, Arc<dyn CommandLedger>, Arc<dyn CommandLedger>) {
        let b = postgres().await;
        let (a, _) = b.open(HOUR).await;
        let (other, _) = b.open(HOUR).await;
        (b, a, other)
    }

    #[tokio::test]
    async fn a_claimed_command_waits_for_the_other_replica_then_sees_its_completion() {
        let (_db, a, other) = two_replicas().await;
        let id = Uuid::new_v4();
        let (held, record) = a.claim(id).await.unwrap();
        assert!(record.completion.is_none());
        // Another command is not held up.
        tokio::time::timeout(Duration::from_secs(2), other.claim(Uuid::new_v4()))
            .await
            .expect("another id is free")
            .unwrap();
        let waiting = tokio::spawn(async move { other.claim(id).await.map(|(_, r)| r) });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!waiting.is_finished(), "the second replica waits");
        a.complete(id, "fp", &event(id)).await.unwrap();
        drop(held);
        let record = tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .expect("released when dropped")
            .unwrap()
            .unwrap();
        // Its record is read once it holds the claim: it shows what the holder completed.
        assert_eq!(record.completion.expect("seen").event, event(id));
    }

    #[tokio::test]
    async fn a_claim_given_up_halfway_leaves_no_lock_behind() {
        let (_db, a, other) = two_replicas().await;
        let id = Uuid::new_v4();
        // Dropped at every point of its way: before it has a connection, once its lock is
        // asked for and before the answer is read, after it returned.
        for polls in 1..60 {
            let mut claim = a.claim(id);
            for _ in 0..polls {
                let ready = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(claim.as_mut().poll(cx).is_ready())
                })
                .await;
                if ready {
                    break;
                }
                // Let the connection send and receive; sometimes wait for the answer too.
                tokio::task::yield_now().await;
                if polls % 3 == 0 {
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
            }
        }
        // Every connection those claims took went back to the pool unlocked, or was closed.
        let got = tokio::time::timeout(Duration::from_secs(5), other.claim(id))
            .await
            .expect("no connection of the first replica still holds the command's lock");
        drop(got.unwrap());
        // And the first replica's own pool hands out no connection that holds it either.
        tokio::time::timeout(Duration::from_secs(5), a.claim(id))
            .await
            .expect("the first replica can claim it again")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_intents_and_completions_are_group_committed() {
        const COMMANDS: usize = 200;
        let b = postgres().await;
        let Backend::Postgres(db) = &b else {
            unreachable!()
        };
        let (l, _) = open_postgres(&PgSettings {
            url: db.url().into(),
            prefix: "group".into(),
            retention: HOUR,
            concurrency: 4,
        })
        .await
        .unwrap();
        let l = Arc::new(l);
        let ids: Vec<Uuid> = (0..COMMANDS).map(|_| Uuid::new_v4()).collect();
        let tasks: Vec<_> = ids
            .iter()
            .map(|&id| {
                let l = l.clone();
                tokio::spawn(async move {
                    l.record_intent(id).await.unwrap();
                    assert!(
                        l.intent(id).await.unwrap().is_some(),
                        "durable before the call"
                    );
                    let e = event(id);
                    assert_eq!(l.complete(id, "fp", &e).await.unwrap(), e);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let commits = l.commits();
        assert!(
            commits < 2 * COMMANDS as u64,
            "{} writes in {commits} transactions: not coalesced",
            2 * COMMANDS
        );
        for &id in &ids {
            let c = l.completed(id).await.unwrap().expect("recorded");
            assert_eq!(c.event, event(id));
            assert_eq!(c.fingerprint.as_deref(), Some("fp"));
            assert_eq!(
                l.intent(id).await.unwrap(),
                None,
                "the completion ends the intent"
            );
        }
        // A second completion of the same command keeps the first event, in a batch too.
        let again = Event {
            body: "{\"other\":true}".into(),
            ..event(ids[0])
        };
        assert_eq!(
            l.complete(ids[0], "fp", &again).await.unwrap(),
            event(ids[0])
        );
        eprintln!("{} writes in {commits} transactions", 2 * COMMANDS);
    }

    #[tokio::test]
    async fn replicas_starting_at_once_migrate_once() {
        let b = postgres().await;
        let opens = (0..4).map(|_| b.open(HOUR));
        let all = futures_util::future::join_all(opens).await;
        assert_eq!(all.len(), 4);
        let Backend::Postgres(db) = &b else {
            unreachable!()
        };
        let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let n: i64 = client
            .query_one("SELECT count(*) FROM lpc_schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, super::super::postgres::latest_version() as i64);
    }

    #[tokio::test]
    async fn an_unreachable_database_is_an_error_that_keeps_its_source() {
        let err = open_postgres(&PgSettings {
            url: secrecy::SecretString::from("postgres://postgres@127.0.0.1:1/none".to_string()),
            prefix: "x".into(),
            retention: HOUR,
            concurrency: 1,
        })
        .await
        .err()
        .expect("no database on port 1");
        assert!(matches!(err, StoreError::DatabasePool(_)), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
    }
}

/// `sslmode=require` means TLS with a verified certificate, never a fall-back to plain TCP: the
/// local server's self-signed ("snakeoil") certificate is refused (and a server without TLS
/// would be refused too).
#[tokio::test]
async fn a_url_that_requires_tls_gets_tls_or_nothing() {
    let db = TestDb::create().await;
    let url = format!("{}?sslmode=require", &db.url());
    let err = open_postgres(&PgSettings {
        url: secrecy::SecretString::from(url),
        prefix: "tls".into(),
        retention: HOUR,
        concurrency: 1,
    })
    .await
    .err()
    .expect("no plain-text fall-back");
    let chain = crate::error_chain(&err).to_lowercase();
    assert!(
        chain.contains("certificate") || chain.contains("tls") || chain.contains("ssl"),
        "{chain}"
    );
}
