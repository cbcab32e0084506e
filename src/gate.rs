//! The credentials gate: open while LastPass accepts our credentials, closed by the first
//! authorization error. The dispatcher takes no new delivery while it is closed; the command
//! that hit the error keeps probing the credentials (re-reading the provhash file) until they
//! work, and opens it again.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct Gate(Arc<watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(watch::Sender::new(true)))
    }
}

impl Gate {
    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    pub fn set(&self, open: bool) {
        self.0
            .send_if_modified(|v| std::mem::replace(v, open) != open);
    }

    /// Resolves when the gate is open.
    pub async fn opened(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// Delay before the n-th credential probe: 1 s, 2 s, 4 s, ... capped at 30 s.
pub(crate) fn probe_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_delays_double_up_to_thirty_seconds() {
        let d: Vec<u64> = (1..=8).map(|n| probe_delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[tokio::test]
    async fn opened_resolves_when_the_gate_opens() {
        let g = Gate::default();
        g.set(false);
        assert!(!g.is_open());
        let waiter = tokio::spawn({
            let g = g.clone();
            async move { g.opened().await }
        });
        g.set(true);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
