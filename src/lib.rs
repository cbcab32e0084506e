//! # lastpass-connector
//!
//! Keeps LastPass Enterprise accounts in line with what an identity-governance platform decides.
//! Commands arrive on RabbitMQ; each is applied idempotently against the LastPass Enterprise API
//! with retry and backoff; a result event is published for every command.
//!
//! ## The data path
//!
//! delivery (amqp) → [`command::Command`] (parsed once) → [`apply`] (look, decide, act over the
//! [`lastpass::LastPass`] trait) → [`event`] (CloudEvents) → publish with confirm (amqp) → ack.
//!
//! ## Invariants
//!
//! - Only [`amqp`] knows lapin; only [`lastpass`] knows reqwest and the wire format.
//! - [`apply`] decides with neither and is tested with an in-memory `LastPass`.
//! - A delivery is acked only after its result event (or its parked copy) is confirmed by the
//!   broker.
//! - A completed command (by `command_id`) is recorded in the [`ledger`] and never applied again.
//! - The provhash never appears in `Debug`, `Display`, logs, errors or events.

pub mod amqp;
pub mod apply;
pub mod command;
pub mod config;
pub mod email;
pub mod event;
pub mod fake;
pub mod keyed;
pub mod lastpass;
pub mod ledger;
pub mod processor;
pub mod service;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod status;
pub mod sync;
