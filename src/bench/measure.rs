//! One point: the job that asks for it, and the drivers that measure it.
//!
//! At the edges of the measured window the server's counters are read (SIGUSR1) and
//! /proc is sampled, so every figure covers the window and nothing else.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use iomodels_loadgen as loadgen;
use iomodels_servers::Snapshot;

use super::child::Server;
use super::cpustat::{self, CpuTimes};
use super::log::Log;
use super::procfs::ProcSample;
use super::quota::CpuQuota;
use super::rig::Rig;
use super::{peers, slowloris, wait_cost};
use crate::results::{CrossCheck, Interference, Limit, Point, ServerMetrics, ServerTimeouts};
use crate::roster;

/// How an experiment measures one of its points: the function its row in the table of
/// experiments names (`experiments.rs`): [`load_generator`], [`wait_calls`] or
/// [`slow_clients`].
pub type Driver = fn(&Rig, &Job, &Log) -> Point;

/// One measurement to make (planned in `jobs.rs`).
#[derive(Clone, Debug)]
pub struct Job {
    /// The point as planned (experiment, who, x, repeat): what measuring fills in.
    pub(super) point: Point,
    /// How its experiment measures a point (its row's driver).
    pub(super) driver: Driver,
    /// How its server is started.
    pub(super) start: Start,
    /// The x of this job in its series: what its experiment's axis counts.
    pub(super) x: usize,
    /// Keep-alive connections (false: a new connection per request).
    pub(super) keep_alive: bool,
    /// The server serves from one process, whose descriptor limit bounds it (every
    /// model but prefork, and the peers as the suite configures them); false for a
    /// server the suite knows nothing of.
    pub(super) one_process: bool,
    /// What the progress bar and the log call it.
    pub(super) label: String,
}

/// How a job's server is started.
#[derive(Clone, Debug)]
pub(super) enum Start {
    /// A model of ours (`serve`: which, for an A/A twin the model it twins), with the
    /// timeouts its driver gives it.
    Ours { serve: &'static str },
    /// A peer (nginx, Tornado), configured by `peers.rs`.
    Peer(&'static peers::Peer),
    /// A server of the engineer's own (`--server NAME=COMMAND`).
    Custom(peers::Custom),
    /// No server at all: a wait call, timed on its own.
    NoServer,
}

impl Job {
    /// Connections open at once at this point.
    pub(super) fn connections(&self) -> usize {
        self.point.idle.unwrap_or(0) + self.point.active.unwrap_or(0)
    }
}

/// Measure one point, unless one process cannot hold it where the servers run.
pub(super) fn measure(rig: &Rig, job: &Job, log: &Log) -> Point {
    let host = &rig.server_host;
    if job.one_process && job.connections() > host.per_process {
        let why = format!(
            "{} connections need as many descriptors, but one process may hold {} {} \
             (RLIMIT_NOFILE {}, whose hard limit only CAP_SYS_RESOURCE raises), and {} \
             serves from one process: not run",
            job.connections(),
            host.per_process,
            host.place,
            host.fd_limit,
            job.point.model
        );
        return Point {
            limit: Some(Limit::new(why)),
            ..job.point.clone()
        };
    }
    (job.driver)(rig, job, log)
}

/// No server: the wait call itself, timed over `x` descriptors (`wait_cost.rs`).
pub fn wait_calls(rig: &Rig, job: &Job, _: &Log) -> Point {
    let mut point = job.point.clone();
    let call = roster::wait_call(&point.model)
        .ok_or_else(|| format!("no wait call named {}", point.model));
    match call.and_then(|call| wait_cost::measure(call, job.x, rig.plan.wait_budget)) {
        Ok(m) => {
            point.ns_per_wait = Some(m.ns_per_wait);
            point.waits = Some(m.waits);
        }
        Err(e) => point.limit = Some(Limit::new(e)),
    }
    point
}

/// `x` slow clients trickling headers beside a few fresh ones (`slowloris.rs`).
pub fn slow_clients(rig: &Rig, job: &Job, _: &Log) -> Point {
    let mut point = job.point.clone();
    // The timeout is the lesson here (recorded with what it found).
    let timeouts = ServerTimeouts {
        header: slowloris::HEADER_TIMEOUT.into(),
        idle: "off".into(),
    };
    let mut server = match start(rig, job, timeouts) {
        Ok(server) => server,
        Err(limit) => {
            point.limit = Some(limit);
            return point;
        }
    };
    let probed = rig
        .network
        .as_client(|| slowloris::probe(server.addr, job.x));
    match probed.and_then(|found| found) {
        Ok(found) => point.slowloris = Some(found),
        Err(e) => point.limit = Some(server.limit(e)),
    }
    if let Err(e) = server.check_alive().and_then(|()| server.stop()) {
        point.limit.get_or_insert(Limit::new(e));
    }
    point
}

/// Our load generator: busy and idle connections, throughput measured over the window,
/// the server sampled at its edges.
pub fn load_generator(rig: &Rig, job: &Job, log: &Log) -> Point {
    let mut point = job.point.clone();
    let mut server = match start(rig, job, ServerTimeouts::suite()) {
        Ok(server) => server,
        Err(limit) => {
            point.limit = Some(limit);
            return point;
        }
    };
    let config = load(rig, job, &server);
    // How fast the server's CPU runs meanwhile, beside it.
    let pacer = rig.pace.as_ref().map(|pace| (pace, pace.start()));
    let sampler = Sampler {
        bar: &log.bar,
        job: job.label.clone(),
        server: &server,
        edges: Mutex::new([None, None]),
        quota: rig.quota.as_ref(),
        account: rig.quota.as_ref(),
    };
    // From where the clients are: this host's loopback, or the client's namespace.
    let result = rig.network.as_client(|| {
        if config.processes > 1 {
            let launcher = loadgen::processes::Launcher {
                program: rig.exe.clone(),
                args: vec!["load-worker".into()],
            };
            loadgen::processes::run(&config, &launcher, &sampler)
        } else {
            loadgen::run(&config, &sampler)
        }
    });
    let result = result.and_then(|r| r);
    if let Some(quota) = &rig.quota {
        // Whole CPUs again, for the server's stop and the next server's ramp.
        let _ = quota.lift();
    }
    let edges = sampler.edges.into_inner().unwrap();
    let alive = server.check_alive();

    match result {
        Err(e) => point.limit = Some(server.limit(e)),
        Ok(report) => {
            if let [Some(e0), Some(e1)] = &edges {
                let server = metrics(e0, e1);
                point.interference = interference(rig, e0, e1, &server).map(|i| Interference {
                    server_slowdown: pacer
                        .as_ref()
                        .and_then(|(pace, p)| pace.slowdown(p, e0.at, e1.at)),
                    ..i
                });
                point.server = Some(server);
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

/// The job's server, started: ours with `timeouts`, a peer or one's own as it comes.
fn start(rig: &Rig, job: &Job, timeouts: ServerTimeouts) -> Result<Server, Limit> {
    let cpus = &rig.pinning.server_cpus;
    let started = match &job.start {
        Start::Custom(custom) => custom.start(cpus, rig.quota.as_ref(), &rig.network),
        Start::Peer(peer) => peers::start(
            peer,
            &job.point.model,
            &rig.out,
            cpus,
            rig.quota.as_ref(),
            &rig.network,
        ),
        Start::NoServer => return Err(Limit::new("a wait call has no server to start")),
        Start::Ours { serve } => {
            let mut args = job.point.server_args.clone();
            args.extend(timeouts.args());
            if let Some(workers) = job.point.workers {
                args.extend(["--workers".into(), workers.to_string()]);
            }
            rig.start_ours(serve, &args, true)
        }
    };
    started.map_err(|e| Limit::new(format!("could not start: {e}")))
}

/// The load generator's settings for this job, against `server`.
fn load(rig: &Rig, job: &Job, server: &Server) -> loadgen::Config {
    let point = &job.point;
    let mut config = loadgen::Config::new(server.addr);
    config.connections = point.active.unwrap_or(1).max(1);
    config.idle = point.idle.unwrap_or(0);
    config.warmup = rig.plan.warmup;
    config.duration = rig.plan.window_for(point.experiment);
    config.threads = rig.load_threads;
    config.keep_alive = job.keep_alive;
    if let Some(path) = &point.path {
        config.path = path.clone();
    }
    let total = config.connections + config.idle;
    let ports = loadgen::limits::ephemeral_ports();
    let range = usize::from(ports.1 - ports.0) + 1;
    if total * 4 > range {
        // Each address holds a tenth of its ports at most (connect(2) slows as they
        // fill: loadgen::limits::PORT_SHARE), and the rig's are as many as it has.
        let addrs = loadgen::limits::sources_needed(total, ports).max(8);
        let pool = &rig.network.client_ips;
        config.source_addrs = pool[..addrs.min(pool.len())].to_vec();
    }

    // Past what one process may hold, the load is split over several (each its own
    // descriptor table), as the server's is over its workers.
    config.processes = job.connections().div_ceil(rig.per_process).max(1);
    config.threads = rig.load_threads.div_ceil(config.processes);
    config
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

/// The server over the window: CPU between the edges (its cgroup's nanoseconds where
/// there is one, /proc's ticks otherwise), memory and threads at the end, its counters'
/// increase.
fn metrics(e0: &Edge, e1: &Edge) -> ServerMetrics {
    let counters = match (&e0.counters, &e1.counters) {
        (Some(before), Some(after)) => Some(after.since(before)),
        _ => None,
    };
    let (cpu_user_s, cpu_sys_s, from) = match (e0.usage, e1.usage) {
        (Some(u0), Some(u1)) => (u1.user_s - u0.user_s, u1.sys_s - u0.sys_s, u1.from),
        _ => (
            e1.proc.user_s - e0.proc.user_s,
            e1.proc.sys_s - e0.proc.sys_s,
            "ticks",
        ),
    };
    ServerMetrics {
        cpu_user_s,
        cpu_sys_s,
        rss_kb: e1.proc.rss_kb,
        rss_peak_kb: e1.proc.rss_peak_kb,
        threads: e1.proc.threads,
        counters,
        cpu_from: Some(from.into()),
    }
}

/// What else ran on the CPUs between the edges, where the server was pinned.
fn interference(rig: &Rig, e0: &Edge, e1: &Edge, server: &ServerMetrics) -> Option<Interference> {
    let pinning = &rig.pinning;
    if pinning.server_cpus.is_empty() || e0.cpus.is_empty() {
        return None;
    }
    Some(cpustat::interference(
        &e0.cpus,
        &e1.cpus,
        &pinning.server_cpus,
        &pinning.load_cpus,
        server.cpu_user_s + server.cpu_sys_s,
        (e1.at - e0.at).as_secs_f64(),
    ))
}

/// The server's CPU time so far, and how its cgroup counted it (`cpuacct`, `cpu.stat`).
#[derive(Clone, Copy)]
struct Counted {
    user_s: f64,
    sys_s: f64,
    from: &'static str,
}

/// The server and the machine at one edge of the window.
struct Edge {
    /// Its counters (ours only).
    counters: Option<Snapshot>,
    proc: ProcSample,
    /// Its cgroup's CPU time, where it runs in one, and how the cgroup counts it.
    usage: Option<Counted>,
    /// Every CPU's times (/proc/stat).
    cpus: Vec<(usize, CpuTimes)>,
    at: Instant,
}

/// The load generator's progress, shown on the bar; at the window's edges the server
/// is sampled.
struct Sampler<'a> {
    bar: &'a ProgressBar,
    job: String,
    server: &'a Server,
    edges: Mutex<[Option<Edge>; 2]>,
    /// Limits the server from the end of the ramp.
    quota: Option<&'a CpuQuota>,
    /// Counts the server's CPU time (the quota's cgroup).
    account: Option<&'a CpuQuota>,
}

impl Sampler<'_> {
    fn sample(&self, edge: usize) {
        let counters = self.server.snapshot();
        if let Some(proc) = self.server.proc_sample() {
            let usage = self.account.and_then(|a| {
                let from = a.counts_by()?;
                a.usage().map(|u| Counted {
                    user_s: u.user_s,
                    sys_s: u.sys_s,
                    from,
                })
            });
            let (cpus, at) = (cpustat::sample(), Instant::now());
            self.edges.lock().unwrap()[edge] = Some(Edge {
                counters,
                proc,
                usage,
                cpus,
                at,
            });
        }
    }
}

impl loadgen::Progress for Sampler<'_> {
    fn warn(&self, line: &str) {
        let line = format!("iomodels: {} · {line}", self.job);
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

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

/// Our load generator, then wrk, on the same point: 50 connections to epoll-et.
pub(super) fn crosscheck(rig: &Rig, log: &Log) -> Result<CrossCheck, String> {
    let model = roster::CROSSCHECK.name;
    const CONNECTIONS: usize = 50;
    let secs = rig.plan.window.as_secs().max(2);
    // No quota here: this compares the two load generators, each at its fastest.
    let server = rig.start_ours(model, &[], false)?;
    let mut config = loadgen::Config::new(server.addr);
    config.connections = CONNECTIONS;
    config.threads = rig.load_threads;
    config.warmup = rig.plan.warmup;
    config.duration = Duration::from_secs(secs);
    let ours = rig
        .network
        .as_client(|| loadgen::run(&config, &loadgen::Quiet))??
        .throughput_rps;
    let wrk = rig
        .network
        .as_client(|| peers::wrk(server.addr, CONNECTIONS, secs))??;
    server.stop()?;
    log.without_bar(&format!(
        "cross-check, {model} with {CONNECTIONS} connections: ours {ours:.0} req/s, wrk \
         {wrk:.0} req/s"
    ));
    Ok(CrossCheck {
        model: model.into(),
        connections: CONNECTIONS,
        ours_rps: ours,
        wrk_rps: wrk,
        ratio: ours / wrk.max(1e-9),
    })
}
