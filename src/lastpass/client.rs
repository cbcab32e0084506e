//! The HTTP client for the LastPass Enterprise API (reqwest + rustls/ring).
//!
//! Every call is one POST of the JSON envelope with the configured timeout, no retry. Answers are
//! classified by their body, never their Content-Type (LastPass says `text/xml` for JSON too):
//! non-200, timeout or connection error → Transient (with `Retry-After` when sent); the XML
//! `Authorization Error` → Unauthorized; other non-JSON → Transient; JSON → per command (see
//! [`super::wire`]). Error reasons never carry the provhash nor the request body.

use super::wire;
use super::{
    DelUserOutcome, DeleteAction, EnableOutcome, LastPass, LastPassError, NewUser, User, UserPage,
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
}

impl ClientConfig {
    /// Default per-call timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

/// The LastPass API over HTTP. Cheap to clone (shares the connection pool and credentials).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    inner: Arc<Inner>,
}

struct Inner {
    api_url: String,
    cid: String,
    cid_json: Value,
    timeout: Duration,
    provhash: RwLock<Provhash>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api_url", &self.inner.api_url)
            .field("cid", &self.inner.cid)
            .field("provhash", &format_args!("Provhash(***)"))
            .field("timeout", &self.inner.timeout)
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
                cid: config.cid,
                timeout: config.timeout,
                provhash: RwLock::new(config.provhash),
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
        let result = self
            .call_inner(cmd, data, &secret)
            .await
            .map_err(|e| scrub(e, secret.expose()));
        match &result {
            Ok(_) => tracing::debug!(cmd, "LastPass call answered"),
            Err(e) => tracing::debug!(cmd, error = %e, "LastPass call failed"),
        }
        result
    }

    async fn call_inner(
        &self,
        cmd: &'static str,
        data: Value,
        secret: &Provhash,
    ) -> Result<Vec<u8>, LastPassError> {
        let body = wire::envelope(&self.inner.cid_json, secret.expose(), cmd, data);
        let response = self
            .http
            .post(&self.inner.api_url)
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
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(cmd, e))?;
        wire::check_body(&bytes)?;
        Ok(bytes.to_vec())
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
        LastPassError::Unauthorized => LastPassError::Unauthorized,
    }
}

impl LastPass for Client {
    async fn find_user(&self, email: &Email) -> Result<Option<User>, LastPassError> {
        let body = self
            .call("getuserdata", json!({ "username": email.as_str() }))
            .await?;
        wire::parse_find_user(&body, email.as_str()).map_err(|e| scrub(e, self.provhash().expose()))
    }

    async fn list_page(&self, page_index: u32, page_size: u32) -> Result<UserPage, LastPassError> {
        let body = self
            .call(
                "getuserdata",
                json!({ "pagesize": page_size, "pageindex": page_index }),
            )
            .await?;
        wire::parse_list_page(&body, page_index, page_size)
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

    async fn create_users(&self, users: &[NewUser]) -> Result<(), LastPassError> {
        if users.is_empty() {
            return Ok(());
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
}
