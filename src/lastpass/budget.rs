//! The LastPass call budget: every API call waits here for a permit before it is sent.
//!
//! The permits come from a [`governor`] rate limiter (GCRA, burst 1: calls are spaced evenly)
//! whose rate is adaptive (AIMD):
//!
//! - With no 429 seen, the rate is the configured maximum (`CONNECTOR_LASTPASS_MAX_RPS`), or no
//!   limit at all when none is configured.
//! - An HTTP 429 halves the rate in force ([`DECREASE_FACTOR`]), never below [`FLOOR_RPS`]; with
//!   no limit in force, the rate halved is the one observed, the calls sent in the last second.
//!   429s within [`DECREASE_EVERY`] of a decrease (answers to calls already in flight) change
//!   nothing more.
//! - Every whole second without a 429 adds [`INCREASE_RPS`] calls per second, up to the
//!   configured maximum; with none configured, the limit is dropped after [`QUIET`] without a 429.
//!
//! Each change of rate is logged at info. The clock is tokio's, so tests can pause it.

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// The lowest rate a 429 can bring the budget to, in calls per second.
pub const FLOOR_RPS: f64 = 1.0;
/// A 429 multiplies the rate by this.
pub const DECREASE_FACTOR: f64 = 0.5;
/// Calls per second added for every whole second without a 429.
pub const INCREASE_RPS: f64 = 1.0;
/// At most one decrease in this long.
pub const DECREASE_EVERY: Duration = Duration::from_secs(1);
/// With no maximum configured, the limit a 429 started is dropped after this long without one.
pub const QUIET: Duration = Duration::from_secs(30);

/// governor's clock, read from tokio's (so it stands still while tokio's time is paused).
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// The rate a 429 set, and when.
#[derive(Debug, Clone, Copy)]
struct Lowered {
    base: f64,
    since: Instant,
}

struct State {
    /// The rate in force and its limiter; `None`: no limit.
    limiter: Option<(f64, Arc<Limiter>)>,
    lowered: Option<Lowered>,
    /// When the calls of the last second were let through.
    recent: VecDeque<Instant>,
}

/// The shared budget of one client (and all its clones).
pub struct CallBudget {
    max_rps: Option<f64>,
    state: Mutex<State>,
}

impl std::fmt::Debug for CallBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallBudget")
            .field("max_rps", &self.max_rps)
            .field("rate", &self.rate())
            .finish()
    }
}

fn limiter(rps: f64) -> Arc<Limiter> {
    // rps is a positive finite number (checked in `new`, at least `FLOOR_RPS` after a 429).
    let period = Duration::from_secs_f64(1.0 / rps.clamp(1e-6, 1e9));
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN));
    Arc::new(RateLimiter::direct_with_clock(quota, TokioClock))
}

impl CallBudget {
    /// `max_rps`: at most this many calls per second (`None`: no fixed limit). A value that is
    /// not a positive finite number counts as `None`.
    pub fn new(max_rps: Option<f64>) -> CallBudget {
        let max_rps = max_rps.filter(|r| r.is_finite() && *r > 0.0);
        CallBudget {
            max_rps,
            state: Mutex::new(State {
                limiter: max_rps.map(|r| (r, limiter(r))),
                lowered: None,
                recent: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rate in force now, in calls per second (`None`: no limit).
    pub fn rate(&self) -> Option<f64> {
        let mut s = self.lock();
        self.update(&mut s, Instant::now());
        s.limiter.as_ref().map(|(r, _)| *r)
    }

    /// Waits until a call may be sent, and counts it as sent.
    pub async fn acquire(&self) {
        loop {
            let limiter = {
                let mut s = self.lock();
                let now = Instant::now();
                self.update(&mut s, now);
                s.limiter.as_ref().map(|(_, l)| Arc::clone(l))
            };
            let wait = match limiter {
                None => None,
                Some(l) => l
                    .check()
                    .err()
                    .map(|not_until| not_until.wait_time_from(TokioClock.now())),
            };
            match wait {
                // Sleeps at most a second before looking at the rate again (it may have risen).
                Some(d) => tokio::time::sleep(d.min(Duration::from_secs(1))).await,
                None => break,
            }
        }
        let mut s = self.lock();
        let now = Instant::now();
        s.recent.push_back(now);
        prune(&mut s.recent, now);
    }

    /// LastPass answered 429: lower the rate (at most once per [`DECREASE_EVERY`]).
    pub fn throttled(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        self.update(&mut s, now);
        if s.lowered
            .is_some_and(|l| now.duration_since(l.since) < DECREASE_EVERY)
        {
            return;
        }
        prune(&mut s.recent, now);
        let current = match &s.limiter {
            Some((r, _)) => *r,
            // No limit in force: what was sent in the last second.
            None => s.recent.len() as f64,
        };
        let base = (current * DECREASE_FACTOR).max(FLOOR_RPS);
        s.lowered = Some(Lowered { base, since: now });
        self.set(&mut s, Some(base), "LastPass answered 429");
    }

    /// Applies the additive increase due at `now`.
    fn update(&self, s: &mut State, now: Instant) {
        let Some(l) = s.lowered else { return };
        let elapsed = now.duration_since(l.since);
        let rate = l.base + INCREASE_RPS * elapsed.as_secs() as f64;
        let target = match self.max_rps {
            Some(max) if rate >= max => {
                s.lowered = None;
                Some(max)
            }
            None if elapsed >= QUIET => {
                s.lowered = None;
                None
            }
            _ => Some(rate),
        };
        self.set(s, target, "no 429 for a while");
    }

    fn set(&self, s: &mut State, rate: Option<f64>, why: &'static str) {
        let current = s.limiter.as_ref().map(|(r, _)| *r);
        if current == rate {
            return;
        }
        match rate {
            Some(r) => tracing::info!(
                rps = r,
                max_rps = self.max_rps,
                reason = why,
                "LastPass call rate changed"
            ),
            None => tracing::info!(reason = why, "LastPass call rate no longer limited"),
        }
        s.limiter = rate.map(|r| (r, limiter(r)));
    }
}

/// Keeps the calls of the last second.
fn prune(recent: &mut VecDeque<Instant>, now: Instant) {
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        recent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acquires `n` permits; returns how long that took.
    async fn take(b: &CallBudget, n: usize) -> Duration {
        let started = Instant::now();
        for _ in 0..n {
            b.acquire().await;
        }
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_by_default() {
        let b = CallBudget::new(None);
        assert_eq!(take(&b, 1000).await, Duration::ZERO);
        assert_eq!(b.rate(), None);
        assert_eq!(CallBudget::new(Some(0.0)).rate(), None);
        assert_eq!(CallBudget::new(Some(f64::NAN)).rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_maximum_spaces_the_calls() {
        let b = CallBudget::new(Some(10.0));
        // The first at once, then one every 100 ms.
        let took = take(&b, 21).await;
        assert!(
            (Duration::from_millis(1990)..=Duration::from_millis(2010)).contains(&took),
            "{took:?}"
        );
        assert_eq!(b.rate(), Some(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_halves_the_maximum_then_it_recovers_additively() {
        let b = CallBudget::new(Some(20.0));
        b.throttled();
        assert_eq!(b.rate(), Some(10.0));
        // More 429s within the second (calls already in flight) change nothing.
        b.throttled();
        assert_eq!(b.rate(), Some(10.0));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(b.rate(), Some(11.0));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(b.rate(), Some(15.0));
        // A 429 after the first second halves again.
        b.throttled();
        assert_eq!(b.rate(), Some(7.5));
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(b.rate(), Some(19.5));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.rate(), Some(20.0));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.rate(), Some(20.0));
    }

    #[tokio::test(start_paused = true)]
    async fn never_below_the_floor() {
        let b = CallBudget::new(Some(1.5));
        b.throttled();
        assert_eq!(b.rate(), Some(FLOOR_RPS));
        tokio::time::advance(Duration::from_secs(2)).await;
        b.throttled();
        assert_eq!(b.rate(), Some(FLOOR_RPS));
    }

    #[tokio::test(start_paused = true)]
    async fn the_lowered_rate_spaces_the_calls() {
        let b = CallBudget::new(Some(8.0));
        b.throttled();
        // 4/s: 5 calls take a second (the rate rises only after a whole second).
        let took = take(&b, 5).await;
        assert!(
            (Duration::from_millis(990)..=Duration::from_millis(1010)).contains(&took),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_maximum_a_429_starts_from_the_observed_rate_and_relaxes() {
        let b = CallBudget::new(None);
        // 40 calls in the last second, then a 429.
        for _ in 0..40 {
            b.acquire().await;
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        b.throttled();
        assert_eq!(b.rate(), Some(20.0));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(b.rate(), Some(23.0));
        // The calls go at the rate in force.
        let took = take(&b, 24).await;
        assert!(took >= Duration::from_millis(950), "{took:?}");
        tokio::time::advance(QUIET).await;
        assert_eq!(b.rate(), None);
        assert_eq!(take(&b, 1000).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_maximum_or_calls_a_429_starts_at_the_floor() {
        let b = CallBudget::new(None);
        b.throttled();
        assert_eq!(b.rate(), Some(FLOOR_RPS));
    }
}
