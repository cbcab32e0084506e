//! The semantics table: look first, then act. Plain code over the [`LastPass`] trait: no AMQP, no
//! HTTP. Transient and authorization errors are returned as `Err` for the caller to retry or
//! pause on; every other outcome, failures included, is a [`Resolution`].
//!
//! | command     | user before       | call        | outcome                       | status after  |
//! |-------------|-------------------|-------------|-------------------------------|---------------|
//! | provision   | absent            | batchadd    | applied                       | Staged        |
//! | provision   | present, enabled  | none        | already_done                  | its status    |
//! | provision   | present, disabled | none        | failed, `account_suspended`   | Suspended     |
//! | suspend     | enabled           | deluser 0   | applied                       | Suspended     |
//! | suspend     | disabled          | none        | already_done                  | Suspended     |
//! | suspend     | absent            | none        | failed, `user_not_found`      | -             |
//! | deprovision | present           | deluser 2   | applied (license reclaimed)   | Deprovisioned |
//! | deprovision | absent            | none        | already_done                  | Deprovisioned |

use crate::command::Action;
use crate::email::Email;
use crate::event::{ErrorInfo, FailureCode, Outcome, Resolution};
use crate::lastpass::{DelUserOutcome, DeleteAction, LastPass, LastPassError, NewUser};
use crate::status::AccountStatus;

/// What to do after looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to call: the outcome is known.
    Done(Resolution),
    /// One mutating call to make.
    Act(Act),
}

/// A mutating LastPass call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    Create(NewUser),
    Suspend(Email),
    Delete(Email),
}

fn done(outcome: Outcome, status: Option<AccountStatus>) -> Resolution {
    Resolution {
        outcome,
        account_status: status,
        license_reclaimed: false,
        error: None,
    }
}

fn failed(code: FailureCode, message: String, status: Option<AccountStatus>) -> Resolution {
    Resolution {
        outcome: Outcome::Failed,
        account_status: status,
        license_reclaimed: false,
        error: Some(ErrorInfo::new(code, message, false)),
    }
}

fn applied_delete() -> Resolution {
    Resolution {
        outcome: Outcome::Applied,
        account_status: Some(AccountStatus::Deprovisioned),
        license_reclaimed: true,
        error: None,
    }
}

/// Looks the user up and decides. `acted_before` says that an earlier attempt of this same
/// command got as far as the mutating call (the ledger recorded its intent): when the state now
/// shows that call's effect, it was this command's doing, so the outcome is `applied`.
pub async fn look<L: LastPass>(
    lp: &L,
    action: &Action,
    acted_before: bool,
) -> Result<Plan, LastPassError> {
    let (email, act) = match action {
        Action::Provision(u) => (&u.email, Act::Create(u.clone())),
        Action::Suspend(e) => (e, Act::Suspend(e.clone())),
        Action::Deprovision(e) => (e, Act::Delete(e.clone())),
        Action::Sync => unreachable!("a sync is not a user command"),
    };
    let user = lp.find_user(email).await?;
    let applied_or_done = if acted_before {
        Outcome::Applied
    } else {
        Outcome::AlreadyDone
    };
    Ok(match (act, user) {
        (act @ Act::Create(_), None) => Plan::Act(act),
        (Act::Create(_), Some(u)) if u.disabled => Plan::Done(failed(
            FailureCode::AccountSuspended,
            format!("{email} exists in LastPass but is suspended; it is not re-enabled"),
            Some(AccountStatus::Suspended),
        )),
        (Act::Create(_), Some(u)) => Plan::Done(done(applied_or_done, Some(AccountStatus::of(&u)))),
        (Act::Suspend(_), None) => Plan::Done(failed(
            FailureCode::UserNotFound,
            format!("{email} is not a LastPass user"),
            None,
        )),
        (Act::Suspend(_), Some(u)) if u.disabled => {
            Plan::Done(done(applied_or_done, Some(AccountStatus::Suspended)))
        }
        (act @ Act::Suspend(_), Some(_)) => Plan::Act(act),
        (Act::Delete(_), None) if acted_before => Plan::Done(applied_delete()),
        (Act::Delete(_), None) => Plan::Done(done(
            Outcome::AlreadyDone,
            Some(AccountStatus::Deprovisioned),
        )),
        (act @ Act::Delete(_), Some(_)) => Plan::Act(act),
    })
}

/// Makes the call and reports the outcome. A permanent refusal becomes a `failed` resolution.
pub async fn act<L: LastPass>(lp: &L, act: &Act) -> Result<Resolution, LastPassError> {
    match act {
        Act::Create(u) => match lp.create_users(std::slice::from_ref(u)).await {
            Ok(()) => Ok(done(Outcome::Applied, Some(AccountStatus::Staged))),
            Err(LastPassError::Rejected(msg)) => {
                // A batch can partly succeed: look to learn whether the user was created.
                match lp.find_user(&u.email).await? {
                    Some(found) => Ok(done(Outcome::Applied, Some(AccountStatus::of(&found)))),
                    None => Ok(failed(FailureCode::LastpassRejected, msg, None)),
                }
            }
            Err(e) => Err(e),
        },
        Act::Suspend(e) => match lp.delete_user(e, DeleteAction::Deactivate).await {
            Ok(DelUserOutcome::Done) => Ok(done(Outcome::Applied, Some(AccountStatus::Suspended))),
            Ok(DelUserOutcome::AlreadyDisabled) => {
                Ok(done(Outcome::AlreadyDone, Some(AccountStatus::Suspended)))
            }
            Err(LastPassError::NoSuchUser(_)) => Ok(failed(
                FailureCode::UserNotFound,
                format!("{e} is not a LastPass user"),
                None,
            )),
            Err(LastPassError::Rejected(msg)) => {
                Ok(failed(FailureCode::LastpassRejected, msg, None))
            }
            Err(err) => Err(err),
        },
        Act::Delete(e) => match lp.delete_user(e, DeleteAction::Delete).await {
            Ok(_) => Ok(applied_delete()),
            Err(LastPassError::NoSuchUser(_)) => Ok(done(
                Outcome::AlreadyDone,
                Some(AccountStatus::Deprovisioned),
            )),
            Err(LastPassError::Rejected(msg)) => {
                Ok(failed(FailureCode::LastpassRejected, msg, None))
            }
            Err(err) => Err(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeLastPass;

    /// Look, then act if needed, with no ledger in between.
    async fn apply<L: LastPass>(lp: &L, action: &Action) -> Result<Resolution, LastPassError> {
        match look(lp, action, false).await? {
            Plan::Done(r) => Ok(r),
            Plan::Act(a) => act(lp, &a).await,
        }
    }

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    fn provision(s: &str) -> Action {
        Action::Provision(NewUser {
            email: email(s),
            first_name: "Jane".into(),
            last_name: "Doe".into(),
        })
    }

    fn code(r: &Resolution) -> Option<&str> {
        r.error.as_ref().map(|e| e.code.as_str())
    }

    #[tokio::test]
    async fn provision_absent_creates_a_staged_user() {
        let lp = FakeLastPass::new();
        let r = apply(&lp, &provision("Jane@Example.com")).await.unwrap();
        assert_eq!(r.outcome, Outcome::Applied);
        assert_eq!(r.account_status, Some(AccountStatus::Staged));
        assert_eq!(lp.mutations(), ["batchadd jane@example.com"]);
        let u = lp.get("jane@example.com").unwrap();
        assert_eq!(u.full_name, "Jane Doe");
        assert!(!u.admin);
    }

    #[tokio::test]
    async fn provision_present_enabled_is_already_done_with_its_status() {
        let lp = FakeLastPass::new();
        lp.add("jane@example.com", false, false, false);
        let r = apply(&lp, &provision("JANE@example.com")).await.unwrap();
        assert_eq!(r.outcome, Outcome::AlreadyDone);
        assert_eq!(r.account_status, Some(AccountStatus::Active));
        assert!(lp.mutations().is_empty());
    }

    #[tokio::test]
    async fn provision_present_disabled_fails_account_suspended() {
        let lp = FakeLastPass::new();
        lp.add("jane@example.com", true, false, false);
        let r = apply(&lp, &provision("jane@example.com")).await.unwrap();
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(code(&r), Some("account_suspended"));
        assert_eq!(r.account_status, Some(AccountStatus::Suspended));
        assert!(lp.mutations().is_empty());
    }

    #[tokio::test]
    async fn suspend_rows() {
        let lp = FakeLastPass::new();
        lp.add("on@example.com", false, false, false);
        lp.add("off@example.com", true, false, false);
        let r = apply(&lp, &Action::Suspend(email("on@example.com")))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (Outcome::Applied, Some(AccountStatus::Suspended), false)
        );
        assert!(lp.get("on@example.com").unwrap().disabled);
        let r = apply(&lp, &Action::Suspend(email("off@example.com")))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.account_status),
            (Outcome::AlreadyDone, Some(AccountStatus::Suspended))
        );
        let r = apply(&lp, &Action::Suspend(email("nobody@example.com")))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, code(&r)),
            (Outcome::Failed, Some("user_not_found"))
        );
        assert_eq!(r.account_status, None);
        assert_eq!(lp.mutations(), ["deluser 0 on@example.com"]);
    }

    #[tokio::test]
    async fn deprovision_rows() {
        let lp = FakeLastPass::new();
        lp.add("x@example.com", true, false, false);
        let r = apply(&lp, &Action::Deprovision(email("x@example.com")))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (Outcome::Applied, Some(AccountStatus::Deprovisioned), true)
        );
        assert!(lp.get("x@example.com").is_none());
        let r = apply(&lp, &Action::Deprovision(email("x@example.com")))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (
                Outcome::AlreadyDone,
                Some(AccountStatus::Deprovisioned),
                false
            )
        );
        assert_eq!(lp.mutations(), ["deluser 2 x@example.com"]);
    }

    #[tokio::test]
    async fn an_earlier_attempt_that_acted_reports_applied() {
        let lp = FakeLastPass::new();
        lp.add("x@example.com", true, false, false);
        let plan = look(&lp, &Action::Suspend(email("x@example.com")), true)
            .await
            .unwrap();
        assert!(matches!(
            plan,
            Plan::Done(Resolution {
                outcome: Outcome::Applied,
                ..
            })
        ));
        let plan = look(&lp, &Action::Deprovision(email("gone@example.com")), true)
            .await
            .unwrap();
        let Plan::Done(r) = plan else {
            panic!("nothing to do")
        };
        assert_eq!((r.outcome, r.license_reclaimed), (Outcome::Applied, true));
    }

    #[tokio::test]
    async fn races_between_look_and_act_resolve_sensibly() {
        let lp = FakeLastPass::new();
        // The user vanished between look and act.
        let r = act(&lp, &Act::Suspend(email("gone@example.com")))
            .await
            .unwrap();
        assert_eq!(code(&r), Some("user_not_found"));
        let r = act(&lp, &Act::Delete(email("gone@example.com")))
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::AlreadyDone);
        // Someone else disabled the user between look and act.
        lp.add("d@example.com", true, false, false);
        let r = act(&lp, &Act::Suspend(email("d@example.com")))
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::AlreadyDone);
    }

    #[tokio::test]
    async fn transient_and_auth_errors_are_returned_for_the_caller() {
        let lp = FakeLastPass::new();
        lp.fail_next([LastPassError::Unauthorized]);
        assert_eq!(
            apply(&lp, &Action::Suspend(email("a@example.com"))).await,
            Err(LastPassError::Unauthorized)
        );
        lp.fail_next([LastPassError::Transient {
            reason: "503".into(),
            retry_after: None,
        }]);
        assert!(
            apply(&lp, &Action::Suspend(email("a@example.com")))
                .await
                .unwrap_err()
                .is_transient()
        );
    }

    #[tokio::test]
    async fn a_rejected_batchadd_that_created_the_user_counts_as_applied() {
        let lp = FakeLastPass::new();
        // Look succeeds, batchadd is refused, the follow-up look finds nobody.
        lp.fail_next([]);
        let plan = look(&lp, &provision("new@example.com"), false)
            .await
            .unwrap();
        let Plan::Act(a) = plan else {
            panic!("should act")
        };
        lp.fail_next([LastPassError::Rejected("quota".into())]);
        let r = act(&lp, &a).await.unwrap();
        assert_eq!(
            (r.outcome, code(&r)),
            (Outcome::Failed, Some("lastpass_rejected"))
        );
    }
}
