//! `batchadd`: creates users; existing usernames are left as they are; people flagged as having
//! a LastPass account elsewhere get a pending invitation instead of a user.

use super::DATE_FORMAT;
use super::SimUser;
use super::company::{Company, clip, same};
use super::render::{fail, ok, status, to_json};
use crate::lastpass::value::as_bool;
use chrono::Utc;
use serde_json::Value;

fn valid_username(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.len() <= 254
        && s.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Company {
    /// `batchadd`: creates the new users; an existing username is left unchanged and answered OK
    /// (no duplicate). Invalid items: `WARN` + `errors` when some items were fine, `FAIL` +
    /// `error` array when none were; data that is neither an array nor an object: `FAIL` +
    /// `error` string.
    ///
    /// Variants: a username flagged with [`Company::flag_existing_account`] gets a pending
    /// invitation (listed in `invited`, cancelled by `deleteaction` 3) and no user, still
    /// answered `{"status":"OK"}`; with the `batchadd_ok_message` quirk the answer is
    /// `{"status":"OK","message":…}` and nobody is created.
    pub(super) fn batchadd(&mut self, data: &Value) -> String {
        if let Some(message) = &self.quirks.batchadd_ok_message {
            // `status` first, as LastPass orders its keys.
            return format!(r#"{{"status":"OK","message":{}}}"#, to_json(message));
        }
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
            if self.users.uid_of(name).is_some() {
                continue;
            }
            if self.existing_accounts.contains(&super::company::key(name)) {
                if !self.invited.iter().any(|i| same(i, name)) {
                    self.invited.push(name.trim().to_string());
                }
                continue;
            }
            let groups = match item.get("groups") {
                Some(Value::Array(g)) => g.iter().filter_map(Value::as_str).map(clip).collect(),
                Some(Value::String(g)) => vec![clip(g)],
                _ => Vec::new(),
            };
            let uid = self.next_uid;
            self.next_uid += 1;
            self.users.put(
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
                    password_reset_required: as_bool(item.get("password_reset_required"))
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
}

#[cfg(test)]
mod tests {
    use super::super::company::test_support::{call, company};
    use serde_json::json;

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

    #[test]
    fn batchadd_variants() {
        let mut c = company(0);
        c.flag_existing_account("Has.Account@example.com");
        assert_eq!(
            call(
                &mut c,
                "batchadd",
                json!([{"username": "has.account@example.com"}, {"username": "new@example.com"}])
            ),
            r#"{"status":"OK"}"#
        );
        assert!(c.user("has.account@example.com").is_none());
        assert_eq!(c.invited(), ["has.account@example.com"]);
        assert!(c.user("new@example.com").is_some());
        c.set_quirks(super::super::QuirksPatch {
            batchadd_ok_message: Some("1 user(s) skipped".into()),
            ..Default::default()
        });
        assert_eq!(
            call(
                &mut c,
                "batchadd",
                json!([{"username": "late@example.com"}])
            ),
            r#"{"status":"OK","message":"1 user(s) skipped"}"#
        );
        assert!(c.user("late@example.com").is_none());
    }
}
