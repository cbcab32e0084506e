//! One retry policy and one backoff: transient LastPass errors are retried in process with
//! exponential backoff and jitter (honouring `Retry-After`), then through delayed redelivery
//! rounds (`P.retry.*`), then the command fails with `retries_exhausted`.

use crate::lastpass::LastPassError;
use backon::{ExponentialBuilder, Retryable};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

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

/// An error that may be worth retrying.
pub(crate) trait MaybeTransient: Display {
    fn is_transient(&self) -> bool;
    /// The server's `Retry-After`, when it sent one: never retry sooner.
    fn retry_after(&self) -> Option<Duration>;
}

impl MaybeTransient for LastPassError {
    fn is_transient(&self) -> bool {
        LastPassError::is_transient(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        LastPassError::retry_after(self)
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

    /// Runs `op`, retrying it in process while it fails transiently, up to `attempts` times in
    /// all. Stops retrying (and stops sleeping) once `stop` is cancelled. `what` names the call
    /// in the warning logged before each retry.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        stop: &CancellationToken,
        what: &'static str,
        op: F,
    ) -> Result<T, E>
    where
        E: MaybeTransient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let sleeper = stop.clone();
        op.retry(self.backoff())
            .sleep(move |d| {
                let stop = sleeper.clone();
                async move {
                    sleep_unless_cancelled(d, &stop).await;
                }
            })
            .when(|e: &E| e.is_transient() && !stop.is_cancelled())
            .adjust(|e: &E, d| d.map(|d| e.retry_after().map_or(d, |ra| ra.max(d))))
            .notify(|e: &E, d| {
                metrics::counter!(crate::telemetry::RETRIES).increment(1);
                warn!(error = %e, retry_in_ms = d.as_millis() as u64, call = what, "LastPass call failed; retrying")
            })
            .await
    }
}

/// Sleeps for `d`; returns `true` at once if `stop` is (or becomes) cancelled.
pub(crate) async fn sleep_unless_cancelled(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => stop.is_cancelled(),
        _ = stop.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(attempts: usize) -> RetryPolicy {
        RetryPolicy {
            attempts,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            round_delays: vec![],
        }
    }

    fn transient(retry_after: Option<Duration>) -> LastPassError {
        LastPassError::Transient {
            reason: "503".into(),
            retry_after,
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_up_to_the_attempts() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = policy(3)
            .run(&CancellationToken::new(), "test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(transient(None))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn permanent_errors_and_cancellation_stop_at_once() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = policy(3)
            .run(&CancellationToken::new(), "test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(LastPassError::Unauthorized)
            })
            .await;
        assert_eq!(r, Err(LastPassError::Unauthorized));
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        let stop = CancellationToken::new();
        stop.cancel();
        let calls = AtomicU32::new(0);
        let _: Result<(), _> = policy(3)
            .run(&stop, "test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(transient(None))
            })
            .await;
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_never_undercut() {
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let _: Result<(), _> = policy(2)
            .run(&CancellationToken::new(), "test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(transient(Some(Duration::from_secs(7))))
            })
            .await;
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        assert!(start.elapsed() >= Duration::from_secs(7));
    }
}
