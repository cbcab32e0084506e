//! An in-memory [`LastPass`] for tests of the command logic and the sync (no HTTP). It keeps the
//! semantics that matter (deluser 0/2/3, batchadd, invitations for people who already have a
//! LastPass account, paging by uid; `deluser` 0/2 of an invitation or of nobody answers "no such
//! user", `deluser` 0 of a disabled user "already disabled", like the simulator), records the
//! mutating calls and every call answered, and can be told to fail the next
//! calls or to answer the next `batchadd` with an OK that created nobody.

use crate::email::Email;
use crate::lastpass::{
    AddOutcome, DelUserOutcome, DeleteAction, EnableOutcome, LastPass, LastPassError, NewUser,
    User, UserPage,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<u64, User>,
    next_uid: u64,
    mutations: Vec<String>,
    /// Every call that got an answer, looks included, e.g. `getuserdata a@b.co`, `deluser 0 a@b.co`.
    calls: Vec<String>,
    failures: VecDeque<LastPassError>,
    /// Emails (lower-case) of people with a LastPass account elsewhere: `batchadd` invites them.
    existing_elsewhere: BTreeSet<String>,
    /// Pending invitations (lower-case emails).
    invited: BTreeSet<String>,
    /// `batchadd` calls answered.
    batchadds: usize,
    /// Messages for the next `batchadd`s: each answers OK with it and creates nobody.
    skip_adds: VecDeque<String>,
}

impl State {
    /// A new, never-logged-in, enabled, non-admin user (uid filled in by `insert`).
    fn blank(email: &str, full_name: &str) -> User {
        User {
            uid: String::new(),
            email: email.to_string(),
            full_name: full_name.to_string(),
            disabled: false,
            never_logged_in: true,
            admin: false,
            last_login: None,
            created: None,
            groups: vec![],
            password_reset_required: true,
            invitation_pending: false,
        }
    }

    /// Stores a user under the next uid; returns the uid.
    fn insert(&mut self, mut user: User) -> String {
        self.next_uid += 1;
        user.uid = self.next_uid.to_string();
        self.users.insert(self.next_uid, user);
        self.next_uid.to_string()
    }
}

/// An in-memory LastPass company.
#[derive(Debug, Default)]
pub struct FakeLastPass {
    state: Mutex<State>,
}

impl FakeLastPass {
    pub fn new() -> Self {
        let f = FakeLastPass::default();
        f.state.lock().unwrap().next_uid = 1000;
        f
    }

    /// Adds a user; returns its uid.
    pub fn add(&self, email: &str, disabled: bool, never_logged_in: bool, admin: bool) -> String {
        let mut s = self.state.lock().unwrap();
        s.insert(User {
            disabled,
            never_logged_in,
            admin,
            password_reset_required: never_logged_in,
            ..State::blank(email, "")
        })
    }

    /// The user with this email (case-insensitive), if any.
    pub fn get(&self, email: &str) -> Option<User> {
        let s = self.state.lock().unwrap();
        s.users
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    /// Removes a user behind the connector's back.
    pub fn remove(&self, email: &str) {
        let mut s = self.state.lock().unwrap();
        s.users.retain(|_, u| !u.email.eq_ignore_ascii_case(email));
    }

    /// Changes a user in place.
    pub fn update(&self, email: &str, f: impl FnOnce(&mut User)) {
        let mut s = self.state.lock().unwrap();
        if let Some(u) = s
            .users
            .values_mut()
            .find(|u| u.email.eq_ignore_ascii_case(email))
        {
            f(u);
        }
    }

    /// Marks `email` as someone who already has a LastPass account: `batchadd` invites them.
    pub fn exists_elsewhere(&self, email: &str) {
        let mut s = self.state.lock().unwrap();
        s.existing_elsewhere.insert(email.to_lowercase());
    }

    /// Adds a pending invitation.
    pub fn invite(&self, email: &str) {
        self.state
            .lock()
            .unwrap()
            .invited
            .insert(email.to_lowercase());
    }

    /// The pending invitations.
    pub fn invited(&self) -> Vec<String> {
        self.state.lock().unwrap().invited.iter().cloned().collect()
    }

    /// The invitation of `email` is accepted: it becomes a never-logged-in account.
    pub fn accept_invitation(&self, email: &str) {
        let mut s = self.state.lock().unwrap();
        if s.invited.remove(&email.to_lowercase()) {
            s.insert(State::blank(email, ""));
        }
    }

    /// The invitation of `email` is cancelled (or expired) behind the connector's back.
    pub fn cancel_invitation(&self, email: &str) {
        self.state
            .lock()
            .unwrap()
            .invited
            .remove(&email.to_lowercase());
    }

    /// The next `batchadd` answers OK with `message` and creates nobody.
    pub fn skip_next_add(&self, message: &str) {
        self.state
            .lock()
            .unwrap()
            .skip_adds
            .push_back(message.into());
    }

    /// The mutating calls made so far, e.g. `deluser 0 a@b.co`.
    pub fn mutations(&self) -> Vec<String> {
        self.state.lock().unwrap().mutations.clone()
    }

    /// Every call answered so far (looks and mutations, "no such user" answers included), e.g.
    /// `getuserdata a@b.co`, `deluser 0 a@b.co`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// How many `batchadd` calls were answered (each may carry several users).
    pub fn batchadd_calls(&self) -> usize {
        self.state.lock().unwrap().batchadds
    }

    /// The next calls fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = LastPassError>) {
        self.state.lock().unwrap().failures.extend(errors);
    }

    fn check(&self) -> Result<std::sync::MutexGuard<'_, State>, LastPassError> {
        let mut s = self.state.lock().unwrap();
        match s.failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }
}

impl LastPass for FakeLastPass {
    async fn find_user(&self, email: &Email) -> Result<Option<User>, LastPassError> {
        let mut s = self.check()?;
        s.calls.push(format!("getuserdata {email}"));
        let user = s
            .users
            .values()
            .find(|u| u.email.eq_ignore_ascii_case(email.as_str()))
            .cloned();
        Ok(user.or_else(|| {
            s.invited
                .contains(email.as_str())
                .then(|| User::invitation(email.as_str()))
        }))
    }

    async fn list_page(&self, page_index: u32, page_size: u32) -> Result<UserPage, LastPassError> {
        let mut s = self.check()?;
        s.calls.push(format!("getuserdata page {page_index}"));
        let users = s
            .users
            .values()
            .skip(page_index as usize * page_size as usize)
            .take(page_size as usize)
            .cloned()
            .collect();
        Ok(UserPage {
            users,
            total: s.users.len() as u64,
            invited: s.invited.iter().cloned().collect(),
        })
    }

    async fn delete_user(
        &self,
        email: &Email,
        action: DeleteAction,
    ) -> Result<DelUserOutcome, LastPassError> {
        let mut s = self.check()?;
        s.calls.push(format!("deluser {} {email}", action as u8));
        if action == DeleteAction::CancelInvitation {
            if !s.invited.remove(email.as_str()) {
                return Err(LastPassError::NoSuchUser(email.to_string()));
            }
            s.mutations.push(format!("deluser 3 {email}"));
            return Ok(DelUserOutcome::Done);
        }
        let Some((&uid, user)) = s
            .users
            .iter_mut()
            .find(|(_, u)| u.email.eq_ignore_ascii_case(email.as_str()))
        else {
            return Err(LastPassError::NoSuchUser(email.to_string()));
        };
        let outcome = match action {
            DeleteAction::Deactivate if user.disabled => DelUserOutcome::AlreadyDisabled,
            DeleteAction::Deactivate => {
                user.disabled = true;
                DelUserOutcome::Done
            }
            DeleteAction::RemoveFromCompany | DeleteAction::Delete => {
                s.users.remove(&uid);
                DelUserOutcome::Done
            }
            DeleteAction::CancelInvitation => unreachable!("handled above"),
        };
        s.mutations
            .push(format!("deluser {} {email}", action as u8));
        Ok(outcome)
    }

    async fn create_users(&self, users: &[NewUser]) -> Result<AddOutcome, LastPassError> {
        let mut s = self.check()?;
        let skipped = s.skip_adds.pop_front();
        s.batchadds += 1;
        for u in users {
            s.mutations.push(format!("batchadd {}", u.email));
            s.calls.push(format!("batchadd {}", u.email));
            if skipped.is_some() {
                continue;
            }
            if s.existing_elsewhere.contains(u.email.as_str()) {
                s.invited.insert(u.email.to_string());
            } else {
                s.insert(State::blank(u.email.as_str(), &u.full_name()));
            }
        }
        Ok(AddOutcome {
            messages: skipped.into_iter().collect(),
        })
    }

    async fn enable_users(&self, emails: &[Email]) -> Result<EnableOutcome, LastPassError> {
        let mut s = self.check()?;
        let mut out = EnableOutcome::default();
        for e in emails {
            match s
                .users
                .values_mut()
                .find(|u| u.email.eq_ignore_ascii_case(e.as_str()))
            {
                Some(u) if u.disabled => {
                    u.disabled = false;
                    out.enabled.push(e.to_string());
                }
                _ => out.unchanged.push(e.to_string()),
            }
            s.mutations.push(format!("enableuser {e}"));
            s.calls.push(format!("enableuser {e}"));
        }
        Ok(out)
    }
}
