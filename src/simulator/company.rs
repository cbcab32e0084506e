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
use std::collections::BTreeMap;

/// The whole simulated state, behind one mutex.
pub(super) struct Company {
    pub(super) cid: String,
    pub(super) provhash: String,
    /// Keyed by numeric uid: iteration order is paging order.
    pub(super) users: BTreeMap<u64, SimUser>,
    pub(super) invited: Vec<String>,
    pub(super) next_uid: u64,
    pub(super) faults: Faults,
    pub(super) quirks: Quirks,
    pub(super) rng: fastrand::Rng,
    pub(super) calls: Vec<CallRecord>,
    pub(super) counts: CallCounts,
}

/// Usernames compare case-insensitively, ignoring surrounding white space.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Hostile input echoed back is cut short.
pub(super) fn clip(s: &str) -> String {
    s.chars().take(254).collect()
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
                .map(|u| (u.uid.parse().unwrap_or_default(), u))
                .collect(),
            invited: Vec::new(),
            next_uid,
            faults: faults.sanitized(),
            quirks,
            rng: fastrand::Rng::with_seed(seed ^ 0xFA17_5EED),
            calls: Vec::new(),
            counts: CallCounts::default(),
        }
    }

    /// The uid of the user with this username.
    pub(super) fn find(&self, username: &str) -> Option<u64> {
        self.users
            .iter()
            .find(|(_, u)| same(&u.username, username))
            .map(|(uid, _)| *uid)
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
