//! The plan of jobs: who runs in each experiment, and every point they measure, in the
//! order they run.

use iomodels_servers as servers;

use super::measure::{Job, Start};
use super::options::Options;
use super::plan::Plan;
use super::rig::Rig;
use super::{peers, wait_cost};
use crate::experiments::{Axis, Experiment, Facts};
use crate::results::Point;

/// Who runs in one series of an experiment.
#[derive(Clone, Debug)]
struct Who {
    /// A model, a peer or a server of the engineer's own; for wait-cost, the call.
    name: String,
    /// Extra `serve` arguments: a variant's (the reactor's executor in the blocking
    /// experiment), or epoll-mt's loops.
    args: Vec<String>,
    /// The variant's own route, asked instead of the experiment's.
    route: Option<&'static str>,
    /// A peer or a server of the engineer's own, not a model of ours.
    peer: bool,
}

impl Who {
    /// `name` as it comes.
    fn plain(name: &str, peer: bool) -> Who {
        Who {
            name: name.into(),
            args: Vec::new(),
            route: None,
            peer,
        }
    }
}

/// The peers asked for that can run here, then the servers of the engineer's own
/// (which join the same experiments); and a note for each peer that cannot.
pub(super) fn peers(options: &Options) -> (Vec<String>, Vec<String>) {
    let mut notes = Vec::new();
    let mut peers = Vec::new();
    for peer in &options.peers {
        match peers::missing(peer) {
            Some(why) => notes.push(why),
            None => peers.push(peer.clone()),
        }
    }
    // Ours join the same experiments as the peers.
    peers.extend(options.servers.iter().map(|s| s.name.clone()));
    (peers, notes)
}

/// Every job, in order: experiment by experiment, and within one, repeat by repeat and
/// point by point with the models side by side (so drift hits them all alike).
pub(super) fn plan(options: &Options, peers: &[String], rig: &Rig) -> Vec<Job> {
    let plan = &rig.plan;
    let mut jobs = Vec::new();
    for experiment in Experiment::all().filter(|e| options.experiments.contains(e)) {
        let facts = experiment.facts();
        let who = who(facts, options, peers, rig.server_cores);
        for repeat in 0..plan.repeats {
            for x in xs(plan, experiment) {
                jobs.extend(
                    who.iter()
                        .map(|who| job(facts, who, repeat, x, options, rig)),
                );
            }
        }
    }
    jobs
}

/// The xs an experiment measures in this plan.
fn xs(plan: &Plan, experiment: Experiment) -> Vec<usize> {
    match experiment {
        Experiment::Idle => plan.idle.clone(),
        Experiment::Active => plan.active.clone(),
        Experiment::Churn => plan.churn.clone(),
        Experiment::Blocking => vec![plan.blocking.0],
        Experiment::WaitCost => plan.wait_fds.clone(),
        Experiment::Slowloris => plan.slowloris.clone(),
    }
}

/// Who runs in an experiment, a series each: the models asked for (or the wait calls),
/// then the peers; each named in the experiment's variants once per variant.
fn who(facts: &Facts, options: &Options, peers: &[String], server_cores: usize) -> Vec<Who> {
    let variants_of = |name: &str, peer: bool| {
        let found = facts.variants.iter().find(|(n, _)| *n == name);
        found.map(|(_, variants)| {
            let each = variants.iter().map(|v| Who {
                name: name.to_string(),
                args: v.args.iter().map(|a| a.to_string()).collect(),
                route: v.route,
                peer,
            });
            each.collect::<Vec<_>>()
        })
    };
    let mut who = Vec::new();
    if facts.experiment.has_load() {
        for m in &options.models {
            if let Some(variants) = variants_of(m, false) {
                who.extend(variants);
            } else if m == "epoll-mt" {
                // Said on every point: its default would follow the pinning silently.
                let args = vec!["--threads".to_string(), server_cores.to_string()];
                who.push(Who {
                    args,
                    ..Who::plain(m, false)
                });
            } else {
                who.push(Who::plain(m, false));
            }
        }
    } else {
        who.extend(wait_cost::CALLS.iter().map(|c| Who::plain(c, false)));
    }
    // A peer joins an experiment of `/` as it is, and one that names it in its
    // variants with those.
    for p in peers {
        if let Some(variants) = variants_of(p, true) {
            who.extend(variants);
        } else if facts.peers {
            who.push(Who::plain(p, true));
        }
    }
    who
}

/// The job of `who` at `x`, in `repeat`.
fn job(facts: &Facts, who: &Who, repeat: u32, x: usize, options: &Options, rig: &Rig) -> Job {
    let plan = &rig.plan;
    let (idle, active, fds, slow) = match facts.axis {
        Axis::Idle => (Some(x), Some(plan.busy), None, None),
        Axis::Connections => (None, Some(x), None, None),
        Axis::Descriptors => (None, None, Some(x), None),
        Axis::SlowConnections => (None, None, None, Some(x)),
    };
    let path = who.route.or(facts.route);
    let mut point = Point {
        experiment: facts.experiment,
        model: who.name.clone(),
        server_args: who.args.clone(),
        path: path.map(|r| format!("{r}{}", plan.blocking.1)),
        own_path: who.route.is_some(),
        repeat,
        idle,
        active,
        fds,
        slow,
        ..Point::default()
    };
    let processes = !who.peer && servers::model(&who.name).is_some_and(|m| m.processes);
    if processes {
        let connections = idle.unwrap_or(0) + active.unwrap_or(0);
        let per_process = rig.server_host.per_process;
        point.workers = Some(workers(connections, rig.server_cores, per_process));
    }
    // A server of the engineer's own may be of many processes: it is run.
    let custom = options.servers.iter().find(|s| s.name == who.name);
    let repeats = if plan.repeats > 1 {
        format!(" · repeat {}/{}", repeat + 1, plan.repeats)
    } else {
        String::new()
    };
    Job {
        label: format!(
            "{} · {} · {x} {}{repeats}",
            facts.name,
            point.series_name(),
            facts.x_name
        ),
        point,
        driver: facts.driver,
        start: match custom {
            Some(custom) => Start::Custom(custom.clone()),
            None if who.peer => Start::Peer,
            None => Start::Ours,
        },
        x,
        keep_alive: facts.keep_alive,
        one_process: !processes && custom.is_none(),
    }
}

/// `--workers` for a server of worker processes (prefork) holding `connections`: one
/// per CPU it may use, or enough that each holds at most 4/5 of what one process may
/// (the kernel spreads connections over their listeners by a hash, not evenly).
fn workers(connections: usize, server_cpus: usize, per_process: usize) -> usize {
    let needed = (connections * 5).div_ceil(per_process.max(1) * 4);
    needed.max(server_cpus).max(1)
}
