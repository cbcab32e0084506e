//! The control operations (`/_control/…` and [`super::SimulatorHandle`]): read the state, add,
//! update and delete users behind the connector's back, add invitations, rotate credentials,
//! set faults and quirks. Never subject to faults.

use super::DATE_FORMAT;
use super::company::{Company, clip, same};
use super::{
    CallCounts, CallRecord, Credentials, Faults, FaultsPatch, Quirks, QuirksPatch, SimUser,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};

/// A user to add (`POST /_control/users`,
/// [`SimulatorHandle::add_user`](super::SimulatorHandle::add_user)). Only `username` is required.
/// `last_login` defaults to `""` (or now when `neverloggedin: false`); `neverloggedin` defaults
/// to `last_login == ""`; `created` to now; `password_reset_required` to `neverloggedin`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SimUserSpec {
    pub username: String,
    pub fullname: String,
    pub disabled: bool,
    pub admin: bool,
    pub neverloggedin: Option<bool>,
    pub last_login: Option<String>,
    pub created: Option<String>,
    pub groups: Vec<String>,
    pub password_reset_required: Option<bool>,
}

impl SimUserSpec {
    /// A user who logged in at `last_login` (`YYYY-MM-DD HH:MM:SS`).
    pub fn active(username: &str, last_login: &str) -> Self {
        SimUserSpec {
            username: username.into(),
            last_login: Some(last_login.into()),
            ..Default::default()
        }
    }

    /// A user who never logged in.
    pub fn staged(username: &str) -> Self {
        SimUserSpec {
            username: username.into(),
            ..Default::default()
        }
    }
}

/// A change to a user (`PATCH /_control/users/{username}`,
/// [`SimulatorHandle::update_user`](super::SimulatorHandle::update_user)): only the given fields
/// change; `username` renames, keeping the uid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SimUserPatch {
    pub username: Option<String>,
    pub fullname: Option<String>,
    pub disabled: Option<bool>,
    pub admin: Option<bool>,
    pub neverloggedin: Option<bool>,
    pub last_login: Option<String>,
    pub created: Option<String>,
    pub groups: Option<Vec<String>>,
    pub password_reset_required: Option<bool>,
}

/// Why a control operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no such user")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl Company {
    pub(super) fn users(&self) -> Vec<SimUser> {
        self.users.iter().map(|(_, u)| u.clone()).collect()
    }

    pub(super) fn user(&self, email: &str) -> Option<SimUser> {
        self.users.find(email).map(|(_, u)| u.clone())
    }

    pub(super) fn invited(&self) -> Vec<String> {
        self.invited.clone()
    }

    pub(super) fn add_invitation(&mut self, email: &str) {
        if !self.invited.iter().any(|i| same(i, email)) {
            self.invited.push(email.trim().to_string());
        }
    }

    /// Marks `email` as a person who already has a LastPass account (personal, or in another
    /// company): `batchadd` then makes a pending invitation for them instead of a user.
    pub(super) fn flag_existing_account(&mut self, email: &str) {
        self.existing_accounts.insert(super::company::key(email));
    }

    pub(super) fn calls(&self) -> Vec<CallRecord> {
        self.calls.clone()
    }

    pub(super) fn counts(&self) -> CallCounts {
        self.counts.clone()
    }

    pub(super) fn set_faults(&mut self, p: FaultsPatch) -> Faults {
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
        if let Some(v) = p.rate_limit_rps {
            f.rate_limit_rps = v;
        }
        self.faults = self.faults.clone().sanitized();
        self.faults.clone()
    }

    pub(super) fn set_quirks(&mut self, p: QuirksPatch) -> Quirks {
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
        if let Some(v) = p.page_size_cap {
            q.page_size_cap = v;
        }
        if let Some(v) = p.batchadd_ok_message {
            q.batchadd_ok_message = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = p.user_not_found_array {
            q.user_not_found_array = v;
        }
        if let Some(v) = p.hide_invitations {
            q.hide_invitations = v;
        }
        self.quirks.clone()
    }

    pub(super) fn rotate(&mut self, provhash: Option<String>, cid: Option<String>) -> Credentials {
        self.provhash = provhash.unwrap_or_else(super::random_provhash);
        if let Some(cid) = cid {
            self.cid = cid.trim().to_string();
        }
        self.credentials()
    }

    pub(super) fn credentials(&self) -> Credentials {
        Credentials {
            cid: self.cid.clone(),
            provhash: self.provhash.clone(),
        }
    }

    /// Adds a user, or replaces the one with the same username (keeping its uid).
    pub(super) fn add_user(&mut self, spec: SimUserSpec) -> Result<String, ControlError> {
        if spec.username.trim().is_empty() {
            return Err(ControlError::Invalid("username is required".into()));
        }
        let uid = match self.users.uid_of(&spec.username) {
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
        self.users.put(uid, user);
        Ok(uid.to_string())
    }

    pub(super) fn delete_user(&mut self, email: &str) -> bool {
        self.users
            .uid_of(email)
            .and_then(|uid| self.users.remove(uid))
            .is_some()
    }

    pub(super) fn update_user(
        &mut self,
        email: &str,
        p: SimUserPatch,
    ) -> Result<SimUser, ControlError> {
        let uid = self.users.uid_of(email).ok_or(ControlError::NotFound)?;
        if let Some(new) = &p.username {
            if new.trim().is_empty() {
                return Err(ControlError::Invalid("username must not be empty".into()));
            }
            if self.users.uid_of(new).is_some_and(|other| other != uid) {
                return Err(ControlError::Conflict(format!(
                    "{} already exists",
                    clip(new)
                )));
            }
        }
        self.users
            .update(uid, |u| {
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
                u.clone()
            })
            .ok_or(ControlError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::super::company::test_support::company;
    use super::*;

    #[test]
    fn add_rename_and_delete_keep_lookups_right() {
        let mut c = company(0);
        let uid = c.add_user(SimUserSpec::staged("jane@example.com")).unwrap();
        // Same username in another case: replaced, same uid.
        let again = c
            .add_user(SimUserSpec::active(
                "JANE@example.com",
                "2024-01-02 03:04:05",
            ))
            .unwrap();
        assert_eq!(again, uid);
        assert_eq!(c.users().len(), 1);
        assert_eq!(
            c.user("jane@example.com").unwrap().username,
            "JANE@example.com"
        );

        c.add_user(SimUserSpec::staged("bob@example.com")).unwrap();
        let conflict = SimUserPatch {
            username: Some("Bob@Example.com".into()),
            ..Default::default()
        };
        assert!(matches!(
            c.update_user("jane@example.com", conflict),
            Err(ControlError::Conflict(_))
        ));
        let rename = SimUserPatch {
            username: Some(" janet@example.com ".into()),
            ..Default::default()
        };
        let renamed = c.update_user("Jane@example.com", rename).unwrap();
        assert_eq!(
            (renamed.uid.as_str(), renamed.username.as_str()),
            (uid.as_str(), "janet@example.com")
        );
        assert!(c.user("jane@example.com").is_none());
        assert_eq!(c.user("JANET@example.com").unwrap().uid, uid);
        // The renamed user keeps its uid, hence its place in the paging order.
        let names: Vec<String> = c.users().into_iter().map(|u| u.username).collect();
        assert_eq!(names, ["janet@example.com", "bob@example.com"]);
        assert_eq!(
            c.update_user("jane@example.com", SimUserPatch::default()),
            Err(ControlError::NotFound)
        );

        assert!(c.delete_user("janet@EXAMPLE.com"));
        assert!(!c.delete_user("janet@example.com"));
        assert!(c.user("janet@example.com").is_none());
        assert_eq!(c.users().len(), 1);
    }
}
