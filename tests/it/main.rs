//! The one integration-test binary: the real client against the simulator, the consumer and the
//! sync against the real RabbitMQ, the binary as a process, and the published contract.
//!
//! `TEST_LOG=1 cargo test` shows the connector's logs in a failing test.

mod client;
mod consumer;
mod deploy;
mod dry_run;
mod hostile;
mod http;
mod process;
mod replicas;
mod schemas;
mod support;
mod sync;
mod tools;
