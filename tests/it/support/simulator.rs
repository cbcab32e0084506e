//! Test helpers around the LastPass simulator: a fresh simulator on 127.0.0.1 (port 0), a real
//! client for it, raw API calls and control-endpoint calls, and [`TestSim`], the few steering
//! calls the consumer and sync tests use.

use lastpass_connector::email::Email;
use lastpass_connector::lastpass::{Client, ClientConfig, Provhash};
pub use lastpass_connector::simulator::{
    CallRecord, DateStyle, FaultsPatch, QuirksPatch, SimUser, SimUserPatch, SimUserSpec, Simulator,
    SimulatorConfig, SimulatorHandle,
};
use serde_json::Value;
use std::time::Duration;

/// The cid of simulators started by these helpers.
pub const CID: &str = "12345678";
/// The provhash of simulators started by these helpers (a distinctive string, easy to grep for
/// in leak tests).
pub const PROVHASH: &str = "sim-provhash-4f9c2e7d1b3a";
/// The client timeout of [`client`].
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A config with the fixed [`CID`] / [`PROVHASH`] and `users` generated users.
pub fn config(users: usize) -> SimulatorConfig {
    SimulatorConfig {
        cid: Some(CID.into()),
        provhash: Some(PROVHASH.into()),
        users,
        ..SimulatorConfig::default()
    }
}

/// A fresh simulator with `users` generated users.
pub async fn start(users: usize) -> SimulatorHandle {
    start_with(config(users)).await
}

/// A fresh simulator on 127.0.0.1 with a free port.
pub async fn start_with(config: SimulatorConfig) -> SimulatorHandle {
    Simulator::start_local(config)
        .await
        .expect("bind 127.0.0.1:0")
}

/// A client config for `sim`'s current credentials.
pub fn client_config(sim: &SimulatorHandle, timeout: Duration) -> ClientConfig {
    ClientConfig {
        api_url: sim.api_url(),
        cid: sim.cid(),
        provhash: Provhash::new(sim.provhash()),
        timeout,
        max_response_bytes: ClientConfig::DEFAULT_MAX_RESPONSE_BYTES,
        time_zone: lastpass_connector::lastpass::DEFAULT_TIME_ZONE,
        max_rps: None,
    }
}

/// A real client for `sim`, with [`TIMEOUT`].
pub fn client(sim: &SimulatorHandle) -> Client {
    client_with_timeout(sim, TIMEOUT)
}

pub fn client_with_timeout(sim: &SimulatorHandle, timeout: Duration) -> Client {
    Client::new(client_config(sim, timeout)).expect("client")
}

pub fn email(s: &str) -> Email {
    Email::parse(s).expect("valid email")
}

/// An API URL on 127.0.0.1 whose port refuses connections.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/enterpriseapi.php")
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// An HTTP answer: status, Content-Type, headers of interest, body.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: String,
}

/// POSTs `body` as is to the API endpoint.
pub async fn raw_post(sim: &SimulatorHandle, body: impl Into<String>) -> RawAnswer {
    let r = http()
        .post(sim.api_url())
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .expect("raw post");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    RawAnswer {
        status,
        content_type,
        retry_after,
        body,
    }
}

/// One API call with `sim`'s current credentials, answered raw.
pub async fn raw_call(sim: &SimulatorHandle, cmd: &str, data: Value) -> RawAnswer {
    let envelope = serde_json::json!({
        "cid": sim.cid(), "provhash": sim.provhash(), "cmd": cmd, "data": data,
    });
    raw_post(sim, envelope.to_string()).await
}

/// A control-endpoint call (`path` below `/_control`): status and JSON body (`Null` if none).
pub async fn control(
    sim: &SimulatorHandle,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{}", sim.control_url(), path);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http().request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.expect("control call");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("control answers JSON")
    };
    (status, json)
}

/// A simulator with the steering calls the consumer, process and sync tests use.
pub struct TestSim {
    pub handle: SimulatorHandle,
}

impl TestSim {
    pub async fn start() -> TestSim {
        Self::start_with(0).await
    }

    /// With `users` generated accounts in a realistic mix.
    pub async fn start_with(users: usize) -> TestSim {
        TestSim {
            handle: start_with(SimulatorConfig {
                users,
                ..Default::default()
            })
            .await,
        }
    }

    pub fn api_url(&self) -> String {
        self.handle.api_url()
    }
    pub fn cid(&self) -> String {
        self.handle.cid()
    }
    pub fn provhash(&self) -> String {
        self.handle.provhash()
    }

    /// Adds an account (never logged in: `last_login` ""; otherwise a recent login).
    pub fn add(&self, email: &str, disabled: bool, never_logged_in: bool) -> String {
        let mut spec = if never_logged_in {
            SimUserSpec::staged(email)
        } else {
            SimUserSpec::active(email, "2026-11-20 09:30:00")
        };
        spec.disabled = disabled;
        self.handle.add_user(spec).expect("valid user")
    }

    pub fn user(&self, email: &str) -> Option<SimUser> {
        self.handle.user(email)
    }
    pub fn users(&self) -> Vec<SimUser> {
        self.handle.users()
    }
    pub fn delete(&self, email: &str) {
        assert!(self.handle.delete_user(email), "{email} existed");
    }
    pub fn disable(&self, email: &str) {
        self.handle
            .update_user(
                email,
                SimUserPatch {
                    disabled: Some(true),
                    ..Default::default()
                },
            )
            .expect("user exists");
    }
    pub fn rename(&self, email: &str, new_email: &str) {
        self.handle
            .update_user(
                email,
                SimUserPatch {
                    username: Some(new_email.into()),
                    ..Default::default()
                },
            )
            .expect("user exists");
    }
    pub fn faults(&self, patch: FaultsPatch) {
        self.handle.set_faults(patch);
    }
    /// Changes the provhash the simulator accepts.
    pub fn rotate(&self, provhash: &str) {
        self.handle
            .rotate_credentials(Some(provhash.to_string()), None);
    }
    /// The mutating calls applied so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.handle.calls()
    }
    /// How many applied calls of this command.
    pub fn mutations(&self, cmd: &str) -> usize {
        self.calls().iter().filter(|c| c.cmd == cmd).count()
    }
}
