//! The LastPass Enterprise API wire format: the request envelope, and tolerant parsing of every
//! answer variant documented in `lastpass-api.md` into the domain types of [`super`].
//!
//! Nothing here does I/O and nothing here ever sees the provhash except [`envelope`], which only
//! serialises it into the request body (never logged).
//!
//! Choices for shapes the reference does not settle:
//! - A JSON answer of an unexpected shape (e.g. `getuserdata` without `Users` and without an
//!   error, `deluser` without `status`) is [`LastPassError::Transient`]: a garbled answer is more
//!   likely a hiccup than a verdict, and an empty user list must never be inferred from it.
//! - A user entry without a `username` makes the whole page fail (Transient) rather than being
//!   skipped, so that a sync never mistakes it for a deprovisioned account.
//! - `neverloggedin` missing: inferred from `last_login` being `""`/missing.
//! - Other bools missing or null: `false`.

use super::value::{as_bool, as_string, as_u64};
use super::{DelUserOutcome, EnableOutcome, LastPassError, User, UserPage};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// `cid` as sent: a JSON integer when the string is a canonical integer, else a string.
pub(crate) fn cid_value(cid: &str) -> Value {
    let trimmed = cid.trim();
    match trimmed.parse::<u64>() {
        Ok(n) if n.to_string() == trimmed => Value::from(n),
        _ => Value::from(cid),
    }
}

/// The request body: `{"cid":…,"provhash":…,"cmd":…,"data":…}`. Contains the secret: never log it.
pub(crate) fn envelope(cid: &Value, provhash: &str, cmd: &str, data: Value) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("cid".into(), cid.clone());
    map.insert("provhash".into(), Value::from(provhash));
    map.insert("cmd".into(), Value::from(cmd));
    map.insert("data".into(), data);
    // Serialising a Value into a Vec cannot fail.
    serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
}

fn transient(reason: impl Into<String>) -> LastPassError {
    LastPassError::Transient {
        reason: reason.into(),
        retry_after: None,
    }
}

/// Sniffs a 200 answer's body (never the Content-Type): the XML `Authorization Error` is
/// [`LastPassError::Unauthorized`], anything else that is not JSON is Transient. Returns the
/// trimmed JSON text.
pub(crate) fn check_body(body: &[u8]) -> Result<&[u8], LastPassError> {
    let body = trim_bytes(body);
    match body.first() {
        None => Err(transient("empty answer")),
        Some(b'<') => {
            if contains(body, b"Authorization Error") {
                Err(LastPassError::Unauthorized)
            } else {
                Err(transient("non-JSON answer (XML/HTML)"))
            }
        }
        Some(b'{') | Some(b'[') => Ok(body),
        Some(_) => Err(transient("non-JSON answer")),
    }
}

fn trim_bytes(mut b: &[u8]) -> &[u8] {
    if let Some(rest) = b.strip_prefix(b"\xEF\xBB\xBF") {
        b = rest;
    }
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A serde error described without any content of the document (position and category only).
fn malformed(what: &str, e: &serde_json::Error) -> LastPassError {
    let kind = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "malformed JSON",
        serde_json::error::Category::Data => "unexpected JSON shape",
        serde_json::error::Category::Io => "I/O error",
    };
    transient(format!(
        "{what}: {kind} at line {} column {}",
        e.line(),
        e.column()
    ))
}

fn parse_value(what: &str, body: &[u8]) -> Result<Value, LastPassError> {
    serde_json::from_slice(check_body(body)?).map_err(|e| malformed(what, &e))
}

// ---------------------------------------------------------------------------------------------
// Generic fields: status, error / errors.

/// `status`, lower-cased (`OK`, `WARN`, `FAIL`, `success`, `Success`…), if present.
fn status_of(v: &Value) -> Option<String> {
    v.get("status")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_ascii_lowercase())
}

fn status_is_ok(status: &Option<String>) -> bool {
    matches!(status.as_deref(), Some("ok") | Some("success"))
}

/// Every message from `error` (string or array) and `errors` (array or string).
fn messages_of(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["error", "errors"] {
        collect_messages(v.get(key), &mut out);
    }
    out
}

fn collect_messages(v: Option<&Value>, out: &mut Vec<String>) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.trim().is_empty() {
                out.push(s.trim().to_string());
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                collect_messages(Some(item), out);
            }
        }
        Some(Value::Bool(false)) => {}
        Some(other) => out.push(other.to_string()),
    }
}

fn joined(messages: &[String], status: &Option<String>) -> String {
    if messages.is_empty() {
        format!("status {}", status.as_deref().unwrap_or("missing"))
    } else {
        messages.join("; ")
    }
}

fn mentions(messages: &[String], needle: &str) -> bool {
    messages
        .iter()
        .any(|m| m.to_ascii_lowercase().contains(needle))
}

// ---------------------------------------------------------------------------------------------
// Scalars.

fn as_strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| as_string(Some(i)))
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A date that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadDate;

/// `""` → `Ok(None)`; `YYYY-MM-DD HH:MM:SS` (UTC assumed), ISO 8601 / RFC 3339, or with a
/// trailing offset (`2022-05-11 11:02:26 -0400`) → UTC.
pub(crate) fn parse_date(raw: &str) -> Result<Option<DateTime<Utc>>, BadDate> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    // The usual form first (the cheap path for pages of thousands of users).
    if let Ok(d) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Ok(Some(d.and_utc()));
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(d.with_timezone(&Utc)));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f %z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(s, fmt) {
            return Ok(Some(d.with_timezone(&Utc)));
        }
    }
    // A trailing `Z`/`UTC`/`GMT` without RFC 3339's `T`.
    let naive_part = ["Z", " UTC", " GMT", "UTC", "GMT"]
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix))
        .unwrap_or(s)
        .trim();
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(naive_part, fmt) {
            return Ok(Some(d.and_utc()));
        }
    }
    Err(BadDate)
}

fn date_field(user: &Value, key: &str, uid: &str) -> Option<DateTime<Utc>> {
    let raw = match user.get(key) {
        None | Some(Value::Null) => return None,
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    match parse_date(&raw) {
        Ok(d) => d,
        Err(BadDate) => {
            tracing::warn!(
                uid,
                field = key,
                value = %raw.chars().take(64).collect::<String>(),
                "unparseable LastPass date, treated as unknown"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// getuserdata.

/// `Users`, in the order LastPass sent them: an object keyed by uid, `[]` when empty (PHP), or
/// (tolerated) an array of user objects carrying their uid.
#[derive(Debug, Default)]
struct RawUsers(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for RawUsers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawUsers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of users keyed by uid, or an array")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<RawUsers, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(RawUsers(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<RawUsers, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Value>()? {
                    let uid = ["uid", "userid", "id"]
                        .iter()
                        .find_map(|k| as_string(v.get(*k)))
                        .unwrap_or_default();
                    out.push((uid, v));
                }
                Ok(RawUsers(out))
            }
            fn visit_unit<E>(self) -> Result<RawUsers, E> {
                Ok(RawUsers::default())
            }
            fn visit_none<E>(self) -> Result<RawUsers, E> {
                Ok(RawUsers::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
struct RawUserData {
    #[serde(default)]
    status: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    errors: Value,
    #[serde(default)]
    total: Value,
    #[serde(rename = "Users", default)]
    users: Option<RawUsers>,
    #[serde(rename = "Groups", default)]
    groups: Value,
    #[serde(default)]
    invited: Value,
    #[serde(rename = "Invited", default)]
    invited_capitalized: Value,
}

/// A parsed `getuserdata` answer before paging decisions.
#[derive(Debug)]
pub(crate) struct UserData {
    pub users: Vec<User>,
    /// `total`, when LastPass sent a usable one.
    pub total: Option<u64>,
    pub invited: Vec<String>,
}

/// What a `getuserdata` answer said.
#[derive(Debug)]
pub(crate) enum UserDataAnswer {
    Data(UserData),
    /// `{"error":["x is not a valid user."]}`.
    NotAValidUser,
}

pub(crate) fn parse_user_data(body: &[u8]) -> Result<UserDataAnswer, LastPassError> {
    let raw: RawUserData = serde_json::from_slice(check_body(body)?)
        .map_err(|e| malformed("getuserdata answer", &e))?;
    let generic = serde_json::json!({
        "status": raw.status, "error": raw.error, "errors": raw.errors,
    });
    let status = status_of(&generic);
    let messages = messages_of(&generic);
    let failed = matches!(status.as_deref(), Some(s) if s != "ok" && s != "success");
    if raw.users.is_none() || failed {
        if mentions(&messages, "not a valid user") {
            return Ok(UserDataAnswer::NotAValidUser);
        }
        if failed || !messages.is_empty() {
            return Err(LastPassError::Rejected(joined(&messages, &status)));
        }
        return Err(transient("unexpected getuserdata answer: no Users"));
    }
    if !messages.is_empty() {
        tracing::warn!(messages = %messages.join("; "), "getuserdata answered users with an error");
    }

    // Group membership from the page's `Groups` map (group -> member emails).
    let mut group_members: Vec<(String, String)> = Vec::new();
    if let Value::Object(groups) = &raw.groups {
        for (group, members) in groups {
            for m in as_strings(Some(members)) {
                group_members.push((m.to_ascii_lowercase(), group.clone()));
            }
        }
    }

    let mut users = Vec::new();
    for (uid, v) in raw.users.unwrap_or_default().0 {
        users.push(parse_user(&uid, &v, &group_members)?);
    }
    let invited = if raw.invited.is_null() {
        as_strings(Some(&raw.invited_capitalized))
    } else {
        as_strings(Some(&raw.invited))
    };
    Ok(UserDataAnswer::Data(UserData {
        users,
        total: as_u64(Some(&raw.total)),
        invited,
    }))
}

fn parse_user(
    uid: &str,
    v: &Value,
    group_members: &[(String, String)],
) -> Result<User, LastPassError> {
    if !v.is_object() {
        return Err(transient(
            "unexpected getuserdata answer: a user is not an object",
        ));
    }
    let email = as_string(v.get("username"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| transient(format!("getuserdata: user {uid} has no username")))?;
    let uid = if uid.is_empty() {
        return Err(transient("getuserdata: a user has no uid"));
    } else {
        uid.to_string()
    };
    let last_login = date_field(v, "last_login", &uid);
    let never_logged_in = as_bool(v.get("neverloggedin"))
        .unwrap_or_else(|| as_string(v.get("last_login")).is_none_or(|s| s.trim().is_empty()));
    let mut groups = as_strings(v.get("groups"));
    let lower = email.to_ascii_lowercase();
    for (member, group) in group_members {
        if *member == lower && !groups.contains(group) {
            groups.push(group.clone());
        }
    }
    Ok(User {
        full_name: as_string(v.get("fullname")).unwrap_or_default(),
        disabled: as_bool(v.get("disabled")).unwrap_or(false),
        never_logged_in,
        admin: as_bool(v.get("admin")).unwrap_or(false),
        last_login,
        created: date_field(v, "created", &uid),
        groups,
        password_reset_required: as_bool(v.get("password_reset_required")).unwrap_or(false),
        uid,
        email,
    })
}

/// A `getuserdata` page. When LastPass omits `total`, it is a lower bound: what has been seen,
/// plus one if the page was full (so that paging continues until a short page).
pub(crate) fn parse_list_page(
    body: &[u8],
    page_index: u32,
    page_size: u32,
) -> Result<UserPage, LastPassError> {
    match parse_user_data(body)? {
        UserDataAnswer::NotAValidUser => Err(LastPassError::Rejected(
            "getuserdata answered \"not a valid user\" to a page request".into(),
        )),
        UserDataAnswer::Data(d) => {
            let seen = u64::from(page_index) * u64::from(page_size) + d.users.len() as u64;
            let total = d.total.unwrap_or_else(|| {
                if d.users.len() as u64 >= u64::from(page_size) {
                    seen + 1
                } else {
                    seen
                }
            });
            Ok(UserPage {
                users: d.users,
                total,
                invited: d.invited,
            })
        }
    }
}

/// A `getuserdata` lookup by username: the returned user whose username matches `email`
/// case-insensitively, or `None` (`Users: []`, "not a valid user", or a different user).
pub(crate) fn parse_find_user(body: &[u8], email: &str) -> Result<Option<User>, LastPassError> {
    match parse_user_data(body)? {
        UserDataAnswer::NotAValidUser => Ok(None),
        UserDataAnswer::Data(d) => {
            // ASCII case folding only: Unicode folding maps look-alikes (the Kelvin sign) onto
            // letters and would match another account.
            let wanted = email.trim();
            let count = d.users.len();
            let found = d
                .users
                .into_iter()
                .find(|u| u.email.trim().eq_ignore_ascii_case(wanted));
            if found.is_none() && count > 0 {
                tracing::warn!(
                    returned = count,
                    "getuserdata by username returned other users only"
                );
            }
            Ok(found)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// deluser, batchadd, enableuser.

/// `deluser`: OK → Done; OK + "User already disabled" → AlreadyDisabled; "No such user" →
/// NoSuchUser; other FAIL/WARN → Rejected.
pub(crate) fn parse_deluser(body: &[u8], email: &str) -> Result<DelUserOutcome, LastPassError> {
    let v = parse_value("deluser answer", body)?;
    let status = status_of(&v);
    let messages = messages_of(&v);
    if mentions(&messages, "no such user") || mentions(&messages, "not a valid user") {
        return Err(LastPassError::NoSuchUser(email.to_string()));
    }
    if status_is_ok(&status) {
        if mentions(&messages, "already disabled") {
            return Ok(DelUserOutcome::AlreadyDisabled);
        }
        if !messages.is_empty() {
            tracing::warn!(messages = %messages.join("; "), "deluser answered OK with an error");
        }
        return Ok(DelUserOutcome::Done);
    }
    if status.is_some() || !messages.is_empty() {
        return Err(LastPassError::Rejected(joined(&messages, &status)));
    }
    Err(transient("unexpected deluser answer: no status"))
}

/// `batchadd`: OK → `Ok(())`; WARN/FAIL or errors without status → Rejected (joined messages).
pub(crate) fn parse_batchadd(body: &[u8]) -> Result<(), LastPassError> {
    let v = parse_value("batchadd answer", body)?;
    let status = status_of(&v);
    let messages = messages_of(&v);
    if status_is_ok(&status) {
        if !messages.is_empty() {
            tracing::warn!(messages = %messages.join("; "), "batchadd answered OK with an error");
        }
        return Ok(());
    }
    if status.is_some() || !messages.is_empty() {
        return Err(LastPassError::Rejected(joined(&messages, &status)));
    }
    Err(transient("unexpected batchadd answer: no status"))
}

/// `enableuser`: `{"status":"success","enabled_users":[…],"unchanged_users":[…]}`.
/// A FAIL naming "No such user" for a single requested user is NoSuchUser.
pub(crate) fn parse_enableuser(
    body: &[u8],
    emails: &[&str],
) -> Result<EnableOutcome, LastPassError> {
    let v = parse_value("enableuser answer", body)?;
    let status = status_of(&v);
    let messages = messages_of(&v);
    let has_lists = v.get("enabled_users").is_some() || v.get("unchanged_users").is_some();
    if status_is_ok(&status) || (status.is_none() && has_lists) {
        if !messages.is_empty() {
            tracing::warn!(messages = %messages.join("; "), "enableuser answered success with an error");
        }
        return Ok(EnableOutcome {
            enabled: as_strings(v.get("enabled_users")),
            unchanged: as_strings(v.get("unchanged_users")),
        });
    }
    if let [one] = emails
        && (mentions(&messages, "no such user") || mentions(&messages, "not a valid user"))
    {
        return Err(LastPassError::NoSuchUser(one.to_string()));
    }
    if status.is_some() || !messages.is_empty() {
        return Err(LastPassError::Rejected(joined(&messages, &status)));
    }
    Err(transient("unexpected enableuser answer: no status"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The recorded real answer from the reference, verbatim.
    const RECORDED: &str = r#"{"total":4,"count":2,
 "Users":{
  "449022543":{"username":"ann.admin@example.com","fullname":"","mpstrength":"100",
   "created":"2022-05-11 11:02:26","last_pw_change":"2022-05-11 11:02:26","last_login":"2022-06-02 09:20:59",
   "neverloggedin":false,"disabled":false,"admin":true,"totalscore":"0","duousername":null,
   "sites":0,"notes":0,"formfills":0,"applications":0,"attachments":0,"password_reset_required":false},
  "456589433":{"username":"sam.staged@example.com","fullname":"Sam Staged","mpstrength":"0",
   "created":"2022-06-21 11:12:30","last_pw_change":"2022-06-21 11:12:30","last_login":"",
   "neverloggedin":true,"disabled":false,"admin":true,"totalscore":null,
   "duousername":"sam.staged@example.com",
   "sites":null,"notes":null,"formfills":null,"applications":null,"attachments":null,
   "password_reset_required":true,"groups":["Integration Development"]}},
 "Groups":{"Integration Development":["sam.staged@example.com","other@example.com"]},
 "invited":["pending.person@example.com"]}"#;

    const AUTH_ERROR: &str =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<lastpass rc=\"Authorization Error\"/>\n";

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn cid_is_an_integer_only_when_canonical() {
        assert_eq!(cid_value("12345678"), serde_json::json!(12345678));
        assert_eq!(cid_value("0123"), serde_json::json!("0123"));
        assert_eq!(cid_value("abc"), serde_json::json!("abc"));
    }

    #[test]
    fn envelope_shape() {
        let body = envelope(
            &cid_value("42"),
            "s3cr3t",
            "deluser",
            serde_json::json!({"a":1}),
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cid":42,"provhash":"s3cr3t","cmd":"deluser","data":{"a":1}})
        );
    }

    #[test]
    fn recorded_page_parses() {
        let page = parse_list_page(RECORDED.as_bytes(), 0, 2).unwrap();
        assert_eq!(page.total, 4);
        assert_eq!(page.invited, vec!["pending.person@example.com"]);
        assert_eq!(page.users.len(), 2);
        let ann = &page.users[0];
        assert_eq!(ann.uid, "449022543");
        assert_eq!(ann.email, "ann.admin@example.com");
        assert_eq!(ann.full_name, "");
        assert!(ann.admin && !ann.disabled && !ann.never_logged_in);
        assert_eq!(ann.last_login, Some(utc(2022, 6, 2, 9, 20, 59)));
        assert_eq!(ann.created, Some(utc(2022, 5, 11, 11, 2, 26)));
        assert!(ann.groups.is_empty());
        assert!(!ann.password_reset_required);
        let sam = &page.users[1];
        assert_eq!(sam.uid, "456589433");
        assert_eq!(sam.full_name, "Sam Staged");
        assert!(sam.never_logged_in);
        assert_eq!(sam.last_login, None);
        assert_eq!(sam.groups, vec!["Integration Development"]);
        assert!(sam.password_reset_required);
    }

    #[test]
    fn users_keep_wire_order() {
        let body = r#"{"total":3,"count":3,"Users":{
            "9":{"username":"c@example.com"},"10":{"username":"a@example.com"},"2":{"username":"b@example.com"}}}"#;
        let page = parse_list_page(body.as_bytes(), 0, 10).unwrap();
        let uids: Vec<_> = page.users.iter().map(|u| u.uid.as_str()).collect();
        assert_eq!(uids, ["9", "10", "2"]);
    }

    #[test]
    fn find_user_matches_case_insensitively() {
        let found = parse_find_user(RECORDED.as_bytes(), "Sam.Staged@Example.COM")
            .unwrap()
            .unwrap();
        assert_eq!(found.uid, "456589433");
        // LastPass returned other users than the one asked for: none.
        assert_eq!(
            parse_find_user(RECORDED.as_bytes(), "x@example.com").unwrap(),
            None
        );
    }

    #[test]
    fn a_look_alike_username_is_not_the_user_asked_for() {
        // A Kelvin sign folds to "k" under Unicode rules; never under ours.
        let body = r#"{"total":1,"count":1,"Users":{"7":{"username":"nancy.clar\u212a9@example.com","fullname":"","mpstatus":"","created":"","last_login":"","disabled":false,"neverloggedin":true,"linked":"","sites":0,"notes":0,"formfills":0,"applications":0,"attachments":0,"password_reset_required":false,"groups":[]}}}"#;
        assert_eq!(
            parse_find_user(body.as_bytes(), "nancy.clark9@example.com").unwrap(),
            None
        );
    }

    #[test]
    fn empty_users_array_is_none_and_empty_page() {
        let body = br#"{"total":0,"count":0,"Users":[],"Groups":[],"invited":[]}"#;
        assert_eq!(parse_find_user(body, "jane@example.com").unwrap(), None);
        let page = parse_list_page(body, 0, 100).unwrap();
        assert!(page.users.is_empty());
        assert_eq!(page.total, 0);
    }

    #[test]
    fn not_a_valid_user_is_none() {
        let body = br#"{"error":["jane@example.com is not a valid user."]}"#;
        assert_eq!(parse_find_user(body, "jane@example.com").unwrap(), None);
        assert!(matches!(
            parse_list_page(body, 0, 10),
            Err(LastPassError::Rejected(_))
        ));
    }

    #[test]
    fn users_as_array_of_objects_is_tolerated() {
        let body = br#"{"total":1,"Users":[{"uid":"7","username":"a@example.com"}]}"#;
        let page = parse_list_page(body, 0, 10).unwrap();
        assert_eq!(page.users[0].uid, "7");
    }

    #[test]
    fn missing_users_without_error_is_transient() {
        let r = parse_list_page(br#"{"total":3}"#, 0, 10);
        assert!(matches!(r, Err(LastPassError::Transient { .. })), "{r:?}");
        let r = parse_list_page(br#"{"status":"FAIL","error":"Bad thing"}"#, 0, 10);
        assert_eq!(r, Err(LastPassError::Rejected("Bad thing".into())));
    }

    #[test]
    fn user_without_username_fails_the_page() {
        let body = br#"{"total":1,"Users":{"5":{"fullname":"x"}}}"#;
        assert!(matches!(
            parse_list_page(body, 0, 10),
            Err(LastPassError::Transient { .. })
        ));
    }

    #[test]
    fn missing_total_is_a_lower_bound() {
        let body =
            br#"{"Users":{"1":{"username":"a@example.com"},"2":{"username":"b@example.com"}}}"#;
        assert_eq!(parse_list_page(body, 3, 2).unwrap().total, 9);
        assert_eq!(parse_list_page(body, 1, 5).unwrap().total, 7);
    }

    #[test]
    fn bools_numbers_and_strings_variants() {
        let body = br#"{"total":"2","count":"2","Users":{
          "1":{"username":"a@example.com","disabled":1,"admin":"1","neverloggedin":0,
               "password_reset_required":"0","sites":"12","notes":null,"last_login":"2022-01-01 00:00:00",
               "hasSharingKeys":true,"legacytotalscore":"3.5","multifactor":null,"linked":"x"},
          "2":{"username":"b@example.com","disabled":"0","admin":0,"neverloggedin":"1",
               "password_reset_required":1,"last_login":""}},
          "Groups":[],"Invited":["p@example.com"]}"#;
        let page = parse_list_page(body, 0, 2).unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.invited, vec!["p@example.com"]);
        let a = &page.users[0];
        assert!(a.disabled && a.admin && !a.never_logged_in && !a.password_reset_required);
        let b = &page.users[1];
        assert!(!b.disabled && !b.admin && b.never_logged_in && b.password_reset_required);
        assert_eq!(as_u64(Some(&serde_json::json!("12"))), Some(12));
        assert_eq!(as_u64(Some(&serde_json::json!(12))), Some(12));
        assert_eq!(as_u64(Some(&Value::Null)), None);
        assert_eq!(as_bool(Some(&serde_json::json!(true))), Some(true));
        assert_eq!(as_bool(Some(&serde_json::json!("0"))), Some(false));
    }

    #[test]
    fn groups_missing_or_from_the_groups_map() {
        let body = br#"{"total":1,"Users":{"1":{"username":"Other@example.com"}},
            "Groups":{"Sales":["other@example.com"],"Ops":["x@example.com"]}}"#;
        let page = parse_list_page(body, 0, 10).unwrap();
        assert_eq!(page.users[0].groups, vec!["Sales"]);
        let body = br#"{"total":1,"Users":{"1":{"username":"a@example.com","groups":[]}}}"#;
        assert!(
            parse_list_page(body, 0, 10).unwrap().users[0]
                .groups
                .is_empty()
        );
    }

    #[test]
    fn neverloggedin_missing_is_inferred() {
        let body = br#"{"total":2,"Users":{"1":{"username":"a@example.com","last_login":""},
            "2":{"username":"b@example.com","last_login":"2022-01-01 00:00:00"}}}"#;
        let page = parse_list_page(body, 0, 10).unwrap();
        assert!(page.users[0].never_logged_in);
        assert!(!page.users[1].never_logged_in);
    }

    #[test]
    fn dates_in_every_form() {
        let t = utc(2022, 5, 11, 11, 2, 26);
        assert_eq!(parse_date("2022-05-11 11:02:26"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11T11:02:26Z"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11T11:02:26"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11T11:02:26.000Z"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11T13:02:26+02:00"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11 07:02:26 -0400"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11 07:02:26 -04:00"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11 07:02:26-0400"), Ok(Some(t)));
        assert_eq!(parse_date("2022-05-11 11:02:26 UTC"), Ok(Some(t)));
        assert_eq!(parse_date(""), Ok(None));
        assert_eq!(parse_date("  "), Ok(None));
        assert_eq!(parse_date("yesterday"), Err(BadDate));
        assert_eq!(parse_date("0000-00-00 00:00:00"), Err(BadDate));
    }

    #[test]
    fn unparseable_last_login_is_none_not_an_error() {
        let body = br#"{"total":1,"Users":{"1":{"username":"a@example.com","last_login":"garbage",
            "created":17,"neverloggedin":false}}}"#;
        let page = parse_list_page(body, 0, 10).unwrap();
        assert_eq!(page.users[0].last_login, None);
        assert_eq!(page.users[0].created, None);
        assert!(!page.users[0].never_logged_in);
    }

    #[test]
    fn body_sniffing() {
        assert_eq!(
            check_body(AUTH_ERROR.as_bytes()),
            Err(LastPassError::Unauthorized)
        );
        assert!(matches!(
            check_body(b"<html><body>429 Too Many Requests</body></html>"),
            Err(LastPassError::Transient { .. })
        ));
        assert!(matches!(
            check_body(b""),
            Err(LastPassError::Transient { .. })
        ));
        assert!(matches!(
            check_body(b"Service Unavailable"),
            Err(LastPassError::Transient { .. })
        ));
        assert_eq!(
            check_body(b"\xEF\xBB\xBF  {\"a\":1}\n"),
            Ok(&b"{\"a\":1}"[..])
        );
        assert!(matches!(
            parse_batchadd(b"{\"status\":"),
            Err(LastPassError::Transient { .. })
        ));
        assert_eq!(
            parse_deluser(AUTH_ERROR.as_bytes(), "a@example.com"),
            Err(LastPassError::Unauthorized)
        );
    }

    #[test]
    fn deluser_variants() {
        let e = "jane@example.com";
        assert_eq!(
            parse_deluser(br#"{"status":"OK"}"#, e),
            Ok(DelUserOutcome::Done)
        );
        assert_eq!(
            parse_deluser(br#"{"status":"ok"}"#, e),
            Ok(DelUserOutcome::Done)
        );
        assert_eq!(
            parse_deluser(
                br#"{"status":"OK","error":"User already disabled: jane@example.com"}"#,
                e
            ),
            Ok(DelUserOutcome::AlreadyDisabled)
        );
        assert_eq!(
            parse_deluser(
                br#"{"status":"FAIL","error":"No such user: jane@example.com"}"#,
                e
            ),
            Err(LastPassError::NoSuchUser(e.into()))
        );
        assert_eq!(
            parse_deluser(br#"{"status":"FAIL","error":["Permission denied"]}"#, e),
            Err(LastPassError::Rejected("Permission denied".into()))
        );
        assert_eq!(
            parse_deluser(br#"{"status":"WARN"}"#, e),
            Err(LastPassError::Rejected("status warn".into()))
        );
        assert!(matches!(
            parse_deluser(br#"{}"#, e),
            Err(LastPassError::Transient { .. })
        ));
    }

    #[test]
    fn batchadd_variants() {
        assert_eq!(parse_batchadd(br#"{"status":"OK"}"#), Ok(()));
        assert_eq!(parse_batchadd(br#"{"status":"Success"}"#), Ok(()));
        assert_eq!(
            parse_batchadd(br#"{"status":"WARN","errors":["a@example.com: exists","b: invalid"]}"#),
            Err(LastPassError::Rejected(
                "a@example.com: exists; b: invalid".into()
            ))
        );
        assert_eq!(
            parse_batchadd(br#"{"status":"FAIL","error":"Invalid data"}"#),
            Err(LastPassError::Rejected("Invalid data".into()))
        );
        assert_eq!(
            parse_batchadd(br#"{"status":"FAIL","error":["x","y"]}"#),
            Err(LastPassError::Rejected("x; y".into()))
        );
        assert_eq!(
            parse_batchadd(br#"{"error":"nope"}"#),
            Err(LastPassError::Rejected("nope".into()))
        );
    }

    #[test]
    fn enableuser_variants() {
        let out = parse_enableuser(
            br#"{"status":"success","enabled_users":["jane@example.com"],"unchanged_users":[]}"#,
            &["jane@example.com"],
        )
        .unwrap();
        assert_eq!(out.enabled, vec!["jane@example.com"]);
        assert!(out.unchanged.is_empty());
        let out = parse_enableuser(
            br#"{"status":"Success","enabled_users":[],"unchanged_users":["a@example.com"],"error":"something"}"#,
            &["a@example.com"],
        )
        .unwrap();
        assert_eq!(out.unchanged, vec!["a@example.com"]);
        assert_eq!(
            parse_enableuser(
                br#"{"status":"FAIL","error":"No such user: a@example.com"}"#,
                &["a@example.com"]
            ),
            Err(LastPassError::NoSuchUser("a@example.com".into()))
        );
        assert_eq!(
            parse_enableuser(
                br#"{"status":"FAIL","error":"Denied"}"#,
                &["a@example.com", "b@example.com"]
            ),
            Err(LastPassError::Rejected("Denied".into()))
        );
    }
}
