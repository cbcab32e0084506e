//! `deluser`: `deleteaction` 0 disables, 1 and 2 remove, 3 cancels a pending invitation.

use super::company::{Company, clip, same};
use super::render::{fail, no_such_user, ok, status};
use crate::lastpass::value::as_u64;
use serde_json::Value;

impl Company {
    /// `deluser`: 0 disables, 1 and 2 remove, 3 cancels a pending invitation.
    pub(super) fn deluser(&mut self, data: &Value) -> String {
        let Some(name) = data.get("username").and_then(Value::as_str) else {
            return fail("Missing username");
        };
        let action = match data.get("deleteaction") {
            None | Some(Value::Null) => 0,
            v => match as_u64(v) {
                Some(a @ 0..=3) => a,
                _ => return fail("Invalid deleteaction"),
            },
        };
        let no_such = || no_such_user(&clip(name), &self.quirks);
        if action == 3 {
            let before = self.invited.len();
            self.invited.retain(|i| !same(i, name));
            return if self.invited.len() < before {
                ok()
            } else {
                no_such()
            };
        }
        let Some(uid) = self.users.uid_of(name) else {
            return no_such();
        };
        if action == 0 {
            // The username of a user that was disabled already.
            let already = self.users.update(uid, |user| {
                let was = std::mem::replace(&mut user.disabled, true);
                was.then(|| user.username.clone())
            });
            match already {
                None => return no_such(),
                Some(Some(username)) => {
                    let msg = format!("User already disabled: {username}");
                    return status("OK", Some(Value::from(msg)), None);
                }
                Some(None) => {}
            }
        } else {
            self.users.remove(uid);
        }
        ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimUserSpec;
    use super::super::company::Company;
    use super::super::company::test_support::{call, company};
    use serde_json::json;

    /// Also covers `enableuser` of a user `deluser` disabled.
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
    fn unknown_user_in_the_array_form() {
        let mut c = company(0);
        c.set_quirks(super::super::QuirksPatch {
            user_not_found_array: Some(true),
            ..Default::default()
        });
        for action in [0, 2, 3] {
            assert_eq!(
                call(
                    &mut c,
                    "deluser",
                    json!({"username": "x@example.com", "deleteaction": action})
                ),
                r#"{"status":"FAIL","error":["user not found: x@example.com"]}"#
            );
        }
    }
}
