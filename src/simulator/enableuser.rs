//! `enableuser`: enables disabled users, reports the others as unchanged or unknown.

use super::company::{Company, clip};
use super::render::{fail, no_such_user, to_json};
use serde::Serialize;
use serde_json::Value;

impl Company {
    /// `enableuser`: disabled users are enabled, others unchanged; unknown names are reported in
    /// an `error` string (`No such user: a, b`) next to `status: success`.
    pub(super) fn enableuser(&mut self, data: &Value) -> String {
        let names: Vec<&str> = match data {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => return fail("Invalid data"),
        };
        let mut enabled = Vec::new();
        let mut unchanged = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            let hit = self.users.uid_of(name).and_then(|uid| {
                self.users.update(uid, |u| {
                    let was_disabled = std::mem::replace(&mut u.disabled, false);
                    (was_disabled, u.username.clone())
                })
            });
            match hit {
                Some((true, username)) => enabled.push(username),
                Some((false, username)) => unchanged.push(username),
                None => missing.push(clip(name)),
            }
        }
        if self.quirks.user_not_found_array
            && enabled.is_empty()
            && unchanged.is_empty()
            && let [one] = missing.as_slice()
        {
            return no_such_user(one, &self.quirks);
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
}

#[cfg(test)]
mod tests {
    use super::super::SimUserSpec;
    use super::super::company::test_support::{call, company};
    use serde_json::json;

    #[test]
    fn enableuser_answers() {
        let mut c = company(0);
        c.add_user(SimUserSpec {
            username: "Off@example.com".into(),
            disabled: true,
            ..Default::default()
        })
        .unwrap();
        c.add_user(SimUserSpec::staged("on@example.com")).unwrap();
        // A single name as a string; names answered as stored.
        assert_eq!(
            call(&mut c, "enableuser", json!("off@example.com")),
            r#"{"status":"success","enabled_users":["Off@example.com"],"unchanged_users":[]}"#
        );
        assert_eq!(
            call(
                &mut c,
                "enableuser",
                json!(["OFF@example.com", "on@example.com"])
            ),
            r#"{"status":"success","enabled_users":[],"unchanged_users":["Off@example.com","on@example.com"]}"#
        );
        assert!(!c.user("off@example.com").unwrap().disabled);
        assert_eq!(
            call(&mut c, "enableuser", json!({"username": "x"})),
            r#"{"status":"FAIL","error":"Invalid data"}"#
        );
    }
}
