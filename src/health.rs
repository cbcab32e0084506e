//! Readiness: whether this replica can do its work (broker session up, store answering) and
//! whether it is the active consumer or a standby; `GET /readyz` in [`crate::http`] serves it.

use crate::command::CommandType;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    connected: AtomicBool,
    store_ok: Arc<AtomicBool>,
    active: Mutex<BTreeSet<&'static str>>,
}

/// Shared by the service, the processor (store) and the consumer (broker, role).
#[derive(Clone, Default)]
pub(crate) struct Health(Arc<Inner>);

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Health({})", self.report().1)
    }
}

impl Health {
    /// The flag the processor clears when the store fails and sets when it answers again.
    pub fn store_flag(&self) -> Arc<AtomicBool> {
        self.0.store_ok.clone()
    }

    pub fn set_connected(&self, up: bool) {
        self.0.connected.store(up, Ordering::Relaxed);
        if !up {
            self.active().clear();
        }
    }

    pub fn set_active(&self, queue: CommandType, active: bool) {
        let mut a = self.active();
        if active {
            a.insert(queue.queue_suffix());
        } else {
            a.remove(queue.queue_suffix());
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        self.0.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready, and the body of `/readyz`.
    pub fn report(&self) -> (bool, serde_json::Value) {
        let connected = self.0.connected.load(Ordering::Relaxed);
        let store = self.0.store_ok.load(Ordering::Relaxed);
        let active: Vec<&str> = self.active().iter().copied().collect();
        let ready = connected && store;
        let role = if active.is_empty() {
            "standby"
        } else {
            "active"
        };
        (
            ready,
            serde_json::json!({
                "ready": ready,
                "role": role,
                "active_queues": active,
                "broker": if connected { "connected" } else { "disconnected" },
                "store": if store { "ok" } else { "unreachable" },
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_ready_with_broker_and_store_and_reports_its_role() {
        let h = Health::default();
        assert!(!h.report().0, "nothing up yet");
        h.store_flag().store(true, Ordering::Relaxed);
        h.set_connected(true);
        let (ready, body) = h.report();
        assert!(ready);
        assert_eq!(body["role"], "standby");
        h.set_active(CommandType::Provision, true);
        assert_eq!(h.report().1["role"], "active");
        assert_eq!(h.report().1["active_queues"][0], "provision");
        h.store_flag().store(false, Ordering::Relaxed);
        assert!(!h.report().0, "a store that does not answer is not ready");
        h.set_connected(false);
        assert_eq!(
            h.report().1["role"],
            "standby",
            "a lost session is no longer active"
        );
    }
}
