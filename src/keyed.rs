//! Per-key ordering: work items with the same key run one at a time, in the order they were
//! entered; items with different keys run concurrently. Used so that commands for the same email
//! are applied in arrival order within a process.

use std::collections::HashMap;
use tokio::sync::oneshot;

/// Hands out turns per key. Not shared: the dispatcher owns it and calls [`Sequencer::enter`] in
/// arrival order.
#[derive(Default)]
pub struct Sequencer {
    tails: HashMap<String, oneshot::Receiver<()>>,
}

/// One item's place in its key's line.
pub struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl Turn {
    /// Waits until every earlier item with the same key has finished (or was dropped), then
    /// returns the guard; dropping the guard lets the next item go.
    pub async fn wait(self) -> TurnGuard {
        if let Some(prev) = self.previous {
            let _ = prev.await;
        }
        TurnGuard(self.done)
    }
}

/// Held while an item runs.
pub struct TurnGuard(#[allow(dead_code)] oneshot::Sender<()>);

impl Sequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters an item with this key at the end of its line.
    pub fn enter(&mut self, key: &str) -> Turn {
        if self.tails.len() > 1024 {
            // Forget lines whose last item has finished.
            self.tails
                .retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (done, rx) = oneshot::channel();
        let previous = self.tails.insert(key.to_string(), rx);
        Turn { previous, done }
    }

    /// How many keys are remembered (for tests).
    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.tails.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_runs_in_entry_order_other_keys_do_not_wait() {
        let mut seq = Sequencer::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // a1 is slow; a2 must still run after it; b1 must not wait for a1.
        for (key, name, ms) in [("a", "a1", 150u64), ("a", "a2", 0), ("b", "b1", 0)] {
            let turn = seq.enter(key);
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let _g = turn.wait().await;
                log.lock().unwrap().push(format!("{name} start"));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                log.lock().unwrap().push(format!("{name} end"));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let pos = |s: &str| log.iter().position(|x| x == s).unwrap();
        assert!(pos("a1 end") < pos("a2 start"), "{log:?}");
        assert!(pos("b1 end") < pos("a1 end"), "{log:?}");
    }

    #[tokio::test]
    async fn finished_lines_are_forgotten() {
        let mut seq = Sequencer::new();
        for i in 0..2000 {
            let turn = seq.enter(&format!("k{i}"));
            drop(turn.wait().await);
        }
        assert!(seq.len() <= 1025, "{} keys kept", seq.len());
    }
}
