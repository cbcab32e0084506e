//! The faults of the API endpoint ([`Faults`]), and the decision, per API request, whether one
//! answers instead of the company.

use super::api::ApiAnswer;
use super::company::Company;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Faults of the API endpoint (never of the control endpoint), applied in this order:
/// latency, outage, `fail_next`, `rate_limit_next`, `error_rate`, `rate_limit_rate`,
/// `rate_limit_rps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Delay before every API answer.
    pub latency_ms: u64,
    /// Fraction (0..=1) of API answers that are HTTP 503 with a small HTML body.
    pub error_rate: f64,
    /// Fraction (0..=1) of API answers that are HTTP 429 (HTML, `Retry-After`).
    pub rate_limit_rate: f64,
    /// Every API call answers 503.
    pub outage: bool,
    /// The next N API calls answer 503.
    pub fail_next: u32,
    /// The next N API calls answer 429 with `Retry-After`.
    pub rate_limit_next: u32,
    /// The `Retry-After` of 429 answers, in seconds.
    pub retry_after_secs: u64,
    /// Answer 429 to the API calls above this many per second (a token bucket refilled at this
    /// rate, holding at most this many tokens, at least 1; only calls no other fault answered
    /// take a token). `None`: no such limit.
    pub rate_limit_rps: Option<f64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            outage: false,
            fail_next: 0,
            rate_limit_next: 0,
            retry_after_secs: 1,
            rate_limit_rps: None,
        }
    }
}

impl Faults {
    /// Rates clamped to 0..=1 (NaN → 0).
    pub(super) fn sanitized(mut self) -> Self {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        self.error_rate = clamp(self.error_rate);
        self.rate_limit_rate = clamp(self.rate_limit_rate);
        self.rate_limit_rps = self.rate_limit_rps.filter(|r| r.is_finite() && *r > 0.0);
        self
    }
}

/// A change to [`Faults`]: missing fields are unchanged (`PUT /_control/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultsPatch {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub rate_limit_rate: Option<f64>,
    pub outage: Option<bool>,
    pub fail_next: Option<u32>,
    pub rate_limit_next: Option<u32>,
    pub retry_after_secs: Option<u64>,
    /// `Some(None)` (JSON `null`) removes the limit; a missing field leaves it as it is.
    #[serde(default, deserialize_with = "some_or_null")]
    pub rate_limit_rps: Option<Option<f64>>,
}

/// A present field, `null` included, is `Some(..)`.
fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// The tokens of the `rate_limit_rps` bucket and when they were counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Company {
    /// Decides whether this API request is answered by a fault (consumes `fail_next` /
    /// `rate_limit_next` and draws the random rates).
    pub(super) fn fault(&mut self) -> Option<ApiAnswer> {
        self.fault_at(Instant::now())
    }

    /// [`Company::fault`] at `now`, counting the 429 answers.
    pub(super) fn fault_at(&mut self, now: Instant) -> Option<ApiAnswer> {
        let answer = self.decide_fault(now);
        if matches!(answer, Some(ApiAnswer::RateLimited { .. })) {
            self.counts.rate_limited += 1;
        }
        answer
    }

    fn decide_fault(&mut self, now: Instant) -> Option<ApiAnswer> {
        let f = &mut self.faults;
        let limited = ApiAnswer::RateLimited {
            retry_after_secs: f.retry_after_secs,
        };
        if f.outage {
            return Some(ApiAnswer::Unavailable);
        }
        if f.fail_next > 0 {
            f.fail_next -= 1;
            return Some(ApiAnswer::Unavailable);
        }
        if f.rate_limit_next > 0 {
            f.rate_limit_next -= 1;
            return Some(limited);
        }
        if f.error_rate > 0.0 && self.rng.f64() < f.error_rate {
            return Some(ApiAnswer::Unavailable);
        }
        if f.rate_limit_rate > 0.0 && self.rng.f64() < f.rate_limit_rate {
            return Some(limited);
        }
        let Some(rps) = f.rate_limit_rps else {
            self.bucket = None;
            return None;
        };
        let capacity = rps.max(1.0);
        let mut b = self.bucket.unwrap_or(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rps).min(capacity);
        b.at = now;
        let answer = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(limited)
        };
        self.bucket = Some(b);
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::super::company::test_support::company;
    use super::*;

    #[test]
    fn faults_apply_in_the_documented_order() {
        let mut c = company(0);
        assert_eq!(c.fault(), None);
        c.set_faults(FaultsPatch {
            fail_next: Some(1),
            rate_limit_next: Some(1),
            retry_after_secs: Some(7),
            ..Default::default()
        });
        assert_eq!(c.fault(), Some(ApiAnswer::Unavailable));
        assert_eq!(
            c.fault(),
            Some(ApiAnswer::RateLimited {
                retry_after_secs: 7
            })
        );
        assert_eq!(c.fault(), None);
        c.set_faults(FaultsPatch {
            outage: Some(true),
            fail_next: Some(2),
            ..Default::default()
        });
        // An outage answers first and consumes nothing.
        assert_eq!(c.fault(), Some(ApiAnswer::Unavailable));
        assert_eq!(c.faults.fail_next, 2);
    }

    #[test]
    fn rate_limit_rps_answers_429_above_the_rate_and_counts_them() {
        let mut c = company(0);
        c.set_faults(FaultsPatch {
            rate_limit_rps: Some(Some(20.0)),
            ..Default::default()
        });
        let t0 = Instant::now();
        let limited = |a: Option<ApiAnswer>| matches!(a, Some(ApiAnswer::RateLimited { .. }));
        // A burst of 30 at one instant: 20 pass, 10 are answered 429.
        let burst = (0..30).filter(|_| limited(c.fault_at(t0))).count();
        assert_eq!(burst, 10);
        assert_eq!(c.counts().rate_limited, 10);
        // Half a second later, 10 tokens are back.
        let t1 = t0 + std::time::Duration::from_millis(500);
        let later = (0..15).filter(|_| limited(c.fault_at(t1))).count();
        assert_eq!(later, 5);
        // One call every 50 ms (20/s) is never limited.
        let steady = (1..=100)
            .filter(|i| limited(c.fault_at(t1 + std::time::Duration::from_millis(50 * i))))
            .count();
        assert_eq!(steady, 0);
        // `null` removes the limit.
        let f: FaultsPatch = serde_json::from_str(r#"{"rate_limit_rps": null}"#).unwrap();
        assert_eq!(c.set_faults(f).rate_limit_rps, None);
        assert!((0..100).all(|_| c.fault_at(t1).is_none()));
        let keep: FaultsPatch = serde_json::from_str("{}").unwrap();
        assert_eq!(keep.rate_limit_rps, None);
    }

    #[test]
    fn rates_are_clamped() {
        let mut c = company(0);
        let f = c.set_faults(FaultsPatch {
            error_rate: Some(f64::NAN),
            rate_limit_rate: Some(3.0),
            ..Default::default()
        });
        assert_eq!((f.error_rate, f.rate_limit_rate), (0.0, 1.0));
        assert_eq!(
            c.fault(),
            Some(ApiAnswer::RateLimited {
                retry_after_secs: 1
            })
        );
    }
}
