//! The semantics table: look first where the act's answer cannot tell the cases apart, else act
//! straight away. Plain code over the [`LastPass`] trait: no AMQP, no HTTP. Transient and
//! authorization errors are returned as `Err` for the caller to retry or pause on; every other
//! outcome, failures included, is a [`Resolution`].
//!
//! | command     | user before       | calls                                  | outcome                            | status after     |
//! |-------------|-------------------|----------------------------------------|------------------------------------|------------------|
//! | provision   | absent            | look, batchadd, look: user             | applied                            | its status       |
//! | provision   | absent            | look, batchadd, look: invited          | applied, `invitation_pending`      | Staged           |
//! | provision   | absent            | look, batchadd, look: neither          | failed, `not_created`              | -                |
//! | provision   | present, enabled  | look                                   | already_done                       | its status       |
//! | provision   | invited           | look                                   | already_done, `invitation_pending` | Staged           |
//! | provision   | present, disabled | look                                   | failed, `account_suspended`        | Suspended        |
//! | suspend     | enabled           | deluser 0                              | applied                            | Suspended        |
//! | suspend     | disabled          | deluser 0: already disabled            | already_done                       | Suspended        |
//! | suspend     | invited           | deluser 0: no such user, look          | failed, `invitation_pending`       | Staged           |
//! | suspend     | absent            | deluser 0: no such user, look          | failed, `user_not_found`           | -                |
//! | deprovision | present           | deluser 2                              | applied (license reclaimed)        | Deprovisioned    |
//! | deprovision | invited           | deluser 2: no such user, look, deluser 3 | applied (license reclaimed)      | Deprovisioned    |
//! | deprovision | absent            | deluser 2: no such user, look          | already_done                       | Deprovisioned    |
//! | reactivate  | disabled          | look, enableuser                       | applied                            | Active or Staged |
//! | reactivate  | enabled           | look                                   | already_done                       | its status       |
//! | reactivate  | invited           | look                                   | failed, `invitation_pending`       | Staged           |
//! | reactivate  | absent            | look                                   | failed, `user_not_found`           | -                |
//!
//! "look" is one `getuserdata` by username. A provision looks first (absent, present and suspended
//! must be told apart before creating) and once after its `batchadd`: LastPass answers OK also
//! when it only invited the person (they already have a LastPass account) or skipped them. A
//! reactivate looks first: only the look says whether the account comes back Active or Staged,
//! and whether it is an invitation. A suspend and a deprovision act first, since `deluser`'s
//! answer tells the common cases apart, and look only after "no such user" (an invitation and
//! nobody both answer that). Where an earlier attempt recorded an intent (`acted_before`: a retry,
//! or a redelivery after a crash), its call may have landed, so a suspend and a deprovision look
//! first as well and send nothing when the state shows the effect; the outcome is then `applied`,
//! not `already_done`.
//!
//! Every row is decided in one place, [`decide`], from what one look found; [`look`] and [`act`]
//! use it, and so does [`preview`] (`run --dry-run`), which only looks (one `getuserdata`, for
//! every command type) and reports the row the real run would take: the call it would make and
//! the outcome it would report, without making any mutating call.

use crate::command::Action;
use crate::email::Email;
use crate::event::{ErrorInfo, FailureCode, Outcome, Resolution};
use crate::lastpass::{DelUserOutcome, DeleteAction, LastPass, LastPassError, NewUser, User};
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
    /// `deluser` with `deleteaction` 0; after "no such user", a look (invitation or nobody).
    Suspend(Email),
    /// `deluser` with `deleteaction` 2; after "no such user", a look, and `deleteaction` 3 if the
    /// person is only invited.
    Delete(Email),
    /// `enableuser`; `never_logged_in` says whether the account comes back Staged or Active.
    Enable {
        email: Email,
        never_logged_in: bool,
    },
    /// `deluser` with `deleteaction` 3: cancel a pending invitation. Decided only after a look
    /// found the invitation (a deprovision's `deluser` 2 answered "no such user", or a preview).
    CancelInvitation(Email),
}

impl Act {
    /// The LastPass API command this act sends.
    pub fn api_command(&self) -> &'static str {
        match self {
            Act::Create(_) => "batchadd",
            Act::Suspend(_) | Act::Delete(_) | Act::CancelInvitation(_) => "deluser",
            Act::Enable { .. } => "enableuser",
        }
    }

    /// The `deleteaction` of a `deluser`; `None` for the other calls.
    pub fn delete_action(&self) -> Option<DeleteAction> {
        match self {
            Act::Suspend(_) => Some(DeleteAction::Deactivate),
            Act::Delete(_) => Some(DeleteAction::Delete),
            Act::CancelInvitation(_) => Some(DeleteAction::CancelInvitation),
            Act::Create(_) | Act::Enable { .. } => None,
        }
    }
}

fn done(outcome: Outcome, status: Option<AccountStatus>) -> Resolution {
    Resolution {
        outcome,
        account_status: status,
        license_reclaimed: false,
        invitation_pending: false,
        error: None,
    }
}

/// A pending invitation, reported as a Staged account with `invitation_pending`.
fn invited(outcome: Outcome) -> Resolution {
    Resolution {
        invitation_pending: true,
        ..done(outcome, Some(AccountStatus::Staged))
    }
}

fn failed(code: FailureCode, message: String, status: Option<AccountStatus>) -> Resolution {
    Resolution {
        outcome: Outcome::Failed,
        account_status: status,
        license_reclaimed: false,
        invitation_pending: false,
        error: Some(ErrorInfo::new(code, message, false)),
    }
}

fn only_invited(email: &Email, what: &str) -> Resolution {
    Resolution {
        invitation_pending: true,
        ..failed(
            FailureCode::InvitationPending,
            format!(
                "{email} is only invited to LastPass (the invitation has not been accepted); \
                 there is no account to {what} yet"
            ),
            Some(AccountStatus::Staged),
        )
    }
}

fn not_found(email: &Email) -> Resolution {
    failed(
        FailureCode::UserNotFound,
        format!("{email} is not a LastPass user"),
        None,
    )
}

fn applied_delete() -> Resolution {
    Resolution {
        outcome: Outcome::Applied,
        account_status: Some(AccountStatus::Deprovisioned),
        license_reclaimed: true,
        invitation_pending: false,
        error: None,
    }
}

/// The status of an account once enabled.
fn enabled_status(never_logged_in: bool) -> AccountStatus {
    if never_logged_in {
        AccountStatus::Staged
    } else {
        AccountStatus::Active
    }
}

/// `applied` when an earlier attempt recorded an intent (the effect is then its doing), else
/// `already_done`.
fn applied_or_done(acted_before: bool) -> Outcome {
    if acted_before {
        Outcome::Applied
    } else {
        Outcome::AlreadyDone
    }
}

/// What a call reports when LastPass does what it is asked: the first row of each command.
/// A new account has never logged in, so a `batchadd` is predicted Staged (LastPass may make a
/// pending invitation instead, also Staged; only the look after the real call tells).
fn success(act: &Act) -> Resolution {
    match act {
        Act::Create(_) => done(Outcome::Applied, Some(AccountStatus::Staged)),
        Act::Suspend(_) => done(Outcome::Applied, Some(AccountStatus::Suspended)),
        Act::Delete(_) | Act::CancelInvitation(_) => applied_delete(),
        Act::Enable {
            never_logged_in, ..
        } => done(Outcome::Applied, Some(enabled_status(*never_logged_in))),
    }
}

/// The suspend rows, from what a look found: nobody, an invitation, a disabled account (nothing
/// to do) or an enabled one (`deluser` 0).
fn decide_suspend(e: &Email, user: Option<User>, acted_before: bool) -> Plan {
    match user {
        None => Plan::Done(not_found(e)),
        Some(u) if u.invitation_pending => Plan::Done(only_invited(e, "suspend")),
        Some(u) if u.disabled => Plan::Done(done(
            applied_or_done(acted_before),
            Some(AccountStatus::Suspended),
        )),
        Some(_) => Plan::Act(Act::Suspend(e.clone())),
    }
}

/// The deprovision rows, from what a look found: nobody (nothing to do), an invitation
/// (`deluser` 3) or an account (`deluser` 2).
fn decide_delete(e: &Email, user: Option<User>, acted_before: bool) -> Plan {
    match user {
        None if acted_before => Plan::Done(applied_delete()),
        None => Plan::Done(done(
            Outcome::AlreadyDone,
            Some(AccountStatus::Deprovisioned),
        )),
        Some(u) if u.invitation_pending => Plan::Act(Act::CancelInvitation(e.clone())),
        Some(_) => Plan::Act(Act::Delete(e.clone())),
    }
}

/// Every row of the semantics table, from what one look (`find_user`) found for the command's
/// email. `acted_before` is as for [`look`].
pub fn decide(action: &Action, user: Option<User>, acted_before: bool) -> Plan {
    let applied_or_done = applied_or_done(acted_before);
    let invitation = user.as_ref().is_some_and(|u| u.invitation_pending);
    match (action, user) {
        (Action::Suspend(e), user) => decide_suspend(e, user, acted_before),
        (Action::Deprovision(e), user) => decide_delete(e, user, acted_before),
        (Action::Provision(u), None) => Plan::Act(Act::Create(u.clone())),
        (Action::Provision(_), Some(_)) if invitation => Plan::Done(invited(applied_or_done)),
        (Action::Provision(n), Some(u)) if u.disabled => Plan::Done(failed(
            FailureCode::AccountSuspended,
            format!(
                "{} exists in LastPass but is suspended; provisioning does not re-enable \
                 it: send user.reactivate for that",
                n.email
            ),
            Some(AccountStatus::Suspended),
        )),
        (Action::Provision(_), Some(u)) => {
            Plan::Done(done(applied_or_done, Some(AccountStatus::of(&u))))
        }
        (Action::Reactivate(e), None) => Plan::Done(not_found(e)),
        (Action::Reactivate(e), Some(_)) if invitation => Plan::Done(only_invited(e, "reactivate")),
        (Action::Reactivate(e), Some(u)) if u.disabled => Plan::Act(Act::Enable {
            email: e.clone(),
            never_logged_in: u.never_logged_in,
        }),
        (Action::Reactivate(_), Some(u)) => {
            Plan::Done(done(applied_or_done, Some(AccountStatus::of(&u))))
        }
        (Action::Sync, _) => unreachable!("a sync is not a user command"),
    }
}

/// Decides, looking the user up only where the act's answer would not tell the cases apart (a
/// provision and a reactivate look; a suspend and a deprovision act straight away, unless an
/// earlier attempt may have acted: then they look first too).
/// `acted_before` says that an earlier attempt of this same command got as far as the mutating
/// call (the ledger recorded its intent): when the state now shows that call's effect, it was
/// this command's doing, so the outcome is `applied`.
pub async fn look<L: LastPass>(
    lp: &L,
    action: &Action,
    acted_before: bool,
) -> Result<Plan, LastPassError> {
    let email = match action {
        // After an intent (a retry, or a redelivery after a crash or a kill), the earlier call
        // may have landed: look first, and send nothing when the state already shows the effect.
        Action::Suspend(e) | Action::Deprovision(e) if acted_before => e,
        Action::Suspend(e) => return Ok(Plan::Act(Act::Suspend(e.clone()))),
        Action::Deprovision(e) => return Ok(Plan::Act(Act::Delete(e.clone()))),
        Action::Provision(u) => &u.email,
        Action::Reactivate(e) => e,
        Action::Sync => unreachable!("a sync is not a user command"),
    };
    Ok(decide(action, lp.find_user(email).await?, acted_before))
}

/// What a user command would do, found by looking only (`run --dry-run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The call that would change LastPass; `None` when the real run would change nothing
    /// (it may still send a `deluser` that LastPass answers "already disabled" or "no such
    /// user").
    pub would: Option<Act>,
    /// What the real run would report: its outcome, error, and the account status after it.
    pub predicted: Resolution,
    /// The account's status now (nothing was changed); `None` when LastPass has no such user.
    pub status_now: Option<AccountStatus>,
    /// The person is only invited now.
    pub invited_now: bool,
}

/// Looks the user up once (one `getuserdata`, whatever the command) and returns the row of the
/// semantics table the real run would take, without any mutating call. `acted_before` is as for
/// [`look`] (an intent recorded by an earlier, real attempt makes the prediction `applied`
/// where the real run would say so). Transient and authorization errors are returned, as by
/// [`look`].
pub async fn preview<L: LastPass>(
    lp: &L,
    action: &Action,
    acted_before: bool,
) -> Result<Preview, LastPassError> {
    let email = match action {
        Action::Provision(u) => &u.email,
        Action::Suspend(e) | Action::Deprovision(e) | Action::Reactivate(e) => e,
        Action::Sync => unreachable!("a sync is not a user command"),
    };
    let user = lp.find_user(email).await?;
    let status_now = user.as_ref().map(AccountStatus::of);
    let invited_now = user.as_ref().is_some_and(|u| u.invitation_pending);
    Ok(match decide(action, user, acted_before) {
        Plan::Done(predicted) => Preview {
            would: None,
            predicted,
            status_now,
            invited_now,
        },
        Plan::Act(act) => Preview {
            predicted: success(&act),
            would: Some(act),
            status_now,
            invited_now,
        },
    })
}

/// What a `batchadd` led to, from the one look-up made after it.
fn created(found: Option<User>, email: &Email, answer: &str) -> Resolution {
    match found {
        Some(u) if u.invitation_pending => invited(Outcome::Applied),
        Some(u) => done(Outcome::Applied, Some(AccountStatus::of(&u))),
        None => failed(
            FailureCode::NotCreated,
            format!(
                "LastPass answered the batchadd of {email} ({answer}) but has neither the user nor an invitation afterwards"
            ),
            None,
        ),
    }
}

/// The account changed between a `deluser` answering "no such user" and the look after it (it
/// was created, or an invitation was accepted): a transient error, so the command is decided
/// again from the start.
fn appeared(email: &Email) -> LastPassError {
    LastPassError::Transient {
        reason: format!("{email} changed between deluser and the look after it; deciding again"),
        retry_after: None,
    }
}

/// Makes the call (and, after a `deluser` that answered "no such user", the one look that tells
/// an invitation from nobody) and reports the outcome. A permanent refusal becomes a `failed`
/// resolution. `acted_before` is as for [`look`]: whether an earlier attempt recorded an intent
/// (not counting the one recorded for this call).
pub async fn act<L: LastPass>(
    lp: &L,
    act: &Act,
    acted_before: bool,
) -> Result<Resolution, LastPassError> {
    match act {
        // An OK from batchadd proves nothing (the person may only have been invited, or been
        // skipped), and a refusal may have been partial: always look once afterwards.
        Act::Create(u) => match lp.create_users(std::slice::from_ref(u)).await {
            Ok(outcome) => {
                let answer = if outcome.messages.is_empty() {
                    "OK".to_string()
                } else {
                    format!("OK: {}", outcome.messages.join("; "))
                };
                let found = lp.find_user(&u.email).await?;
                Ok(created(found, &u.email, &answer))
            }
            Err(LastPassError::Rejected(msg)) => match lp.find_user(&u.email).await? {
                None => Ok(failed(FailureCode::LastpassRejected, msg, None)),
                found => Ok(created(found, &u.email, &msg)),
            },
            Err(e) => Err(e),
        },
        Act::Suspend(e) => match lp.delete_user(e, DeleteAction::Deactivate).await {
            Ok(DelUserOutcome::Done) => Ok(success(act)),
            Ok(DelUserOutcome::AlreadyDisabled) => Ok(done(
                applied_or_done(acted_before),
                Some(AccountStatus::Suspended),
            )),
            // An invitation and nobody both answer "no such user": look to tell them apart.
            Err(LastPassError::NoSuchUser(_)) => {
                match decide_suspend(e, lp.find_user(e).await?, acted_before) {
                    Plan::Done(r) => Ok(r),
                    // Enabled after all: created, or an invitation accepted, since the deluser.
                    Plan::Act(_) => Err(appeared(e)),
                }
            }
            Err(LastPassError::Rejected(msg)) => {
                Ok(failed(FailureCode::LastpassRejected, msg, None))
            }
            Err(err) => Err(err),
        },
        Act::Delete(e) => match lp.delete_user(e, DeleteAction::Delete).await {
            Ok(_) => Ok(success(act)),
            // An invitation and nobody both answer "no such user": look to tell them apart.
            Err(LastPassError::NoSuchUser(_)) => {
                match decide_delete(e, lp.find_user(e).await?, acted_before) {
                    Plan::Done(r) => Ok(r),
                    Plan::Act(Act::CancelInvitation(_)) => cancel_invitation(lp, e).await,
                    // An account after all: created, or an invitation accepted, since then.
                    Plan::Act(_) => Err(appeared(e)),
                }
            }
            Err(LastPassError::Rejected(msg)) => {
                Ok(failed(FailureCode::LastpassRejected, msg, None))
            }
            Err(err) => Err(err),
        },
        Act::Enable {
            email,
            never_logged_in,
        } => {
            let status = Some(enabled_status(*never_logged_in));
            let named =
                |list: &[String]| list.iter().any(|n| n.eq_ignore_ascii_case(email.as_str()));
            match lp.enable_users(std::slice::from_ref(email)).await {
                Ok(out) if named(&out.enabled) => Ok(success(act)),
                Ok(out) if named(&out.unchanged) => Ok(done(applied_or_done(acted_before), status)),
                Ok(out) if out.messages.is_empty() => Ok(failed(
                    FailureCode::LastpassRejected,
                    format!("enableuser did not list {email} as enabled or unchanged"),
                    None,
                )),
                Ok(out) => Ok(failed(
                    FailureCode::LastpassRejected,
                    out.messages.join("; "),
                    None,
                )),
                Err(LastPassError::NoSuchUser(_)) => Ok(not_found(email)),
                Err(LastPassError::Rejected(msg)) => {
                    Ok(failed(FailureCode::LastpassRejected, msg, None))
                }
                Err(err) => Err(err),
            }
        }
        Act::CancelInvitation(e) => cancel_invitation(lp, e).await,
    }
}

/// `deluser` with `deleteaction` 3, after a look found the invitation.
async fn cancel_invitation<L: LastPass>(lp: &L, e: &Email) -> Result<Resolution, LastPassError> {
    match lp.delete_user(e, DeleteAction::CancelInvitation).await {
        Ok(_) => Ok(applied_delete()),
        // Accepted or cancelled since the look: decide again.
        Err(LastPassError::NoSuchUser(_)) => Err(appeared(e)),
        Err(LastPassError::Rejected(msg)) => Ok(failed(FailureCode::LastpassRejected, msg, None)),
        Err(err) => Err(err),
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
            Plan::Act(a) => act(lp, &a, false).await,
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
        // A provision keeps its look before and the confirming look after the batchadd.
        assert_eq!(
            lp.calls(),
            [
                "getuserdata jane@example.com",
                "batchadd jane@example.com",
                "getuserdata jane@example.com"
            ]
        );
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
        assert_eq!(lp.calls(), ["getuserdata jane@example.com"]);
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
    async fn suspend_rows_act_first_and_look_only_after_no_such_user() {
        let lp = FakeLastPass::new();
        lp.add("on@example.com", false, false, false);
        lp.add("off@example.com", true, false, false);
        lp.invite("inv@example.com");
        let suspend = |e: &str| Action::Suspend(email(e));
        // enabled: one call.
        let r = apply(&lp, &suspend("on@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (Outcome::Applied, Some(AccountStatus::Suspended), false)
        );
        assert!(lp.get("on@example.com").unwrap().disabled);
        assert_eq!(lp.calls(), ["deluser 0 on@example.com"]);
        // disabled: one call, "already disabled".
        let r = apply(&lp, &suspend("off@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status),
            (Outcome::AlreadyDone, Some(AccountStatus::Suspended))
        );
        assert_eq!(lp.calls()[1..], ["deluser 0 off@example.com"]);
        // invited: "no such user", then a look finds the invitation.
        let r = apply(&lp, &suspend("inv@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, code(&r), r.account_status, r.invitation_pending),
            (
                Outcome::Failed,
                Some("invitation_pending"),
                Some(AccountStatus::Staged),
                true
            )
        );
        assert_eq!(
            lp.calls()[2..],
            ["deluser 0 inv@example.com", "getuserdata inv@example.com"]
        );
        assert_eq!(lp.invited(), ["inv@example.com"], "the invitation stays");
        // absent: "no such user", then a look finds nobody.
        let r = apply(&lp, &suspend("nobody@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, code(&r), r.account_status),
            (Outcome::Failed, Some("user_not_found"), None)
        );
        assert_eq!(
            lp.calls()[4..],
            [
                "deluser 0 nobody@example.com",
                "getuserdata nobody@example.com"
            ]
        );
    }

    #[tokio::test]
    async fn deprovision_rows_act_first_and_look_only_after_no_such_user() {
        let lp = FakeLastPass::new();
        lp.add("x@example.com", true, false, false);
        lp.invite("inv@example.com");
        let deprovision = |e: &str| Action::Deprovision(email(e));
        // present: one call.
        let r = apply(&lp, &deprovision("x@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (Outcome::Applied, Some(AccountStatus::Deprovisioned), true)
        );
        assert!(lp.get("x@example.com").is_none());
        assert_eq!(lp.calls(), ["deluser 2 x@example.com"]);
        // absent: "no such user", then a look finds nobody.
        let r = apply(&lp, &deprovision("x@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (
                Outcome::AlreadyDone,
                Some(AccountStatus::Deprovisioned),
                false
            )
        );
        assert_eq!(
            lp.calls()[1..],
            ["deluser 2 x@example.com", "getuserdata x@example.com"]
        );
        // invited: "no such user", a look finds the invitation, deleteaction 3 cancels it.
        let r = apply(&lp, &deprovision("inv@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (Outcome::Applied, Some(AccountStatus::Deprovisioned), true)
        );
        assert!(lp.invited().is_empty());
        assert_eq!(
            lp.calls()[3..],
            [
                "deluser 2 inv@example.com",
                "getuserdata inv@example.com",
                "deluser 3 inv@example.com"
            ]
        );
        assert_eq!(
            lp.mutations(),
            ["deluser 2 x@example.com", "deluser 3 inv@example.com"]
        );
    }

    #[tokio::test]
    async fn an_earlier_attempt_that_acted_reports_applied() {
        let lp = FakeLastPass::new();
        lp.add("x@example.com", true, false, false);
        lp.add("on@example.com", false, false, false);
        // suspend after an intent: a look first; disabled already means our doing, and no
        // second deluser is sent.
        let plan = look(&lp, &Action::Suspend(email("x@example.com")), true)
            .await
            .unwrap();
        assert_eq!(
            plan,
            Plan::Done(done(Outcome::Applied, Some(AccountStatus::Suspended)))
        );
        // Still enabled (the earlier call never landed): act.
        let plan = look(&lp, &Action::Suspend(email("on@example.com")), true)
            .await
            .unwrap();
        assert_eq!(plan, Plan::Act(Act::Suspend(email("on@example.com"))));
        // "already disabled" in answer to the act itself after an intent is our doing too;
        // without an earlier intent the same answer is already_done.
        let r = act(&lp, &Act::Suspend(email("x@example.com")), true)
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Applied);
        let r = act(&lp, &Act::Suspend(email("x@example.com")), false)
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::AlreadyDone);
        // deprovision after an intent, nobody there: applied, license reclaimed, no deluser.
        let plan = look(&lp, &Action::Deprovision(email("gone@example.com")), true)
            .await
            .unwrap();
        assert_eq!(plan, Plan::Done(applied_delete()));
        assert_eq!(
            lp.calls(),
            [
                "getuserdata x@example.com",
                "getuserdata on@example.com",
                "deluser 0 x@example.com",
                "deluser 0 x@example.com",
                "getuserdata gone@example.com"
            ],
        );
    }

    #[tokio::test]
    async fn races_between_deluser_and_the_look_after_it_decide_again() {
        let lp = FakeLastPass::new();
        // "No such user" from deluser, then the look finds an enabled user (created in
        // between): a transient error, so the whole command is decided again.
        lp.add("a@example.com", false, false, false);
        lp.fail_next([LastPassError::NoSuchUser("a@example.com".into())]);
        let e = act(&lp, &Act::Suspend(email("a@example.com")), false)
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        lp.fail_next([LastPassError::NoSuchUser("a@example.com".into())]);
        let e = act(&lp, &Act::Delete(email("a@example.com")), false)
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        // ... or a disabled one: a suspended account, already_done.
        lp.add("d@example.com", true, false, false);
        lp.fail_next([LastPassError::NoSuchUser("d@example.com".into())]);
        let r = act(&lp, &Act::Suspend(email("d@example.com")), false)
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.account_status),
            (Outcome::AlreadyDone, Some(AccountStatus::Suspended))
        );
        assert!(lp.mutations().is_empty());
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
        let r = act(&lp, &a, false).await.unwrap();
        assert_eq!(
            (r.outcome, code(&r)),
            (Outcome::Failed, Some("lastpass_rejected"))
        );
    }

    #[tokio::test]
    async fn provision_of_someone_with_a_lastpass_account_is_a_pending_invitation() {
        let lp = FakeLastPass::new();
        lp.exists_elsewhere("jane@example.com");
        let r = apply(&lp, &provision("jane@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.invitation_pending),
            (Outcome::Applied, Some(AccountStatus::Staged), true)
        );
        assert_eq!(lp.invited(), ["jane@example.com"]);
        // Again: already_done, still only invited, no second batchadd.
        let r = apply(&lp, &provision("jane@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.invitation_pending),
            (Outcome::AlreadyDone, true)
        );
        // Suspend cannot act on an invitation; reactivate neither.
        let r = apply(&lp, &Action::Suspend(email("jane@example.com")))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, code(&r), r.account_status, r.invitation_pending),
            (
                Outcome::Failed,
                Some("invitation_pending"),
                Some(AccountStatus::Staged),
                true
            )
        );
        let r = apply(&lp, &Action::Reactivate(email("jane@example.com")))
            .await
            .unwrap();
        assert_eq!(code(&r), Some("invitation_pending"));
        // Deprovision cancels the invitation (deleteaction 3) and reclaims the license.
        let r = apply(&lp, &Action::Deprovision(email("jane@example.com")))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.account_status, r.license_reclaimed),
            (Outcome::Applied, Some(AccountStatus::Deprovisioned), true)
        );
        assert!(lp.invited().is_empty());
        let r = apply(&lp, &Action::Deprovision(email("jane@example.com")))
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::AlreadyDone);
        assert_eq!(
            lp.mutations(),
            ["batchadd jane@example.com", "deluser 3 jane@example.com"]
        );
    }

    #[tokio::test]
    async fn an_ok_batchadd_that_created_nobody_fails_not_created_with_the_answer() {
        let lp = FakeLastPass::new();
        lp.skip_next_add("1 user(s) skipped: throttled");
        let r = apply(&lp, &provision("jane@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, code(&r), r.account_status),
            (Outcome::Failed, Some("not_created"), None)
        );
        let message = &r.error.as_ref().unwrap().message;
        assert!(
            message.contains("1 user(s) skipped: throttled"),
            "{message}"
        );
        assert!(lp.get("jane@example.com").is_none());
    }

    #[tokio::test]
    async fn provision_of_a_suspended_user_names_reactivate() {
        let lp = FakeLastPass::new();
        lp.add("jane@example.com", true, false, false);
        let r = apply(&lp, &provision("jane@example.com")).await.unwrap();
        assert_eq!(code(&r), Some("account_suspended"));
        assert!(r.error.unwrap().message.contains("user.reactivate"));
    }

    #[tokio::test]
    async fn reactivate_rows() {
        let lp = FakeLastPass::new();
        lp.add("was-active@example.com", true, false, false);
        lp.add("never@example.com", true, true, false);
        lp.add("on@example.com", false, false, false);
        let reactivate = |e: &str| Action::Reactivate(email(e));
        let r = apply(&lp, &reactivate("was-active@example.com"))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.account_status),
            (Outcome::Applied, Some(AccountStatus::Active))
        );
        assert!(!lp.get("was-active@example.com").unwrap().disabled);
        let r = apply(&lp, &reactivate("never@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status),
            (Outcome::Applied, Some(AccountStatus::Staged))
        );
        let r = apply(&lp, &reactivate("on@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, r.account_status),
            (Outcome::AlreadyDone, Some(AccountStatus::Active))
        );
        let r = apply(&lp, &reactivate("nobody@example.com")).await.unwrap();
        assert_eq!(
            (r.outcome, code(&r), r.account_status),
            (Outcome::Failed, Some("user_not_found"), None)
        );
        assert_eq!(
            lp.mutations(),
            [
                "enableuser was-active@example.com",
                "enableuser never@example.com"
            ]
        );
        // A reactivate keeps its look: only it says Active or Staged, or an invitation.
        assert_eq!(
            lp.calls(),
            [
                "getuserdata was-active@example.com",
                "enableuser was-active@example.com",
                "getuserdata never@example.com",
                "enableuser never@example.com",
                "getuserdata on@example.com",
                "getuserdata nobody@example.com"
            ]
        );
        // Enabled by someone else between look and act: already_done.
        lp.add("raced@example.com", false, false, false);
        let r = act(
            &lp,
            &Act::Enable {
                email: email("raced@example.com"),
                never_logged_in: false,
            },
            false,
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, Outcome::AlreadyDone);
        // An earlier attempt that acted: applied.
        let plan = look(&lp, &reactivate("on@example.com"), true)
            .await
            .unwrap();
        assert!(matches!(
            plan,
            Plan::Done(Resolution {
                outcome: Outcome::Applied,
                ..
            })
        ));
    }

    /// A company with one person in each state the table knows, for the preview rows.
    fn company() -> FakeLastPass {
        let lp = FakeLastPass::new();
        lp.add("active@example.com", false, false, false);
        lp.add("staged@example.com", false, true, false);
        lp.add("off@example.com", true, false, false);
        lp.add("off-never@example.com", true, true, false);
        lp.invite("inv@example.com");
        lp
    }

    /// Everyone in [`company`] (and the addresses the rows use), and the invitations.
    fn snapshot(lp: &FakeLastPass) -> (Vec<Option<User>>, Vec<String>) {
        let people = [
            "active@example.com",
            "staged@example.com",
            "off@example.com",
            "off-never@example.com",
            "new@example.com",
            "nobody@example.com",
        ];
        (people.iter().map(|e| lp.get(e)).collect(), lp.invited())
    }

    /// The call a preview names, as the fake spells mutations (`deluser 0 a@b.co`).
    fn call_of(p: &Preview, email: &str) -> Option<String> {
        p.would.as_ref().map(|a| match a.delete_action() {
            Some(d) => format!("{} {} {email}", a.api_command(), d as u8),
            None => format!("{} {email}", a.api_command()),
        })
    }

    #[tokio::test]
    async fn preview_predicts_every_row_with_one_look_and_no_mutation() {
        use AccountStatus::*;
        let provision_of = |e: &str| provision(e);
        let suspend = |e: &str| Action::Suspend(email(e));
        let deprovision = |e: &str| Action::Deprovision(email(e));
        let reactivate = |e: &str| Action::Reactivate(email(e));
        // (action, email, call it would make, predicted outcome, code, status after,
        //  invitation_pending, license_reclaimed, status now)
        type Row<'a> = (
            Action,
            &'a str,
            Option<&'a str>,
            Outcome,
            Option<&'a str>,
            Option<AccountStatus>,
            bool,
            bool,
            Option<AccountStatus>,
        );
        let rows: Vec<Row> = vec![
            (
                provision_of("new@example.com"),
                "new@example.com",
                Some("batchadd"),
                Outcome::Applied,
                None,
                Some(Staged),
                false,
                false,
                None,
            ),
            (
                provision_of("active@example.com"),
                "active@example.com",
                None,
                Outcome::AlreadyDone,
                None,
                Some(Active),
                false,
                false,
                Some(Active),
            ),
            (
                provision_of("staged@example.com"),
                "staged@example.com",
                None,
                Outcome::AlreadyDone,
                None,
                Some(Staged),
                false,
                false,
                Some(Staged),
            ),
            (
                provision_of("inv@example.com"),
                "inv@example.com",
                None,
                Outcome::AlreadyDone,
                None,
                Some(Staged),
                true,
                false,
                Some(Staged),
            ),
            (
                provision_of("off@example.com"),
                "off@example.com",
                None,
                Outcome::Failed,
                Some("account_suspended"),
                Some(Suspended),
                false,
                false,
                Some(Suspended),
            ),
            (
                suspend("active@example.com"),
                "active@example.com",
                Some("deluser 0"),
                Outcome::Applied,
                None,
                Some(Suspended),
                false,
                false,
                Some(Active),
            ),
            (
                suspend("off@example.com"),
                "off@example.com",
                None,
                Outcome::AlreadyDone,
                None,
                Some(Suspended),
                false,
                false,
                Some(Suspended),
            ),
            (
                suspend("inv@example.com"),
                "inv@example.com",
                None,
                Outcome::Failed,
                Some("invitation_pending"),
                Some(Staged),
                true,
                false,
                Some(Staged),
            ),
            (
                suspend("nobody@example.com"),
                "nobody@example.com",
                None,
                Outcome::Failed,
                Some("user_not_found"),
                None,
                false,
                false,
                None,
            ),
            (
                deprovision("active@example.com"),
                "active@example.com",
                Some("deluser 2"),
                Outcome::Applied,
                None,
                Some(Deprovisioned),
                false,
                true,
                Some(Active),
            ),
            (
                deprovision("off@example.com"),
                "off@example.com",
                Some("deluser 2"),
                Outcome::Applied,
                None,
                Some(Deprovisioned),
                false,
                true,
                Some(Suspended),
            ),
            (
                deprovision("inv@example.com"),
                "inv@example.com",
                Some("deluser 3"),
                Outcome::Applied,
                None,
                Some(Deprovisioned),
                false,
                true,
                Some(Staged),
            ),
            (
                deprovision("nobody@example.com"),
                "nobody@example.com",
                None,
                Outcome::AlreadyDone,
                None,
                Some(Deprovisioned),
                false,
                false,
                None,
            ),
            (
                reactivate("off@example.com"),
                "off@example.com",
                Some("enableuser"),
                Outcome::Applied,
                None,
                Some(Active),
                false,
                false,
                Some(Suspended),
            ),
            (
                reactivate("off-never@example.com"),
                "off-never@example.com",
                Some("enableuser"),
                Outcome::Applied,
                None,
                Some(Staged),
                false,
                false,
                Some(Suspended),
            ),
            (
                reactivate("active@example.com"),
                "active@example.com",
                None,
                Outcome::AlreadyDone,
                None,
                Some(Active),
                false,
                false,
                Some(Active),
            ),
            (
                reactivate("inv@example.com"),
                "inv@example.com",
                None,
                Outcome::Failed,
                Some("invitation_pending"),
                Some(Staged),
                true,
                false,
                Some(Staged),
            ),
            (
                reactivate("nobody@example.com"),
                "nobody@example.com",
                None,
                Outcome::Failed,
                Some("user_not_found"),
                None,
                false,
                false,
                None,
            ),
        ];
        for (action, e, call, outcome, err, status, invitation, reclaimed, now) in rows {
            let lp = company();
            let p = preview(&lp, &action, false).await.unwrap();
            let what = format!("{action:?}");
            assert_eq!(
                call_of(&p, e),
                call.map(|c| format!("{c} {e}")),
                "call of {what}"
            );
            let r = &p.predicted;
            assert_eq!(
                (
                    r.outcome,
                    code(r),
                    r.account_status,
                    r.invitation_pending,
                    r.license_reclaimed
                ),
                (outcome, err, status, invitation, reclaimed),
                "prediction of {what}"
            );
            assert_eq!(
                (p.status_now, p.invited_now),
                (now, e.starts_with("inv@")),
                "{what}"
            );
            // Only looks: one getuserdata, whatever the command.
            assert!(lp.mutations().is_empty(), "{what}: {:?}", lp.mutations());
            assert_eq!(lp.calls(), [format!("getuserdata {e}")], "{what}");

            // The real run on the same company reports exactly what was predicted, and makes
            // exactly the call named; where none is named, it changes nothing (it may still
            // send a deluser that LastPass answers "already disabled").
            let real = company();
            let before = snapshot(&real);
            let got = apply(&real, &action).await.unwrap();
            assert_eq!(&got, r, "the real run of {what}");
            match call {
                Some(c) => assert_eq!(
                    real.mutations(),
                    [format!("{c} {e}")],
                    "the real run's call of {what}"
                ),
                None => assert_eq!(snapshot(&real), before, "the real run of {what} changed"),
            }
        }
    }

    #[tokio::test]
    async fn preview_after_an_earlier_real_attempt_predicts_applied_like_the_real_run() {
        let lp = company();
        // The intent of an earlier attempt: the effect found is that attempt's doing.
        let p = preview(&lp, &Action::Suspend(email("off@example.com")), true)
            .await
            .unwrap();
        assert_eq!((p.would, p.predicted.outcome), (None, Outcome::Applied));
        let p = preview(&lp, &Action::Deprovision(email("gone@example.com")), true)
            .await
            .unwrap();
        assert_eq!(
            (p.would, p.predicted.outcome, p.predicted.license_reclaimed),
            (None, Outcome::Applied, true)
        );
        assert!(lp.mutations().is_empty());
    }

    #[tokio::test]
    async fn preview_returns_transient_and_auth_errors_for_the_caller() {
        let lp = company();
        lp.fail_next([LastPassError::Unauthorized]);
        assert_eq!(
            preview(&lp, &Action::Suspend(email("active@example.com")), false).await,
            Err(LastPassError::Unauthorized)
        );
        lp.fail_next([LastPassError::Transient {
            reason: "503".into(),
            retry_after: None,
        }]);
        assert!(
            preview(&lp, &provision("new@example.com"), false)
                .await
                .unwrap_err()
                .is_transient()
        );
        assert!(lp.mutations().is_empty());
    }

    #[tokio::test]
    async fn a_provision_that_only_invites_cannot_be_told_before_the_batchadd() {
        // Someone with a LastPass account elsewhere looks absent: the preview predicts a new
        // Staged account, and the real run finds an invitation (also Staged, applied).
        let lp = FakeLastPass::new();
        lp.exists_elsewhere("jane@example.com");
        let p = preview(&lp, &provision("jane@example.com"), false)
            .await
            .unwrap();
        assert_eq!(
            (
                p.would.as_ref().map(Act::api_command),
                p.predicted.outcome,
                p.predicted.account_status
            ),
            (
                Some("batchadd"),
                Outcome::Applied,
                Some(AccountStatus::Staged)
            )
        );
        assert!(!p.predicted.invitation_pending);
        assert!(lp.mutations().is_empty() && lp.invited().is_empty());
    }
}
