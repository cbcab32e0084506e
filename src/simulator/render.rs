//! The wire rendering: how the simulator prints values the way LastPass (PHP) does, per
//! [`Quirks`]: numbers, booleans and dates, PHP's `json_encode` maps (`[]` when empty), and the
//! `{"status":…}` answers.

use super::DATE_FORMAT;
use chrono::NaiveDateTime;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// How dates are printed. Stored dates are true instants, `YYYY-MM-DD HH:MM:SS` in UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateStyle {
    /// `2022-05-11 07:02:26`: US/Eastern wall-clock time without an offset, daylight saving
    /// included, as LastPass appears to print them (`lastpass-api.md`).
    #[default]
    Eastern,
    /// `2022-05-11 11:02:26`: UTC without an offset (what the old notes assumed).
    #[serde(alias = "plain")]
    Utc,
    /// `2022-05-11T11:02:26Z`.
    Rfc3339,
    /// `2022-05-11 07:02:26 -0400`: US/Eastern with its offset of that day.
    Offset,
}

/// Documented variants of the wire format the simulator can produce instead of the usual one,
/// each switchable at run time (`PUT /_control/quirks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quirks {
    /// Unknown `username` lookups answer `{"error":["x is not a valid user."]}` instead of
    /// `Users: []`.
    pub unknown_user_error: bool,
    /// Bools as `0`/`1`.
    pub numeric_bools: bool,
    /// `total`, `count`, `sites`… as digit strings.
    pub string_numbers: bool,
    /// `Invited` instead of `invited`.
    pub invited_capitalized: bool,
    pub date_style: DateStyle,
    /// At most this many users per `getuserdata` page whatever `pagesize` asks for (0: no cap);
    /// pages are then cut at multiples of the cap (`pageindex` × cap).
    pub page_size_cap: u64,
    /// `batchadd` answers `{"status":"OK","message":<this>}` and creates nobody (throttled or
    /// skipped users).
    pub batchadd_ok_message: Option<String>,
    /// An unknown user on `deluser` / `enableuser` is `{"status":"FAIL","error":["user not
    /// found: x"]}` (an array, moneyforward lpmgt) instead of `"No such user: x"`.
    pub user_not_found_array: bool,
    /// `getuserdata` never lists pending invitations (no `invited` key at all).
    pub hide_invitations: bool,
}

/// A change to [`Quirks`] (`PUT /_control/quirks`). `batchadd_ok_message: ""` switches that
/// variant off.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QuirksPatch {
    pub unknown_user_error: Option<bool>,
    pub numeric_bools: Option<bool>,
    pub string_numbers: Option<bool>,
    pub invited_capitalized: Option<bool>,
    pub date_style: Option<DateStyle>,
    pub page_size_cap: Option<u64>,
    pub batchadd_ok_message: Option<String>,
    pub user_not_found_array: Option<bool>,
    pub hide_invitations: Option<bool>,
}

/// A numeric value, or its digit string under the `string_numbers` quirk.
pub(super) fn num(n: u64, quirks: &Quirks) -> Value {
    if quirks.string_numbers {
        Value::from(n.to_string())
    } else {
        Value::from(n)
    }
}

pub(super) fn boolean(b: bool, quirks: &Quirks) -> Value {
    if quirks.numeric_bools {
        Value::from(u8::from(b))
    } else {
        Value::from(b)
    }
}

/// A stored date (UTC) as LastPass would print it under `quirks.date_style`; `""` and values
/// that are not `YYYY-MM-DD HH:MM:SS` are sent verbatim.
pub(super) fn date(stored: &str, quirks: &Quirks) -> String {
    let Ok(d) = NaiveDateTime::parse_from_str(stored, DATE_FORMAT) else {
        return stored.to_string();
    };
    let eastern = || d.and_utc().with_timezone(&chrono_tz::America::New_York);
    match quirks.date_style {
        DateStyle::Eastern => eastern().format(DATE_FORMAT).to_string(),
        DateStyle::Utc => stored.to_string(),
        DateStyle::Rfc3339 => d.and_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        DateStyle::Offset => eastern().format("%Y-%m-%d %H:%M:%S %z").to_string(),
    }
}

/// "No such user" as `deluser` / `enableuser` print it, per `quirks.user_not_found_array`.
pub(super) fn no_such_user(name: &str, quirks: &Quirks) -> String {
    if quirks.user_not_found_array {
        status(
            "FAIL",
            Some(Value::from(vec![format!("user not found: {name}")])),
            None,
        )
    } else {
        fail(format!("No such user: {name}"))
    }
}

/// A map that PHP's `json_encode` would print as `[]` when empty; entries in the given order.
pub(super) struct PhpMap<V>(pub(super) Vec<(String, V)>);

impl<V> PhpMap<V> {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

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

pub(super) fn to_json<T: Serialize>(v: &T) -> String {
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

pub(super) fn status(status: &'static str, error: Option<Value>, errors: Option<Value>) -> String {
    to_json(&StatusOut {
        status,
        error,
        errors,
    })
}

pub(super) fn ok() -> String {
    status("OK", None, None)
}

pub(super) fn fail(msg: impl Into<String>) -> String {
    status("FAIL", Some(Value::from(msg.into())), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quirks(date_style: DateStyle) -> Quirks {
        Quirks {
            numeric_bools: true,
            string_numbers: true,
            date_style,
            ..Default::default()
        }
    }

    #[test]
    fn values_per_quirks() {
        let plain = Quirks::default();
        assert_eq!(num(7, &plain), Value::from(7));
        assert_eq!(num(7, &quirks(DateStyle::Utc)), Value::from("7"));
        assert_eq!(boolean(true, &plain), Value::from(true));
        assert_eq!(boolean(true, &quirks(DateStyle::Utc)), Value::from(1));
        // A summer instant: EDT, UTC-4.
        let stored = "2022-05-11 11:02:26";
        assert_eq!(date(stored, &plain), "2022-05-11 07:02:26");
        assert_eq!(date(stored, &quirks(DateStyle::Utc)), stored);
        assert_eq!(
            date(stored, &quirks(DateStyle::Rfc3339)),
            "2022-05-11T11:02:26Z"
        );
        assert_eq!(
            date(stored, &quirks(DateStyle::Offset)),
            "2022-05-11 07:02:26 -0400"
        );
        // A winter instant: EST, UTC-5.
        let stored = "2024-01-15 14:30:15";
        assert_eq!(date(stored, &plain), "2024-01-15 09:30:15");
        assert_eq!(
            date(stored, &quirks(DateStyle::Offset)),
            "2024-01-15 09:30:15 -0500"
        );
        // Never-logged-in and odd stored values are sent verbatim.
        assert_eq!(date("", &quirks(DateStyle::Rfc3339)), "");
        assert_eq!(date("soon", &quirks(DateStyle::Offset)), "soon");
        assert_eq!(date("soon", &plain), "soon");
    }

    #[test]
    fn php_maps_and_status_answers() {
        assert_eq!(to_json(&PhpMap::<u8>(Vec::new())), "[]");
        assert_eq!(
            to_json(&PhpMap(vec![("2".into(), 1), ("1".into(), 2)])),
            r#"{"2":1,"1":2}"#
        );
        assert_eq!(ok(), r#"{"status":"OK"}"#);
        assert_eq!(fail("x"), r#"{"status":"FAIL","error":"x"}"#);
        assert_eq!(
            status("WARN", None, Some(Value::from(vec!["a"]))),
            r#"{"status":"WARN","errors":["a"]}"#
        );
    }
}
