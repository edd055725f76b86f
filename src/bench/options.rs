//! What a run is asked for, from the command line.

use std::path::PathBuf;
use std::time::Duration;

use super::plan::{Overrides, Profile};
use super::rig::Wanted;
use super::{peers, remote};
use crate::experiments::Experiment;

pub struct Options {
    /// The `iomodels` binary that serves (this one, normally).
    pub exe: PathBuf,
    pub profile: Profile,
    /// Changes to the profile's plan, from the command line.
    pub overrides: Overrides,
    pub experiments: Vec<Experiment>,
    pub models: Vec<String>,
    pub peers: Vec<String>,
    /// The server and the load generator in two network namespaces joined by a veth
    /// pair, rather than on loopback; with a netem delay on the link, if given.
    pub netns: bool,
    pub link_delay: Option<Duration>,
    /// Servers of the engineer's own (`--server NAME=COMMAND`), beside the peers.
    pub servers: Vec<peers::Custom>,
    /// Our servers on another machine, over SSH (`--server-host`), rather than here.
    pub server_host: Option<remote::Destination>,
    pub out: PathBuf,
    /// The share of one CPU each server may use (a cgroup quota), so that the server
    /// and not the load generator is the limit; None: whole CPUs.
    pub server_cpu_share: Option<f64>,
}

impl Options {
    /// What the rig is to set up for this run.
    pub(super) fn rig(&self) -> Wanted<'_> {
        Wanted {
            exe: &self.exe,
            out: &self.out,
            plan: self.overrides.apply(self.profile.plan()),
            server_host: self.server_host.as_ref(),
            netns: self.netns,
            link_delay: self.link_delay,
            server_cpu_share: self.server_cpu_share,
            wait_cost: self.experiments.iter().any(|e| !e.has_load()),
        }
    }
}
