//! The plan of jobs: who runs in each experiment, and every point they measure, in the
//! order they run.

use super::measure::{Job, Start};
use super::options::Options;
use super::plan::Plan;
use super::rig::Rig;
use crate::experiments::{Axis, Experiment, Facts};
use crate::results::Point;
use crate::roster::{self, Parallel};

/// Who runs in one series of an experiment.
#[derive(Clone, Debug)]
pub(super) struct Who {
    /// A model, a peer or a server of the engineer's own; for wait-cost, the call.
    name: String,
    /// Extra `serve` arguments: a variant's (the reactor's executor in the blocking
    /// experiment), or epoll-mt's loops.
    args: Vec<String>,
    /// The variant's own route, asked instead of the experiment's.
    route: Option<&'static str>,
    /// How it is started: a model of ours, a peer, a server of the engineer's own.
    start: Start,
}

impl Who {
    /// `name` as it comes.
    fn plain(name: &str, start: Start) -> Who {
        Who {
            name: name.into(),
            args: Vec::new(),
            route: None,
            start,
        }
    }

    /// A peer or a server of the engineer's own, not a model of ours.
    fn joins(&self) -> bool {
        !matches!(self.start, Start::Ours { .. })
    }
}

/// The peers asked for that can run here, then the servers of the engineer's own
/// (which join the same experiments); and a note for each peer that cannot.
pub(super) fn peers(options: &Options) -> (Vec<Who>, Vec<String>) {
    let mut notes = Vec::new();
    let mut peers = Vec::new();
    for name in &options.peers {
        let Some(peer) = roster::server(name).and_then(|c| c.peer()) else {
            notes.push(format!("no peer named {name:?}"));
            continue;
        };
        match (peer.missing)() {
            Some(why) => notes.push(why),
            None => peers.push(Who::plain(name, Start::Peer(peer))),
        }
    }
    // Ours join the same experiments as the peers.
    let own = options.servers.iter();
    peers.extend(own.map(|s| Who::plain(&s.name, Start::Custom(s.clone()))));
    (peers, notes)
}

/// Every job, in order: experiment by experiment, and within one, round by round (a
/// repeat of every point), point by point with the models side by side, each round and
/// each point in another order (so that drift and bursts fall on all of them alike).
pub(super) fn plan(options: &Options, peers: &[Who], rig: &Rig) -> Vec<Job> {
    let plan = &rig.plan;
    let mut jobs = Vec::new();
    for experiment in Experiment::all().filter(|e| options.experiments.contains(e)) {
        let facts = experiment.facts();
        let who = who(facts, options, peers, rig.server_cores);
        let repeats = plan.repeats_for(experiment);
        for repeat in 0..repeats {
            for (i, x) in xs(plan, experiment).into_iter().enumerate() {
                let order = rotated(&who, repeat as usize, repeats as usize, i);
                jobs.extend(order.map(|who| job(facts, who, repeat, x, rig)));
            }
        }
    }
    jobs
}

/// `who` in the order of round `round` of `rounds` at the `i`-th x: each round starts
/// a further `len / rounds` along, and each x one further, so that no series is always
/// the first after a server change or the last before the next point.
fn rotated(who: &[Who], round: usize, rounds: usize, i: usize) -> impl Iterator<Item = &Who> {
    let n = who.len().max(1);
    let start = (round * n / rounds.max(1) + i) % n;
    who[start..].iter().chain(&who[..start])
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
fn who(facts: &Facts, options: &Options, peers: &[Who], server_cores: usize) -> Vec<Who> {
    let variants_of = |who: &Who| {
        let found = facts.variants.iter().find(|(c, _)| c.is(&who.name));
        found.map(|(_, variants)| {
            let each = variants.iter().map(|v| Who {
                args: v.args.iter().map(|a| a.to_string()).collect(),
                route: v.route,
                ..who.clone()
            });
            each.collect::<Vec<_>>()
        })
    };
    let mut who = Vec::new();
    if facts.experiment.has_load() {
        for m in &options.models {
            let Some(model) = roster::find(m).model() else {
                continue;
            };
            let ours = Who::plain(m, Start::Ours { serve: model.name });
            if let Some(variants) = variants_of(&ours) {
                who.extend(variants);
            } else if let parallel @ Parallel::Threads { per_cpu: true } = roster::find(m).parallel
            {
                // Said on every point: its default would follow the pinning silently.
                who.push(Who {
                    args: parallel.args(server_cores),
                    ..ours
                });
            } else {
                who.push(ours);
            }
        }
        // The run's A/A pair: a model measured again under another name.
        if facts.noise_floor {
            let twins = roster::twins_of(&options.models);
            who.extend(twins.filter_map(|twin| {
                let serve = twin.serves()?.name;
                Some(Who::plain(twin.name, Start::Ours { serve }))
            }));
        }
    } else {
        who.extend(roster::wait_calls().map(|c| Who::plain(c.name, Start::NoServer)));
    }
    // A peer joins an experiment of `/` as it is, and one that names it in its
    // variants with those.
    for p in peers {
        if let Some(variants) = variants_of(p) {
            who.extend(variants);
        } else if facts.peers {
            who.push(p.clone());
        }
    }
    who
}

/// The job of `who` at `x`, in `repeat`.
fn job(facts: &Facts, who: &Who, repeat: u32, x: usize, rig: &Rig) -> Job {
    let plan = &rig.plan;
    let (idle, active, fds, slow) = match facts.experiment.axis() {
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
    let processes = !who.joins()
        && roster::find(&who.name)
            .serves()
            .is_some_and(|m| m.processes);
    if processes {
        let connections = idle.unwrap_or(0) + active.unwrap_or(0);
        let per_process = rig.server_host.per_process;
        point.workers = Some(workers(connections, rig.server_cores, per_process));
    }
    // A server of the engineer's own may be of many processes: it is run.
    let custom = matches!(who.start, Start::Custom(_));
    let of = plan.repeats_for(facts.experiment);
    let repeats = if of > 1 {
        format!(" · repeat {}/{of}", repeat + 1)
    } else {
        String::new()
    };
    Job {
        label: format!(
            "{} · {} · {x} {}{repeats}",
            facts.name,
            point.series_key(),
            facts.x_name
        ),
        point,
        driver: facts.driver,
        start: who.start.clone(),
        x,
        keep_alive: facts.keep_alive,
        one_process: !processes && !custom,
    }
}

/// `--workers` for a server of worker processes (prefork) holding `connections`: one
/// per CPU it may use, or enough that each holds at most 4/5 of what one process may
/// (the kernel spreads connections over their listeners by a hash, not evenly).
fn workers(connections: usize, server_cpus: usize, per_process: usize) -> usize {
    let needed = (connections * 5).div_ceil(per_process.max(1) * 4);
    needed.max(server_cpus).max(1)
}
