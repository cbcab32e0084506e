//! Everything that knows the LastPass Enterprise API: the HTTP client (reqwest), the wire format,
//! and the typed errors. The rest of the crate sees only the [`LastPass`] trait and the domain
//! types below.

pub mod budget;
mod client;
mod error;
pub(crate) mod value;
mod wire;

pub use client::{Client, ClientConfig, Provhash};
pub use error::LastPassError;

use crate::email::Email;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use std::collections::HashSet;
use std::future::Future;

pub use chrono_tz::Tz;

/// The zone of LastPass dates written without an offset (`YYYY-MM-DD HH:MM:SS`), unless
/// `LASTPASS_TIME_ZONE` says otherwise: LastPass documents US/Eastern for its reporting API,
/// and a recorded `getuserdata` answer only makes sense read as Eastern (`lastpass-api.md`).
pub const DEFAULT_TIME_ZONE: Tz = chrono_tz::America::New_York;

/// The prefix of the uid the connector gives a pending invitation, which has no LastPass uid:
/// `invitation:<email as listed, lower-cased>`.
pub const INVITATION_UID_PREFIX: &str = "invitation:";

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
    /// Not an account yet: an invitation LastPass listed in `invited` (the person already has a
    /// LastPass account elsewhere and must accept it). Its uid is
    /// [`INVITATION_UID_PREFIX`]`<email>`, and it counts as `Staged`.
    pub invitation_pending: bool,
}

impl User {
    /// A pending invitation for `email`, as listed by LastPass.
    pub fn invitation(email: &str) -> User {
        let email = email.trim();
        User {
            uid: format!("{INVITATION_UID_PREFIX}{}", email.to_lowercase()),
            email: email.to_string(),
            full_name: String::new(),
            disabled: false,
            never_logged_in: true,
            admin: false,
            last_login: None,
            created: None,
            groups: Vec::new(),
            password_reset_required: true,
            invitation_pending: true,
        }
    }
}

/// One page of `getuserdata`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPage {
    /// The users on this page, in the order LastPass returned them.
    pub users: Vec<User>,
    /// `total`: matching users over all pages (`u64::MAX` when LastPass did not say: then only
    /// an empty page ends the paging).
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
    /// 3: cancel a pending invitation (newer LastPass documentation).
    CancelInvitation = 3,
}

/// What `batchadd` answered when it did not fail: any `message`, `error` or `errors` text that
/// came with the OK (LastPass may answer OK and skip or throttle users, saying so in `message`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddOutcome {
    pub messages: Vec<String>,
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
    /// `error` text that came with the answer (e.g. "No such user: x").
    pub messages: Vec<String>,
}

/// The operations the connector needs from LastPass. [`Client`] implements it over HTTP; tests
/// implement it in memory. Every method is one API call (no retry: callers decide).
pub trait LastPass: Send + Sync + 'static {
    /// `getuserdata` with `username`: `Ok(None)` for `Users: []` and for "is not a valid user";
    /// a pending invitation listed in `invited` is a [`User::invitation`].
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

    /// `batchadd` of one or more users in one call. An OK proves nothing about any user (it
    /// may have become an invitation, or been skipped): look them up afterwards.
    fn create_users(
        &self,
        users: &[NewUser],
    ) -> impl Future<Output = Result<AddOutcome, LastPassError>> + Send;

    /// `enableuser` for one or more users in one call.
    fn enable_users(
        &self,
        emails: &[Email],
    ) -> impl Future<Output = Result<EnableOutcome, LastPassError>> + Send;

    /// Whether calls are rationed right now (a call budget is in force, configured or after a
    /// 429): then a call saved is time saved, and batches wait longer for company.
    fn rationed(&self) -> bool {
        false
    }
}

/// Every user, as a stream of pages: one `getuserdata` call per page, never more than one page
/// held, accounts already seen on an earlier page left out (see [`Pager`]).
pub fn pages<L: LastPass>(
    lastpass: &L,
    page_size: u32,
) -> impl Stream<Item = Result<UserPage, LastPassError>> + Send + '_ {
    futures_util::stream::try_unfold(Pager::new(page_size), move |mut pager| async move {
        let Some(index) = pager.next_index() else {
            return Ok(None);
        };
        let mut page = lastpass.list_page(index, pager.page_size()).await?;
        pager.accept(&mut page)?;
        Ok(Some((page, pager)))
    })
}

/// The paging rule, in one place. LastPass documents no maximum `pagesize` and a server may hand
/// back fewer accounts than asked for on a page that is not the last, so a short page proves
/// nothing. Ask for page 0, 1, 2, ... while fewer distinct accounts than `total` have been seen;
/// stop on an empty page or once `total` is reached. Accounts already seen (by uid) are dropped
/// from later pages, and a non-empty page that brings nothing new before `total` is reached is an
/// error: asking again would loop forever, and stopping would silently miss accounts.
#[derive(Debug)]
pub struct Pager {
    page_size: u32,
    next: Option<u32>,
    /// The uids seen so far: numeric ones (all real ones) as numbers, to keep a sync of many
    /// accounts small (about 16 bytes each), any other as text.
    seen: HashSet<u64>,
    seen_other: HashSet<Box<str>>,
}

impl Pager {
    pub fn new(page_size: u32) -> Self {
        Pager {
            page_size: page_size.max(1),
            next: Some(0),
            seen: HashSet::new(),
            seen_other: HashSet::new(),
        }
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The `pageindex` to ask for next, or `None` when paging is over.
    pub fn next_index(&self) -> Option<u32> {
        self.next
    }

    /// Distinct accounts seen so far.
    pub fn seen(&self) -> u64 {
        (self.seen.len() + self.seen_other.len()) as u64
    }

    /// Takes the answer to [`Pager::next_index`]: removes the accounts already seen from `page`
    /// and decides whether there is a next page.
    pub fn accept(&mut self, page: &mut UserPage) -> Result<(), LastPassError> {
        let Some(index) = self.next else {
            return Ok(());
        };
        if page.users.is_empty() {
            self.next = None;
            return Ok(());
        }
        let before = page.users.len();
        let (seen, other) = (&mut self.seen, &mut self.seen_other);
        page.users.retain(|u| match u.uid.parse::<u64>() {
            // Only the canonical spelling as a number: "007" and "7" stay two uids.
            Ok(n) if n.to_string() == u.uid => seen.insert(n),
            _ => other.insert(u.uid.as_str().into()),
        });
        let repeated = before - page.users.len();
        if repeated > 0 {
            tracing::warn!(
                page = index,
                repeated,
                "getuserdata repeated accounts of an earlier page"
            );
        }
        if self.seen() >= page.total {
            self.next = None;
        } else if page.users.is_empty() {
            self.next = None;
            return Err(LastPassError::Rejected(format!(
                "getuserdata page {index} only repeated accounts already seen ({} of {} seen); \
                 paging cannot make progress",
                self.seen(),
                page.total
            )));
        } else {
            self.next = index.checked_add(1);
        }
        Ok(())
    }
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
    let zone = chrono_tz::America::New_York;
    let _ = wire::check_body(body);
    let _ = wire::parse_user_data(body, zone);
    let _ = wire::parse_list_page(body, zone);
    let _ = wire::parse_find_user(body, email, zone);
    let _ = wire::parse_deluser(body, email);
    let _ = wire::parse_batchadd(body);
    let _ = wire::parse_enableuser(body, &[email, "other@example.com"]);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = wire::parse_date(text, zone);
    }
}

#[cfg(test)]
mod paging_tests {
    use super::*;

    fn user(uid: u32) -> User {
        User {
            uid: uid.to_string(),
            ..User::invitation(&format!("u{uid}@example.com"))
        }
    }

    fn page(uids: impl IntoIterator<Item = u32>, total: u64) -> UserPage {
        UserPage {
            users: uids.into_iter().map(user).collect(),
            total,
            invited: vec![],
        }
    }

    #[test]
    fn short_pages_do_not_end_the_paging_total_does() {
        let mut p = Pager::new(2000);
        for (i, range) in [(0, 0..300), (1, 300..600), (2, 600..900)] {
            assert_eq!(p.next_index(), Some(i));
            let mut pg = page(range, 1000);
            p.accept(&mut pg).unwrap();
            assert_eq!(pg.users.len(), 300);
        }
        let mut pg = page(900..1000, 1000);
        p.accept(&mut pg).unwrap();
        assert_eq!((p.seen(), p.next_index()), (1000, None));
    }

    #[test]
    fn an_empty_page_ends_the_paging() {
        let mut p = Pager::new(10);
        p.accept(&mut page(0..10, u64::MAX)).unwrap();
        assert_eq!(p.next_index(), Some(1));
        p.accept(&mut page(0..0, u64::MAX)).unwrap();
        assert_eq!(p.next_index(), None);
    }

    #[test]
    fn repeated_accounts_are_dropped_and_a_page_of_repeats_is_an_error() {
        let mut p = Pager::new(10);
        p.accept(&mut page(0..10, 30)).unwrap();
        // Half repeats: the new half is kept.
        let mut pg = page(5..15, 30);
        p.accept(&mut pg).unwrap();
        assert_eq!(pg.users.first().unwrap().uid, "10");
        assert_eq!((p.seen(), p.next_index()), (15, Some(2)));
        // Only repeats (a server that ignores pageindex): stop with an error, never loop.
        let err = p.accept(&mut page(0..10, 30)).unwrap_err();
        assert!(matches!(err, LastPassError::Rejected(_)), "{err:?}");
        assert_eq!(p.next_index(), None);
    }
}
