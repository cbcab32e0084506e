//! A LastPass Enterprise API simulator: a real HTTP server (axum) over an in-memory company that
//! answers `getuserdata`, `deluser`, `batchadd` and `enableuser` in the shapes of the real API
//! (see `lastpass-api.md`), with injectable faults and quirks, and a control endpoint.
//!
//! - API: `POST /enterpriseapi.php` (and `POST /`). Always HTTP 200 with
//!   `Content-Type: text/xml;charset=UTF-8`, JSON or the XML `Authorization Error`, unless a
//!   fault answers 503 / 429 first.
//! - Control: `/_control/…` (JSON, no auth, never faulted); the same operations are methods of
//!   [`SimulatorHandle`].
//!
//! Answers chosen where LastPass is undocumented:
//! - a body that is not a JSON object (malformed JSON included): the XML `Authorization Error`
//!   (LastPass cannot authenticate what it cannot read);
//! - an unknown `cmd`: `{"status":"FAIL","error":"Unknown command"}`;
//! - `batchadd` of an existing username: `{"status":"OK"}`, the user is left unchanged (no
//!   duplicate); of a username flagged as having a LastPass account elsewhere: `{"status":"OK"}`
//!   and a pending invitation, no user (documented behaviour, see `lastpass-api.md`); invalid items: `{"status":"WARN","errors":[…]}` when some items were valid,
//!   `{"status":"FAIL","error":[…]}` when none were; data neither an array nor an object:
//!   `{"status":"FAIL","error":"Invalid data"}`;
//! - `deluser` without `username`: `{"status":"FAIL","error":"Missing username"}`; a
//!   `deleteaction` other than 0..=3: `{"status":"FAIL","error":"Invalid deleteaction"}`; missing:
//!   0; action 3 without a pending invitation: `No such user`;
//! - `enableuser` of unknown users: `status: success`, the known ones in `enabled_users` /
//!   `unchanged_users`, plus `"error":"No such user: a, b"`;
//! - `getuserdata` without `pagesize` (or 0): every matching user in one page.

mod api;
mod batchadd;
mod company;
mod control;
mod deluser;
mod enableuser;
mod faults;
mod getuserdata;
mod render;
mod seed;
mod server;

pub use api::AUTH_ERROR_XML;
pub use control::{ControlError, SimUserPatch, SimUserSpec};
pub use faults::{Faults, FaultsPatch};
pub use render::{DateStyle, Quirks, QuirksPatch};
pub use seed::{DATE_FORMAT, FIRST_UID, GROUPS};

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 0x1A57_9A55;

/// One account of the simulated company (also the control endpoint's JSON for a user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUser {
    /// Numeric uid as a string (the key of `Users`).
    pub uid: String,
    /// The email, as stored (lookups compare case-insensitively).
    pub username: String,
    pub fullname: String,
    pub disabled: bool,
    pub admin: bool,
    pub neverloggedin: bool,
    /// `YYYY-MM-DD HH:MM:SS` (UTC) or `""` for never; any other string is sent verbatim.
    pub last_login: String,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub created: String,
    pub groups: Vec<String>,
    pub password_reset_required: bool,
}

/// An applied mutating API call (`deluser`, `batchadd`, `enableuser`): its `cmd` and `data`,
/// never the envelope's provhash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub cmd: String,
    pub data: serde_json::Value,
}

/// API calls that passed faults and auth and were applied, per command, and the API calls
/// answered 429 by any fault (`rate_limited`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallCounts {
    pub getuserdata: u64,
    pub deluser: u64,
    pub batchadd: u64,
    pub enableuser: u64,
    pub rate_limited: u64,
}

/// The credentials the simulator accepts. `Debug` hides the provhash.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub cid: String,
    pub provhash: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("cid", &self.cid)
            .field("provhash", &"***")
            .finish()
    }
}

/// `GET /_control/state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateView {
    pub cid: String,
    pub users: Vec<SimUser>,
    pub invited: Vec<String>,
    pub calls: CallCounts,
}

impl StateView {
    fn of(c: &company::Company) -> Self {
        StateView {
            cid: c.cid.clone(),
            users: c.users(),
            invited: c.invited(),
            calls: c.counts(),
        }
    }
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// `None`: a random 8-digit cid.
    pub cid: Option<String>,
    /// `None`: a random 64-hex-digit provhash.
    pub provhash: Option<String>,
    /// Number of generated users (deterministic from `seed`).
    pub users: usize,
    pub seed: u64,
    pub faults: Faults,
    pub quirks: Quirks,
    /// Answer `/_control` requests from any peer. By default only loopback peers may steer
    /// the simulator (its control endpoints have no authentication).
    pub open_control: bool,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            cid: None,
            provhash: None,
            users: 0,
            seed: DEFAULT_SEED,
            faults: Faults::default(),
            quirks: Quirks::default(),
            open_control: false,
        }
    }
}

fn random_cid() -> String {
    fastrand::u32(10_000_000..100_000_000).to_string()
}

fn random_provhash() -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    (0..64)
        .map(|_| HEX[fastrand::usize(..HEX.len())] as char)
        .collect()
}

/// Accepts `"123"` or `123` as an optional string.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(serde::de::Error::custom("cid must be a string or a number")),
    }
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Serves the simulator on `listener` (port 0 works) in a spawned task, until
    /// [`SimulatorHandle::shutdown`] or the end of the runtime.
    pub async fn start(config: SimulatorConfig, listener: TcpListener) -> SimulatorHandle {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let company = company::Company::new(
            config
                .cid
                .map(|c| c.trim().to_string())
                .unwrap_or_else(random_cid),
            config.provhash.unwrap_or_else(random_provhash),
            config.users,
            config.seed,
            config.faults,
            config.quirks,
        );
        let shared = Arc::new(server::Shared::new(company));
        let (tx, mut rx) = watch::channel(false);
        let app = server::router(shared.clone(), config.open_control)
            .into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let signal = async move {
                if rx.wait_for(|stop| *stop).await.is_err() {
                    // Every handle is gone: keep serving until the runtime ends.
                    std::future::pending::<()>().await;
                }
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!(error = %e, "simulator server failed");
            }
        });
        SimulatorHandle {
            shared,
            addr,
            lifecycle: Arc::new(Lifecycle {
                stop: tx,
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// [`Simulator::start`] on `127.0.0.1` with a free port.
    pub async fn start_local(config: SimulatorConfig) -> std::io::Result<SimulatorHandle> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Ok(Simulator::start(config, listener).await)
    }
}

struct Lifecycle {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A running simulator. Cheap to clone; every method acts on the live state.
#[derive(Clone)]
pub struct SimulatorHandle {
    shared: Arc<server::Shared>,
    addr: SocketAddr,
    lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for SimulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimulatorHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}")
    }

    /// `http://ADDR/enterpriseapi.php`.
    pub fn api_url(&self) -> String {
        format!("{}/enterpriseapi.php", self.base_url())
    }

    /// `http://ADDR/_control`.
    pub fn control_url(&self) -> String {
        format!("{}/_control", self.base_url())
    }

    /// The cid accepted now.
    pub fn cid(&self) -> String {
        self.shared.lock().cid.clone()
    }

    /// The provhash accepted now.
    pub fn provhash(&self) -> String {
        self.shared.lock().provhash.clone()
    }

    pub fn credentials(&self) -> Credentials {
        self.shared.lock().credentials()
    }

    /// Accepts only the new provhash (random when `None`) and, if given, the new cid.
    pub fn rotate_credentials(&self, provhash: Option<String>, cid: Option<String>) -> Credentials {
        self.shared.lock().rotate(provhash, cid)
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Applies the given fault fields; returns the faults now in force.
    pub fn set_faults(&self, patch: FaultsPatch) -> Faults {
        self.shared.lock().set_faults(patch)
    }

    pub fn quirks(&self) -> Quirks {
        self.shared.lock().quirks.clone()
    }

    pub fn set_quirks(&self, patch: QuirksPatch) -> Quirks {
        self.shared.lock().set_quirks(patch)
    }

    /// Every user, by uid.
    pub fn users(&self) -> Vec<SimUser> {
        self.shared.lock().users()
    }

    /// The user with this username (case-insensitive).
    pub fn user(&self, email: &str) -> Option<SimUser> {
        self.shared.lock().user(email)
    }

    /// Adds a user, or replaces the one with the same username (keeping its uid); its uid.
    pub fn add_user(&self, spec: SimUserSpec) -> Result<String, ControlError> {
        self.shared.lock().add_user(spec)
    }

    /// Removes a user behind the connector's back; `false` if there was none.
    pub fn delete_user(&self, email: &str) -> bool {
        self.shared.lock().delete_user(email)
    }

    /// Changes the given fields of a user (a new `username` renames it, keeping the uid).
    pub fn update_user(&self, email: &str, patch: SimUserPatch) -> Result<SimUser, ControlError> {
        self.shared.lock().update_user(email, patch)
    }

    /// Marks `email` as a person who already has a LastPass account: `batchadd` then makes a
    /// pending invitation for them (valid 14 days on the real service) instead of a user.
    pub fn flag_existing_account(&self, email: &str) {
        self.shared.lock().flag_existing_account(email)
    }

    /// Adds a pending invitation (listed in `invited`, cancelled by `deleteaction` 3).
    pub fn add_invitation(&self, email: &str) {
        self.shared.lock().add_invitation(email)
    }

    pub fn invited(&self) -> Vec<String> {
        self.shared.lock().invited()
    }

    /// The applied mutating calls, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.lock().calls()
    }

    pub fn call_counts(&self) -> CallCounts {
        self.shared.lock().counts()
    }

    /// What `GET /_control/state` answers.
    pub fn state(&self) -> StateView {
        StateView::of(&self.shared.lock())
    }

    /// Stops accepting connections (the port then refuses), lets in-flight answers finish for up
    /// to 2 s, then stops. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.lifecycle.stop.send(true);
        let task = self
            .lifecycle
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 1".into())
    }
}

/// `lastpass-connector simulator …`: run a simulator from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Accepted cid (default: random 8 digits, printed at start).
    #[arg(long)]
    pub cid: Option<String>,
    /// Accepted provhash (default: random, printed at start).
    #[arg(long)]
    pub provhash: Option<String>,
    /// Number of generated users.
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    /// Seed for the generated users and the random faults.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Delay before every API answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0..1) of API answers that are HTTP 503.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub error_rate: f64,
    /// Fraction (0..1) of API answers that are HTTP 429 with Retry-After.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub rate_limit_rate: f64,
    /// Retry-After of 429 answers, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Answer 429 (with Retry-After) to the API calls above this many per second.
    #[arg(long, value_name = "R", value_parser = crate::config::parse_rps)]
    pub rate_limit_rps: Option<f64>,
    /// Answer every API call with 503.
    #[arg(long)]
    pub outage: bool,
    /// Answer `/_control` requests from any address, not only from loopback (for a container
    /// whose port is published on 127.0.0.1 only).
    #[arg(long)]
    pub open_control: bool,
}

impl SimulatorArgs {
    pub fn to_config(&self) -> SimulatorConfig {
        SimulatorConfig {
            cid: self.cid.clone(),
            provhash: self.provhash.clone(),
            users: self.users,
            seed: self.seed,
            faults: Faults {
                latency_ms: self.latency_ms,
                error_rate: self.error_rate,
                rate_limit_rate: self.rate_limit_rate,
                outage: self.outage,
                fail_next: 0,
                rate_limit_next: 0,
                retry_after_secs: self.retry_after_secs,
                rate_limit_rps: self.rate_limit_rps,
            },
            quirks: Quirks::default(),
            open_control: self.open_control,
        }
    }
}

/// Binds `--addr`, prints `simulator listening on http://ADDR/enterpriseapi.php cid=… provhash=…`
/// (its own made-up secret: this is a local test tool), serves until Ctrl-C or SIGTERM.
pub async fn run_cli(args: SimulatorArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.addr).await?;
    let handle = Simulator::start(args.to_config(), listener).await;
    let creds = handle.credentials();
    println!(
        "simulator listening on {} cid={} provhash={}",
        handle.api_url(),
        creds.cid,
        creds.provhash
    );
    stop_signal().await;
    handle.shutdown().await;
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimulatorArgs,
    }

    #[test]
    fn cli_defaults_and_flags() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.sim.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cli.sim.users, 0);
        assert_eq!(cli.sim.retry_after_secs, 1);
        let cli = Cli::parse_from([
            "x",
            "--addr",
            "127.0.0.1:0",
            "--cid",
            "42",
            "--provhash",
            "p",
            "--users",
            "5",
            "--seed",
            "9",
            "--latency-ms",
            "3",
            "--error-rate",
            "0.5",
            "--rate-limit-rate",
            "0.25",
            "--retry-after-secs",
            "7",
            "--outage",
        ]);
        let c = cli.sim.to_config();
        assert_eq!(c.cid.as_deref(), Some("42"));
        assert_eq!(c.users, 5);
        assert!(c.faults.outage);
        assert_eq!(c.faults.error_rate, 0.5);
        assert!(Cli::try_parse_from(["x", "--error-rate", "2"]).is_err());
    }

    #[tokio::test]
    async fn random_credentials_and_shutdown() {
        let sim = Simulator::start_local(SimulatorConfig::default())
            .await
            .unwrap();
        assert_eq!(sim.cid().len(), 8);
        assert_eq!(sim.provhash().len(), 64);
        assert!(!format!("{:?}", sim.credentials()).contains(&sim.provhash()));
        let addr = sim.addr();
        sim.shutdown().await;
        sim.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
