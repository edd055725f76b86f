//! How much a run measures: the profiles, and what the command line may change.

use std::time::Duration;

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// A few minutes: every experiment once, short windows.
    Quick,
    /// C10K and past, longer windows, three repeats.
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
            Profile::Quick => Plan {
                warmup: Duration::from_millis(300),
                window: Duration::from_millis(1500),
                repeats: 1,
                busy: 10,
                idle: vec![0, 1000, 2000, 5000, 10_000],
                active: vec![1, 10, 100, 1000, 10_000],
                churn: vec![10],
                blocking: (20, 100),
                wait_fds: vec![10, 100, 1000, 10_000],
                wait_budget: Duration::from_millis(200),
                // Some 10 s a model: past the quick profile's minutes.
                slowloris: Vec::new(),
            },
            Profile::Full => Plan {
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(5),
                repeats: 3,
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
        plan
    }
}
