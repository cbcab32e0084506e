//! Batched provisioning: provisions that are in flight together share their LastPass calls.
//!
//! A provision makes three calls (the semantics table in [`crate::apply`]): a look before, a
//! `batchadd`, and a look after. Each of the three is a *stage* here. A provision's call at a
//! stage waits, at most [`BatchSettings::window`], for the other provisions in flight to reach
//! the same stage, and then one call serves them all:
//!
//! - **create**: one `batchadd` of up to [`BatchSettings::max`] users. Whatever it answers is
//!   every member's answer (an OK, a refusal, a transient error); each member then looks its
//!   own user up, so a batch answered partly (some created, some invited, some skipped) is
//!   resolved per user, exactly as a batch of one is.
//! - **look before / look after**: one `getuserdata` page of the whole tenant, when the whole
//!   tenant fits on one page (LastPass says so in `total`); otherwise one look-up by username per
//!   member, as without batching (and once a page has shown the tenant too big, each provision
//!   looks itself up at once, without waiting for a batch). A page only answers "absent" when
//!   it is complete. After the `batchadd`, a member the page does not show is still looked up by
//!   username (an invitation may be listed only there), so a batch never reports `not_created`
//!   on the page's word alone.
//!
//! Nothing about a command's guarantees changes: every member records its own intent before it
//! joins a `batchadd` (the processor does that, as for a batch of one), keeps its own claim,
//! retries and event, and a member whose command was given up (its task dropped) before the call
//! is left out of it.
//!
//! When does a batch close? When it holds `max` members; when `window` has passed since its first
//! member joined; or as soon as every provision that was already in flight when it opened, and has
//! not passed this stage, has joined (after a short gather of [`GATHER`], so that provisions
//! arriving in the same instant join too). A lone provision does not wait for company that is not
//! coming, and a steady stream of new provisions does not hold a batch open. While calls are not
//! rationed ([`LastPass::rationed`]: no call budget in force), a batch does not wait for a
//! provision still in an earlier stage's call either, so batching never adds a round trip to a
//! provision's way; while they are, it does, since then a call saved is time saved. The processor
//! tells the batcher which provisions are in flight with a [`Ticket`] per command.

use crate::email::Email;
use crate::lastpass::{
    AddOutcome, DelUserOutcome, DeleteAction, EnableOutcome, LastPass, LastPassError, NewUser,
    User, UserPage,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// How long a batch that every awaited member has joined still waits for members arriving in
/// the same instant.
pub const GATHER: Duration = Duration::from_millis(2);
/// How long the knowledge that the tenant does not fit on one page is trusted before a batch
/// tries a page again.
const TENANT_SIZE_TTL: Duration = Duration::from_secs(300);

/// `CONNECTOR_BATCH_MAX`, `CONNECTOR_BATCH_WINDOW`, and the page size of a listing look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most users in one `batchadd`, most members of one look; 1 turns batching off.
    pub max: usize,
    /// Longest a provision waits at a stage for others to join.
    pub window: Duration,
    /// `pagesize` of the one page a batched look asks for.
    pub page_size: u32,
}

const STAGES: usize = 3;
const LOOK_BEFORE: usize = 0;
const CREATE: usize = 1;
const LOOK_AFTER: usize = 2;

type Reply<T> = oneshot::Sender<Result<T, LastPassError>>;

enum Item {
    Look(Email, Reply<Option<User>>),
    Create(NewUser, Reply<AddOutcome>),
}

impl Item {
    /// The member's command was given up: nobody waits for the answer.
    fn abandoned(&self) -> bool {
        match self {
            Item::Look(_, r) => r.is_closed(),
            Item::Create(_, r) => r.is_closed(),
        }
    }
}

struct Waiter {
    ticket: u64,
    item: Item,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// When the forming batch's first member joined.
    since: Option<Instant>,
    /// The tickets taken before then (ids below this): the batch waits for those, not for
    /// provisions that arrive later (they may keep coming).
    horizon: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Pos {
    next: usize,
    busy: bool,
}

#[derive(Default)]
struct State {
    queues: [Queue; STAGES],
    /// Each live ticket: its next stage (`STAGES`: past them all), and whether it is in a
    /// stage's queue or call right now.
    tickets: HashMap<u64, Pos>,
    next_ticket: u64,
    /// When a page last showed that the tenant does not fit on one page.
    tenant_too_big: Option<Instant>,
    closed: bool,
}

impl State {
    /// Moves `ticket` past `stage`.
    fn pass(&mut self, ticket: u64, stage: usize) {
        if let Some(pos) = self.tickets.get_mut(&ticket) {
            pos.next = pos.next.max(stage + 1);
        }
    }

    fn set_busy(&mut self, ticket: u64, busy: bool) {
        if let Some(pos) = self.tickets.get_mut(&ticket) {
            pos.busy = busy;
        }
    }

    /// The batch to run now at `stage`, or when to look again.
    fn take(&mut self, stage: usize, s: &BatchSettings, rationed: bool, now: Instant) -> Taken {
        let next_ticket = self.next_ticket;
        let q = &mut self.queues[stage];
        q.waiting.retain(|w| !w.item.abandoned());
        if q.waiting.is_empty() {
            q.since = None;
            return Taken::Idle;
        }
        let since = match q.since {
            Some(t) => t,
            None => {
                q.horizon = next_ticket;
                *q.since.insert(now)
            }
        };
        let n = q.waiting.len();
        // Provisions that were in flight when this batch opened and have not reached this
        // stage yet: the batch waits for them (within the window). When calls are rationed
        // (a call budget is in force), for all of them: a call saved is time saved. When they
        // are not, only for those between two calls (about to arrive), so that batching never
        // adds a round trip to a provision's way.
        let coming = self
            .tickets
            .iter()
            .filter(|&(id, pos)| {
                *id < q.horizon
                    && pos.next <= stage
                    && !q.waiting.iter().any(|w| w.ticket == *id)
                    && (rationed || !pos.busy)
            })
            .count();
        let window_over = now >= since + s.window;
        let everyone = coming == 0 && now >= since + GATHER.min(s.window);
        if !(n >= s.max || window_over || everyone) {
            let wake = if coming == 0 {
                since + GATHER.min(s.window)
            } else {
                since + s.window
            };
            return Taken::WaitUntil(wake);
        }
        let batch: Vec<Waiter> = q.waiting.drain(..n.min(s.max)).collect();
        if q.waiting.is_empty() {
            q.since = None;
        } else {
            // The rest (beyond `max`) forms the next batch, whose wait starts now.
            q.since = Some(now);
            q.horizon = next_ticket;
        }
        for w in &batch {
            self.pass(w.ticket, stage);
        }
        Taken::Batch(batch)
    }
}

enum Taken {
    Idle,
    WaitUntil(Instant),
    Batch(Vec<Waiter>),
}

struct Inner<L> {
    lp: Arc<L>,
    settings: BatchSettings,
    state: Mutex<State>,
    wake: [Notify; STAGES],
}

impl<L> Inner<L> {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a page lately showed that the tenant does not fit on one page.
    fn tenant_too_big(&self) -> bool {
        self.state()
            .tenant_too_big
            .is_some_and(|at| at.elapsed() < TENANT_SIZE_TTL)
    }

    fn wake_all(&self) {
        for w in &self.wake {
            w.notify_one();
        }
    }
}

/// Coalesces the LastPass calls of provisions in flight together. Cheap to clone; the stage
/// tasks end when the last clone is dropped.
pub struct Batcher<L: LastPass> {
    inner: Arc<Inner<L>>,
    _closer: Arc<Closer<L>>,
}

impl<L: LastPass> Clone for Batcher<L> {
    fn clone(&self) -> Self {
        Batcher {
            inner: self.inner.clone(),
            _closer: self._closer.clone(),
        }
    }
}

/// Ends the stage tasks when the last [`Batcher`] goes.
struct Closer<L>(Arc<Inner<L>>);

impl<L> Drop for Closer<L> {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.closed = true;
        // Dropping the waiters' senders answers them (with "batching stopped").
        for q in &mut st.queues {
            q.waiting.clear();
        }
        drop(st);
        self.0.wake_all();
    }
}

impl<L: LastPass> Batcher<L> {
    /// Starts the stage tasks (on the current tokio runtime).
    pub fn new(lp: Arc<L>, settings: BatchSettings) -> Self {
        let settings = BatchSettings {
            max: settings.max.max(1),
            ..settings
        };
        let inner = Arc::new(Inner {
            lp,
            settings,
            state: Mutex::new(State::default()),
            wake: Default::default(),
        });
        for stage in 0..STAGES {
            tokio::spawn(stage_task(inner.clone(), stage));
        }
        Batcher {
            _closer: Arc::new(Closer(inner.clone())),
            inner,
        }
    }

    /// A provision is in flight: until the ticket is dropped, batches wait for it (within the
    /// window).
    pub fn ticket(&self) -> Ticket<L> {
        let mut st = self.inner.state();
        let id = st.next_ticket;
        st.next_ticket += 1;
        st.tickets.insert(id, Pos::default());
        Ticket {
            batcher: self.clone(),
            id,
        }
    }
}

/// One provision in flight (see [`Batcher::ticket`]); also the [`LastPass`] its calls go
/// through.
pub struct Ticket<L: LastPass> {
    batcher: Batcher<L>,
    id: u64,
}

impl<L: LastPass> Ticket<L> {
    /// A new attempt of the command starts: it goes through every stage again.
    pub fn restart(&self) {
        let mut st = self.batcher.inner.state();
        if let Some(pos) = st.tickets.get_mut(&self.id) {
            *pos = Pos::default();
        }
    }

    /// The attempt is over: no batch waits for this provision any more.
    pub fn finish(&self) {
        let mut st = self.batcher.inner.state();
        st.pass(self.id, STAGES - 1);
        drop(st);
        self.batcher.inner.wake_all();
    }

    fn position(&self) -> usize {
        let st = self.batcher.inner.state();
        st.tickets.get(&self.id).map_or(STAGES, |p| p.next)
    }

    /// Joins the batch of `stage` with `item`.
    fn join(&self, stage: usize, item: Item) {
        let inner = &self.batcher.inner;
        let mut st = inner.state();
        st.set_busy(self.id, true);
        st.queues[stage].waiting.push(Waiter {
            ticket: self.id,
            item,
        });
        drop(st);
        // Another stage's batch may have been waiting for this provision only while it was
        // between calls.
        inner.wake_all();
    }

    async fn look(&self, email: &Email) -> Result<Option<User>, LastPassError> {
        let inner = &self.batcher.inner;
        let stage = if self.position() <= CREATE {
            LOOK_BEFORE
        } else {
            LOOK_AFTER
        };
        if inner.tenant_too_big() {
            // A page would not answer for everyone: look this one up on its own, now (a
            // batched look would make one look-up per member anyway, after waiting for them).
            {
                let mut st = inner.state();
                st.pass(self.id, stage);
                st.set_busy(self.id, true);
            }
            inner.wake_all();
            let found = inner.lp.find_user(email).await;
            inner.state().set_busy(self.id, false);
            return found;
        }
        let (tx, rx) = oneshot::channel();
        self.join(stage, Item::Look(email.clone(), tx));
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl<L: LastPass> Drop for Ticket<L> {
    fn drop(&mut self) {
        let mut st = self.batcher.inner.state();
        st.tickets.remove(&self.id);
        drop(st);
        self.batcher.inner.wake_all();
    }
}

fn stopped() -> LastPassError {
    LastPassError::Transient {
        reason: "batching stopped (shutting down)".into(),
        retry_after: None,
    }
}

impl<L: LastPass> LastPass for Ticket<L> {
    async fn find_user(&self, email: &Email) -> Result<Option<User>, LastPassError> {
        self.look(email).await
    }

    async fn list_page(&self, page_index: u32, page_size: u32) -> Result<UserPage, LastPassError> {
        self.batcher.inner.lp.list_page(page_index, page_size).await
    }

    async fn delete_user(
        &self,
        email: &Email,
        action: DeleteAction,
    ) -> Result<DelUserOutcome, LastPassError> {
        self.batcher.inner.lp.delete_user(email, action).await
    }

    async fn create_users(&self, users: &[NewUser]) -> Result<AddOutcome, LastPassError> {
        let [user] = users else {
            return self.batcher.inner.lp.create_users(users).await;
        };
        let (tx, rx) = oneshot::channel();
        self.join(CREATE, Item::Create(user.clone(), tx));
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    async fn enable_users(&self, emails: &[Email]) -> Result<EnableOutcome, LastPassError> {
        self.batcher.inner.lp.enable_users(emails).await
    }
}

/// One stage: waits for a batch to close, and runs each on a task of its own, so the next batch
/// forms while a call is in flight.
async fn stage_task<L: LastPass>(inner: Arc<Inner<L>>, stage: usize) {
    loop {
        let rationed = inner.lp.rationed();
        let taken = {
            let mut st = inner.state();
            if st.closed {
                return;
            }
            st.take(stage, &inner.settings, rationed, Instant::now())
        };
        match taken {
            Taken::Batch(batch) => {
                // Passing the stage may complete a later stage's batch.
                inner.wake_all();
                tokio::spawn(run_batch(inner.clone(), stage, batch));
            }
            Taken::WaitUntil(at) => {
                tokio::select! {
                    _ = inner.wake[stage].notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            Taken::Idle => inner.wake[stage].notified().await,
        }
    }
}

async fn run_batch<L: LastPass>(inner: Arc<Inner<L>>, stage: usize, batch: Vec<Waiter>) {
    let mut members = Vec::new();
    let mut users = Vec::new();
    let mut created = Vec::new();
    let mut emails = Vec::new();
    let mut looks = Vec::new();
    for w in batch {
        members.push(w.ticket);
        match w.item {
            Item::Create(u, tx) => {
                users.push(u);
                created.push(tx);
            }
            Item::Look(e, tx) => {
                emails.push(e);
                looks.push(tx);
            }
        }
    }
    let added = if users.is_empty() {
        None
    } else {
        metrics::histogram!(crate::telemetry::BATCH_SIZE, "call" => "batchadd")
            .record(users.len() as f64);
        Some(inner.lp.create_users(&users).await)
    };
    let found = if emails.is_empty() {
        Vec::new()
    } else {
        metrics::histogram!(crate::telemetry::BATCH_SIZE, "call" => "getuserdata")
            .record(emails.len() as f64);
        look_many(&inner, &emails, stage == LOOK_AFTER).await
    };
    // Between calls again, before anyone hears the answer: a member that joins its next stage
    // at once must not be marked idle after it did.
    {
        let mut st = inner.state();
        for t in members {
            st.set_busy(t, false);
        }
    }
    if let Some(answer) = added {
        for tx in created {
            let _ = tx.send(answer.clone());
        }
    }
    for (tx, answer) in looks.into_iter().zip(found) {
        let _ = tx.send(answer);
    }
}

/// Looks up every email: from one page of the whole tenant where that page is complete, one
/// look-up by username each otherwise (and, when `confirm_absent`, for those the page does not
/// show).
async fn look_many<L: LastPass>(
    inner: &Inner<L>,
    emails: &[Email],
    confirm_absent: bool,
) -> Vec<Result<Option<User>, LastPassError>> {
    let known_big = inner.tenant_too_big();
    let mut answers: Vec<Option<Result<Option<User>, LastPassError>>> = vec![None; emails.len()];
    if emails.len() > 1 && !known_big {
        match inner.lp.list_page(0, inner.settings.page_size).await {
            Err(e) => return vec![Err(e); emails.len()],
            Ok(page) => {
                let complete = page.total != u64::MAX && page.users.len() as u64 >= page.total;
                if !complete {
                    inner.state().tenant_too_big = Some(Instant::now());
                }
                let mut listed: HashMap<String, User> = page
                    .invited
                    .iter()
                    .map(|e| (e.trim().to_lowercase(), User::invitation(e)))
                    .collect();
                for u in page.users {
                    listed.insert(u.email.trim().to_lowercase(), u);
                }
                for (slot, email) in answers.iter_mut().zip(emails) {
                    match listed.get(email.as_str()) {
                        Some(u) => *slot = Some(Ok(Some(u.clone()))),
                        None if complete && !confirm_absent => *slot = Some(Ok(None)),
                        None => {}
                    }
                }
            }
        }
    }
    let rest = answers
        .iter()
        .zip(emails)
        .filter(|(a, _)| a.is_none())
        .map(|(_, e)| inner.lp.find_user(e));
    let mut rest = futures_util::future::join_all(rest).await.into_iter();
    answers
        .into_iter()
        .map(|a| match a {
            Some(a) => a,
            None => rest.next().expect("one answer per look-up"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeLastPass;

    fn settings(max: usize, window_ms: u64) -> BatchSettings {
        BatchSettings {
            max,
            window: Duration::from_millis(window_ms),
            page_size: 100,
        }
    }

    fn new_user(i: usize) -> NewUser {
        NewUser {
            email: Email::parse(&format!("u{i}@example.com")).unwrap(),
            first_name: "U".into(),
            last_name: format!("{i}"),
        }
    }

    /// A provision's three calls through its ticket, as the semantics table makes them.
    async fn provision<L: LastPass>(b: &Batcher<L>, u: NewUser) -> Option<User> {
        let t = b.ticket();
        t.restart();
        assert_eq!(t.find_user(&u.email).await.unwrap(), None);
        t.create_users(std::slice::from_ref(&u)).await.unwrap();
        let found = t.find_user(&u.email).await.unwrap();
        t.finish();
        found
    }

    fn count(calls: &[String], prefix: &str) -> usize {
        calls.iter().filter(|c| c.starts_with(prefix)).count()
    }

    #[tokio::test]
    async fn provisions_in_flight_together_share_three_calls() {
        let lp = Arc::new(FakeLastPass::new());
        let b = Batcher::new(lp.clone(), settings(50, 5_000));
        let started = std::time::Instant::now();
        let all = (0..20).map(|i| provision(&b, new_user(i)));
        let found = futures_util::future::join_all(all).await;
        assert!(found.iter().all(|u| u.is_some()), "{found:?}");
        let calls = lp.calls();
        // One page before, one batchadd of all twenty, one page after.
        assert_eq!(count(&calls, "getuserdata page"), 2, "{calls:?}");
        assert_eq!(count(&calls, "getuserdata u"), 0, "{calls:?}");
        assert_eq!(
            count(&calls, "batchadd"),
            20,
            "one batchadd carrying 20: {calls:?}"
        );
        assert_eq!(lp.batchadd_calls(), 1);
        // Everyone in flight had joined: nobody waited for the 5 s window.
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_batch_is_at_most_max_users() {
        let lp = Arc::new(FakeLastPass::new());
        let b = Batcher::new(lp.clone(), settings(7, 5_000));
        let all = (0..20).map(|i| provision(&b, new_user(i)));
        futures_util::future::join_all(all).await;
        assert_eq!(lp.batchadd_calls(), 3, "7 + 7 + 6");
        assert_eq!(lp.calls().len(), 20 + 2 * 3, "{:?}", lp.calls());
    }

    #[tokio::test]
    async fn a_lone_provision_does_not_wait_for_the_window() {
        let lp = Arc::new(FakeLastPass::new());
        let b = Batcher::new(lp.clone(), settings(50, 10_000));
        let started = std::time::Instant::now();
        assert!(provision(&b, new_user(1)).await.is_some());
        assert!(started.elapsed() < Duration::from_secs(1));
        // A batch of one looks up by username, not by page.
        assert_eq!(
            lp.calls(),
            [
                "getuserdata u1@example.com",
                "batchadd u1@example.com",
                "getuserdata u1@example.com"
            ]
        );
    }

    #[tokio::test]
    async fn a_batch_waits_within_the_window_for_a_provision_in_flight() {
        let lp = Arc::new(FakeLastPass::new());
        let b = Batcher::new(lp.clone(), settings(50, 300));
        // A second provision is in flight (its ticket is taken) but not at the stage yet.
        let late = b.ticket();
        let first = tokio::spawn({
            let b = b.clone();
            async move { provision(&b, new_user(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lp.calls().is_empty(), "the first waits for the second");
        drop(late);
        assert!(first.await.unwrap().is_some());
    }

    /// A create batch with one member, and another provision (opened before it) whose look is
    /// still in flight: when calls are not rationed the batch does not wait for it (that would add
    /// a round trip); when they are, it does (a call saved is time saved).
    #[test]
    fn a_batch_waits_for_provisions_in_a_call_only_when_calls_are_rationed() {
        let s = settings(50, 200);
        let fresh = |upstream_busy: bool| {
            let mut st = State::default();
            st.tickets.insert(
                0,
                Pos {
                    next: LOOK_BEFORE + 1,
                    busy: upstream_busy,
                },
            );
            st.tickets.insert(
                1,
                Pos {
                    next: CREATE,
                    busy: true,
                },
            );
            st.next_ticket = 2;
            let (tx, _rx) = oneshot::channel();
            st.queues[CREATE].waiting.push(Waiter {
                ticket: 1,
                item: Item::Create(new_user(1), tx),
            });
            (st, _rx)
        };
        // Ticket 0 was taken into a look batch and has not reached the create stage yet.
        let t0 = Instant::now();
        let after_gather = t0 + GATHER;
        // Its look answered, between calls (about to arrive): waited for, rationed or not.
        for rationed in [false, true] {
            let (mut st, _rx) = fresh(false);
            assert!(matches!(
                st.take(CREATE, &s, rationed, t0),
                Taken::WaitUntil(_)
            ));
            assert!(matches!(
                st.take(CREATE, &s, rationed, after_gather),
                Taken::WaitUntil(_)
            ));
        }
        // Its look still in flight: waited for only when calls are rationed.
        let (mut st, _rx) = fresh(true);
        assert!(matches!(
            st.take(CREATE, &s, false, t0),
            Taken::WaitUntil(_)
        ));
        assert!(matches!(
            st.take(CREATE, &s, false, after_gather),
            Taken::Batch(b) if b.len() == 1
        ));
        let (mut st, _rx) = fresh(true);
        st.take(CREATE, &s, true, t0);
        assert!(matches!(
            st.take(CREATE, &s, true, after_gather),
            Taken::WaitUntil(_)
        ));
        // The window still bounds the wait.
        assert!(matches!(
            st.take(CREATE, &s, true, t0 + Duration::from_millis(200)),
            Taken::Batch(_)
        ));
    }

    #[tokio::test]
    async fn a_page_that_is_not_the_whole_tenant_falls_back_to_look_ups() {
        let lp = Arc::new(FakeLastPass::new());
        for i in 0..150 {
            lp.add(&format!("old{i}@example.com"), false, false, false);
        }
        let b = Batcher::new(lp.clone(), settings(50, 5_000));
        let all = (0..5).map(|i| provision(&b, new_user(i)));
        let found = futures_util::future::join_all(all).await;
        assert!(found.iter().all(|u| u.is_some()));
        let calls = lp.calls();
        // The first page showed 150 of 150+: everyone is looked up by username, and the page is
        // not asked for again.
        assert_eq!(count(&calls, "getuserdata page"), 1, "{calls:?}");
        assert_eq!(count(&calls, "getuserdata u"), 10, "{calls:?}");
    }

    #[tokio::test]
    async fn in_a_tenant_known_too_big_a_look_after_does_not_wait_for_company() {
        let lp = Arc::new(FakeLastPass::new());
        let b = Batcher::new(lp.clone(), settings(50, 5_000));
        b.inner.state().tenant_too_big = Some(Instant::now());
        // Another provision sits between its `batchadd` and its look after: a batched look
        // after would wait for it, up to the 5 s window, only to look each member up alone.
        let other = b.ticket();
        b.inner.state().pass(other.id, CREATE);
        let found = tokio::time::timeout(Duration::from_secs(1), provision(&b, new_user(1)))
            .await
            .expect("the look after went at once");
        assert!(found.is_some());
        let calls = lp.calls();
        assert_eq!(count(&calls, "getuserdata page"), 0, "{calls:?}");
        assert_eq!(count(&calls, "getuserdata u"), 2, "{calls:?}");
    }

    #[tokio::test]
    async fn invitations_and_present_users_are_answered_from_the_page() {
        let lp = Arc::new(FakeLastPass::new());
        lp.add("on@example.com", false, false, false);
        lp.add("off@example.com", true, false, false);
        lp.invite("inv@example.com");
        let b = Batcher::new(lp.clone(), settings(50, 5_000));
        let look = |e: &'static str| {
            let b = b.clone();
            async move {
                let t = b.ticket();
                t.find_user(&Email::parse(e).unwrap()).await.unwrap()
            }
        };
        let (on, off, inv, none) = tokio::join!(
            look("ON@example.com"),
            look("off@example.com"),
            look("inv@example.com"),
            look("nobody@example.com")
        );
        assert!(!on.unwrap().disabled);
        assert!(off.unwrap().disabled);
        assert!(inv.unwrap().invitation_pending);
        assert_eq!(none, None);
        assert_eq!(lp.calls(), ["getuserdata page 0"]);
    }

    #[tokio::test]
    async fn a_batch_error_is_every_members_error_and_abandoned_members_are_left_out() {
        let lp = Arc::new(FakeLastPass::new());
        let b = Batcher::new(lp.clone(), settings(50, 5_000));
        lp.fail_next([LastPassError::Unauthorized]);
        let (a, c) = tokio::join!(
            async {
                let t = b.ticket();
                t.find_user(&Email::parse("a@example.com").unwrap()).await
            },
            async {
                let t = b.ticket();
                t.find_user(&Email::parse("c@example.com").unwrap()).await
            }
        );
        assert_eq!(a, Err(LastPassError::Unauthorized));
        assert_eq!(c, Err(LastPassError::Unauthorized));
        // A member whose command is dropped while it waits is not created.
        let waiting = b.ticket();
        let gone = {
            let t = b.ticket();
            let u = new_user(9);
            tokio::time::timeout(Duration::from_millis(20), async move {
                t.create_users(std::slice::from_ref(&u)).await
            })
            .await
        };
        assert!(gone.is_err(), "it was still waiting for the other ticket");
        drop(waiting);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lp.mutations().is_empty(), "{:?}", lp.mutations());
    }
}
