//! How much a run measures: the profiles, and what the command line may change.

use std::time::Duration;

use crate::experiments::kind::Experiment;

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// A few minutes: the idle experiment (the headline, every point five times), the
    /// blocking one and the wait calls (three times), in interleaved rounds, 1 s windows.
    Quick,
    /// C10K and past, every experiment, longer windows, three repeats.
    Full,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }

    pub(super) fn plan(self) -> Plan {
        match self {
            // Six minutes hold some 250 windows here, with a server started for each:
            // several repeats of fewer points rather than one of many, since one repeat
            // per point let a burst of interference become the lesson. The idle
            // experiment gets five. Under half a CPU per server, its A/A servers were
            // 11-17% apart at their worst point with three or five; with a whole CPU
            // (the default since), 1.4% with five (methodology: Noise).
            Profile::Quick => Plan {
                warmup: Duration::from_millis(200),
                window: Duration::from_secs(1),
                repeats: 3,
                idle_repeats: 5,
                busy: 10,
                idle: vec![0, 10_000],
                active: Vec::new(),
                churn: Vec::new(),
                blocking: (10, 50),
                wait_fds: vec![10, 100, 1000, 10_000],
                wait_budget: Duration::from_millis(200),
                // Some 10 s a model: past the quick profile's minutes.
                slowloris: Vec::new(),
            },
            Profile::Full => Plan {
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(5),
                repeats: 3,
                idle_repeats: 3,
                busy: 10,
                // Past 15,000 only prefork runs: one process may hold no more than
                // ~20,000 descriptors here, and every other server is one process.
                idle: vec![0, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 100_000],
                active: vec![1, 10, 100, 1000, 5000, 10_000],
                churn: vec![1, 10, 100],
                blocking: (20, 100),
                wait_fds: vec![10, 100, 1000, 10_000],
                wait_budget: Duration::from_secs(1),
                slowloris: vec![3000],
            },
        }
    }
}

/// The points a profile measures.
pub(super) struct Plan {
    pub(super) warmup: Duration,
    pub(super) window: Duration,
    pub(super) repeats: u32,
    /// The idle experiment's repeats (the headline, and the A/A pair's).
    pub(super) idle_repeats: u32,
    /// Busy (closed-loop) connections beside the idle ones.
    pub(super) busy: usize,
    pub(super) idle: Vec<usize>,
    pub(super) active: Vec<usize>,
    pub(super) churn: Vec<usize>,
    /// Connections, and the number after the route (`/sleep/100`: 100 ms).
    pub(super) blocking: (usize, u64),
    pub(super) wait_fds: Vec<usize>,
    pub(super) wait_budget: Duration,
    /// Slow connections beside the fresh clients (slowloris).
    pub(super) slowloris: Vec<usize>,
}

impl Plan {
    /// How many times each point of `experiment` is measured.
    pub(super) fn repeats_for(&self, experiment: Experiment) -> u32 {
        match experiment {
            Experiment::Idle => self.idle_repeats,
            _ => self.repeats,
        }
    }

    /// The measured window of a point of `experiment`. The blocking experiment's holds
    /// two rounds of every connection's blocking work one after the other: io-uring runs
    /// the handlers of one completion batch (every connection's `/sleep`) before it
    /// submits any send, so a shorter window can end before its first answer.
    pub(super) fn window_for(&self, experiment: Experiment) -> Duration {
        let (connections, ms) = self.blocking;
        match experiment {
            Experiment::Blocking => {
                let batch = Duration::from_millis(ms * connections as u64);
                self.window.max(2 * batch)
            }
            _ => self.window,
        }
    }
}

/// What the command line may change in a profile.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub idle: Option<Vec<usize>>,
    pub active: Option<Vec<usize>>,
    pub warmup: Option<Duration>,
    pub window: Option<Duration>,
    pub repeats: Option<u32>,
}

impl Overrides {
    pub(super) fn apply(&self, mut plan: Plan) -> Plan {
        if let Some(idle) = &self.idle {
            plan.idle = idle.clone();
        }
        if let Some(active) = &self.active {
            plan.active = active.clone();
        }
        plan.warmup = self.warmup.unwrap_or(plan.warmup);
        plan.window = self.window.unwrap_or(plan.window);
        plan.repeats = self.repeats.unwrap_or(plan.repeats).max(1);
        plan.idle_repeats = self.repeats.unwrap_or(plan.idle_repeats).max(1);
        plan
    }
}
