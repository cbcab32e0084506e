//! What happens to one delivery, from bytes to a [`Disposition`] the AMQP side carries out:
//! parse, consult the ledger, look and act with retry and backoff, record, build the event.
//! No lapin and no reqwest here: the AMQP module executes the disposition (publish with confirm,
//! then ack), and LastPass is any [`LastPass`].

use crate::apply::{self, Plan};
use crate::command::{Action, Command, CommandType, Rejection};
use crate::event::{ErrorInfo, Event, EventFactory, EventSink, Outcome, Resolution};
use crate::lastpass::{LastPass, LastPassError};
use crate::ledger::{Ledger, LedgerError};
use crate::sync::{SyncError, SyncSettings};
use backon::{ExponentialBuilder, Retryable};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, info_span, warn};
use uuid::Uuid;

/// How transient LastPass errors are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in process, per delivery, before a delayed redelivery (at least 1).
    pub attempts: usize,
    /// First in-process backoff delay (doubles, with jitter, up to `max_delay`).
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// The delays of the delayed redeliveries through `P.retry.*`, in order. When all are spent
    /// the command fails with `retries_exhausted`. (A sync retries each page in process only,
    /// then fails: the next sync starts over anyway.)
    pub round_delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            round_delays: vec![
                Duration::from_secs(30),
                Duration::from_secs(120),
                Duration::from_secs(600),
            ],
        }
    }
}

impl RetryPolicy {
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.attempts.saturating_sub(1))
    }
}

/// Open while LastPass accepts our credentials. Closed by the first authorization error; the
/// dispatcher takes no new delivery while it is closed.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(watch::Sender::new(true)))
    }
}

impl Gate {
    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }
    fn set(&self, open: bool) {
        self.0
            .send_if_modified(|v| std::mem::replace(v, open) != open);
    }
    /// Resolves when the gate is open.
    pub async fn opened(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// A delivery as the processor sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub body: Vec<u8>,
    /// The queue it arrived on.
    pub queue: CommandType,
    /// Delayed redeliveries already done (header `x-lpc-retry-round`).
    pub round: u32,
    /// LastPass attempts already made in earlier rounds (header `x-lpc-attempts`).
    pub attempts: u32,
}

/// A parsed delivery, ready to be sequenced and processed.
pub enum Prepared {
    Invalid {
        rejection: Rejection,
        body: Vec<u8>,
    },
    Valid {
        command: Command,
        round: u32,
        attempts: u32,
    },
}

impl Prepared {
    pub fn parse(incoming: Incoming) -> Prepared {
        match Command::parse(&incoming.body, incoming.queue) {
            Ok(command) => Prepared::Valid {
                command,
                round: incoming.round,
                attempts: incoming.attempts,
            },
            Err(rejection) => Prepared::Invalid {
                rejection,
                body: incoming.body,
            },
        }
    }

    /// The tracing span of this delivery: command id, correlation id and email on every line.
    pub fn span(&self) -> tracing::Span {
        match self {
            Prepared::Invalid { rejection, .. } => info_span!(
                "command",
                command_id = rejection
                    .command_id
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                correlation_id = rejection.correlation_id.as_deref().unwrap_or(""),
                email = rejection.email.as_deref().unwrap_or(""),
                command_type = rejection.command_type.as_deref().unwrap_or("")
            ),
            Prepared::Valid { command, .. } => info_span!("command",
                command_id = %command.meta.command_id,
                correlation_id = command.meta.correlation_id.as_deref().unwrap_or(""),
                email = command.email().map(|e| e.as_str()).unwrap_or(""),
                command_type = command.command_type().as_str()),
        }
    }

    /// Commands with the same key are applied one at a time, in arrival order: the email for a
    /// user command, one key for all syncs, none for an invalid message.
    pub fn key(&self) -> Option<String> {
        match self {
            Prepared::Invalid { .. } => None,
            Prepared::Valid { command, .. } => Some(match command.email() {
                Some(e) => e.to_string(),
                None => "\u{0}sync".to_string(),
            }),
        }
    }
}

/// What the AMQP side must do with the delivery. In every case but `Abandon`, the delivery is
/// acked only after everything published for it is confirmed.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Publish the event, then ack.
    Publish(Event),
    /// Publish the event and a copy of the original message to `P.dead-letter` with these
    /// reasons in its headers, then ack.
    Park {
        event: Event,
        code: String,
        message: String,
    },
    /// Publish a copy of the original to the retry queue for round `round` (1-based), carrying
    /// `attempts`, then ack.
    RetryLater {
        round: u32,
        attempts: u32,
        delay: Duration,
    },
    /// Give the delivery back (nack with requeue): shutting down, or the local store failed.
    Abandon,
}

/// Everything a delivery needs, shared by all in-flight commands.
pub struct Processor<L: LastPass> {
    pub lastpass: Arc<L>,
    pub ledger: Ledger,
    pub events: EventFactory,
    pub retry: RetryPolicy,
    pub sync: SyncSettings,
    pub gate: Gate,
    /// Called before retrying after an authorization error (re-reads the provhash file).
    pub reload_credentials: Arc<dyn Fn() + Send + Sync>,
    pub shutdown: watch::Receiver<bool>,
}

enum StepError {
    LastPass(LastPassError),
    Ledger(LedgerError),
}

impl<L: LastPass> Processor<L> {
    /// Processes one prepared delivery; never panics on bad input, never loses a command.
    /// Run it inside [`Prepared::span`] so every line about the command carries its ids.
    pub async fn process<S: EventSink>(&self, prepared: Prepared, sink: &S) -> Disposition {
        match prepared {
            Prepared::Invalid { rejection, body } => {
                warn!(code = rejection.code.as_str(), reason = %rejection.message,
                    "rejected an invalid message; parking it");
                Disposition::Park {
                    event: self.events.rejected(&rejection, &body),
                    code: rejection.code.as_str().to_string(),
                    message: rejection.message,
                }
            }
            Prepared::Valid {
                command,
                round,
                attempts,
            } => self.process_valid(command, round, attempts, sink).await,
        }
    }

    async fn process_valid<S: EventSink>(
        &self,
        command: Command,
        round: u32,
        prior_attempts: u32,
        sink: &S,
    ) -> Disposition {
        let id = command.meta.command_id;
        match self.ledger.completed(id).await {
            Ok(Some(event)) => {
                info!(
                    outcome = "repeat",
                    "command already completed; repeating its event"
                );
                return disposition_for(event);
            }
            Ok(None) => {}
            Err(e) => {
                error!(error = %e, "cannot read the ledger; giving the delivery back");
                return Disposition::Abandon;
            }
        }
        if command.action == Action::Sync {
            return self.process_sync(command, sink).await;
        }
        let acted_before = match self.ledger.had_intent(id).await {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "cannot read the ledger; giving the delivery back");
                return Disposition::Abandon;
            }
        };
        let attempts = AtomicU32::new(prior_attempts);
        // Set once an intent is recorded, so that every later attempt knows it may have acted.
        let acted = AtomicBool::new(acted_before);
        let mut auth_failures = 0u32;
        loop {
            let result = self.attempt_with_backoff(&command, &acted, &attempts).await;
            match result {
                Ok(resolution) => {
                    self.gate.set(true);
                    let event = self.events.command_result(
                        &command,
                        &resolution,
                        attempts.load(Ordering::Relaxed),
                    );
                    if let Err(e) = self.ledger.complete(id, &event).await {
                        error!(error = %e, "cannot record the completed command; giving it back");
                        return Disposition::Abandon;
                    }
                    info!(outcome = ?resolution.outcome, status = ?resolution.account_status,
                        attempts = attempts.load(Ordering::Relaxed), "command done");
                    return disposition_for(event);
                }
                Err(StepError::Ledger(e)) => {
                    error!(error = %e, "cannot write the ledger; giving the delivery back");
                    return Disposition::Abandon;
                }
                Err(StepError::LastPass(LastPassError::Unauthorized)) => {
                    // No command's fault: hold consumption and wait for working credentials.
                    self.gate.set(false);
                    auth_failures += 1;
                    let wait = auth_wait(auth_failures);
                    warn!(retry_in = ?wait, "LastPass refused the API credentials (cid/provhash); \
                        consumption is paused until they work");
                    if self.sleep_or_shutdown(wait).await {
                        return Disposition::Abandon;
                    }
                    (self.reload_credentials)();
                }
                Err(StepError::LastPass(e)) if e.is_transient() => {
                    self.gate.set(true);
                    let attempts = attempts.load(Ordering::Relaxed);
                    if *self.shutdown.borrow() {
                        return Disposition::Abandon;
                    }
                    if let Some(delay) = self.retry.round_delays.get(round as usize) {
                        warn!(error = %e, attempts, round = round + 1, ?delay,
                            "LastPass still unavailable; redelivering later");
                        return Disposition::RetryLater {
                            round: round + 1,
                            attempts,
                            delay: *delay,
                        };
                    }
                    let resolution = Resolution {
                        outcome: Outcome::Failed,
                        account_status: None,
                        license_reclaimed: false,
                        error: Some(ErrorInfo::new(
                            "retries_exhausted",
                            format!("gave up after {attempts} attempts: {e}"),
                            true,
                        )),
                    };
                    warn!(error = %e, attempts, "retries exhausted; failing and parking the command");
                    // Not recorded as completed: a re-drive from the dead-letter queue may retry.
                    return disposition_for(self.events.command_result(
                        &command,
                        &resolution,
                        attempts,
                    ));
                }
                Err(StepError::LastPass(e)) => {
                    // look/act map permanent errors into resolutions; anything else is a bug in
                    // the mapping: fail the command rather than loop.
                    let resolution = Resolution {
                        outcome: Outcome::Failed,
                        account_status: None,
                        license_reclaimed: false,
                        error: Some(ErrorInfo::new("lastpass_rejected", e.to_string(), false)),
                    };
                    let event = self.events.command_result(
                        &command,
                        &resolution,
                        attempts.load(Ordering::Relaxed),
                    );
                    if self.ledger.complete(id, &event).await.is_err() {
                        return Disposition::Abandon;
                    }
                    return disposition_for(event);
                }
            }
        }
    }

    /// Look and act, retried in process with exponential backoff and jitter on transient
    /// errors, honouring `Retry-After`.
    async fn attempt_with_backoff(
        &self,
        command: &Command,
        acted: &AtomicBool,
        attempts: &AtomicU32,
    ) -> Result<Resolution, StepError> {
        let once = || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            let plan = apply::look(
                &*self.lastpass,
                &command.action,
                acted.load(Ordering::Relaxed),
            )
            .await
            .map_err(StepError::LastPass)?;
            match plan {
                Plan::Done(r) => Ok(r),
                Plan::Act(act) => {
                    if !acted.load(Ordering::Relaxed) {
                        self.ledger
                            .record_intent(command.meta.command_id)
                            .await
                            .map_err(StepError::Ledger)?;
                        acted.store(true, Ordering::Relaxed);
                    }
                    apply::act(&*self.lastpass, &act)
                        .await
                        .map_err(StepError::LastPass)
                }
            }
        };
        let sleeper = self.shutdown.clone();
        once.retry(self.retry.backoff())
            .sleep(move |d| {
                let mut shutdown = sleeper.clone();
                async move {
                    // Stop sleeping at shutdown: the next attempt fails fast into Abandon.
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = shutdown.wait_for(|s| *s) => {}
                    }
                }
            })
            .when(|e| {
                matches!(e, StepError::LastPass(e) if e.is_transient()) && !*self.shutdown.borrow()
            })
            .adjust(|e, d| match (e, d) {
                (StepError::LastPass(e), Some(d)) => {
                    Some(e.retry_after().map_or(d, |ra| ra.max(d)))
                }
                (_, d) => d,
            })
            .notify(|e, d| {
                if let StepError::LastPass(e) = e {
                    warn!(error = %e, retry_in = ?d, "LastPass call failed; retrying");
                }
            })
            .await
    }

    async fn process_sync<S: EventSink>(&self, command: Command, sink: &S) -> Disposition {
        let started = std::time::Instant::now();
        let result = crate::sync::run(
            &*self.lastpass,
            &self.ledger,
            &self.events,
            &self.sync,
            &self.retry,
            &command.meta,
            sink,
        )
        .await;
        match result {
            Ok(completed) => {
                if let Err(e) = self
                    .ledger
                    .complete(command.meta.command_id, &completed)
                    .await
                {
                    error!(error = %e, "cannot record the completed sync; giving it back");
                    return Disposition::Abandon;
                }
                info!(elapsed = ?started.elapsed(), "sync complete");
                Disposition::Publish(completed)
            }
            Err(SyncError::Publish(e)) | Err(SyncError::Ledger(e)) => {
                error!(error = %e, "sync could not publish or record its events; giving it back");
                Disposition::Abandon
            }
            Err(SyncError::LastPass(e)) => {
                if e == LastPassError::Unauthorized {
                    self.gate.set(false);
                    (self.reload_credentials)();
                }
                if *self.shutdown.borrow() {
                    return Disposition::Abandon;
                }
                let (code, retryable, attempts) = match &e {
                    LastPassError::Unauthorized => ("unauthorized", true, 1),
                    e if e.is_transient() => ("retries_exhausted", true, self.retry.attempts),
                    _ => ("lastpass_rejected", false, 1),
                };
                warn!(error = %e, code, "sync failed part-way; nobody is marked Deprovisioned");
                let resolution = Resolution {
                    outcome: Outcome::Failed,
                    account_status: None,
                    license_reclaimed: false,
                    error: Some(ErrorInfo::new(code, e.to_string(), retryable)),
                };
                // Not recorded as completed: the same sync may be re-driven.
                disposition_for(
                    self.events
                        .command_result(&command, &resolution, attempts as u32),
                )
            }
        }
    }

    /// Sleeps, or returns true at once if shutdown starts.
    async fn sleep_or_shutdown(&self, d: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => *self.shutdown.borrow(),
            _ = shutdown.wait_for(|s| *s) => true,
        }
    }
}

/// Delay before the n-th credential retry: 1 s, 2 s, 4 s, ... capped at 30 s.
fn auth_wait(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// Failed commands are parked; everything else is published.
fn disposition_for(event: Event) -> Disposition {
    if event.routing_key == "command.failed" {
        let (code, message) = error_of(&event);
        Disposition::Park {
            event,
            code,
            message,
        }
    } else {
        Disposition::Publish(event)
    }
}

fn error_of(event: &Event) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(&event.body).unwrap_or_default();
    let e = &v["data"]["error"];
    (
        e["code"].as_str().unwrap_or("failed").to_string(),
        e["message"].as_str().unwrap_or("").to_string(),
    )
}

/// The event id a command's result will carry when it ends with `routing_key`.
pub fn expected_event_id(command_id: Uuid, routing_key: &str) -> Uuid {
    crate::event::event_id(&format!("{command_id}/{routing_key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PublishError;
    use crate::fake::FakeLastPass;
    use std::sync::atomic::AtomicUsize;

    struct NoSink;
    impl EventSink for NoSink {
        async fn publish(&self, _: &[Event]) -> Result<(), PublishError> {
            Ok(())
        }
    }

    fn transient() -> LastPassError {
        LastPassError::Transient {
            reason: "503".into(),
            retry_after: None,
        }
    }

    struct Setup {
        p: Processor<FakeLastPass>,
        reloads: Arc<AtomicUsize>,
        _stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let reloads = Arc::new(AtomicUsize::new(0));
        let r = reloads.clone();
        let (stop, rx) = watch::channel(false);
        let p = Processor {
            lastpass: Arc::new(FakeLastPass::new()),
            ledger: Ledger::open(dir.path(), Duration::from_secs(60)).unwrap(),
            events: EventFactory::new("1"),
            retry: RetryPolicy {
                attempts: 2,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                round_delays: vec![Duration::from_secs(5)],
            },
            sync: SyncSettings::default(),
            gate: Gate::default(),
            reload_credentials: Arc::new(move || {
                r.fetch_add(1, Ordering::Relaxed);
            }),
            shutdown: rx,
        };
        Setup {
            p,
            reloads,
            _stop: stop,
            _dir: dir,
        }
    }

    fn incoming(kind: &str, email: &str, id: Uuid, round: u32) -> Prepared {
        let body = serde_json::json!({"command_id": id, "type": kind, "user": {"email": email}});
        Prepared::parse(Incoming {
            body: body.to_string().into_bytes(),
            queue: CommandType::parse(kind).unwrap(),
            round,
            attempts: round * 2,
        })
    }

    fn outcome(d: &Disposition) -> serde_json::Value {
        let e = match d {
            Disposition::Publish(e) | Disposition::Park { event: e, .. } => e,
            other => panic!("no event in {other:?}"),
        };
        serde_json::from_str::<serde_json::Value>(&e.body).unwrap()["data"].clone()
    }

    #[tokio::test]
    async fn a_command_that_acted_before_a_crash_reports_applied() {
        let s = setup();
        s.p.lastpass.add("x@example.com", true, false, false);
        let id = Uuid::new_v4();
        s.p.ledger.record_intent(id).await.unwrap();
        let d =
            s.p.process(incoming("user.suspend", "x@example.com", id, 0), &NoSink)
                .await;
        assert_eq!(outcome(&d)["outcome"], "applied");
        assert!(s.p.lastpass.mutations().is_empty(), "no second call");
    }

    #[tokio::test]
    async fn a_completed_command_repeats_its_stored_event_verbatim() {
        let s = setup();
        s.p.lastpass.add("x@example.com", false, false, false);
        let id = Uuid::new_v4();
        let first =
            s.p.process(incoming("user.suspend", "x@example.com", id, 0), &NoSink)
                .await;
        let again =
            s.p.process(incoming("user.suspend", "x@example.com", id, 0), &NoSink)
                .await;
        assert_eq!(first, again);
        assert_eq!(s.p.lastpass.mutations().len(), 1);
    }

    #[tokio::test]
    async fn transient_errors_go_to_the_next_round_then_fail_exhausted() {
        let s = setup();
        s.p.lastpass.add("x@example.com", false, false, false);
        s.p.lastpass.fail_next([transient(), transient()]);
        let id = Uuid::new_v4();
        let d =
            s.p.process(incoming("user.suspend", "x@example.com", id, 0), &NoSink)
                .await;
        assert_eq!(
            d,
            Disposition::RetryLater {
                round: 1,
                attempts: 2,
                delay: Duration::from_secs(5)
            }
        );
        // The last round: no more delays, so the command fails and is parked.
        s.p.lastpass.fail_next([transient(), transient()]);
        let d =
            s.p.process(incoming("user.suspend", "x@example.com", id, 1), &NoSink)
                .await;
        let Disposition::Park { code, .. } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(code, "retries_exhausted");
        assert_eq!(outcome(&d)["attempts"], 4);
        // Not recorded: a later re-drive applies it.
        let d =
            s.p.process(incoming("user.suspend", "x@example.com", id, 1), &NoSink)
                .await;
        assert_eq!(outcome(&d)["outcome"], "applied");
    }

    #[tokio::test]
    async fn an_auth_error_closes_the_gate_reloads_credentials_and_resumes() {
        let s = setup();
        s.p.lastpass.add("x@example.com", false, false, false);
        s.p.lastpass.fail_next([LastPassError::Unauthorized]);
        let gate = s.p.gate.clone();
        let watcher = tokio::spawn(async move {
            // The gate closes while the command waits for working credentials.
            while gate.is_open() {
                tokio::task::yield_now().await;
            }
            gate.opened().await;
        });
        let d =
            s.p.process(
                incoming("user.suspend", "x@example.com", Uuid::new_v4(), 0),
                &NoSink,
            )
            .await;
        assert_eq!(outcome(&d)["outcome"], "applied");
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
        assert!(s.p.gate.is_open());
        assert_eq!(s.reloads.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_invalid_message_is_parked_with_its_code() {
        let s = setup();
        let d =
            s.p.process(
                Prepared::parse(Incoming {
                    body: b"{".to_vec(),
                    queue: CommandType::Suspend,
                    round: 0,
                    attempts: 0,
                }),
                &NoSink,
            )
            .await;
        let Disposition::Park { code, event, .. } = d else {
            panic!("not parked")
        };
        assert_eq!(code, "not_json");
        assert_eq!(event.routing_key, "command.rejected");
    }
}
