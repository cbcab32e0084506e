//! The API endpoint: authenticates the request envelope, then hands `data` to the one command it
//! names (one file per command), counting and recording the calls that were applied.

use super::CallRecord;
use super::company::Company;
use super::render::fail;
use crate::lastpass::value::as_string;
use serde_json::Value;

/// The exact XML LastPass answers for a wrong cid or provhash.
pub const AUTH_ERROR_XML: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<lastpass rc=\"Authorization Error\"/>\n";

/// What the API endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ApiAnswer {
    /// HTTP 503 with a small HTML body.
    Unavailable,
    /// HTTP 429 with an HTML body and `Retry-After: <secs>`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 200, `text/xml;charset=UTF-8`, this body (JSON or the XML auth error).
    Body(String),
}

impl Company {
    /// Answers one API request body (faults already decided). A body that is not a JSON object,
    /// or carries the wrong cid/provhash, gets the XML `Authorization Error` (LastPass cannot
    /// authenticate what it cannot read). An unknown `cmd` gets
    /// `{"status":"FAIL","error":"Unknown command"}`.
    pub(super) fn answer(&mut self, body: &[u8]) -> ApiAnswer {
        let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(body) else {
            return ApiAnswer::Body(AUTH_ERROR_XML.into());
        };
        let cid_ok = as_string(envelope.get("cid")).is_some_and(|c| c.trim() == self.cid);
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
}

#[cfg(test)]
mod tests {
    use super::super::CallCounts;
    use super::super::company::test_support::{call, company};
    use super::*;
    use serde_json::json;

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
}
