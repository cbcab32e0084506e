//! What happens to one delivery, from bytes to a [`Disposition`] the AMQP side carries out:
//! parse, consult the ledger, look and act with retry and backoff, record, build the event.
//! No lapin and no reqwest here: the AMQP module executes the disposition (publish with confirm,
//! then ack), and LastPass is any [`LastPass`].
//!
//! In a dry run (`run --dry-run`) a user command is claimed and checked against the ledger as
//! usual, then only looked up (with the same retries, delayed rounds and auth pause), and
//! answered with `command.dry_run`: no intent, no mutating call, no completion recorded, so the
//! same command sent later to a real run is applied. A sync only reads, so it runs as usual.

use crate::apply::{self, Plan, Preview};
use crate::batch::{Batcher, Ticket};
use crate::command::{Action, Command, Prepared, Rejection};
use crate::event::{
    ErrorInfo, Event, EventFactory, EventKind, EventSink, FailureCode, Outcome, Resolution,
};
use crate::gate::{Gate, probe_delay};
use crate::lastpass::{LastPass, LastPassError};
use crate::retry::{MaybeTransient, RetryPolicy, sleep_unless_cancelled};
use crate::store::{CommandLedger, RetryState, SnapshotStore, StoreError};
use crate::sync::{SyncError, SyncSettings};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What the AMQP side must do with the delivery. In every case but `Abandon`, the delivery is
/// acked only after everything published for it is confirmed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Disposition {
    /// Publish the event, then ack.
    Publish(Event),
    /// Publish the event (a failure or rejection, whose `error` is the reason) and a copy of
    /// the original message to `P.dead-letter` with that reason in its headers, then ack.
    Park(Event),
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
pub(crate) struct Processor<L: LastPass> {
    pub lastpass: Arc<L>,
    pub ledger: Arc<dyn CommandLedger>,
    pub snapshot: Arc<dyn SnapshotStore>,
    pub events: EventFactory,
    pub retry: RetryPolicy,
    pub sync: SyncSettings,
    pub gate: Gate,
    /// Called before retrying after an authorization error (re-reads the provhash file).
    pub reload_credentials: Arc<dyn Fn() + Send + Sync>,
    /// Cancelled at shutdown: stop sleeping, give unfinished deliveries back.
    pub stop: CancellationToken,
    /// How long a LastPass call made by another process may still land: an intent that process
    /// recorded less than this ago is waited out before looking (the LastPass timeout plus a
    /// margin).
    pub in_flight_window: Duration,
    /// Whether the store answered the last time it was used (readiness).
    pub store_ok: Arc<AtomicBool>,
    /// Coalesces the calls of provisions in flight together (`None`: `CONNECTOR_BATCH_MAX=1`).
    pub batcher: Option<Batcher<L>>,
    /// `run --dry-run`: user commands are previewed (looked up only) and answered with
    /// `command.dry_run`, never applied nor recorded as completed.
    pub dry_run: bool,
}

/// What the look (and act) of a user command came to.
enum Finished {
    /// Applied, or nothing to do, or failed: what the real run reports.
    Resolved(Resolution),
    /// A dry run: what the real run would do.
    Previewed(Preview),
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    LastPass(LastPassError),
    #[error(transparent)]
    Store(StoreError),
}

impl MaybeTransient for StepError {
    fn is_transient(&self) -> bool {
        matches!(self, StepError::LastPass(e) if e.is_transient())
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            StepError::LastPass(e) => e.retry_after(),
            StepError::Store(_) => None,
        }
    }
}

impl<L: LastPass> Processor<L> {
    /// Counts a finished command (outcomes spelled as in events; `duplicate` for a repeat).
    fn count(&self, command_type: &str, outcome: &str) {
        metrics::counter!(crate::telemetry::COMMANDS,
            "type" => command_type.to_string(), "outcome" => outcome.to_string())
        .increment(1);
    }

    /// Processes one prepared delivery; never panics on bad input, never loses a command.
    /// Run it inside [`Prepared::span`] so every line about the command carries its ids.
    pub async fn process<S: EventSink>(&self, prepared: Prepared, sink: &S) -> Disposition {
        match prepared {
            Prepared::Invalid { rejection, body } => {
                self.count(
                    rejection.command_type.as_deref().map_or("unknown", |t| {
                        crate::command::CommandType::parse(t).map_or("unknown", |t| t.as_str())
                    }),
                    "rejected",
                );
                warn!(code = rejection.code.as_str(), reason = %rejection.message,
                    "rejected an invalid message; parking it");
                Disposition::Park(self.events.rejected(&rejection, &body))
            }
            Prepared::Valid { command } => self.process_valid(command, sink).await,
        }
    }

    /// A store operation failed: the replica is not ready until the store answers again, and
    /// the delivery goes back (after that, or at shutdown), so nothing is acked that could not
    /// be recorded and a dead database does not make deliveries spin.
    async fn store_failed(&self, what: &str, e: &StoreError) -> Disposition {
        error!(error = %crate::error_chain(e), "{what}; giving the delivery back once the store answers");
        self.store_ok.store(false, Ordering::Relaxed);
        let mut n = 0u32;
        loop {
            n += 1;
            if sleep_unless_cancelled(probe_delay(n).min(Duration::from_secs(5)), &self.stop).await
            {
                return Disposition::Abandon;
            }
            match self.ledger.check().await {
                Ok(()) => {
                    if !self.store_ok.swap(true, Ordering::Relaxed) {
                        info!("the state store answers again");
                    }
                    return Disposition::Abandon;
                }
                Err(e) => {
                    warn!(error = %crate::error_chain(&e), "the state store still does not answer")
                }
            }
        }
    }

    async fn process_valid<S: EventSink>(&self, command: Command, sink: &S) -> Disposition {
        let id = command.meta.command_id;
        let fingerprint = command.fingerprint();
        // Held until the delivery is decided: no other replica works on this command meanwhile.
        let claim = tokio::select! {
            c = self.ledger.claim(id) => c,
            _ = self.stop.cancelled() => return Disposition::Abandon,
        };
        let (_claim, record) = match claim {
            Ok(c) => c,
            Err(e) => {
                return self
                    .store_failed("cannot claim the command and read its record", &e)
                    .await;
            }
        };
        match record.completion {
            Some(done) if done.fingerprint.as_ref().is_some_and(|f| *f != fingerprint) => {
                warn!(
                    code = "command_id_conflict",
                    "a different command reuses a completed command_id; rejecting and parking it"
                );
                let body = serde_json::to_vec(&fingerprint).unwrap_or_default();
                return Disposition::Park(
                    self.events.rejected(&Rejection::conflict(&command), &body),
                );
            }
            Some(done) => {
                self.count(command.command_type().as_str(), "duplicate");
                info!(
                    outcome = "repeat",
                    "command already completed; repeating its event"
                );
                return disposition_for(done.event);
            }
            None => {}
        }
        if command.action == Action::Sync {
            return self.process_sync(command, sink).await;
        }
        let (intent, retry) = (record.intent, record.retry);
        if let Some(intent) = intent
            && intent.by_another_process
            && intent.age < self.in_flight_window
        {
            // That process (now dead, or cut off) may have a call still on its way to LastPass:
            // wait until it can no longer land, then look.
            let wait = self.in_flight_window - intent.age;
            info!(
                wait_ms = wait.as_millis() as u64,
                "another process recorded an intent for this command moments ago; \
                 waiting until its call can no longer land before looking"
            );
            if sleep_unless_cancelled(wait, &self.stop).await {
                return Disposition::Abandon;
            }
        }
        let acted_before = intent.is_some();
        let round = retry.round;
        let attempts = AtomicU32::new(retry.attempts);
        // Set once an intent is recorded, so that every later attempt knows it may have acted.
        let acted = AtomicBool::new(acted_before);
        let mut auth_failures = 0u32;
        // A provision joins the batches of the provisions in flight with it.
        let ticket = match (&self.batcher, &command.action) {
            (Some(b), Action::Provision(_)) if !self.dry_run => Some(b.ticket()),
            _ => None,
        };
        loop {
            let result = self
                .attempt_with_backoff(&command, &acted, &attempts, ticket.as_ref())
                .await;
            if let Some(t) = &ticket {
                t.finish();
            }
            match result {
                Ok(Finished::Previewed(preview)) => {
                    self.gate.set(true);
                    // A later real run of this command starts with a fresh retry budget.
                    if retry != RetryState::default()
                        && let Err(e) = self.ledger.set_retry_state(id, None).await
                    {
                        return self.store_failed("cannot reset the retry state", &e).await;
                    }
                    return self.dry_run_result(
                        &command,
                        &preview,
                        attempts.load(Ordering::Relaxed),
                    );
                }
                Ok(Finished::Resolved(resolution)) => {
                    self.gate.set(true);
                    let event = self.events.command_result(
                        &command,
                        &resolution,
                        attempts.load(Ordering::Relaxed),
                    );
                    let event = match self.ledger.complete(id, &fingerprint, &event).await {
                        Ok(recorded) => recorded,
                        Err(e) => {
                            return self
                                .store_failed("cannot record the completed command", &e)
                                .await;
                        }
                    };
                    self.count(command.command_type().as_str(), resolution.outcome.as_str());
                    info!(
                        outcome = resolution.outcome.as_str(),
                        status = resolution.account_status.map(|s| s.as_str()),
                        attempts = attempts.load(Ordering::Relaxed),
                        "command done"
                    );
                    return disposition_for(event);
                }
                Err(StepError::Store(e)) => {
                    return self.store_failed("cannot write the ledger", &e).await;
                }
                Err(StepError::LastPass(LastPassError::Unauthorized)) => {
                    // No command's fault: hold consumption and wait for working credentials.
                    self.gate.set(false);
                    auth_failures += 1;
                    let wait = probe_delay(auth_failures);
                    warn!(
                        retry_in_ms = wait.as_millis() as u64,
                        "LastPass refused the API credentials (cid/provhash); \
                        consumption is paused until they work"
                    );
                    if sleep_unless_cancelled(wait, &self.stop).await {
                        return Disposition::Abandon;
                    }
                    (self.reload_credentials)();
                }
                Err(StepError::LastPass(e)) if e.is_transient() => {
                    self.gate.set(true);
                    let attempts = attempts.load(Ordering::Relaxed);
                    if self.stop.is_cancelled() {
                        return Disposition::Abandon;
                    }
                    if let Some(delay) = self.retry.round_delays.get(round as usize) {
                        let next = RetryState {
                            round: round + 1,
                            attempts,
                        };
                        if let Err(e) = self.ledger.set_retry_state(id, Some(next)).await {
                            return self.store_failed("cannot record the retry state", &e).await;
                        }
                        metrics::counter!(crate::telemetry::DELAYED_RETRIES).increment(1);
                        warn!(error = %e, attempts, round = round + 1, delay_ms = delay.as_millis() as u64,
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
                        invitation_pending: false,
                        error: Some(ErrorInfo::new(
                            FailureCode::RetriesExhausted,
                            format!("gave up after {attempts} attempts: {e}"),
                            true,
                        )),
                    };
                    warn!(error = %e, attempts, "retries exhausted; failing and parking the command");
                    self.count(command.command_type().as_str(), "failed");
                    // A re-drive from the dead-letter queue starts with a fresh retry budget.
                    if let Err(e) = self.ledger.set_retry_state(id, None).await {
                        return self.store_failed("cannot reset the retry state", &e).await;
                    }
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
                        invitation_pending: false,
                        error: Some(ErrorInfo::new(
                            FailureCode::LastpassRejected,
                            e.to_string(),
                            false,
                        )),
                    };
                    if self.dry_run {
                        // The look was refused: the real run would most likely fail the same
                        // way. Predicted, not recorded.
                        let preview = Preview {
                            would: None,
                            predicted: resolution,
                            status_now: None,
                            invited_now: false,
                        };
                        return self.dry_run_result(
                            &command,
                            &preview,
                            attempts.load(Ordering::Relaxed),
                        );
                    }
                    let event = self.events.command_result(
                        &command,
                        &resolution,
                        attempts.load(Ordering::Relaxed),
                    );
                    self.count(command.command_type().as_str(), "failed");
                    return match self.ledger.complete(id, &fingerprint, &event).await {
                        Ok(recorded) => disposition_for(recorded),
                        Err(e) => {
                            self.store_failed("cannot record the failed command", &e)
                                .await
                        }
                    };
                }
            }
        }
    }

    /// The `command.dry_run` event of a previewed command, published (never parked, even for a
    /// predicted failure: nothing failed) and not recorded, so a real run applies it later.
    fn dry_run_result(&self, command: &Command, preview: &Preview, attempts: u32) -> Disposition {
        self.count(command.command_type().as_str(), Outcome::DryRun.as_str());
        let p = &preview.predicted;
        info!(
            outcome = Outcome::DryRun.as_str(),
            would_call = preview.would.as_ref().map(|a| a.api_command()),
            deleteaction = preview
                .would
                .as_ref()
                .and_then(|a| a.delete_action())
                .map(|d| d as u8),
            predicted = p.outcome.as_str(),
            code = p.error.as_ref().map(|e| e.code.as_str()),
            status = p.account_status.map(|s| s.as_str()),
            attempts,
            "dry run: looked up, nothing changed, not recorded as completed"
        );
        Disposition::Publish(self.events.dry_run(command, preview, attempts))
    }

    /// Look and act (or, in a dry run, only look), retried in process with exponential backoff
    /// and jitter on transient errors, honouring `Retry-After`. A provision with a `ticket` makes
    /// its calls through it (batched with the provisions in flight together).
    async fn attempt_with_backoff(
        &self,
        command: &Command,
        acted: &AtomicBool,
        attempts: &AtomicU32,
        ticket: Option<&Ticket<L>>,
    ) -> Result<Finished, StepError> {
        let once = || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            if self.dry_run {
                // No intent, no act: `preview` only looks.
                return apply::preview(
                    &*self.lastpass,
                    &command.action,
                    acted.load(Ordering::Relaxed),
                )
                .await
                .map(Finished::Previewed)
                .map_err(StepError::LastPass);
            }
            match ticket {
                Some(t) => {
                    t.restart();
                    self.look_and_act(t, command, acted).await
                }
                None => self.look_and_act(&*self.lastpass, command, acted).await,
            }
        };
        self.retry.run(&self.stop, "look and act", once).await
    }

    /// One attempt: look, record the intent, act.
    async fn look_and_act<P: LastPass>(
        &self,
        lastpass: &P,
        command: &Command,
        acted: &AtomicBool,
    ) -> Result<Finished, StepError> {
        let plan = apply::look(lastpass, &command.action, acted.load(Ordering::Relaxed))
            .await
            .map_err(StepError::LastPass)?;
        match plan {
            Plan::Done(r) => Ok(Finished::Resolved(r)),
            Plan::Act(act) => {
                // The intent is durable before the mutating call: a suspend and a deprovision
                // make it without looking first, so this is before any call.
                let acted_before = acted.load(Ordering::Relaxed);
                if !acted_before {
                    self.ledger
                        .record_intent(command.meta.command_id)
                        .await
                        .map_err(StepError::Store)?;
                    acted.store(true, Ordering::Relaxed);
                }
                apply::act(lastpass, &act, acted_before)
                    .await
                    .map(Finished::Resolved)
                    .map_err(StepError::LastPass)
            }
        }
    }

    async fn process_sync<S: EventSink>(&self, command: Command, sink: &S) -> Disposition {
        let started = std::time::Instant::now();
        let result = crate::sync::run(
            &*self.lastpass,
            &*self.snapshot,
            &self.events,
            &self.sync,
            &self.retry,
            &self.stop,
            &command.meta,
            sink,
        )
        .await;
        match result {
            Ok(completed) => {
                let completed = match self
                    .ledger
                    .complete(command.meta.command_id, &command.fingerprint(), &completed)
                    .await
                {
                    Ok(recorded) => recorded,
                    Err(e) => {
                        return self
                            .store_failed("cannot record the completed sync", &e)
                            .await;
                    }
                };
                info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "sync complete"
                );
                self.count("users.sync", "applied");
                Disposition::Publish(completed)
            }
            Err(SyncError::Store(e)) => {
                self.store_failed("the sync could not use the store", &e)
                    .await
            }
            Err(e @ SyncError::Publish(_)) => {
                error!(error = %e, "sync could not publish its events; giving it back");
                Disposition::Abandon
            }
            Err(SyncError::LastPass(e)) => {
                if e == LastPassError::Unauthorized {
                    self.gate.set(false);
                    (self.reload_credentials)();
                }
                if self.stop.is_cancelled() {
                    return Disposition::Abandon;
                }
                let (code, retryable, attempts) = match &e {
                    LastPassError::Unauthorized => (FailureCode::Unauthorized, true, 1),
                    e if e.is_transient() => {
                        (FailureCode::RetriesExhausted, true, self.retry.attempts)
                    }
                    _ => (FailureCode::LastpassRejected, false, 1),
                };
                warn!(error = %e, code = code.as_str(), "sync failed part-way; nobody is marked Deprovisioned");
                self.count("users.sync", "failed");
                let resolution = Resolution {
                    outcome: Outcome::Failed,
                    account_status: None,
                    license_reclaimed: false,
                    invitation_pending: false,
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
}

/// Failed commands are parked; everything else is published.
fn disposition_for(event: Event) -> Disposition {
    if event.kind == EventKind::Failed {
        Disposition::Park(event)
    } else {
        Disposition::Publish(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandType, Incoming};
    use crate::event::PublishError;
    use crate::fake::FakeLastPass;
    use std::sync::atomic::AtomicUsize;
    use uuid::Uuid;

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
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let reloads = Arc::new(AtomicUsize::new(0));
        let r = reloads.clone();
        let (ledger, snapshot) =
            crate::store::open_embedded(dir.path(), Duration::from_secs(60)).unwrap();
        let p = Processor {
            lastpass: Arc::new(FakeLastPass::new()),
            ledger: Arc::new(ledger),
            snapshot: Arc::new(snapshot),
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
            stop: CancellationToken::new(),
            in_flight_window: Duration::from_secs(3),
            store_ok: Arc::new(AtomicBool::new(true)),
            batcher: None,
            dry_run: false,
        };
        Setup {
            p,
            reloads,
            _dir: dir,
        }
    }

    fn incoming(kind: &str, email: &str, id: Uuid) -> Prepared {
        let body = serde_json::json!({"command_id": id, "type": kind, "user": {"email": email}});
        Prepared::parse(Incoming {
            body: body.to_string().into_bytes(),
            queue: CommandType::parse(kind).unwrap(),
            trace: None,
        })
    }

    fn outcome(d: &Disposition) -> serde_json::Value {
        let e = match d {
            Disposition::Publish(e) | Disposition::Park(e) => e,
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
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(outcome(&d)["outcome"], "applied");
        // After an intent, a look first: the account is disabled already, which is this
        // command's doing, and no second deluser is sent.
        assert_eq!(s.p.lastpass.calls(), ["getuserdata x@example.com"]);
    }

    #[tokio::test]
    async fn a_completed_command_repeats_its_stored_event_verbatim() {
        let s = setup();
        s.p.lastpass.add("x@example.com", false, false, false);
        let id = Uuid::new_v4();
        let first =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        let again =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(first, again);
        assert_eq!(s.p.lastpass.mutations().len(), 1);
    }

    #[tokio::test]
    async fn a_reused_command_id_with_another_command_is_rejected_not_answered() {
        let s = setup();
        s.p.lastpass.add("x@example.com", false, false, false);
        s.p.lastpass.add("y@example.com", false, false, false);
        let id = Uuid::new_v4();
        let first =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(outcome(&first)["outcome"], "applied");
        let other =
            s.p.process(incoming("user.suspend", "y@example.com", id), &NoSink)
                .await;
        let Disposition::Park(event) = &other else {
            panic!("{other:?}")
        };
        assert_eq!(event.kind, EventKind::Rejected);
        assert_eq!(
            event.error.as_ref().unwrap().code.as_str(),
            "command_id_conflict"
        );
        assert_eq!(s.p.lastpass.mutations().len(), 1, "y was not suspended");
        // The identical redelivery still repeats the stored event verbatim.
        let again =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(again, first);
    }

    #[tokio::test]
    async fn transient_errors_go_to_the_next_round_then_fail_exhausted() {
        let s = setup();
        s.p.lastpass.add("x@example.com", false, false, false);
        s.p.lastpass.fail_next([transient(), transient()]);
        let id = Uuid::new_v4();
        let d =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
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
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        let Disposition::Park(event) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(
            event.error.as_ref().unwrap().code,
            FailureCode::RetriesExhausted.into()
        );
        assert_eq!(outcome(&d)["attempts"], 4);
        // Not recorded: a later re-drive applies it.
        let d =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
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
                incoming("user.suspend", "x@example.com", Uuid::new_v4()),
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

    fn provision(email: &str, id: Uuid) -> Prepared {
        let body = serde_json::json!({"command_id": id, "type": "user.provision",
            "user": {"email": email, "first_name": "A", "last_name": "B"}});
        Prepared::parse(Incoming {
            body: body.to_string().into_bytes(),
            queue: CommandType::Provision,
            trace: None,
        })
    }

    #[tokio::test]
    async fn provisions_in_flight_together_share_calls_and_are_resolved_per_user() {
        let mut s = setup();
        s.p.batcher = Some(Batcher::new(
            s.p.lastpass.clone(),
            crate::batch::BatchSettings {
                max: 50,
                window: Duration::from_secs(5),
                page_size: 100,
            },
        ));
        let lp = s.p.lastpass.clone();
        lp.add("present@example.com", false, false, false);
        lp.add("suspended@example.com", true, false, false);
        lp.exists_elsewhere("elsewhere@example.com");
        let emails: Vec<String> = (0..8)
            .map(|i| format!("new{i}@example.com"))
            .chain(
                ["present", "suspended", "elsewhere"]
                    .iter()
                    .map(|n| format!("{n}@example.com")),
            )
            .collect();
        let ids: Vec<Uuid> = emails.iter().map(|_| Uuid::new_v4()).collect();
        let all = emails
            .iter()
            .zip(&ids)
            .map(|(e, id)| s.p.process(provision(e, *id), &NoSink));
        let results = futures_util::future::join_all(all).await;
        let by_email: std::collections::HashMap<&str, serde_json::Value> = emails
            .iter()
            .map(String::as_str)
            .zip(results.iter().map(outcome))
            .collect();
        for i in 0..8 {
            let d = &by_email[format!("new{i}@example.com").as_str()];
            assert_eq!(d["outcome"], "applied", "{d}");
            assert_eq!(d["account_status"], "Staged", "{d}");
        }
        assert_eq!(by_email["present@example.com"]["outcome"], "already_done");
        let suspended = &by_email["suspended@example.com"];
        assert_eq!(suspended["outcome"], "failed");
        assert_eq!(suspended["error"]["code"], "account_suspended");
        let elsewhere = &by_email["elsewhere@example.com"];
        assert_eq!(elsewhere["outcome"], "applied");
        assert_eq!(elsewhere["invitation_pending"], true);
        // Eleven provisions: one page before, one batchadd of the nine to create, one page after
        // (the invitation is answered from the page's `invited`).
        let calls = lp.calls();
        assert_eq!(lp.batchadd_calls(), 1, "{calls:?}");
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("getuserdata"))
                .count(),
            2,
            "{calls:?}"
        );
        // Each is recorded as completed on its own: a redelivery repeats its own event.
        for (e, id) in emails.iter().zip(&ids) {
            let again = s.p.process(provision(e, *id), &NoSink).await;
            assert_eq!(outcome(&again)["command_id"], id.to_string());
        }
        assert_eq!(lp.batchadd_calls(), 1, "nothing was created twice");
    }

    #[tokio::test]
    async fn an_invalid_message_is_parked_with_its_code() {
        let s = setup();
        let d =
            s.p.process(
                Prepared::parse(Incoming {
                    body: b"{".to_vec(),
                    queue: CommandType::Suspend,
                    trace: None,
                }),
                &NoSink,
            )
            .await;
        let Disposition::Park(event) = d else {
            panic!("not parked")
        };
        assert_eq!(event.error.unwrap().code.as_str(), "not_json");
        assert_eq!(event.kind, EventKind::Rejected);
    }

    fn published(d: &Disposition) -> &Event {
        match d {
            Disposition::Publish(e) => e,
            other => panic!("not published: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_dry_run_suspend_publishes_what_it_would_do_and_records_nothing() {
        let mut s = setup();
        s.p.dry_run = true;
        s.p.lastpass.add("x@example.com", false, false, false);
        let id = Uuid::new_v4();
        let d =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        let event = published(&d);
        assert_eq!(event.kind, EventKind::DryRun);
        assert_eq!(
            event.id,
            crate::event::result_event_id(id, EventKind::DryRun)
        );
        assert!(event.error.is_none());
        let data = outcome(&d);
        assert_eq!(data["outcome"], "dry_run");
        assert_eq!(data["account_status"], "Active", "nothing changed");
        assert_eq!(data["license_reclaimed"], false);
        assert_eq!(data["attempts"], 1);
        assert_eq!(
            data["dry_run"],
            serde_json::json!({"would_call": "deluser", "deleteaction": 0,
                "outcome": "applied", "account_status": "Suspended",
                "license_reclaimed": false, "invitation_pending": false})
        );
        // Only looked; no intent, no completion.
        assert!(s.p.lastpass.mutations().is_empty());
        assert_eq!(s.p.lastpass.calls(), ["getuserdata x@example.com"]);
        assert!(!s.p.lastpass.get("x@example.com").unwrap().disabled);
        assert!(s.p.ledger.completed(id).await.unwrap().is_none());
        assert!(s.p.ledger.intent(id).await.unwrap().is_none());

        // Dry-run again: previewed again (not answered from the ledger).
        let again =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(published(&again).kind, EventKind::DryRun);

        // The same command to a real run is applied for real.
        s.p.dry_run = false;
        let real =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(published(&real).kind, EventKind::Suspended);
        assert_eq!(outcome(&real)["outcome"], "applied");
        assert_eq!(
            outcome(&real)["attempts"],
            1,
            "the dry run's look is not counted"
        );
        assert_eq!(s.p.lastpass.mutations(), ["deluser 0 x@example.com"]);
        assert!(s.p.ledger.completed(id).await.unwrap().is_some());

        // Once completed, a dry run repeats the stored event like any redelivery.
        s.p.dry_run = true;
        let repeat =
            s.p.process(incoming("user.suspend", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(repeat, real);
        assert_eq!(s.p.lastpass.mutations().len(), 1);
    }

    #[tokio::test]
    async fn a_dry_run_that_predicts_a_failure_is_published_not_parked() {
        let mut s = setup();
        s.p.dry_run = true;
        let id = Uuid::new_v4();
        let d =
            s.p.process(incoming("user.suspend", "nobody@example.com", id), &NoSink)
                .await;
        let data = outcome(&d);
        assert_eq!(published(&d).kind, EventKind::DryRun);
        assert_eq!(data["account_status"], serde_json::Value::Null);
        assert_eq!(data["dry_run"]["would_call"], serde_json::Value::Null);
        assert!(data["dry_run"].get("deleteaction").is_none());
        assert_eq!(data["dry_run"]["outcome"], "failed");
        assert_eq!(data["dry_run"]["error"]["code"], "user_not_found");
        assert!(data.get("error").is_none());
        assert!(s.p.ledger.completed(id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_dry_run_retries_like_a_real_run_and_keeps_no_retry_state() {
        let mut s = setup();
        s.p.dry_run = true;
        s.p.lastpass.add("x@example.com", false, false, false);
        // In process: a transient error, then the look works.
        s.p.lastpass.fail_next([transient()]);
        let id = Uuid::new_v4();
        let d =
            s.p.process(incoming("user.deprovision", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(outcome(&d)["attempts"], 2);
        assert_eq!(outcome(&d)["dry_run"]["deleteaction"], 2);
        // Delayed: both attempts fail, so a later round.
        s.p.lastpass.fail_next([transient(), transient()]);
        let id = Uuid::new_v4();
        let d =
            s.p.process(incoming("user.deprovision", "x@example.com", id), &NoSink)
                .await;
        assert!(
            matches!(d, Disposition::RetryLater { round: 1, .. }),
            "{d:?}"
        );
        let d =
            s.p.process(incoming("user.deprovision", "x@example.com", id), &NoSink)
                .await;
        assert_eq!(published(&d).kind, EventKind::DryRun);
        assert_eq!(outcome(&d)["attempts"], 3);
        // A real run later starts afresh.
        assert_eq!(
            s.p.ledger.retry_state(id).await.unwrap(),
            RetryState::default()
        );
        assert!(s.p.lastpass.mutations().is_empty());
        assert!(s.p.lastpass.get("x@example.com").is_some());
    }

    #[tokio::test]
    async fn a_dry_run_waits_out_refused_credentials_like_a_real_run() {
        let mut s = setup();
        s.p.dry_run = true;
        s.p.lastpass.add("x@example.com", true, false, false);
        s.p.lastpass.fail_next([LastPassError::Unauthorized]);
        let d =
            s.p.process(
                incoming("user.reactivate", "x@example.com", Uuid::new_v4()),
                &NoSink,
            )
            .await;
        assert_eq!(outcome(&d)["dry_run"]["would_call"], "enableuser");
        assert_eq!(s.reloads.load(Ordering::Relaxed), 1);
        assert!(s.p.gate.is_open());
        assert!(s.p.lastpass.mutations().is_empty());
    }
}
