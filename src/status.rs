//! How the platform sees a LastPass account: [`AccountStatus`] and [`Role`].

use crate::lastpass::User;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The account status the identity-governance platform sees.
///
/// | LastPass says                         | status          |
/// |---------------------------------------|-----------------|
/// | `disabled: true` (whatever else)      | `Suspended`     |
/// | not disabled, `neverloggedin: true`   | `Staged`        |
/// | a pending invitation (`invited`)      | `Staged`        |
/// | not disabled, has logged in           | `Active`        |
/// | no longer returned by `getuserdata`   | `Deprovisioned` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountStatus {
    Active,
    Suspended,
    Staged,
    Deprovisioned,
}

impl AccountStatus {
    /// The status of a user LastPass returned (so never `Deprovisioned`).
    /// Disabled wins over never-logged-in.
    pub fn of(user: &User) -> Self {
        if user.disabled {
            AccountStatus::Suspended
        } else if user.never_logged_in {
            AccountStatus::Staged
        } else {
            AccountStatus::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "Active",
            AccountStatus::Suspended => "Suspended",
            AccountStatus::Staged => "Staged",
            AccountStatus::Deprovisioned => "Deprovisioned",
        }
    }

    #[cfg(test)]
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Active,
            Self::Suspended,
            Self::Staged,
            Self::Deprovisioned,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role entitlement, from the `admin` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn of(user: &User) -> Self {
        if user.admin { Role::Admin } else { Role::User }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn user(disabled: bool, never_logged_in: bool, admin: bool) -> User {
        User {
            uid: "1".into(),
            email: "a@example.com".into(),
            full_name: String::new(),
            disabled,
            never_logged_in,
            admin,
            last_login: (!never_logged_in)
                .then(|| Utc.with_ymd_and_hms(2022, 6, 2, 9, 20, 59).unwrap()),
            created: None,
            groups: vec![],
            password_reset_required: false,
            invitation_pending: false,
        }
    }

    #[test]
    fn every_row_of_the_capability_table() {
        assert_eq!(
            AccountStatus::of(&user(false, false, false)),
            AccountStatus::Active
        );
        assert_eq!(
            AccountStatus::of(&user(true, false, false)),
            AccountStatus::Suspended
        );
        assert_eq!(
            AccountStatus::of(&user(false, true, false)),
            AccountStatus::Staged
        );
    }

    #[test]
    fn disabled_wins_over_never_logged_in() {
        assert_eq!(
            AccountStatus::of(&user(true, true, false)),
            AccountStatus::Suspended
        );
        assert_eq!(
            AccountStatus::of(&user(true, true, true)),
            AccountStatus::Suspended
        );
    }

    #[test]
    fn role_comes_from_admin_alone() {
        assert_eq!(Role::of(&user(false, false, true)), Role::Admin);
        assert_eq!(Role::of(&user(true, true, true)), Role::Admin);
        assert_eq!(Role::of(&user(false, false, false)), Role::User);
    }

    #[test]
    fn status_names_round_trip() {
        for st in [
            AccountStatus::Active,
            AccountStatus::Suspended,
            AccountStatus::Staged,
            AccountStatus::Deprovisioned,
        ] {
            assert_eq!(AccountStatus::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert_eq!(AccountStatus::parse("active"), None);
    }
}
