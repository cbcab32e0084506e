//! The LastPass simulator, in process on a free port, with the few steering calls the consumer
//! and sync tests use.
#![allow(dead_code)]

pub use lastpass_connector::simulator::{CallRecord, FaultsPatch as Faults, SimUser};
use lastpass_connector::simulator::{
    SimUserPatch, SimUserSpec, Simulator, SimulatorConfig, SimulatorHandle,
};

pub struct TestSim {
    pub handle: SimulatorHandle,
}

impl TestSim {
    pub async fn start() -> TestSim {
        Self::start_with(0).await
    }

    /// With `users` generated accounts in a realistic mix.
    pub async fn start_with(users: usize) -> TestSim {
        let handle = Simulator::start_local(SimulatorConfig {
            users,
            ..Default::default()
        })
        .await
        .expect("simulator binds a port");
        TestSim { handle }
    }

    pub fn api_url(&self) -> String {
        self.handle.api_url()
    }
    pub fn cid(&self) -> String {
        self.handle.cid()
    }
    pub fn provhash(&self) -> String {
        self.handle.provhash()
    }

    /// Adds an account (never logged in: `last_login` ""; otherwise a recent login).
    pub fn add(&self, email: &str, disabled: bool, never_logged_in: bool) -> String {
        let mut spec = if never_logged_in {
            SimUserSpec::staged(email)
        } else {
            SimUserSpec::active(email, "2026-11-20 09:30:00")
        };
        spec.disabled = disabled;
        self.handle.add_user(spec).expect("valid user")
    }

    /// Adds `n` more accounts named `gen<i>@example.com`.
    pub fn add_generated(&self, n: usize) {
        for i in 0..n {
            let mut spec =
                SimUserSpec::active(&format!("gen{i}@example.com"), "2026-10-01 08:00:00");
            spec.admin = i % 50 == 0;
            spec.disabled = i % 10 == 0;
            self.handle.add_user(spec).expect("valid user");
        }
    }

    pub fn user(&self, email: &str) -> Option<SimUser> {
        self.handle.user(email)
    }
    pub fn users(&self) -> Vec<SimUser> {
        self.handle.users()
    }
    pub fn delete(&self, email: &str) {
        assert!(self.handle.delete_user(email), "{email} existed");
    }
    pub fn disable(&self, email: &str) {
        self.handle
            .update_user(
                email,
                SimUserPatch {
                    disabled: Some(true),
                    ..Default::default()
                },
            )
            .expect("user exists");
    }
    pub fn rename(&self, email: &str, new_email: &str) {
        self.handle
            .update_user(
                email,
                SimUserPatch {
                    username: Some(new_email.into()),
                    ..Default::default()
                },
            )
            .expect("user exists");
    }
    pub fn faults(&self, patch: Faults) {
        self.handle.set_faults(patch);
    }
    /// Changes the provhash the simulator accepts.
    pub fn rotate(&self, provhash: &str) {
        self.handle
            .rotate_credentials(Some(provhash.to_string()), None);
    }
    /// The mutating calls applied so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.handle.calls()
    }
    /// How many applied calls of this command.
    pub fn mutations(&self, cmd: &str) -> usize {
        self.calls().iter().filter(|c| c.cmd == cmd).count()
    }
}
