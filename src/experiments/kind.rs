//! The experiments by name, as run.json spells them, and what the x of each counts:
//! the vocabulary the run file is written in (the table of their facts is
//! `crate::experiments`).

use serde::{Deserialize, Serialize};

/// An experiment, spelled in kebab-case everywhere: the CLI, `"experiment"` in
/// run.json, the report.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
#[value(rename_all = "kebab-case")]
pub enum Experiment {
    #[default]
    Idle,
    Active,
    Churn,
    Blocking,
    WaitCost,
    Slowloris,
}

/// What the x of an experiment counts, and so which field of a point holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Idle connections held beside a few busy ones (`Point::idle`).
    Idle,
    /// Connections, every one busy (`Point::active`).
    Connections,
    /// Descriptors watched by one wait call, no load at all (`Point::fds`).
    Descriptors,
    /// Slow connections, each trickling a header (`Point::active`).
    SlowConnections,
}

impl Experiment {
    /// What its x counts (the one fact a point needs to be placed on its chart).
    pub const fn axis(self) -> Axis {
        match self {
            Experiment::Idle => Axis::Idle,
            Experiment::Active | Experiment::Churn | Experiment::Blocking => Axis::Connections,
            Experiment::WaitCost => Axis::Descriptors,
            Experiment::Slowloris => Axis::SlowConnections,
        }
    }
}
