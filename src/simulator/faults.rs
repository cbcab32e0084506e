//! The faults of the API endpoint ([`Faults`]), and the decision, per API request, whether one
//! answers instead of the company.

use super::api::ApiAnswer;
use super::company::Company;
use serde::{Deserialize, Serialize};

/// Faults of the API endpoint (never of the control endpoint), applied in this order:
/// latency, outage, `fail_next`, `rate_limit_next`, `error_rate`, `rate_limit_rate`.
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
        }
    }
}

impl Faults {
    /// Rates clamped to 0..=1 (NaN → 0).
    pub(super) fn sanitized(mut self) -> Self {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        self.error_rate = clamp(self.error_rate);
        self.rate_limit_rate = clamp(self.rate_limit_rate);
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
}

impl Company {
    /// Decides whether this API request is answered by a fault (consumes `fail_next` /
    /// `rate_limit_next` and draws the random rates).
    pub(super) fn fault(&mut self) -> Option<ApiAnswer> {
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
        None
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
