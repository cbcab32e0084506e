//! The one reader of loosely typed LastPass wire values (JSON scalars), shared by the client's
//! parser ([`super::wire`]) and the simulator, so that both accept exactly the same spellings.
//!
//! LastPass is PHP: the same field arrives as a JSON bool, a number, or a string depending on the
//! command, the account and the day (`lastpass-api.md`: "some clients send 0/1: accept both").
//! The reader is liberal, because a field the client cannot read is a field it gets wrong:
//!
//! - [`as_bool`]: `true`/`false`; any number (non-zero is true); as strings, trimmed and in any
//!   case, `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`, `""` (PHP prints `false` so) and any
//!   other number (`"2"`, `"0.0"`).
//! - [`as_u64`]: a non-negative integer, or a non-negative finite float (truncated), as a JSON
//!   number or as a trimmed string (`"12"`, `"+12"`, `"12.0"`).
//! - [`as_string`]: a string as is; a number as its JSON spelling.
//!
//! Everything else (null, missing, arrays, objects, other strings, negative numbers) is `None`,
//! and the caller decides the default.

use serde_json::Value;

/// A boolean in any spelling LastPass uses; `None` for null, missing or unrecognised.
pub(crate) fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => {
            let s = s.trim();
            match s.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" | "" => Some(false),
                _ => finite(s).map(|f| f != 0.0),
            }
        }
        _ => None,
    }
}

/// A non-negative whole number in any spelling LastPass uses; `None` for null, missing, negative
/// or unrecognised. Fractions are truncated.
pub(crate) fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(non_negative)),
        Value::String(s) => {
            let s = s.trim();
            s.parse().ok().or_else(|| finite(s).and_then(non_negative))
        }
        _ => None,
    }
}

/// A string, or a number as its JSON spelling; `None` for anything else.
pub(crate) fn as_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A decimal number spelled as a string (`"1.0"`, `"-2"`, `"1e3"`); never NaN or infinite.
fn finite(s: &str) -> Option<f64> {
    // `f64::from_str` also reads "inf", "NaN" and "infinity": words, not numbers, here.
    if !s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn non_negative(f: f64) -> Option<u64> {
    // `as` saturates at u64::MAX; -0.0 is 0.
    (f >= 0.0).then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bools_in_every_spelling() {
        let table = [
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!(1), Some(true)),
            (json!(0), Some(false)),
            (json!(2), Some(true)),
            (json!(-1), Some(true)),
            (json!(1.0), Some(true)),
            (json!(0.0), Some(false)),
            (json!("1"), Some(true)),
            (json!("0"), Some(false)),
            (json!(" 1 "), Some(true)),
            (json!("true"), Some(true)),
            (json!("TRUE"), Some(true)),
            (json!("True"), Some(true)),
            (json!("false"), Some(false)),
            (json!("False"), Some(false)),
            (json!("yes"), Some(true)),
            (json!("Yes"), Some(true)),
            (json!("no"), Some(false)),
            (json!("NO"), Some(false)),
            (json!("on"), Some(true)),
            (json!("off"), Some(false)),
            (json!(""), Some(false)),
            (json!("  "), Some(false)),
            (json!("2"), Some(true)),
            (json!("0.0"), Some(false)),
            (json!("1.0"), Some(true)),
            (json!("maybe"), None),
            (json!("nan"), None),
            (json!("inf"), None),
            (json!(null), None),
            (json!([]), None),
            (json!([true]), None),
            (json!({}), None),
        ];
        for (value, expected) in table {
            assert_eq!(as_bool(Some(&value)), expected, "{value}");
        }
        assert_eq!(as_bool(None), None);
    }

    #[test]
    fn numbers_in_every_spelling() {
        let table = [
            (json!(0), Some(0)),
            (json!(12), Some(12)),
            (json!(u64::MAX), Some(u64::MAX)),
            (json!(12.0), Some(12)),
            (json!(12.7), Some(12)),
            (json!(-0.0), Some(0)),
            (json!(1e30), Some(u64::MAX)),
            (json!(-1), None),
            (json!(-1.5), None),
            (json!("12"), Some(12)),
            (json!(" 12 "), Some(12)),
            (json!("+12"), Some(12)),
            (json!("012"), Some(12)),
            (json!("12.0"), Some(12)),
            (json!("18446744073709551615"), Some(u64::MAX)),
            (json!("-1"), None),
            (json!(""), None),
            (json!("x"), None),
            (json!("12abc"), None),
            (json!("inf"), None),
            (json!("NaN"), None),
            (json!(true), None),
            (json!(null), None),
            (json!([1]), None),
            (json!({"n": 1}), None),
        ];
        for (value, expected) in table {
            assert_eq!(as_u64(Some(&value)), expected, "{value}");
        }
        assert_eq!(as_u64(None), None);
    }

    #[test]
    fn strings_and_numbers_as_strings() {
        assert_eq!(as_string(Some(&json!("a b"))), Some("a b".into()));
        assert_eq!(as_string(Some(&json!(""))), Some(String::new()));
        assert_eq!(as_string(Some(&json!(42))), Some("42".into()));
        assert_eq!(as_string(Some(&json!(true))), None);
        assert_eq!(as_string(Some(&json!(null))), None);
        assert_eq!(as_string(Some(&json!(["a"]))), None);
        assert_eq!(as_string(None), None);
    }
}
