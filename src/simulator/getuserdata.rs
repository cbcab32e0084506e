//! `getuserdata`: one user by `username`, or every user matching the `disabled` / `admin`
//! filters, paged by `pagesize` and 0-based `pageindex` in uid order; each user printed in the
//! recorded field order, per [`super::Quirks`]. Like the recorded real page, `Groups` is left out
//! when no user on the page is in a group, and `invited` when there is no pending invitation to
//! list (a lookup by username lists only the invitation of that username).

use super::company::{Company, clip, same};
use super::render::{PhpMap, boolean, date, num, to_json};
use super::{Quirks, SimUser};
use crate::lastpass::value::{as_bool, as_u64};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

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

#[derive(Serialize)]
struct UserDataOut {
    total: Value,
    count: Value,
    #[serde(rename = "Users")]
    users: PhpMap<WireUser>,
    #[serde(rename = "Groups", skip_serializing_if = "PhpMap::is_empty")]
    groups: PhpMap<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    invited: Option<Vec<String>>,
    #[serde(rename = "Invited", skip_serializing_if = "Option::is_none")]
    invited_capitalized: Option<Vec<String>>,
}

impl Company {
    fn user_data(&self, users: Vec<(u64, &SimUser)>, total: u64, invited: Vec<String>) -> String {
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
            invited: (!q.invited_capitalized && !invited.is_empty()).then(|| invited.clone()),
            invited_capitalized: (q.invited_capitalized && !invited.is_empty()).then_some(invited),
        };
        to_json(&out)
    }

    /// `getuserdata`: `username` lookup, or `disabled`/`admin` filters with `pagesize` (missing or
    /// 0: everything in one page) and 0-based `pageindex`.
    pub(super) fn getuserdata(&self, data: &Value) -> String {
        let disabled = as_bool(data.get("disabled"));
        let admin = as_bool(data.get("admin"));
        let filter = |u: &SimUser| {
            disabled.is_none_or(|d| u.disabled == d) && admin.is_none_or(|a| u.admin == a)
        };
        let listed = |pick: &dyn Fn(&String) -> bool| -> Vec<String> {
            if self.quirks.hide_invitations {
                Vec::new()
            } else {
                self.invited.iter().filter(|i| pick(i)).cloned().collect()
            }
        };
        if let Some(name) = data.get("username").and_then(Value::as_str) {
            let hit = self.users.find(name).filter(|(_, u)| filter(u));
            let invitation = listed(&|i| same(i, name));
            return match hit {
                Some(found) => self.user_data(vec![found], 1, Vec::new()),
                None if !invitation.is_empty() => self.user_data(Vec::new(), 0, invitation),
                None if self.quirks.unknown_user_error => to_json(&json!({
                    "error": [format!("{} is not a valid user.", clip(name))]
                })),
                None => self.user_data(Vec::new(), 0, Vec::new()),
            };
        }
        let matching: Vec<(u64, &SimUser)> = self.users.iter().filter(|(_, u)| filter(u)).collect();
        let total = matching.len() as u64;
        let cap = self.quirks.page_size_cap;
        let size = match as_u64(data.get("pagesize")).unwrap_or(0) {
            0 => cap,
            asked if cap > 0 => asked.min(cap),
            asked => asked,
        };
        let index = as_u64(data.get("pageindex")).unwrap_or(0);
        let page: Vec<_> = if size == 0 {
            matching
        } else {
            let skip = usize::try_from(index.saturating_mul(size)).unwrap_or(usize::MAX);
            let take = usize::try_from(size).unwrap_or(usize::MAX);
            matching.into_iter().skip(skip).take(take).collect()
        };
        self.user_data(page, total, listed(&|_| true))
    }
}

#[cfg(test)]
mod tests {
    use super::super::SimUserSpec;
    use super::super::company::test_support::{call, company};
    use super::super::seed;
    use serde_json::json;

    #[test]
    fn empty_company_answers_php_empty_arrays() {
        let mut c = company(0);
        assert_eq!(
            call(
                &mut c,
                "getuserdata",
                json!({"pagesize": 10, "pageindex": 0})
            ),
            r#"{"total":0,"count":0,"Users":[]}"#
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
                    r#""created":"2022-06-21 07:12:30","last_pw_change":"2022-06-21 07:12:30","last_login":"","#,
                    r#""neverloggedin":true,"disabled":false,"admin":false,"totalscore":null,"duousername":null,"#,
                    r#""sites":null,"notes":null,"formfills":null,"applications":null,"attachments":null,"#,
                    r#""password_reset_required":true,"groups":["Integration Development"]}}}},"#,
                    r#""Groups":{{"Integration Development":["sam.staged@example.com"]}}}}"#
                ),
                uid = uid
            )
        );
    }

    #[test]
    fn page_size_cap_and_invitations() {
        let mut c = company(10);
        c.set_quirks(super::super::QuirksPatch {
            page_size_cap: Some(4),
            ..Default::default()
        });
        let page = |c: &mut super::super::company::Company, index: u64| {
            let out = call(
                c,
                "getuserdata",
                json!({"pagesize": 2000, "pageindex": index}),
            );
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            (v["total"].as_u64().unwrap(), v["count"].as_u64().unwrap())
        };
        assert_eq!(page(&mut c, 0), (10, 4));
        assert_eq!(page(&mut c, 1), (10, 4));
        assert_eq!(page(&mut c, 2), (10, 2));
        assert_eq!(page(&mut c, 3), (10, 0));

        c.add_invitation("P@example.com");
        let out = call(&mut c, "getuserdata", json!({"username": "p@example.com"}));
        assert_eq!(
            out,
            r#"{"total":0,"count":0,"Users":[],"invited":["P@example.com"]}"#
        );
        let out = call(&mut c, "getuserdata", json!({"pagesize": 1}));
        assert!(out.ends_with(r#","invited":["P@example.com"]}"#), "{out}");
        c.set_quirks(super::super::QuirksPatch {
            hide_invitations: Some(true),
            ..Default::default()
        });
        let out = call(&mut c, "getuserdata", json!({"username": "p@example.com"}));
        assert_eq!(out, r#"{"total":0,"count":0,"Users":[]}"#);
    }
}
