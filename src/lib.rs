//! # lastpass-connector
//!
//! Keeps LastPass Enterprise accounts in line with what an identity-governance platform decides.
//! Commands arrive on RabbitMQ; each is applied idempotently against the LastPass Enterprise API
//! with retry and backoff; a result event is published for every command. `ARCHITECTURE.md`
//! has the bird's-eye view and the code map.
//!
//! ## The data path
//!
//! delivery (`amqp`) → [`command::Command`] (parsed once) → `apply` (look, decide, act over the
//! [`lastpass::LastPass`] trait) → `event` (CloudEvents) → publish with confirm (`amqp`) → ack.
//!
//! ## Invariants
//!
//! - Only `amqp` knows lapin; only [`lastpass`] knows reqwest and the wire format.
//! - `apply` decides with neither and is tested with an in-memory `LastPass`.
//! - The store (`store`) is the only state.
//! - A delivery is acked only after its result event (or its parked copy) is confirmed by the
//!   broker, and after its completion is recorded.
//! - A completed command (by `command_id`) is recorded in the ledger and never applied again.
//! - The provhash never appears in `Debug`, `Display`, logs, errors or events.
//!
//! ## The public surface
//!
//! Small on purpose: [`config::Config`] and [`run`] to run the connector; [`lastpass::Client`]
//! (the HTTP client, usable on its own); [`command`] (the wire contract of commands, to validate
//! one before publishing it); [`amqp::Names`] and [`amqp::declare_topology`] for tools and tests
//! that talk to the same broker; and, behind the default `simulator` feature, [`simulator`].

pub mod amqp;
mod apply;
mod batch;
pub mod check;
pub mod cli;
pub mod command;
pub mod config;
pub mod email;
mod event;
#[cfg(test)]
mod fake;
mod gate;
mod health;
mod http;
mod keyed;
pub mod lastpass;
mod processor;
pub mod retry;
mod service;
#[cfg(feature = "simulator")]
pub mod simulator;
mod status;
mod store;
mod sync;
mod telemetry;

#[cfg(test)]
mod contract_tests;

pub use check::{CheckItem, CheckState, check};
pub use service::{RunError, cancel_on_signal, run};
pub use tokio_util::sync::CancellationToken;

/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_COMMIT: &str = env!("LPC_GIT_COMMIT");

/// An error and its sources, `a: b: c`, skipping a source already contained in its parent.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
