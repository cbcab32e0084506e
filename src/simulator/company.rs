//! The simulated company and the API commands applied to it. Pure logic, no I/O: the HTTP layer
//! ([`super::server`]) and [`super::SimulatorHandle`] both work through [`Company`].

use super::seed::{self, DATE_FORMAT};
use super::{
    CallCounts, CallRecord, ControlError, Credentials, DateStyle, Faults, FaultsPatch, Quirks,
    QuirksPatch, SimUser, SimUserPatch, SimUserSpec,
};
use chrono::{NaiveDateTime, Utc};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The exact XML LastPass answers for a wrong cid or provhash.
pub const AUTH_ERROR_XML: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<lastpass rc=\"Authorization Error\"/>\n";

/// What the API endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAnswer {
    /// HTTP 503 with a small HTML body.
    Unavailable,
    /// HTTP 429 with an HTML body and `Retry-After: <secs>`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 200, `text/xml;charset=UTF-8`, this body (JSON or the XML auth error).
    Body(String),
}

/// The whole simulated state, behind one mutex.
pub struct Company {
    pub cid: String,
    pub provhash: String,
    /// Keyed by numeric uid: iteration order is paging order.
    users: BTreeMap<u64, SimUser>,
    invited: Vec<String>,
    next_uid: u64,
    pub faults: Faults,
    pub quirks: Quirks,
    rng: fastrand::Rng,
    calls: Vec<CallRecord>,
    counts: CallCounts,
}

fn same(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Hostile input echoed back is cut short.
fn clip(s: &str) -> String {
    s.chars().take(254).collect()
}

fn flag(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn valid_username(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.len() <= 254
        && s.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A numeric value, or its digit string under the `string_numbers` quirk.
fn num(n: u64, quirks: &Quirks) -> Value {
    if quirks.string_numbers {
        Value::from(n.to_string())
    } else {
        Value::from(n)
    }
}

fn boolean(b: bool, quirks: &Quirks) -> Value {
    if quirks.numeric_bools {
        Value::from(u8::from(b))
    } else {
        Value::from(b)
    }
}

fn date(stored: &str, quirks: &Quirks) -> String {
    if quirks.date_style == DateStyle::Plain {
        return stored.to_string();
    }
    let Ok(d) = NaiveDateTime::parse_from_str(stored, DATE_FORMAT) else {
        return stored.to_string();
    };
    match quirks.date_style {
        DateStyle::Plain => stored.to_string(),
        DateStyle::Rfc3339 => d.and_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        DateStyle::Offset => (d - chrono::Duration::hours(4))
            .format("%Y-%m-%d %H:%M:%S -0400")
            .to_string(),
    }
}

/// One user as `getuserdata` prints it, fields in the recorded order.
#[derive(Serialize)]
struct WireUser {
    username: String,
    fullname: String,
    mpstrength: Value,
    created: String,
    last_pw_change: String,
    last_login: String,
    neverloggedin: Value,
    disabled: Value,
    admin: Value,
    totalscore: Value,
    duousername: Value,
    sites: Value,
    notes: Value,
    formfills: Value,
    applications: Value,
    attachments: Value,
    password_reset_required: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

impl WireUser {
    fn of(uid: u64, u: &SimUser, q: &Quirks) -> Self {
        // Vault statistics derived from the uid: stable, and nothing more to store.
        let h = uid.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
        let stat = |shift: u32, modulo: u64| {
            if u.neverloggedin {
                Value::Null
            } else {
                num((h >> shift) % modulo, q)
            }
        };
        WireUser {
            username: u.username.clone(),
            fullname: u.fullname.clone(),
            mpstrength: Value::from(if u.neverloggedin {
                "0".to_string()
            } else {
                (h % 101).to_string()
            }),
            created: date(&u.created, q),
            last_pw_change: date(&u.created, q),
            last_login: date(&u.last_login, q),
            neverloggedin: boolean(u.neverloggedin, q),
            disabled: boolean(u.disabled, q),
            admin: boolean(u.admin, q),
            totalscore: if u.neverloggedin {
                Value::Null
            } else {
                Value::from(format!("{:.1}", ((h >> 7) % 1000) as f64 / 10.0))
            },
            duousername: Value::Null,
            sites: stat(3, 300),
            notes: stat(11, 40),
            formfills: stat(17, 5),
            applications: stat(23, 3),
            attachments: stat(29, 10),
            password_reset_required: boolean(u.password_reset_required, q),
            groups: u.groups.clone(),
        }
    }
}

/// A map that PHP's `json_encode` would print as `[]` when empty; entries in the given order.
struct PhpMap<V>(Vec<(String, V)>);

impl<V: Serialize> Serialize for PhpMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            return s.serialize_seq(Some(0))?.end();
        }
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct UserDataOut {
    total: Value,
    count: Value,
    #[serde(rename = "Users")]
    users: PhpMap<WireUser>,
    #[serde(rename = "Groups")]
    groups: PhpMap<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invited: Option<Vec<String>>,
    #[serde(rename = "Invited", skip_serializing_if = "Option::is_none")]
    invited_capitalized: Option<Vec<String>>,
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| r#"{"status":"FAIL","error":"Internal error"}"#.into())
}

/// `{"status":…}` with an optional `error` / `errors`, in the documented key order.
#[derive(Serialize)]
struct StatusOut {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Value>,
}

fn status(status: &'static str, error: Option<Value>, errors: Option<Value>) -> String {
    to_json(&StatusOut {
        status,
        error,
        errors,
    })
}

fn ok() -> String {
    status("OK", None, None)
}

fn fail(msg: impl Into<String>) -> String {
    status("FAIL", Some(Value::from(msg.into())), None)
}

impl Company {
    pub fn new(
        cid: String,
        provhash: String,
        users: usize,
        seed: u64,
        faults: Faults,
        quirks: Quirks,
    ) -> Self {
        let (generated, next_uid) = seed::generate(users, seed);
        Company {
            cid,
            provhash,
            users: generated
                .into_iter()
                .map(|u| (u.uid.parse().unwrap_or_default(), u))
                .collect(),
            invited: Vec::new(),
            next_uid,
            faults: faults.sanitized(),
            quirks,
            rng: fastrand::Rng::with_seed(seed ^ 0xFA17_5EED),
            calls: Vec::new(),
            counts: CallCounts::default(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The API endpoint.

    /// Decides whether this API request is answered by a fault (consumes `fail_next` /
    /// `rate_limit_next` and draws the random rates).
    pub fn fault(&mut self) -> Option<ApiAnswer> {
        let f = &mut self.faults;
        let limited = ApiAnswer::RateLimited {
            retry_after_secs: f.retry_after_secs,
        };
        if f.outage {
            return Some(ApiAnswer::Unavailable);
        }
        if f.fail_next > 0 {
            f.fail_next -= 1;
            return Some(ApiAnswer::Unavailable);
        }
        if f.rate_limit_next > 0 {
            f.rate_limit_next -= 1;
            return Some(limited);
        }
        if f.error_rate > 0.0 && self.rng.f64() < f.error_rate {
            return Some(ApiAnswer::Unavailable);
        }
        if f.rate_limit_rate > 0.0 && self.rng.f64() < f.rate_limit_rate {
            return Some(limited);
        }
        None
    }

    /// Answers one API request body (faults already decided). A body that is not a JSON object,
    /// or carries the wrong cid/provhash, gets the XML `Authorization Error` (LastPass cannot
    /// authenticate what it cannot read). An unknown `cmd` gets
    /// `{"status":"FAIL","error":"Unknown command"}`.
    pub fn answer(&mut self, body: &[u8]) -> ApiAnswer {
        let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(body) else {
            return ApiAnswer::Body(AUTH_ERROR_XML.into());
        };
        let cid_ok = match envelope.get("cid") {
            Some(Value::String(s)) => s.trim() == self.cid,
            Some(Value::Number(n)) => n.to_string() == self.cid,
            _ => false,
        };
        let provhash_ok =
            envelope.get("provhash").and_then(Value::as_str) == Some(self.provhash.as_str());
        if !cid_ok || !provhash_ok {
            return ApiAnswer::Body(AUTH_ERROR_XML.into());
        }
        let cmd = envelope.get("cmd").and_then(Value::as_str).unwrap_or("");
        let data = envelope.get("data").cloned().unwrap_or(Value::Null);
        let body = match cmd {
            "getuserdata" => {
                self.counts.getuserdata += 1;
                self.getuserdata(&data)
            }
            "deluser" => {
                self.counts.deluser += 1;
                self.log(cmd, &data);
                self.deluser(&data)
            }
            "batchadd" => {
                self.counts.batchadd += 1;
                self.log(cmd, &data);
                self.batchadd(&data)
            }
            "enableuser" => {
                self.counts.enableuser += 1;
                self.log(cmd, &data);
                self.enableuser(&data)
            }
            _ => fail("Unknown command"),
        };
        ApiAnswer::Body(body)
    }

    fn log(&mut self, cmd: &str, data: &Value) {
        self.calls.push(CallRecord {
            cmd: cmd.into(),
            data: data.clone(),
        });
    }

    fn find(&self, username: &str) -> Option<u64> {
        self.users
            .iter()
            .find(|(_, u)| same(&u.username, username))
            .map(|(uid, _)| *uid)
    }

    fn user_data(&self, users: Vec<(u64, &SimUser)>, total: u64) -> String {
        let q = &self.quirks;
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, u) in &users {
            for g in &u.groups {
                groups
                    .entry(g.clone())
                    .or_default()
                    .push(u.username.clone());
            }
        }
        let out = UserDataOut {
            total: num(total, q),
            count: num(users.len() as u64, q),
            users: PhpMap(
                users
                    .iter()
                    .map(|(uid, u)| (uid.to_string(), WireUser::of(*uid, u, q)))
                    .collect(),
            ),
            groups: PhpMap(groups.into_iter().collect()),
            invited: (!q.invited_capitalized).then(|| self.invited.clone()),
            invited_capitalized: q.invited_capitalized.then(|| self.invited.clone()),
        };
        to_json(&out)
    }

    /// `getuserdata`: `username` lookup, or `disabled`/`admin` filters with `pagesize` (missing or
    /// 0: everything in one page) and 0-based `pageindex`.
    fn getuserdata(&self, data: &Value) -> String {
        let disabled = flag(data.get("disabled"));
        let admin = flag(data.get("admin"));
        let filter = |u: &SimUser| {
            disabled.is_none_or(|d| u.disabled == d) && admin.is_none_or(|a| u.admin == a)
        };
        if let Some(name) = data.get("username").and_then(Value::as_str) {
            let hit = self
                .find(name)
                .and_then(|uid| self.users.get(&uid).map(|u| (uid, u)))
                .filter(|(_, u)| filter(u));
            return match hit {
                Some(found) => self.user_data(vec![found], 1),
                None if self.quirks.unknown_user_error => to_json(&json!({
                    "error": [format!("{} is not a valid user.", clip(name))]
                })),
                None => self.user_data(Vec::new(), 0),
            };
        }
        let matching: Vec<(u64, &SimUser)> = self
            .users
            .iter()
            .filter(|(_, u)| filter(u))
            .map(|(k, u)| (*k, u))
            .collect();
        let total = matching.len() as u64;
        let size = number(data.get("pagesize")).unwrap_or(0);
        let index = number(data.get("pageindex")).unwrap_or(0);
        let page: Vec<_> = if size == 0 {
            matching
        } else {
            let skip = usize::try_from(index.saturating_mul(size)).unwrap_or(usize::MAX);
            let take = usize::try_from(size).unwrap_or(usize::MAX);
            matching.into_iter().skip(skip).take(take).collect()
        };
        self.user_data(page, total)
    }

    /// `deluser`: 0 disables, 1 and 2 remove, 3 cancels a pending invitation.
    fn deluser(&mut self, data: &Value) -> String {
        let Some(name) = data.get("username").and_then(Value::as_str) else {
            return fail("Missing username");
        };
        let action = match data.get("deleteaction") {
            None | Some(Value::Null) => 0,
            v => match number(v) {
                Some(a @ 0..=3) => a,
                _ => return fail("Invalid deleteaction"),
            },
        };
        let no_such = || fail(format!("No such user: {}", clip(name)));
        if action == 3 {
            let before = self.invited.len();
            self.invited.retain(|i| !same(i, name));
            return if self.invited.len() < before {
                ok()
            } else {
                no_such()
            };
        }
        let Some(uid) = self.find(name) else {
            return no_such();
        };
        if action == 0 {
            let Some(user) = self.users.get_mut(&uid) else {
                return no_such();
            };
            if user.disabled {
                let msg = format!("User already disabled: {}", user.username);
                return status("OK", Some(Value::from(msg)), None);
            }
            user.disabled = true;
        } else {
            self.users.remove(&uid);
        }
        ok()
    }

    /// `batchadd`: creates the new users; an existing username is left unchanged and answered OK
    /// (no duplicate). Invalid items: `WARN` + `errors` when some items were fine, `FAIL` +
    /// `error` array when none were; data that is neither an array nor an object: `FAIL` +
    /// `error` string.
    fn batchadd(&mut self, data: &Value) -> String {
        let items: Vec<&Value> = match data {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => vec![data],
            _ => return fail("Invalid data"),
        };
        let mut errors = Vec::new();
        let mut fine = 0usize;
        let now = Utc::now().format(DATE_FORMAT).to_string();
        for item in items {
            let Some(name) = item.get("username").and_then(Value::as_str) else {
                errors.push("Missing username".to_string());
                continue;
            };
            if !valid_username(name) {
                errors.push(format!("Invalid username: {}", clip(name)));
                continue;
            }
            fine += 1;
            if self.find(name).is_some() {
                continue;
            }
            let groups = match item.get("groups") {
                Some(Value::Array(g)) => g.iter().filter_map(Value::as_str).map(clip).collect(),
                Some(Value::String(g)) => vec![clip(g)],
                _ => Vec::new(),
            };
            let uid = self.next_uid;
            self.next_uid += 1;
            self.users.insert(
                uid,
                SimUser {
                    uid: uid.to_string(),
                    username: name.trim().to_string(),
                    fullname: item
                        .get("fullname")
                        .and_then(Value::as_str)
                        .map(clip)
                        .unwrap_or_default(),
                    disabled: false,
                    admin: false,
                    neverloggedin: true,
                    last_login: String::new(),
                    created: now.clone(),
                    groups,
                    password_reset_required: flag(item.get("password_reset_required"))
                        .unwrap_or(true),
                },
            );
        }
        match (errors.is_empty(), fine) {
            (true, _) => ok(),
            (false, 0) => status("FAIL", Some(Value::from(errors)), None),
            (false, _) => status("WARN", None, Some(Value::from(errors))),
        }
    }

    /// `enableuser`: disabled users are enabled, others unchanged; unknown names are reported in
    /// an `error` string (`No such user: a, b`) next to `status: success`.
    fn enableuser(&mut self, data: &Value) -> String {
        let names: Vec<&str> = match data {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => return fail("Invalid data"),
        };
        let mut enabled = Vec::new();
        let mut unchanged = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self.find(name).and_then(|uid| self.users.get_mut(&uid)) {
                Some(u) if u.disabled => {
                    u.disabled = false;
                    enabled.push(u.username.clone());
                }
                Some(u) => unchanged.push(u.username.clone()),
                None => missing.push(clip(name)),
            }
        }
        #[derive(Serialize)]
        struct Out {
            status: &'static str,
            enabled_users: Vec<String>,
            unchanged_users: Vec<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<String>,
        }
        to_json(&Out {
            status: "success",
            enabled_users: enabled,
            unchanged_users: unchanged,
            error: (!missing.is_empty()).then(|| format!("No such user: {}", missing.join(", "))),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Control operations.

    pub fn users(&self) -> Vec<SimUser> {
        self.users.values().cloned().collect()
    }

    pub fn user(&self, email: &str) -> Option<SimUser> {
        self.find(email)
            .and_then(|uid| self.users.get(&uid).cloned())
    }

    pub fn invited(&self) -> Vec<String> {
        self.invited.clone()
    }

    pub fn add_invitation(&mut self, email: &str) {
        if !self.invited.iter().any(|i| same(i, email)) {
            self.invited.push(email.trim().to_string());
        }
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.calls.clone()
    }

    pub fn counts(&self) -> CallCounts {
        self.counts.clone()
    }

    pub fn set_faults(&mut self, p: FaultsPatch) -> Faults {
        let f = &mut self.faults;
        if let Some(v) = p.latency_ms {
            f.latency_ms = v;
        }
        if let Some(v) = p.error_rate {
            f.error_rate = v;
        }
        if let Some(v) = p.rate_limit_rate {
            f.rate_limit_rate = v;
        }
        if let Some(v) = p.outage {
            f.outage = v;
        }
        if let Some(v) = p.fail_next {
            f.fail_next = v;
        }
        if let Some(v) = p.rate_limit_next {
            f.rate_limit_next = v;
        }
        if let Some(v) = p.retry_after_secs {
            f.retry_after_secs = v;
        }
        self.faults = self.faults.clone().sanitized();
        self.faults.clone()
    }

    pub fn set_quirks(&mut self, p: QuirksPatch) -> Quirks {
        let q = &mut self.quirks;
        if let Some(v) = p.unknown_user_error {
            q.unknown_user_error = v;
        }
        if let Some(v) = p.numeric_bools {
            q.numeric_bools = v;
        }
        if let Some(v) = p.string_numbers {
            q.string_numbers = v;
        }
        if let Some(v) = p.invited_capitalized {
            q.invited_capitalized = v;
        }
        if let Some(v) = p.date_style {
            q.date_style = v;
        }
        self.quirks.clone()
    }

    pub fn rotate(&mut self, provhash: Option<String>, cid: Option<String>) -> Credentials {
        self.provhash = provhash.unwrap_or_else(super::random_provhash);
        if let Some(cid) = cid {
            self.cid = cid.trim().to_string();
        }
        self.credentials()
    }

    pub fn credentials(&self) -> Credentials {
        Credentials {
            cid: self.cid.clone(),
            provhash: self.provhash.clone(),
        }
    }

    /// Adds a user, or replaces the one with the same username (keeping its uid).
    pub fn add_user(&mut self, spec: SimUserSpec) -> Result<String, ControlError> {
        if spec.username.trim().is_empty() {
            return Err(ControlError::Invalid("username is required".into()));
        }
        let uid = match self.find(&spec.username) {
            Some(uid) => uid,
            None => {
                let uid = self.next_uid;
                self.next_uid += 1;
                uid
            }
        };
        let last_login = spec.last_login.unwrap_or_else(|| {
            if spec.neverloggedin == Some(false) {
                Utc::now().format(DATE_FORMAT).to_string()
            } else {
                String::new()
            }
        });
        let neverloggedin = spec.neverloggedin.unwrap_or(last_login.trim().is_empty());
        let user = SimUser {
            uid: uid.to_string(),
            username: spec.username.trim().to_string(),
            fullname: spec.fullname,
            disabled: spec.disabled,
            admin: spec.admin,
            neverloggedin,
            last_login,
            created: spec
                .created
                .unwrap_or_else(|| Utc::now().format(DATE_FORMAT).to_string()),
            groups: spec.groups,
            password_reset_required: spec.password_reset_required.unwrap_or(neverloggedin),
        };
        self.users.insert(uid, user);
        Ok(uid.to_string())
    }

    pub fn delete_user(&mut self, email: &str) -> bool {
        match self.find(email) {
            Some(uid) => self.users.remove(&uid).is_some(),
            None => false,
        }
    }

    pub fn update_user(&mut self, email: &str, p: SimUserPatch) -> Result<SimUser, ControlError> {
        let uid = self.find(email).ok_or(ControlError::NotFound)?;
        if let Some(new) = &p.username {
            if new.trim().is_empty() {
                return Err(ControlError::Invalid("username must not be empty".into()));
            }
            if self.find(new).is_some_and(|other| other != uid) {
                return Err(ControlError::Conflict(format!(
                    "{} already exists",
                    clip(new)
                )));
            }
        }
        let u = self.users.get_mut(&uid).ok_or(ControlError::NotFound)?;
        if let Some(v) = p.username {
            u.username = v.trim().to_string();
        }
        if let Some(v) = p.fullname {
            u.fullname = v;
        }
        if let Some(v) = p.disabled {
            u.disabled = v;
        }
        if let Some(v) = p.admin {
            u.admin = v;
        }
        if let Some(v) = p.neverloggedin {
            u.neverloggedin = v;
        }
        if let Some(v) = p.last_login {
            u.last_login = v;
        }
        if let Some(v) = p.created {
            u.created = v;
        }
        if let Some(v) = p.groups {
            u.groups = v;
        }
        if let Some(v) = p.password_reset_required {
            u.password_reset_required = v;
        }
        Ok(u.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn company(users: usize) -> Company {
        Company::new(
            "123".into(),
            "ph".into(),
            users,
            1,
            Faults::default(),
            Quirks::default(),
        )
    }

    fn call(c: &mut Company, cmd: &str, data: Value) -> String {
        let body = json!({"cid": 123, "provhash": "ph", "cmd": cmd, "data": data});
        match c.answer(body.to_string().as_bytes()) {
            ApiAnswer::Body(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_and_hostile_bodies() {
        let mut c = company(1);
        for body in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            br#"{"cid":"123","provhash":"bad","cmd":"getuserdata"}"#,
            br#"{"cid":124,"provhash":"ph","cmd":"getuserdata"}"#,
            br#"{"cid":{"x":1},"provhash":["ph"],"cmd":7}"#,
        ] {
            assert_eq!(c.answer(body), ApiAnswer::Body(AUTH_ERROR_XML.into()));
        }
        assert_eq!(
            c.answer(br#"{"cid":"123","provhash":"ph","cmd":"nope","data":1}"#),
            ApiAnswer::Body(r#"{"status":"FAIL","error":"Unknown command"}"#.into())
        );
        assert_eq!(c.counts(), CallCounts::default());
        // Hostile data shapes never panic.
        for cmd in ["getuserdata", "deluser", "batchadd", "enableuser"] {
            for data in [
                json!(null),
                json!(5),
                json!("x"),
                json!([1, {}, null]),
                json!({"username": 5, "pagesize": -1, "pageindex": "x", "deleteaction": 99}),
            ] {
                let _ = call(&mut c, cmd, data);
            }
        }
        let huge = json!({"pagesize": u64::MAX, "pageindex": u64::MAX});
        assert!(call(&mut c, "getuserdata", huge).contains(r#""Users":[]"#));
    }

    #[test]
    fn empty_company_answers_php_empty_arrays() {
        let mut c = company(0);
        assert_eq!(
            call(
                &mut c,
                "getuserdata",
                json!({"pagesize": 10, "pageindex": 0})
            ),
            r#"{"total":0,"count":0,"Users":[],"Groups":[],"invited":[]}"#
        );
    }

    #[test]
    fn never_logged_in_user_shape() {
        let mut c = company(0);
        c.add_user(SimUserSpec {
            username: "sam.staged@example.com".into(),
            fullname: "Sam Staged".into(),
            groups: vec!["Integration Development".into()],
            created: Some("2022-06-21 11:12:30".into()),
            ..Default::default()
        })
        .unwrap();
        let out = call(
            &mut c,
            "getuserdata",
            json!({"username": "SAM.staged@example.com"}),
        );
        let uid = seed::FIRST_UID;
        assert_eq!(
            out,
            format!(
                concat!(
                    r#"{{"total":1,"count":1,"Users":{{"{uid}":{{"username":"sam.staged@example.com","fullname":"Sam Staged","mpstrength":"0","#,
                    r#""created":"2022-06-21 11:12:30","last_pw_change":"2022-06-21 11:12:30","last_login":"","#,
                    r#""neverloggedin":true,"disabled":false,"admin":false,"totalscore":null,"duousername":null,"#,
                    r#""sites":null,"notes":null,"formfills":null,"applications":null,"attachments":null,"#,
                    r#""password_reset_required":true,"groups":["Integration Development"]}}}},"#,
                    r#""Groups":{{"Integration Development":["sam.staged@example.com"]}},"invited":[]}}"#
                ),
                uid = uid
            )
        );
    }

    #[test]
    fn deluser_and_enableuser_answers() {
        let mut c = company(0);
        c.add_user(SimUserSpec {
            username: "jane@example.com".into(),
            ..Default::default()
        })
        .unwrap();
        let del = |c: &mut Company, a: u8| {
            call(
                c,
                "deluser",
                json!({"username": "Jane@example.com", "deleteaction": a}),
            )
        };
        assert_eq!(del(&mut c, 0), r#"{"status":"OK"}"#);
        assert_eq!(
            del(&mut c, 0),
            r#"{"status":"OK","error":"User already disabled: jane@example.com"}"#
        );
        assert_eq!(
            call(
                &mut c,
                "enableuser",
                json!(["jane@example.com", "x@example.com"])
            ),
            r#"{"status":"success","enabled_users":["jane@example.com"],"unchanged_users":[],"error":"No such user: x@example.com"}"#
        );
        assert_eq!(del(&mut c, 2), r#"{"status":"OK"}"#);
        assert_eq!(
            del(&mut c, 2),
            r#"{"status":"FAIL","error":"No such user: Jane@example.com"}"#
        );
        c.add_invitation("p@example.com");
        assert_eq!(
            call(
                &mut c,
                "deluser",
                json!({"username": "p@example.com", "deleteaction": 3})
            ),
            r#"{"status":"OK"}"#
        );
        assert!(c.invited().is_empty());
        assert_eq!(c.calls().len(), 6);
    }

    #[test]
    fn batchadd_answers() {
        let mut c = company(0);
        assert_eq!(
            call(&mut c, "batchadd", json!([{"username": "a@example.com"}])),
            r#"{"status":"OK"}"#
        );
        assert_eq!(
            call(&mut c, "batchadd", json!([{"username": "A@example.com"}])),
            r#"{"status":"OK"}"#
        );
        assert_eq!(c.users().len(), 1);
        assert_eq!(
            call(
                &mut c,
                "batchadd",
                json!([{"username": "b@example.com"}, {"username": "bad"}])
            ),
            r#"{"status":"WARN","errors":["Invalid username: bad"]}"#
        );
        assert_eq!(
            call(&mut c, "batchadd", json!([{"fullname": "x"}])),
            r#"{"status":"FAIL","error":["Missing username"]}"#
        );
        assert_eq!(
            call(&mut c, "batchadd", json!(3)),
            r#"{"status":"FAIL","error":"Invalid data"}"#
        );
        let a = c.user("a@example.com").unwrap();
        assert!(a.neverloggedin && a.password_reset_required && !a.admin && !a.disabled);
        assert_eq!(a.last_login, "");
    }
}
