//! `CONNECTOR_SYNC_INTERVAL`: publish a `users.sync` command every interval.

use crate::amqp::publisher::Publisher;
use std::time::Duration;
use tracing::{debug, warn};
use uuid::Uuid;

/// Publishes a `users.sync` command every `every`. The command id is derived from the prefix
/// and the time slot, so replicas that tick in the same slot publish the same command.
pub(super) async fn scheduled_syncs(publisher: Publisher, prefix: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let slot = chrono::Utc::now().timestamp_millis() as u128 / every.as_millis().max(1);
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{prefix}/sync/{slot}").as_bytes(),
        );
        let body = serde_json::json!({
            "command_id": id, "type": "users.sync", "requested_by": "lastpass-connector schedule",
        });
        match publisher
            .publish_command("users.sync", body.to_string().as_bytes())
            .await
        {
            Ok(()) => debug!(command_id = %id, "scheduled sync requested"),
            Err(err) => {
                warn!(error = %crate::error_chain(&err), "could not request the scheduled sync")
            }
        }
    }
}
