//! The HTTP client for the LastPass Enterprise API (reqwest + rustls/ring).
//!
//! Every call waits for a permit of the call budget ([`super::budget`]), then is one POST of the
//! JSON envelope with the configured timeout, no retry. Answers are
//! classified by their body, never their Content-Type (LastPass says `text/xml` for JSON too):
//! non-200, timeout or connection error → Transient (with `Retry-After` when sent); an answer
//! larger than [`ClientConfig::max_response_bytes`] → Transient, read no further; the XML
//! `Authorization Error` → Unauthorized; other non-JSON → Transient; JSON → per command (see
//! [`super::wire`]). Error reasons never carry the provhash nor the request body.

use super::budget::CallBudget;
use super::wire;
use super::{
    AddOutcome, DelUserOutcome, DeleteAction, EnableOutcome, LastPass, LastPassError, NewUser, Tz,
    User, UserPage,
};
use crate::email::Email;
use crate::error_chain;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The LastPass API secret (`provhash`): a [`secrecy::SecretString`], zeroized on drop, never in
/// `Debug` or `Display`; exposed (`Provhash::expose`, crate-private) only where it goes into a request body.
#[derive(Clone)]
pub struct Provhash(SecretString);

impl Provhash {
    pub fn new(secret: String) -> Self {
        Provhash(SecretString::from(secret))
    }

    /// The secret itself: only for putting it into the request body.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for Provhash {
    fn from(secret: String) -> Self {
        Provhash::new(secret)
    }
}

impl fmt::Debug for Provhash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Provhash(***)")
    }
}

impl fmt::Display for Provhash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to reach the LastPass API. `Debug` shows the provhash as `Provhash(***)`.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// e.g. [`super::DEFAULT_API_URL`].
    pub api_url: String,
    /// The account number; sent as a JSON integer when it is one, else as a string.
    pub cid: String,
    pub provhash: Provhash,
    /// For the whole call (connect, send, read the answer).
    pub timeout: Duration,
    /// The largest answer body read, in bytes; a larger one is a
    /// [`LastPassError::Transient`], and no more of it is read (usually
    /// [`ClientConfig::DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: usize,
    /// The zone of dates LastPass writes without an offset (usually
    /// [`super::DEFAULT_TIME_ZONE`], `America/New_York`).
    pub time_zone: Tz,
    /// At most this many calls per second (`None`: no fixed limit); a 429 lowers the rate for a
    /// while either way (see [`super::budget`]).
    pub max_rps: Option<f64>,
}

impl ClientConfig {
    /// Default per-call timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Default bound on one answer: 64 MiB.
    ///
    /// The largest real answer is a `getuserdata` page of [`super::DEFAULT_PAGE_SIZE`] (2000)
    /// users: about 0.7 KB per user for its ~25 fields, plus its groups twice (in `groups`, and
    /// its email under each group in `Groups`), about 70 bytes per membership. Even with every
    /// user in 50 groups that is about 4.2 KB per user, 8.5 MB per page; 64 MiB leaves 7 times
    /// that (3.5 times with 100 groups each), while a broken or hostile endpoint still cannot
    /// make the connector hold more than this (and the parsed JSON built from it) per call.
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
}

/// The LastPass API over HTTP. Cheap to clone (shares the connection pool and credentials).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    inner: Arc<Inner>,
}

struct Inner {
    api_url: String,
    /// `api_url` parsed once: reqwest would parse a string again on every call.
    url: reqwest::Url,
    cid: String,
    cid_json: Value,
    timeout: Duration,
    max_response_bytes: usize,
    time_zone: Tz,
    provhash: RwLock<Provhash>,
    budget: CallBudget,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api_url", &self.inner.api_url)
            .field("cid", &self.inner.cid)
            .field("provhash", &format_args!("Provhash(***)"))
            .field("timeout", &self.inner.timeout)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .field("time_zone", &self.inner.time_zone)
            .field("budget", &self.inner.budget)
            .finish()
    }
}

impl Client {
    /// Builds the HTTP client (installs ring as the rustls provider if none is installed).
    /// Fails with `Rejected` for an invalid `api_url` or an HTTP client that cannot be built.
    pub fn new(config: ClientConfig) -> Result<Client, LastPassError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = reqwest::Url::parse(&config.api_url)
            .map_err(|e| LastPassError::Rejected(format!("invalid LastPass api_url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LastPassError::Rejected(
                "invalid LastPass api_url: scheme must be http or https".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirected POST would turn into a GET without the envelope: treat 3xx as non-200.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lastpass-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                LastPassError::Rejected(format!(
                    "cannot build the HTTP client: {}",
                    error_chain(&e.without_url())
                ))
            })?;
        Ok(Client {
            http,
            inner: Arc::new(Inner {
                cid_json: wire::cid_value(&config.cid),
                api_url: config.api_url,
                url,
                cid: config.cid,
                timeout: config.timeout,
                max_response_bytes: config.max_response_bytes,
                time_zone: config.time_zone,
                provhash: RwLock::new(config.provhash),
                budget: CallBudget::new(config.max_rps),
            }),
        })
    }

    /// Replaces the provhash for every clone of this client (after a rotation).
    pub fn set_provhash(&self, provhash: Provhash) {
        *self
            .inner
            .provhash
            .write()
            .unwrap_or_else(|e| e.into_inner()) = provhash;
    }

    pub fn api_url(&self) -> &str {
        &self.inner.api_url
    }

    pub fn cid(&self) -> &str {
        &self.inner.cid
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn provhash(&self) -> Provhash {
        self.inner
            .provhash
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One API call: POST the envelope, return the JSON body of a 200 answer that is not the
    /// XML auth error.
    async fn call(&self, cmd: &'static str, data: Value) -> Result<Vec<u8>, LastPassError> {
        let secret = self.provhash();
        // Scrubbed first: nothing below this line, logging included, can see the secret.
        let started = std::time::Instant::now();
        let result = self
            .call_inner(cmd, data, &secret)
            .await
            .map_err(|e| scrub(e, secret.expose()));
        match &result {
            Ok(_) => tracing::debug!(cmd, "LastPass call answered"),
            Err(e) => tracing::debug!(cmd, error = %e, "LastPass call failed"),
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(LastPassError::Transient { .. }) => "transient",
            Err(LastPassError::Unauthorized) => "unauthorized",
            Err(LastPassError::Rejected(_)) => "rejected",
            Err(LastPassError::NoSuchUser(_)) => "no_such_user",
            Err(LastPassError::NotTheApi { .. }) => "not_the_api",
        };
        metrics::counter!(crate::telemetry::LASTPASS_CALLS, "command" => cmd, "result" => outcome)
            .increment(1);
        metrics::histogram!(crate::telemetry::LASTPASS_SECONDS, "command" => cmd)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn call_inner(
        &self,
        cmd: &'static str,
        data: Value,
        secret: &Provhash,
    ) -> Result<Vec<u8>, LastPassError> {
        let body = wire::envelope(&self.inner.cid_json, secret.expose(), cmd, data);
        self.inner.budget.acquire().await;
        let response = self
            .http
            .post(self.inner.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/xml;q=0.9, */*;q=0.5",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(cmd, e))?;
        let status = response.status();
        if status.is_redirection() || matches!(status.as_u16(), 404 | 405 | 410) {
            return Err(LastPassError::NotTheApi {
                reason: format!("{cmd}: HTTP {status}"),
            });
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.inner.budget.throttled();
        }
        if status != reqwest::StatusCode::OK {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Err(LastPassError::Transient {
                reason: format!("{cmd}: HTTP {status}"),
                retry_after,
            });
        }
        let bytes = self.read_bounded(cmd, response).await?;
        wire::check_body(&bytes)?;
        Ok(bytes)
    }

    /// The answer body, read chunk by chunk and given up as soon as it is known to be larger than
    /// `max_response_bytes` (from Content-Length when sent, else by counting), so a huge or
    /// endless answer costs at most the bound plus one chunk, never the whole body.
    async fn read_bounded(
        &self,
        cmd: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, LastPassError> {
        let max = self.inner.max_response_bytes;
        let too_large = || LastPassError::Transient {
            reason: format!("{cmd}: answer larger than {max} bytes"),
            retry_after: None,
        };
        let declared = response.content_length();
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        // Content-Length is at most `max` here; it is only a hint (the count below decides).
        let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(cmd, e))?
        {
            if chunk.len() > max - body.len() {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, cmd: &str, e: reqwest::Error) -> LastPassError {
        let reason = if e.is_timeout() {
            format!("{cmd}: no answer within {:?}", self.inner.timeout)
        } else {
            let kind = if e.is_connect() {
                "connection failed"
            } else if e.is_body() || e.is_decode() {
                "reading the answer failed"
            } else {
                "request failed"
            };
            format!("{cmd}: {kind}: {}", error_chain(&e.without_url()))
        };
        LastPassError::Transient {
            reason,
            retry_after: None,
        }
    }
}

/// `Retry-After`: delay-seconds, or an HTTP date (RFC 2822 form).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// Belt and braces: no error text may contain the secret, whatever produced it.
fn scrub(e: LastPassError, secret: &str) -> LastPassError {
    let clean = |s: String| {
        if secret.is_empty() || !s.contains(secret) {
            s
        } else {
            s.replace(secret, "***")
        }
    };
    match e {
        LastPassError::Transient {
            reason,
            retry_after,
        } => LastPassError::Transient {
            reason: clean(reason),
            retry_after,
        },
        LastPassError::Rejected(m) => LastPassError::Rejected(clean(m)),
        LastPassError::NoSuchUser(m) => LastPassError::NoSuchUser(clean(m)),
        LastPassError::NotTheApi { reason } => LastPassError::NotTheApi {
            reason: clean(reason),
        },
        LastPassError::Unauthorized => LastPassError::Unauthorized,
    }
}

impl LastPass for Client {
    async fn find_user(&self, email: &Email) -> Result<Option<User>, LastPassError> {
        let body = self
            .call("getuserdata", json!({ "username": email.as_str() }))
            .await?;
        wire::parse_find_user(&body, email.as_str(), self.inner.time_zone)
            .map_err(|e| scrub(e, self.provhash().expose()))
    }

    async fn list_page(&self, page_index: u32, page_size: u32) -> Result<UserPage, LastPassError> {
        let body = self
            .call(
                "getuserdata",
                json!({ "pagesize": page_size, "pageindex": page_index }),
            )
            .await?;
        wire::parse_list_page(&body, self.inner.time_zone)
            .map_err(|e| scrub(e, self.provhash().expose()))
    }

    async fn delete_user(
        &self,
        email: &Email,
        action: DeleteAction,
    ) -> Result<DelUserOutcome, LastPassError> {
        let body = self
            .call(
                "deluser",
                json!({ "username": email.as_str(), "deleteaction": action as u8 }),
            )
            .await?;
        wire::parse_deluser(&body, email.as_str()).map_err(|e| scrub(e, self.provhash().expose()))
    }

    async fn create_users(&self, users: &[NewUser]) -> Result<AddOutcome, LastPassError> {
        if users.is_empty() {
            return Ok(AddOutcome::default());
        }
        let items: Vec<Value> = users
            .iter()
            .map(|u| {
                let mut item = json!({
                    "username": u.email.as_str(),
                    "password_reset_required": true,
                });
                let full = u.full_name();
                if !full.is_empty() {
                    item["fullname"] = Value::from(full);
                }
                item
            })
            .collect();
        let body = self.call("batchadd", Value::Array(items)).await?;
        wire::parse_batchadd(&body).map_err(|e| scrub(e, self.provhash().expose()))
    }

    async fn enable_users(&self, emails: &[Email]) -> Result<EnableOutcome, LastPassError> {
        if emails.is_empty() {
            return Ok(EnableOutcome::default());
        }
        let list: Vec<&str> = emails.iter().map(Email::as_str).collect();
        let body = self.call("enableuser", json!(list)).await?;
        wire::parse_enableuser(&body, &list).map_err(|e| scrub(e, self.provhash().expose()))
    }

    fn rationed(&self) -> bool {
        self.inner.budget.rate().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "pr0vh4sh-very-secret-value";

    fn config(url: &str) -> ClientConfig {
        ClientConfig {
            api_url: url.into(),
            cid: "12345678".into(),
            provhash: Provhash::new(SECRET.into()),
            timeout: Duration::from_millis(500),
            max_response_bytes: ClientConfig::DEFAULT_MAX_RESPONSE_BYTES,
            time_zone: crate::lastpass::DEFAULT_TIME_ZONE,
            max_rps: None,
        }
    }

    #[test]
    fn provhash_is_never_printed() {
        let p = Provhash::new(SECRET.into());
        assert_eq!(format!("{p:?}"), "Provhash(***)");
        assert_eq!(format!("{p}"), "***");
        assert_eq!(p.expose(), SECRET);
        let cfg = config("http://127.0.0.1:1/enterpriseapi.php");
        assert!(!format!("{cfg:?}").contains(SECRET));
        let client = Client::new(cfg).unwrap();
        let dbg = format!("{client:?}");
        assert!(!dbg.contains(SECRET), "{dbg}");
        assert!(dbg.contains("Provhash(***)"));
        client.set_provhash(Provhash::new("another-secret".into()));
        assert!(!format!("{client:?}").contains("another-secret"));
    }

    #[test]
    fn invalid_url_is_rejected() {
        assert!(matches!(
            Client::new(config("not a url")),
            Err(LastPassError::Rejected(_))
        ));
        assert!(matches!(
            Client::new(config("ftp://example.com/x")),
            Err(LastPassError::Rejected(_))
        ));
    }

    #[test]
    fn scrub_removes_the_secret() {
        let e = scrub(
            LastPassError::Transient {
                reason: format!("oops {SECRET} oops"),
                retry_after: None,
            },
            SECRET,
        );
        assert!(!e.to_string().contains(SECRET));
        assert!(!format!("{e:?}").contains(SECRET));
        let e = scrub(LastPassError::Rejected(SECRET.into()), SECRET);
        assert_eq!(e, LastPassError::Rejected("***".into()));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn connection_refused_is_transient_and_clean() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = Client::new(config(&format!("http://{addr}/enterpriseapi.php"))).unwrap();
        let err = client.list_page(0, 10).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(!err.to_string().contains(SECRET));
        assert!(!format!("{err:?}").contains(SECRET));
    }

    // -----------------------------------------------------------------------------------------
    // The bound on an answer, against a tiny local HTTP server that answers one request.

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MIB: usize = 1024 * 1024;
    /// A valid empty `getuserdata` page; the rest of a body is spaces, so it stays valid JSON.
    const EMPTY_PAGE: &[u8] = br#"{"Users":[],"total":0}"#;

    /// What the server sends after `HTTP/1.1 200 OK`.
    struct Answer {
        /// Header lines, each ending in `\r\n`.
        headers: String,
        /// Chunked transfer encoding (the `Transfer-Encoding` header is in `headers`).
        chunked: bool,
        /// Body bytes to send: `EMPTY_PAGE` then spaces; `None` for an endless body.
        len: Option<usize>,
    }

    /// Serves one connection with `answer`; the task returns how many body bytes it managed to
    /// write before the body ended or the client hung up.
    async fn serve_once(answer: Answer) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/enterpriseapi.php",
            listener.local_addr().unwrap()
        );
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_request(&mut sock).await;
            let head = format!("HTTP/1.1 200 OK\r\n{}\r\n", answer.headers);
            if sock.write_all(head.as_bytes()).await.is_err() {
                return 0;
            }
            let mut piece = vec![b' '; 64 * 1024];
            piece[..EMPTY_PAGE.len()].copy_from_slice(EMPTY_PAGE);
            let mut written = 0;
            loop {
                let n = answer
                    .len
                    .map_or(piece.len(), |len| (len - written).min(piece.len()));
                if n == 0 {
                    if answer.chunked {
                        let _ = sock.write_all(b"0\r\n\r\n").await;
                    }
                    let _ = sock.shutdown().await;
                    return written;
                }
                let sent = if answer.chunked {
                    let mut frame = format!("{n:x}\r\n").into_bytes();
                    frame.extend_from_slice(&piece[..n]);
                    frame.extend_from_slice(b"\r\n");
                    sock.write_all(&frame).await
                } else {
                    sock.write_all(&piece[..n]).await
                };
                if sent.is_err() {
                    return written; // the client hung up
                }
                written += n;
                if written == n {
                    piece[..EMPTY_PAGE.len()].fill(b' ');
                }
            }
        });
        (url, task)
    }

    /// Reads the request head and its Content-Length body, so the client is never cut off
    /// while sending.
    async fn read_request(sock: &mut tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    return;
                }
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn bounded(url: &str, max_response_bytes: usize) -> Client {
        Client::new(ClientConfig {
            timeout: Duration::from_secs(20),
            max_response_bytes,
            ..config(url)
        })
        .unwrap()
    }

    /// Asks for a page and returns the error, which must be the bound's Transient.
    async fn too_large(url: &str, max: usize) -> LastPassError {
        let client = bounded(url, max);
        let err = client.list_page(0, 10).await.unwrap_err();
        let LastPassError::Transient {
            reason,
            retry_after,
        } = &err
        else {
            panic!("not transient: {err:?}")
        };
        assert_eq!(
            reason,
            &format!("getuserdata: answer larger than {max} bytes")
        );
        assert_eq!(*retry_after, None);
        err
    }

    /// How many body bytes the server wrote, once the client is gone.
    async fn written(task: tokio::task::JoinHandle<usize>) -> usize {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the server stops writing once the client hangs up")
            .unwrap()
    }

    #[tokio::test]
    async fn an_answer_over_the_bound_with_its_content_length_is_not_read() {
        let len = 10 * MIB;
        let (url, server) = serve_once(Answer {
            headers: format!("Content-Length: {len}\r\n"),
            chunked: false,
            len: Some(len),
        })
        .await;
        too_large(&url, MIB).await;
        // The server may have filled the socket buffers, no more.
        let _ = written(server).await;
    }

    #[tokio::test]
    async fn an_answer_over_the_bound_without_content_length_is_cut_off() {
        // Delimited by closing the connection: only counting can tell its size.
        let len = 10 * MIB;
        let (url, server) = serve_once(Answer {
            headers: "Connection: close\r\n".into(),
            chunked: false,
            len: Some(len),
        })
        .await;
        too_large(&url, MIB).await;
        let _ = written(server).await;
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_off_at_the_bound() {
        // An endless body: that the call returns at all shows it was not read whole, and the
        // server could only write the bound plus what the socket buffers hold.
        for chunked in [true, false] {
            let (url, server) = serve_once(Answer {
                headers: if chunked {
                    "Transfer-Encoding: chunked\r\n".into()
                } else {
                    "Connection: close\r\n".into()
                },
                chunked,
                len: None,
            })
            .await;
            too_large(&url, MIB).await;
            let sent = written(server).await;
            assert!(sent < 64 * MIB, "the server wrote {sent} bytes");
        }
    }

    #[tokio::test]
    async fn a_lying_content_length_is_not_trusted() {
        // It claims far more than the bound while the body is tiny: refused from the header,
        // without reading (the bound, not the body, decides).
        let (url, server) = serve_once(Answer {
            headers: format!("Content-Length: {}\r\n", 10u64 << 30),
            chunked: false,
            len: Some(EMPTY_PAGE.len()),
        })
        .await;
        too_large(&url, MIB).await;
        let _ = written(server).await;

        // It claims a small body but the body is chunked and endless: the count still stops it.
        let (url, server) = serve_once(Answer {
            headers: "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n".into(),
            chunked: true,
            len: None,
        })
        .await;
        let client = bounded(&url, MIB);
        let err = client.list_page(0, 10).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        drop(client);
        let sent = written(server).await;
        assert!(sent < 64 * MIB, "the server wrote {sent} bytes");

        // It claims a small body and then sends an endless one: only the declared bytes are
        // read (here a valid page), the rest never.
        let (url, server) = serve_once(Answer {
            headers: "Content-Length: 100\r\n".into(),
            chunked: false,
            len: None,
        })
        .await;
        let client = bounded(&url, MIB);
        let page = client.list_page(0, 10).await.unwrap();
        assert_eq!(page, UserPage::default());
        drop(client);
        let sent = written(server).await;
        assert!(sent < 64 * MIB, "the server wrote {sent} bytes");
    }

    #[tokio::test]
    async fn an_answer_of_exactly_the_bound_is_read() {
        for chunked in [false, true] {
            let (url, server) = serve_once(Answer {
                headers: if chunked {
                    "Transfer-Encoding: chunked\r\n".into()
                } else {
                    format!("Content-Length: {MIB}\r\n")
                },
                chunked,
                len: Some(MIB),
            })
            .await;
            let page = bounded(&url, MIB).list_page(0, 10).await.unwrap();
            assert_eq!(page, UserPage::default());
            assert_eq!(written(server).await, MIB);

            // One byte more is too large.
            let (url, server) = serve_once(Answer {
                headers: if chunked {
                    "Transfer-Encoding: chunked\r\n".into()
                } else {
                    format!("Content-Length: {}\r\n", MIB + 1)
                },
                chunked,
                len: Some(MIB + 1),
            })
            .await;
            too_large(&url, MIB).await;
            let _ = written(server).await;
        }
    }
}
