//! The rig: what a run sets up once, before its first point, and tears down after its
//! last: the CPUs the load generator and the servers are pinned to, the descriptor
//! limit, the network between them, the servers' CPU quota, and the other host when
//! the servers run there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use iomodels_servers as servers;

use super::child::Server;
use super::machine;
use super::network::Network;
use super::plan::Plan;
use super::quota::CpuQuota;
use super::remote::{Destination, Remote};
use crate::results::Pinning;

/// The quota's period: long enough that throttling costs little, short enough that a
/// throttled server's pause (at most period × (1 - share)) stays a few milliseconds.
const QUOTA_PERIOD: Duration = Duration::from_millis(10);

/// What a run asks of its rig ([`super::Options::rig`]).
pub(super) struct Wanted<'a> {
    pub(super) exe: &'a Path,
    pub(super) out: &'a Path,
    pub(super) plan: Plan,
    pub(super) server_host: Option<&'a Destination>,
    pub(super) netns: bool,
    pub(super) link_delay: Option<Duration>,
    pub(super) server_cpu_share: Option<f64>,
    /// The run times wait calls, which run here whatever the server host.
    pub(super) wait_cost: bool,
}

/// Everything a job needs from the run. Dropped at its end: the quota's cgroup, the
/// namespaces and the session to the other host go with it, in that order.
pub struct Rig {
    /// The `iomodels` binary: our servers, and load processes past one.
    pub(super) exe: PathBuf,
    /// The run folder (a peer's config and logs go there too).
    pub(super) out: PathBuf,
    pub(super) plan: Plan,
    /// This host's usable CPUs, and which of them the load generator and the servers
    /// are pinned to.
    pub(super) cpus: usize,
    pub(super) pinning: Pinning,
    /// The CPUs a server may run on: epoll-mt gets a loop per CPU, prefork at least a
    /// worker each (one where the server is pinned to one).
    pub(super) server_cores: usize,
    pub(super) load_threads: usize,
    /// Connections one process may hold here ([`Settings::connections_per_process`]).
    ///
    /// [`Settings::connections_per_process`]: crate::results::Settings
    pub(super) per_process: usize,
    /// Where the servers run: the connections one server process may hold there, and
    /// the descriptor limit that sets it.
    pub(super) server_host: HostLimits,
    /// The cgroup every server runs in, when the run limits their CPU.
    pub(super) quota: Option<CpuQuota>,
    /// The pace of the server's CPU over the run (`pace.rs`), where the server is
    /// pinned here.
    pub(super) pace: Option<super::pace::Pace>,
    /// Where the servers listen and the load comes from.
    pub(super) network: Network,
    /// The other host our servers run on, when they do not run here.
    pub(super) remote: Option<Arc<Remote>>,
}

/// What bounds one server process where the servers run.
pub(super) struct HostLimits {
    /// "here", or "on USER@HOST".
    pub(super) place: String,
    pub(super) per_process: usize,
    pub(super) fd_limit: u64,
}

impl Rig {
    /// Set the rig up; with it, a note for each thing it could not do as asked.
    pub(super) fn set_up(wanted: Wanted) -> Result<(Rig, Vec<String>), String> {
        let cpus = machine::usable_cpus();
        let remote = match wanted.server_host {
            Some(destination) => Some(Arc::new(Remote::connect(destination.clone())?)),
            None => None,
        };
        let pinning = match &remote {
            Some(remote) => machine::load_only(&cpus, &remote.facts.destination),
            None => machine::pinning(&cpus),
        };
        machine::pin_this_thread(&pinning.load_cpus)
            .map_err(|e| format!("cannot pin the load generator: {e}"))?;
        let fd_limit = servers::raise_fd_limit()
            .map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
        // What one process may hold, a server's or a load process's: its descriptors less
        // a reserve for everything else it opens.
        let per_process = servers::default_max_connections(fd_limit);
        let network = network(remote.as_deref(), wanted.netns, wanted.link_delay)?;

        let mut notes = Vec::new();
        let share = wanted.server_cpu_share.filter(|_| remote.is_none());
        let quota = share.and_then(|share| match CpuQuota::new(share, QUOTA_PERIOD) {
            Ok(quota) => Some(quota),
            Err(e) if share < 1.0 => {
                notes.push(format!(
                    "the servers ran without a CPU quota ({e}): where the load generator \
                     was saturated, its figures are floors"
                ));
                None
            }
            Err(e) => {
                notes.push(format!(
                    "the servers' CPU time was read from /proc in clock ticks, not counted \
                     by a cgroup in nanoseconds ({e})"
                ));
                None
            }
        });
        if let Some(remote) = remote.as_ref().filter(|_| wanted.wait_cost) {
            notes.push(format!(
                "wait-cost measured this host's kernel (the load generator's), not {}'s",
                remote.facts.destination
            ));
        }

        let server_cores = match (&remote, pinning.server_cpus.len()) {
            (Some(remote), _) => remote.facts.cores.max(1),
            (None, 0) => cpus.len(),
            (None, n) => n,
        };
        let server_host = match &remote {
            Some(remote) => HostLimits {
                place: format!("on {}", remote.facts.destination),
                per_process: servers::default_max_connections(remote.facts.fd_limit),
                fd_limit: remote.facts.fd_limit,
            },
            None => HostLimits {
                place: "here".into(),
                per_process,
                fd_limit,
            },
        };
        let pace = match (&remote, pinning.server_cpus.first()) {
            (None, Some(&cpu)) => Some(super::pace::Pace::on(cpu)),
            _ => None,
        };
        let rig = Rig {
            pace,
            exe: wanted.exe.to_path_buf(),
            out: wanted.out.to_path_buf(),
            plan: wanted.plan,
            cpus: cpus.len(),
            load_threads: pinning.load_cpus.len().max(1),
            pinning,
            server_cores,
            per_process,
            server_host,
            quota,
            network,
            remote,
        };
        Ok((rig, notes))
    }

    /// A model of ours, here (pinned, under the quota if `quota`) or on the other host.
    pub(super) fn start_ours(
        &self,
        model: &str,
        args: &[String],
        quota: bool,
    ) -> Result<Server, String> {
        match &self.remote {
            Some(remote) => Server::remote(remote, model, args),
            None => Server::ours(
                &self.exe,
                model,
                args,
                &self.pinning.server_cpus,
                self.quota.as_ref().filter(|_| quota),
                &self.network,
            ),
        }
    }
}

/// Where the servers listen and the load comes from: the other host, two namespaces,
/// or this host's loopback.
fn network(
    remote: Option<&Remote>,
    netns: bool,
    link_delay: Option<Duration>,
) -> Result<Network, String> {
    if let Some(remote) = remote {
        let address = remote.facts.address.parse().map_err(|e| {
            format!(
                "{} said it was reached at {:?}, not an address: {e}",
                remote.facts.destination, remote.facts.address
            )
        })?;
        Ok(Network::remote(address, &remote.facts.client))
    } else if netns {
        Network::netns(link_delay)
    } else if link_delay.is_some() {
        Err("--link-delay is a delay on the link between two namespaces: add --netns".into())
    } else {
        Ok(Network::loopback())
    }
}
