//! `iomodels bench`: every experiment, end to end, into a run folder.
//!
//! Each server is a child process pinned to its own CPU; the load generator runs in
//! this process on the other CPUs. At the edges of the measured window the server's
//! counters are read (SIGUSR1) and /proc is sampled, so every figure covers the
//! window and nothing else. run.json is saved after every point: an interrupted run
//! keeps what it measured.

pub mod child;
pub mod delay_line;
pub mod machine;
pub mod network;
pub mod peers;
pub mod plan;
pub mod procfs;
pub mod quota;
pub mod remote;
pub mod slowloris;
pub mod wait_cost;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use iomodels_loadgen as loadgen;
use iomodels_servers::{self as servers, Snapshot};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::experiments::{Axis, Driver, Experiment, Variant};
use crate::results::{
    CrossCheck, Limit, Point, Run, ServerMetrics, ServerTimeouts, Settings, SCHEMA_VERSION,
};
use child::Server;
use network::Network;
use plan::Plan;
pub use plan::{Overrides, Profile};
use procfs::ProcSample;
use quota::CpuQuota;
use remote::Remote;

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

/// The quota's period: long enough that throttling costs little, short enough that a
/// throttled server's pause (at most period × (1 - share)) stays a few milliseconds.
const QUOTA_PERIOD: Duration = Duration::from_millis(10);

/// One measurement to make.
#[derive(Clone, Debug)]
struct Job {
    experiment: Experiment,
    model: String,
    /// Extra `serve` arguments (the reactor's executor in the blocking experiment).
    args: Vec<String>,
    /// The path every request asks, where the experiment has one, and whether it is
    /// the variant's own (its route instead of the experiment's).
    path: Option<String>,
    own_path: bool,
    peer: bool,
    repeat: u32,
    /// The x of this job in its series: what its experiment's axis counts.
    x: usize,
    /// Busy connections beside the idle ones (the idle experiment).
    busy: usize,
    /// `--workers` for a server of worker processes: enough for this point.
    workers: Option<usize>,
    /// The server serves from one process, whose descriptor limit bounds it (every
    /// model but prefork, and the peers as the suite configures them); false for a
    /// server the suite knows nothing of.
    one_process: bool,
}

impl Job {
    fn point(&self) -> Point {
        let (idle, active, fds, slow) = match self.experiment.facts().axis {
            Axis::Idle => (Some(self.x), Some(self.busy), None, None),
            Axis::Connections => (None, Some(self.x), None, None),
            Axis::Descriptors => (None, None, Some(self.x), None),
            Axis::SlowConnections => (None, None, None, Some(self.x)),
        };
        Point {
            experiment: self.experiment,
            model: self.model.clone(),
            server_args: self.args.clone(),
            workers: self.workers,
            path: self.path.clone(),
            own_path: self.own_path,
            repeat: self.repeat,
            idle,
            active,
            fds,
            slow,
            ..Point::default()
        }
    }

    /// Connections open at once at this point.
    fn connections(&self) -> usize {
        let point = self.point();
        point.idle.unwrap_or(0) + point.active.unwrap_or(0)
    }

    fn describe(&self, repeats: u32) -> String {
        let facts = self.experiment.facts();
        let repeat = if repeats > 1 {
            format!(" · repeat {}/{repeats}", self.repeat + 1)
        } else {
            String::new()
        };
        format!(
            "{} · {} · {} {}{repeat}",
            facts.name,
            self.point().series_name(),
            self.x,
            facts.x_name
        )
    }
}

/// Everything a job needs from the run.
struct Context<'a> {
    options: &'a Options,
    plan: Plan,
    server_cpus: Vec<usize>,
    load_threads: usize,
    /// The cgroup every server runs in, when the run limits their CPU.
    quota: Option<CpuQuota>,
    bar: ProgressBar,
    /// Connections one process may hold ([`Settings::connections_per_process`]).
    per_process: usize,
    /// Where the servers run: the connections one server process may hold there, and
    /// the descriptor limit that sets it.
    server_host: HostLimits,
    /// Where the servers listen and the load comes from.
    network: Network,
    /// The other host our servers run on, when they do not run here.
    remote: Option<Arc<Remote>>,
}

/// What bounds one server process where the servers run.
struct HostLimits {
    /// "here", or "on USER@HOST".
    place: String,
    per_process: usize,
    fd_limit: u64,
}

impl Context<'_> {
    /// A model of ours, here (pinned, under the quota if `quota`) or on the other host.
    fn start_ours(&self, model: &str, args: &[String], quota: bool) -> Result<Server, String> {
        match &self.remote {
            Some(remote) => Server::remote(remote, model, args),
            None => Server::ours(
                &self.options.exe,
                model,
                args,
                &self.server_cpus,
                self.quota.as_ref().filter(|_| quota),
                &self.network,
            ),
        }
    }
}

/// Run the suite; returns the run (also saved as run.json in `options.out`).
pub fn run(options: &Options) -> Result<Run, String> {
    let out = &options.out;
    if out.join("run.json").exists() {
        return Err(format!(
            "{} already holds a run; choose another --out (or `iomodels plot` it)",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    let cpus = machine::usable_cpus();
    let remote = match &options.server_host {
        Some(destination) => Some(Arc::new(Remote::connect(destination.clone())?)),
        None => None,
    };
    let pinning = match &remote {
        Some(remote) => machine::load_only(&cpus, &remote.facts.destination),
        None => machine::pinning(&cpus),
    };
    if !pinning.load_cpus.is_empty() {
        // This thread first: every thread made later (the load generator's) inherits it.
        let mut set = CpuSet::new();
        for &cpu in &pinning.load_cpus {
            set.set(cpu).map_err(|e| e.to_string())?;
        }
        sched_setaffinity(Pid::from_raw(0), &set)
            .map_err(|e| format!("cannot pin the load generator: {e}"))?;
    }
    let fd_limit =
        servers::raise_fd_limit().map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
    // What one process may hold, a server's or a load process's: its descriptors less
    // a reserve for everything else it opens.
    let per_process = servers::default_max_connections(fd_limit);

    let network = if let Some(remote) = &remote {
        let address = remote.facts.address.parse().map_err(|e| {
            format!(
                "{} said it was reached at {:?}, not an address: {e}",
                remote.facts.destination, remote.facts.address
            )
        })?;
        Network::remote(address, &remote.facts.client)
    } else if options.netns {
        Network::netns(options.link_delay)?
    } else if options.link_delay.is_some() {
        return Err(
            "--link-delay is a delay on the link between two namespaces: add --netns".into(),
        );
    } else {
        Network::loopback()
    };
    let plan = options.overrides.apply(options.profile.plan());
    let load_threads = pinning.load_cpus.len().max(1);
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
    let share = options.server_cpu_share.filter(|_| remote.is_none());
    let quota = match share {
        None => None,
        Some(share) => match CpuQuota::new(share, QUOTA_PERIOD) {
            Ok(quota) => Some(quota),
            Err(e) => {
                notes.push(format!(
                    "the servers ran without a CPU quota ({e}): where the load generator \
                     was saturated, its figures are floors"
                ));
                None
            }
        },
    };
    if let Some(remote) = &remote {
        if options.experiments.iter().any(|e| !e.has_load()) {
            notes.push(format!(
                "wait-cost measured this host's kernel (the load generator's), not {}'s",
                remote.facts.destination
            ));
        }
    }
    for note in &notes {
        eprintln!("iomodels: {note}");
    }
    let mut run = Run {
        schema_version: SCHEMA_VERSION,
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        git_commit: machine::git_commit(),
        profile: options.profile.name().into(),
        machine: machine::describe(cpus.len(), pinning.clone()),
        settings: Settings {
            warmup_s: plan.warmup.as_secs_f64(),
            window_s: plan.window.as_secs_f64(),
            repeats: plan.repeats,
            busy_connections: plan.busy,
            load_threads,
            server_cpu_quota: quota.as_ref().map(|q| q.setting.clone()),
            server_timeouts: Some(ServerTimeouts::suite()),
            connections_per_process: Some(per_process),
            network: (options.netns || remote.is_some()).then(|| network.setting.clone()),
            servers: options
                .servers
                .iter()
                .map(|s| (s.name.clone(), s.command.clone()))
                .collect(),
            server_host: remote.as_ref().map(|r| r.facts.clone()),
        },
        notes,
        crosscheck: None,
        points: Vec::new(),
    };

    // epoll-mt gets a loop per CPU it may run on (one where the server is pinned to one).
    let server_cpus = match (&remote, pinning.server_cpus.len()) {
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
    let jobs = jobs(&plan, options, &peers, server_cpus, server_host.per_process);
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{pos}/{len} [{elapsed_precise}] {msg}")
            .expect("valid template"),
    );
    let ctx = Context {
        options,
        plan,
        server_cpus: pinning.server_cpus.clone(),
        load_threads,
        quota,
        bar,
        per_process,
        server_host,
        network,
        remote,
    };

    // Past a model's limit in a series, larger points are recorded, not run.
    let mut limited: HashMap<(Experiment, String, u32), (usize, Limit)> = HashMap::new();
    for job in &jobs {
        ctx.bar.set_message(job.describe(ctx.plan.repeats));
        let key = (job.experiment, job.point().series_name(), job.repeat);
        let point = match limited.get(&key) {
            Some((x, limit)) if job.x > *x => Point {
                limit: Some(limit.not_run_past(*x)),
                ..job.point()
            },
            _ => measure(&ctx, job),
        };
        if let Some(limit) = &point.limit {
            limited.entry(key).or_insert((job.x, limit.clone()));
        }
        log(&ctx.bar, &job.describe(ctx.plan.repeats), &point);
        run.points.push(point);
        run.save(out)?;
        ctx.bar.inc(1);
    }
    ctx.bar.finish_and_clear();

    if options.experiments.iter().any(|e| e.has_load()) {
        match peers::missing("wrk") {
            Some(why) => run.notes.push(why),
            None => match crosscheck(&ctx) {
                Ok(c) => run.crosscheck = Some(c),
                Err(e) => run.notes.push(format!("the wrk cross-check failed: {e}")),
            },
        }
    }
    run.save(out)?;
    Ok(run)
}

/// Every job, in order: experiment by experiment, and within one, repeat by repeat and
/// point by point with the models side by side (so drift hits them all alike).
fn jobs(
    plan: &Plan,
    options: &Options,
    peers: &[String],
    server_cpus: usize,
    per_process: usize,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for experiment in Experiment::all().filter(|e| options.experiments.contains(e)) {
        let facts = experiment.facts();
        // (who, server arguments, its own route, a peer?)
        let mut who: Vec<(String, Vec<String>, Option<&'static str>, bool)> = Vec::new();
        let variants_of = |name: &str| {
            let found = facts.variants.iter().find(|(n, _)| *n == name);
            found.map(|(_, variants)| {
                let to_owned = |v: &Variant| {
                    let args = v.args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
                    (name.to_string(), args, v.route)
                };
                variants.iter().map(to_owned).collect::<Vec<_>>()
            })
        };
        if experiment.has_load() {
            for m in &options.models {
                if let Some(variants) = variants_of(m) {
                    who.extend(
                        variants
                            .into_iter()
                            .map(|(m, args, route)| (m, args, route, false)),
                    );
                } else if m == "epoll-mt" {
                    // Said on every point: its default would follow the pinning silently.
                    let args = vec!["--threads".to_string(), server_cpus.to_string()];
                    who.push((m.clone(), args, None, false));
                } else {
                    who.push((m.clone(), Vec::new(), None, false));
                }
            }
        } else {
            let calls = wait_cost::CALLS.iter();
            who.extend(calls.map(|c| (c.to_string(), Vec::new(), None, false)));
        }
        // A peer joins an experiment of `/` as it is, and one that names it in its
        // variants with those.
        for p in peers {
            if let Some(variants) = variants_of(p) {
                who.extend(
                    variants
                        .into_iter()
                        .map(|(p, args, route)| (p, args, route, true)),
                );
            } else if facts.peers {
                who.push((p.clone(), Vec::new(), None, true));
            }
        }
        for repeat in 0..plan.repeats {
            for x in plan.xs(experiment) {
                for (model, args, route, peer) in &who {
                    let path = route.or(facts.route);
                    let processes = !peer && servers::model(model).is_some_and(|m| m.processes);
                    // A server of the engineer's own may be of many processes: it is run.
                    let custom = options.servers.iter().any(|s| &s.name == model);
                    let mut job = Job {
                        experiment,
                        model: model.clone(),
                        args: args.clone(),
                        path: path.map(|r| format!("{r}{}", plan.blocking.1)),
                        own_path: route.is_some(),
                        peer: *peer,
                        repeat,
                        x,
                        busy: plan.busy,
                        workers: None,
                        one_process: !processes && !custom,
                    };
                    if processes {
                        job.workers = Some(workers(job.connections(), server_cpus, per_process));
                    }
                    jobs.push(job);
                }
            }
        }
    }
    jobs
}

/// `--workers` for a server of worker processes (prefork) holding `connections`: one
/// per CPU it may use, or enough that each holds at most 4/5 of what one process may
/// (the kernel spreads connections over their listeners by a hash, not evenly).
fn workers(connections: usize, server_cpus: usize, per_process: usize) -> usize {
    let needed = (connections * 5).div_ceil(per_process.max(1) * 4);
    needed.max(server_cpus).max(1)
}

fn measure(ctx: &Context, job: &Job) -> Point {
    let mut point = job.point();
    let facts = job.experiment.facts();
    let host = &ctx.server_host;
    if job.one_process && job.connections() > host.per_process {
        point.limit = Some(Limit::new(format!(
            "{} connections need as many descriptors, but one process may hold {} {} \
             (RLIMIT_NOFILE {}, whose hard limit only CAP_SYS_RESOURCE raises), and {} \
             serves from one process: not run",
            job.connections(),
            host.per_process,
            host.place,
            host.fd_limit,
            job.model
        )));
        return point;
    }
    if !job.experiment.has_load() {
        match wait_cost::measure(&job.model, job.x, ctx.plan.wait_budget) {
            Ok(m) => {
                point.ns_per_wait = Some(m.ns_per_wait);
                point.waits = Some(m.waits);
            }
            Err(e) => point.limit = Some(Limit::new(e)),
        }
        return point;
    }
    let custom = ctx.options.servers.iter().find(|s| s.name == job.model);
    let started = if let Some(custom) = custom {
        custom.start(&ctx.server_cpus, ctx.quota.as_ref(), &ctx.network)
    } else if job.peer {
        peers::start(
            &job.model,
            &ctx.options.out,
            &ctx.server_cpus,
            ctx.quota.as_ref(),
            &ctx.network,
        )
    } else {
        let mut args = job.args.clone();
        if facts.driver == Driver::SlowClients {
            // The timeout is the lesson here (recorded with what it found).
            let timeouts = ServerTimeouts {
                header: slowloris::HEADER_TIMEOUT.into(),
                idle: "off".into(),
            };
            args.extend(timeouts.args());
        } else {
            args.extend(ServerTimeouts::suite().args());
        }
        if let Some(workers) = job.workers {
            args.extend(["--workers".into(), workers.to_string()]);
        }
        ctx.start_ours(&job.model, &args, true)
    };
    let mut server = match started {
        Ok(s) => s,
        Err(e) => {
            point.limit = Some(Limit::new(format!("could not start: {e}")));
            return point;
        }
    };

    if facts.driver == Driver::SlowClients {
        let probed = ctx
            .network
            .as_client(|| slowloris::probe(server.addr, job.x));
        match probed.and_then(|found| found) {
            Ok(found) => point.slowloris = Some(found),
            Err(e) => point.limit = Some(server.limit(e)),
        }
        if let Err(e) = server.check_alive().and_then(|()| server.stop()) {
            point.limit.get_or_insert(Limit::new(e));
        }
        return point;
    }

    let mut config = loadgen::Config::new(server.addr);
    config.connections = point.active.unwrap_or(1).max(1);
    config.idle = point.idle.unwrap_or(0);
    config.warmup = ctx.plan.warmup;
    config.duration = ctx.plan.window;
    config.threads = ctx.load_threads;
    config.keep_alive = facts.keep_alive;
    if let Some(path) = &point.path {
        config.path = path.clone();
    }
    let total = config.connections + config.idle;
    let ports = loadgen::limits::ephemeral_ports();
    let range = usize::from(ports.1 - ports.0) + 1;
    if total * 4 > range {
        // connect(2) looks for a free port of its source address, and the more of them
        // are taken (by our connections, and by the TIME_WAITs of the points before),
        // the longer it looks: at 100,000 connections over 8 addresses the ramp spent
        // most of its CPU there. So each address holds a tenth of its ports at most.
        let addrs = total.div_ceil(range / 10).max(8);
        let pool = &ctx.network.client_ips;
        config.source_addrs = pool[..addrs.min(pool.len())].to_vec();
    }

    // Past what one process may hold, the load is split over several (each its own
    // descriptor table), as the server's is over its workers.
    config.processes = job.connections().div_ceil(ctx.per_process).max(1);
    config.threads = ctx.load_threads.div_ceil(config.processes);

    let sampler = Sampler {
        bar: &ctx.bar,
        job: job.describe(ctx.plan.repeats),
        server: &server,
        edges: Mutex::new([None, None]),
        quota: ctx.quota.as_ref(),
    };
    // From where the clients are: this host's loopback, or the client's namespace.
    let result = ctx.network.as_client(|| {
        if config.processes > 1 {
            let launcher = loadgen::processes::Launcher {
                program: ctx.options.exe.clone(),
                args: vec!["load-worker".into()],
            };
            loadgen::processes::run(&config, &launcher, &sampler)
        } else {
            loadgen::run(&config, &sampler)
        }
    });
    let result = result.and_then(|r| r);
    if let Some(quota) = &ctx.quota {
        // Whole CPUs again, for the server's stop and the next server's ramp.
        let _ = quota.lift();
    }
    let edges = sampler.edges.into_inner().unwrap();
    let alive = server.check_alive();

    match result {
        Err(e) => point.limit = Some(server.limit(e)),
        Ok(report) => {
            if let [Some((s0, p0)), Some((s1, p1))] = &edges {
                point.server = Some(metrics(s0.as_ref(), p0, s1.as_ref(), p1));
            }
            point.limit = held_everything(&report, point.server.as_ref(), &server);
            point.load = Some(report);
        }
    }
    if let Err(e) = alive {
        point.limit = Some(Limit::new(e));
    } else if let Err(e) = server.stop() {
        point.limit.get_or_insert(Limit::new(e));
    }
    point
}

/// None when the server held and answered every connection asked of it; otherwise
/// the limit it met, with its own words where it gave any.
fn held_everything(
    report: &loadgen::Report,
    server: Option<&ServerMetrics>,
    process: &Server,
) -> Option<Limit> {
    let refused = server
        .and_then(|s| s.counters.as_ref())
        .map_or(0, |c| c.refused);
    let unavailable = report.non_2xx.get("5xx").copied().unwrap_or(0);
    let idle = &report.idle;
    let why = if idle.verified < idle.requested || idle.closed_by_server > 0 {
        format!(
            "held {} of {} idle connections ({} closed by the server)",
            idle.verified.saturating_sub(idle.closed_by_server),
            idle.requested,
            idle.closed_by_server
        )
    } else if refused > 0 || unavailable > 0 {
        format!("refused {refused} connections and answered {unavailable} requests with 5xx")
    } else if report.answered_in_window == 0 {
        format!(
            "answered nothing in the window ({} requests still in flight at its end, {} \
             failed, {} answered with another status)",
            report.in_flight_at_end,
            report.failed,
            report.non_2xx.values().sum::<u64>()
        )
    } else {
        return None;
    };
    Some(process.limit(why))
}

/// The server over the window: CPU between the edges, memory and threads at the end,
/// its counters' increase.
fn metrics(
    s0: Option<&Snapshot>,
    p0: &ProcSample,
    s1: Option<&Snapshot>,
    p1: &ProcSample,
) -> ServerMetrics {
    let counters = match (s0, s1) {
        (Some(before), Some(after)) => Some(after.since(before)),
        _ => None,
    };
    ServerMetrics {
        cpu_user_s: p1.user_s - p0.user_s,
        cpu_sys_s: p1.sys_s - p0.sys_s,
        rss_kb: p1.rss_kb,
        rss_peak_kb: p1.rss_peak_kb,
        threads: p1.threads,
        counters,
    }
}

/// The server at one edge of the window: its counters (ours only) and /proc.
type Edge = (Option<Snapshot>, ProcSample);

/// The load generator's progress, shown on the bar; at the window's edges the server
/// is sampled.
struct Sampler<'a> {
    bar: &'a ProgressBar,
    job: String,
    server: &'a Server,
    edges: Mutex<[Option<Edge>; 2]>,
    /// Limits the server from the end of the ramp.
    quota: Option<&'a CpuQuota>,
}

impl Sampler<'_> {
    fn sample(&self, edge: usize) {
        let snapshot = self.server.snapshot();
        if let Some(proc) = self.server.proc_sample() {
            self.edges.lock().unwrap()[edge] = Some((snapshot, proc));
        }
    }
}

impl loadgen::Progress for Sampler<'_> {
    fn ramp(&self, established: u64, failed: u64, total: u64) {
        self.bar.set_message(format!(
            "{} · connecting {established}/{total}{}",
            self.job,
            if failed > 0 {
                format!(" ({failed} failed)")
            } else {
                String::new()
            }
        ));
    }

    fn running(&self, elapsed: Duration, completed: u64, errors: u64) {
        self.bar.set_message(format!(
            "{} · {:.1}s · {completed} answered, {errors} errors",
            self.job,
            elapsed.as_secs_f64()
        ));
    }

    fn started(&self) {
        if let Some(quota) = self.quota {
            if let Err(e) = quota.limit() {
                self.bar
                    .println(format!("iomodels: the CPU quota failed: {e}"));
            }
        }
    }

    fn window_opened(&self) {
        self.sample(0);
    }

    fn window_closed(&self) {
        self.sample(1);
    }

    fn done(&self) {}
}

/// One line per point, above the bar (or on stderr when there is no terminal).
fn log(bar: &ProgressBar, what: &str, p: &Point) {
    let result = if let Some(limit) = &p.limit {
        format!("LIMIT: {limit}")
    } else if let Some(ns) = p.ns_per_wait {
        format!("{ns:.0} ns per wait")
    } else if let Some(s) = &p.slowloris {
        format!(
            "{} of {} slow connections gone within 4 s ({} answered 408, {} turned away); \
             {} of {} fresh clients served",
            s.evicted + s.answered_503,
            s.opened,
            s.answered_408,
            s.answered_503,
            s.fresh_served,
            s.fresh
        )
    } else if let Some(l) = &p.load {
        format!(
            "{:.0} req/s, p99 {:.2} ms{}{}",
            l.throughput_rps,
            l.latency_us.p99 as f64 / 1000.0,
            match p.errors() {
                0 => String::new(),
                n => format!(", {n} errors"),
            },
            if l.loadgen_saturated {
                " (load generator saturated)"
            } else {
                ""
            }
        )
    } else {
        "nothing measured".into()
    };
    let line = format!("{what}: {result}");
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Our load generator, then wrk, on the same point: 50 connections to epoll-et.
fn crosscheck(ctx: &Context) -> Result<CrossCheck, String> {
    const MODEL: &str = "epoll-et";
    const CONNECTIONS: usize = 50;
    let secs = ctx.plan.window.as_secs().max(2);
    // No quota here: this compares the two load generators, each at its fastest.
    let server = ctx.start_ours(MODEL, &[], false)?;
    let mut config = loadgen::Config::new(server.addr);
    config.connections = CONNECTIONS;
    config.threads = ctx.load_threads;
    config.warmup = ctx.plan.warmup;
    config.duration = Duration::from_secs(secs);
    let ours = ctx
        .network
        .as_client(|| loadgen::run(&config, &loadgen::Quiet))??
        .throughput_rps;
    let wrk = ctx
        .network
        .as_client(|| peers::wrk(server.addr, CONNECTIONS, secs))??;
    server.stop()?;
    let line = format!("cross-check, {MODEL} with {CONNECTIONS} connections: ours {ours:.0} req/s, wrk {wrk:.0} req/s");
    if ctx.bar.is_hidden() {
        eprintln!("{line}");
    }
    Ok(CrossCheck {
        model: MODEL.into(),
        connections: CONNECTIONS,
        ours_rps: ours,
        wrk_rps: wrk,
        ratio: ours / wrk.max(1e-9),
    })
}

/// Default run folder: results/runs/<UTC time>.
pub fn default_out() -> PathBuf {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Path::new("results/runs").join(now.replace(':', "-"))
}
