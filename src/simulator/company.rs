//! The simulated company: the whole state of a simulator, behind one mutex. Pure logic, no I/O:
//! the HTTP layer ([`super::server`]) and [`super::SimulatorHandle`] both work through
//! [`Company`].
//!
//! What acts on it lives next door, one concept per file: the API endpoint ([`super::api`]) and
//! its commands ([`super::getuserdata`], [`super::deluser`], [`super::batchadd`],
//! [`super::enableuser`]), the wire rendering ([`super::render`]), the faults
//! ([`super::faults`]) and the control operations ([`super::control`]).

use super::seed;
use super::{CallCounts, CallRecord, Faults, Quirks, SimUser};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The whole simulated state, behind one mutex.
pub(super) struct Company {
    pub(super) cid: String,
    pub(super) provhash: String,
    pub(super) users: Users,
    pub(super) invited: Vec<String>,
    /// Keys ([`key`]) of people with a LastPass account elsewhere: `batchadd` invites them.
    pub(super) existing_accounts: HashSet<String>,
    pub(super) next_uid: u64,
    pub(super) faults: Faults,
    pub(super) quirks: Quirks,
    pub(super) rng: fastrand::Rng,
    pub(super) calls: Vec<CallRecord>,
    pub(super) counts: CallCounts,
    /// The token bucket of [`super::Faults::rate_limit_rps`].
    pub(super) bucket: Option<super::faults::Bucket>,
}

/// What usernames are compared by: trimmed, lower-cased. Lower-casing is Unicode's, like the
/// connector's `Email` (an ASCII fold would tell `Ä@example.com` from `ä@example.com`, which the
/// connector sends for either).
pub(super) fn key(username: &str) -> String {
    username.trim().to_lowercase()
}

/// Usernames compare case-insensitively, ignoring surrounding white space.
pub(super) fn same(a: &str, b: &str) -> bool {
    key(a) == key(b)
}

/// Hostile input echoed back is cut short.
pub(super) fn clip(s: &str) -> String {
    s.chars().take(254).collect()
}

/// The users, in uid order (the paging order) and indexed by [`key`] of their username, so that
/// a lookup by username does not scan the company. Usernames are unique by key: the callers that
/// add or rename check first ([`Users::uid_of`]).
#[derive(Default)]
pub(super) struct Users {
    by_uid: BTreeMap<u64, SimUser>,
    by_key: HashMap<String, u64>,
}

impl Users {
    /// The uid of the user with this username (any case, surrounding white space ignored).
    pub(super) fn uid_of(&self, username: &str) -> Option<u64> {
        self.by_key.get(&key(username)).copied()
    }

    /// The user with this username, and its uid.
    pub(super) fn find(&self, username: &str) -> Option<(u64, &SimUser)> {
        let uid = self.uid_of(username)?;
        self.by_uid.get(&uid).map(|u| (uid, u))
    }

    /// Every user, in uid order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &SimUser)> {
        self.by_uid.iter().map(|(uid, u)| (*uid, u))
    }

    /// Adds the user at `uid`, or replaces the one there.
    pub(super) fn put(&mut self, uid: u64, user: SimUser) {
        let new = key(&user.username);
        debug_assert!(self.by_key.get(&new).is_none_or(|other| *other == uid));
        if let Some(old) = self.by_uid.insert(uid, user) {
            self.by_key.remove(&key(&old.username));
        }
        self.by_key.insert(new, uid);
    }

    /// Removes the user at `uid`.
    pub(super) fn remove(&mut self, uid: u64) -> Option<SimUser> {
        let user = self.by_uid.remove(&uid)?;
        self.by_key.remove(&key(&user.username));
        Some(user)
    }

    /// Changes the user at `uid` with `change`, which may rename it (the index follows); `None`
    /// if there is no such user.
    pub(super) fn update<R>(
        &mut self,
        uid: u64,
        change: impl FnOnce(&mut SimUser) -> R,
    ) -> Option<R> {
        let user = self.by_uid.get_mut(&uid)?;
        let before = key(&user.username);
        let out = change(user);
        let after = key(&user.username);
        if after != before {
            debug_assert!(self.by_key.get(&after).is_none_or(|other| *other == uid));
            self.by_key.remove(&before);
            self.by_key.insert(after, uid);
        }
        Some(out)
    }
}

impl Company {
    pub(super) fn new(
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
                .fold(Users::default(), |mut users, u| {
                    users.put(u.uid.parse().unwrap_or_default(), u);
                    users
                }),
            invited: Vec::new(),
            existing_accounts: HashSet::new(),
            next_uid,
            faults: faults.sanitized(),
            quirks,
            rng: fastrand::Rng::with_seed(seed ^ 0xFA17_5EED),
            calls: Vec::new(),
            counts: CallCounts::default(),
            bucket: None,
        }
    }
}

/// Shared by the tests of every command.
#[cfg(test)]
pub(super) mod test_support {
    use super::super::api::ApiAnswer;
    use super::super::{Faults, Quirks};
    use super::Company;
    use serde_json::{Value, json};

    /// A company with cid 123, provhash `ph` and `users` seeded users.
    pub(in crate::simulator) fn company(users: usize) -> Company {
        Company::new(
            "123".into(),
            "ph".into(),
            users,
            1,
            Faults::default(),
            Quirks::default(),
        )
    }

    /// The body of the answer to `cmd` with `data` (correct credentials, no faults).
    pub(in crate::simulator) fn call(c: &mut Company, cmd: &str, data: Value) -> String {
        let body = json!({"cid": 123, "provhash": "ph", "cmd": cmd, "data": data});
        match c.answer(body.to_string().as_bytes()) {
            ApiAnswer::Body(b) => b,
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u64, username: &str) -> SimUser {
        SimUser {
            uid: uid.to_string(),
            username: username.into(),
            fullname: String::new(),
            disabled: false,
            admin: false,
            neverloggedin: true,
            last_login: String::new(),
            created: String::new(),
            groups: Vec::new(),
            password_reset_required: true,
        }
    }

    #[test]
    fn index_follows_every_change() {
        let mut users = Users::default();
        users.put(20, user(20, "B@example.com"));
        users.put(10, user(10, "a@example.com"));
        assert_eq!(users.uid_of(" b@EXAMPLE.com "), Some(20));
        assert_eq!(users.find("A@example.com").map(|(uid, _)| uid), Some(10));
        // Paging order is uid order, whatever the insertion order.
        let uids: Vec<u64> = users.iter().map(|(uid, _)| uid).collect();
        assert_eq!(uids, [10, 20]);

        // Replacing the user at a uid re-keys it.
        users.put(20, user(20, "c@example.com"));
        assert_eq!(users.uid_of("b@example.com"), None);
        assert_eq!(users.uid_of("C@example.com"), Some(20));

        // A rename through update moves the key; other changes keep it.
        users.update(20, |u| u.username = "d@example.com".into());
        assert_eq!(users.uid_of("c@example.com"), None);
        assert_eq!(users.uid_of("d@example.com"), Some(20));
        users.update(20, |u| u.username = "D@Example.com".into());
        assert_eq!(users.uid_of("d@example.com"), Some(20));
        assert_eq!(users.update(20, |u| u.disabled = true), Some(()));
        assert_eq!(users.update(99, |u| u.disabled = true), None);

        assert_eq!(
            users.remove(10).map(|u| u.username),
            Some("a@example.com".into())
        );
        assert_eq!(users.uid_of("a@example.com"), None);
        assert_eq!(users.remove(10), None);
        assert_eq!(users.iter().count(), 1);
        assert_eq!(users.by_key.len(), users.by_uid.len());
    }

    #[test]
    fn case_folding_is_unicode_like_the_connectors_email() {
        let mut users = Users::default();
        users.put(1, user(1, "ÄNNE@example.com"));
        assert_eq!(users.uid_of("änne@example.com"), Some(1));
        assert!(same(" Änne@Example.com", "änne@example.com "));
    }

    #[test]
    fn seeded_company_is_indexed() {
        let c = test_support::company(500);
        assert_eq!(c.users.by_key.len(), 500);
        for (uid, u) in c.users.iter() {
            assert_eq!(c.users.uid_of(&u.username.to_uppercase()), Some(uid));
        }
    }
}
