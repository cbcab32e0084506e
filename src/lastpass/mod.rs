//! Everything that knows the LastPass Enterprise API: the HTTP client (reqwest), the wire format,
//! and the typed errors. The rest of the crate sees only the [`LastPass`] trait and the domain
//! types below.

mod client;
mod error;
pub(crate) mod value;
mod wire;

pub use client::{Client, ClientConfig, Provhash};
pub use error::LastPassError;

use crate::email::Email;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use std::future::Future;

/// Checks the API URL before anything connects: it must parse, be http or https, and plain
/// http is refused (the provhash would travel in clear text) unless the host is loopback or
/// `allow_insecure_http` is set.
pub(crate) fn check_api_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback || allow_insecure_http {
                Ok(())
            } else {
                Err(format!(
                    "plain http:// to {} would send the provhash in clear text; use https:// \
                     (or set CONNECTOR_ALLOW_INSECURE_HTTP=true)",
                    parsed.host_str().unwrap_or("?")
                ))
            }
        }
        other => Err(format!(
            "the scheme must be https (or http to loopback), not {other}"
        )),
    }
}

/// The default production endpoint.
pub const DEFAULT_API_URL: &str = "https://lastpass.com/enterpriseapi.php";
/// Default `getuserdata` page size (the largest clients are seen to use).
pub const DEFAULT_PAGE_SIZE: u32 = 2000;

/// One LastPass account, as `getuserdata` describes it, parsed into domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The numeric uid (the key of `Users`), kept as a string: the stable identity.
    pub uid: String,
    /// `username`: the email, as LastPass spells it.
    pub email: String,
    /// `fullname`; empty when unset.
    pub full_name: String,
    pub disabled: bool,
    pub never_logged_in: bool,
    pub admin: bool,
    /// `last_login` in UTC; `None` for `""` (never) or a value that could not be parsed
    /// (the parser logs a warning then).
    pub last_login: Option<DateTime<Utc>>,
    /// `created` in UTC, if present and parseable.
    pub created: Option<DateTime<Utc>>,
    /// Group names; empty when the user is in none.
    pub groups: Vec<String>,
    pub password_reset_required: bool,
}

/// One page of `getuserdata`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPage {
    /// The users on this page, in the order LastPass returned them.
    pub users: Vec<User>,
    /// `total`: matching users over all pages.
    pub total: u64,
    /// `invited` / `Invited`: pending invitations (emails).
    pub invited: Vec<String>,
}

/// A user to create with `batchadd` (never an admin; `password_reset_required: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: Email,
    pub first_name: String,
    pub last_name: String,
}

impl NewUser {
    /// `fullname` as sent to LastPass: "First Last".
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name.trim(), self.last_name.trim())
            .trim()
            .to_string()
    }
}

/// `deluser`'s `deleteaction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAction {
    /// 0: deactivate; blocks login, keeps data and membership, no license reclaimed.
    Deactivate = 0,
    /// 1: remove from the company; the account lives on as a personal one.
    RemoveFromCompany = 1,
    /// 2: delete the account and its data; the license is reclaimed.
    Delete = 2,
}

/// What `deluser` answered when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelUserOutcome {
    /// `{"status":"OK"}`.
    Done,
    /// `{"status":"OK","error":"User already disabled: …"}`.
    AlreadyDisabled,
}

/// What `enableuser` answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnableOutcome {
    pub enabled: Vec<String>,
    pub unchanged: Vec<String>,
}

/// The operations the connector needs from LastPass. [`Client`] implements it over HTTP; tests
/// implement it in memory. Every method is one API call (no retry: callers decide).
pub trait LastPass: Send + Sync + 'static {
    /// `getuserdata` with `username`: `Ok(None)` for `Users: []` and for "is not a valid user".
    fn find_user(
        &self,
        email: &Email,
    ) -> impl Future<Output = Result<Option<User>, LastPassError>> + Send;

    /// `getuserdata` with `pagesize` / `pageindex` (0-based).
    fn list_page(
        &self,
        page_index: u32,
        page_size: u32,
    ) -> impl Future<Output = Result<UserPage, LastPassError>> + Send;

    /// `deluser` with the given action. "No such user" is `Err(LastPassError::NoSuchUser)`.
    fn delete_user(
        &self,
        email: &Email,
        action: DeleteAction,
    ) -> impl Future<Output = Result<DelUserOutcome, LastPassError>> + Send;

    /// `batchadd` of one or more users in one call.
    fn create_users(
        &self,
        users: &[NewUser],
    ) -> impl Future<Output = Result<(), LastPassError>> + Send;

    /// `enableuser` for one or more users in one call.
    fn enable_users(
        &self,
        emails: &[Email],
    ) -> impl Future<Output = Result<EnableOutcome, LastPassError>> + Send;
}

/// Every user, as a stream of pages: one `getuserdata` call per page, never more than one page
/// held. Stops when `pageindex * pagesize >= total` or a page comes back short.
pub fn pages<L: LastPass>(
    lastpass: &L,
    page_size: u32,
) -> impl Stream<Item = Result<UserPage, LastPassError>> + Send + '_ {
    let page_size = page_size.max(1);
    futures_util::stream::try_unfold(Some(0u32), move |next| async move {
        let Some(index) = next else { return Ok(None) };
        let page = lastpass.list_page(index, page_size).await?;
        let next = next_page(index, page_size, &page);
        Ok(Some((page, next)))
    })
}

/// The paging rule, in one place: the index of the page after `page` (page `index` of size
/// `page_size`), or `None` when it was the last one.
pub(crate) fn next_page(index: u32, page_size: u32, page: &UserPage) -> Option<u32> {
    let seen = (u64::from(index) + 1) * u64::from(page_size);
    let more = (page.users.len() as u64) >= u64::from(page_size) && seen < page.total;
    more.then_some(index + 1)
}

#[cfg(test)]
mod url_tests {
    use super::check_api_url;

    #[test]
    fn plain_http_is_for_loopback_only_unless_allowed() {
        assert!(check_api_url("https://lastpass.com/enterpriseapi.php", false).is_ok());
        assert!(check_api_url("http://127.0.0.1:18080/enterpriseapi.php", false).is_ok());
        assert!(check_api_url("http://localhost/enterpriseapi.php", false).is_ok());
        assert!(check_api_url("http://[::1]:8080/", false).is_ok());
        assert!(check_api_url("http://lastpass.example/", false).is_err());
        assert!(check_api_url("http://lastpass.example/", true).is_ok());
        assert!(check_api_url("ftp://lastpass.example/", true).is_err());
        assert!(check_api_url("https://exa mple.com:99999/", false).is_err());
    }
}

/// For the fuzzers in `fuzz/` only (built with `--cfg fuzzing`): feeds one answer body to every
/// parser of LastPass answers. None may panic.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_answers(body: &[u8]) {
    let email = "jane@example.com";
    let _ = wire::check_body(body);
    let _ = wire::parse_user_data(body);
    let _ = wire::parse_list_page(body, 0, 100);
    let _ = wire::parse_list_page(body, 3, 1);
    let _ = wire::parse_find_user(body, email);
    let _ = wire::parse_deluser(body, email);
    let _ = wire::parse_batchadd(body);
    let _ = wire::parse_enableuser(body, &[email, "other@example.com"]);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = wire::parse_date(text);
    }
}
