//! The end of a session: at a requested stop, cancel the consumers (what is prefetched but not
//! dispatched goes back when the channel closes), then let in-flight commands finish within the
//! grace period; whatever is still running then is aborted, and its delivery, never acked, comes
//! back to the queue.

use super::setup::Session;
use lapin::options::BasicCancelOptions;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::{info, warn};

pub(super) async fn drain(
    session: Session,
    mut tasks: JoinSet<()>,
    requested: bool,
    grace: Duration,
) {
    // Finished tasks are not in flight.
    while tasks.try_join_next().is_some() {}
    if requested {
        for (ch, tag) in &session.consumers {
            let _ = ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        info!(
            in_flight = tasks.len(),
            "shutting down: finishing in-flight commands"
        );
    }
    drop(session.deliveries);
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            left = tasks.len(),
            "in-flight commands did not finish in time; giving them back"
        );
        tasks.abort_all();
    }
    // Close each channel once, before the connection closes: the work and sync channels
    // appear once per consumer.
    let mut closed: Vec<u16> = Vec::new();
    for (ch, _) in &session.consumers {
        if !closed.contains(&ch.id()) {
            closed.push(ch.id());
            let _ = ch.close(200, "stopping".into()).await;
        }
    }
    session.publisher.close().await;
}
