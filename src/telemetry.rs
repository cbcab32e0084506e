//! Metrics: one Prometheus recorder per process, every metric named `lastpass_connector_*`
//! and described once here. Code elsewhere records through the `metrics` macros with these
//! names (the constants below), so a metric is never spelled twice.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub(crate) const COMMANDS: &str = "lastpass_connector_commands_total";
pub(crate) const IN_FLIGHT: &str = "lastpass_connector_commands_in_flight";
pub(crate) const COMMAND_SECONDS: &str = "lastpass_connector_command_duration_seconds";
pub(crate) const LASTPASS_CALLS: &str = "lastpass_connector_lastpass_calls_total";
pub(crate) const LASTPASS_SECONDS: &str = "lastpass_connector_lastpass_call_duration_seconds";
pub(crate) const RETRIES: &str = "lastpass_connector_retries_total";
pub(crate) const DELAYED_RETRIES: &str = "lastpass_connector_delayed_retries_total";
pub(crate) const DEAD_LETTERED: &str = "lastpass_connector_dead_lettered_total";
pub(crate) const RECONNECTS: &str = "lastpass_connector_broker_reconnects_total";
pub(crate) const PAUSED: &str = "lastpass_connector_paused_on_credentials";
pub(crate) const READY: &str = "lastpass_connector_ready";
pub(crate) const SYNC_ACCOUNTS: &str = "lastpass_connector_sync_accounts";
pub(crate) const LAST_SYNC: &str = "lastpass_connector_last_sync_success_timestamp_seconds";
pub(crate) const BUILD_INFO: &str = "lastpass_connector_build_info";
pub(crate) const BATCH_SIZE: &str = "lastpass_connector_batch_size";

/// The process's recorder, installed on first use.
pub(crate) fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
            .expect("static buckets are valid")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(BATCH_SIZE.to_string()),
                &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            )
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a test harness); ours still renders.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle.clone()
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        COMMANDS,
        "Commands finished, by type and outcome (as in events)."
    );
    describe_gauge!(IN_FLIGHT, "Commands being applied now.");
    describe_histogram!(
        COMMAND_SECONDS,
        Unit::Seconds,
        "From delivery to settled, per command."
    );
    describe_counter!(
        LASTPASS_CALLS,
        "LastPass API calls, by API command and result."
    );
    describe_histogram!(
        LASTPASS_SECONDS,
        Unit::Seconds,
        "LastPass API call latency, by API command."
    );
    describe_counter!(RETRIES, "In-process retries of a LastPass call.");
    describe_counter!(
        DELAYED_RETRIES,
        "Commands sent to a delayed-redelivery round."
    );
    describe_counter!(
        DEAD_LETTERED,
        "Messages parked in the dead-letter queue, by error code."
    );
    describe_counter!(
        RECONNECTS,
        "Broker sessions that ended and were re-established."
    );
    describe_gauge!(
        PAUSED,
        "1 while consumption is paused because LastPass refuses the credentials."
    );
    describe_gauge!(READY, "1 while /readyz answers 200.");
    describe_gauge!(
        SYNC_ACCOUNTS,
        "Accounts by status in the last complete sync."
    );
    describe_gauge!(
        LAST_SYNC,
        Unit::Seconds,
        "Unix time of the last complete sync."
    );
    describe_histogram!(
        BATCH_SIZE,
        "Provisions served by one batched LastPass call, by call (batchadd, getuserdata)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version and commit are labels.");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => crate::GIT_COMMIT)
        .set(1.0);
}

/// The metrics in the Prometheus text format.
pub(crate) fn render() -> String {
    handle().render()
}
