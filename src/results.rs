//! The run file (`run.json`): what a bench run measured, in one versioned schema that
//! the charts, the report and the tests read back.
//!
//! One [`Point`] per measurement. Repeats of the same point are separate points of the
//! same series and x; tables and charts take their median (`crate::series`).

use std::path::Path;

use iomodels_loadgen::Report;
use iomodels_servers::Snapshot;
use serde::{Deserialize, Deserializer, Serialize};

use crate::experiments::kind::Experiment;

/// Bumped whenever a field changes meaning or goes away; `plot` refuses other versions.
/// Version 2: a limit is a [`Limit`] (its reason and the server's words apart).
pub const SCHEMA_VERSION: u32 = 2;
/// Older versions still read, converted on the way in: 1 (a limit was one string).
pub const READS_SCHEMA_VERSIONS: &[u32] = &[1, SCHEMA_VERSION];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub schema_version: u32,
    /// When the run began, RFC 3339, UTC.
    pub started: String,
    /// `git describe`-like: the commit, with `-dirty` when the tree had changes.
    pub git_commit: Option<String>,
    pub profile: String,
    pub machine: Machine,
    pub settings: Settings,
    /// Things the reader must know: a peer that was not installed, a point skipped.
    pub notes: Vec<String>,
    /// Our load generator against wrk on one point, when wrk is installed.
    pub crosscheck: Option<CrossCheck>,
    /// Why the run ended before its last point (a signal), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    /// CPUs this process could use when the run began.
    pub cores: usize,
    pub kernel: String,
    pub memory_kb: u64,
    /// RLIMIT_NOFILE (soft, hard) after the suite raised it.
    pub fd_limit: (u64, u64),
    /// net.ipv4.ip_local_port_range: how many ports one source address has.
    pub ephemeral_ports: u64,
    pub somaxconn: Option<u64>,
    pub pinning: Pinning,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pinning {
    /// CPUs the servers ran on (empty: not pinned).
    pub server_cpus: Vec<usize>,
    /// CPUs the load generator (and the wait-cost loop, and wrk) ran on.
    pub load_cpus: Vec<usize>,
    pub note: String,
}

/// The knobs every point of the run shared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub warmup_s: f64,
    pub window_s: f64,
    pub repeats: u32,
    /// The idle experiment's, where it differs from `repeats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_repeats: Option<u32>,
    /// Busy (closed-loop) connections in the idle experiment.
    pub busy_connections: usize,
    pub load_threads: usize,
    /// The CPU quota every server ran under, so that it and not the load generator was
    /// the limit; absent: the servers had whole CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_quota: Option<QuotaSetting>,
    /// The timeouts every model of ours was started with (`--header-timeout`,
    /// `--idle-timeout`), so that no idle connection of the idle experiment is closed
    /// by one; absent in runs from before the servers had timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_timeouts: Option<ServerTimeouts>,
    /// The connections one process may hold here (its descriptor limit, less a
    /// reserve): a point asking for more was driven by several load processes
    /// (`load.config.processes` says how many), and a server of one process is
    /// recorded as a limit there rather than run; absent in runs from before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_process: Option<usize>,
    /// Where the servers and the load generator met; absent: loopback, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSetting>,
    /// The servers of the engineer's own (`--server NAME=COMMAND`): name to command.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub servers: std::collections::BTreeMap<String, String>,
    /// The other machine the servers ran on (`--server-host`); absent: this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_host: Option<ServerHost>,
}

/// The machine the servers ran on when it was not the load generator's, as it
/// described itself over SSH.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerHost {
    /// What ssh was given: USER@HOST.
    pub destination: String,
    /// The address the servers listened on there (the one SSH reached it at).
    pub address: String,
    /// The load generator's address, as that host saw it.
    pub client: String,
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_kb: u64,
    /// RLIMIT_NOFILE's hard limit there: what one server process may raise its own to.
    pub fd_limit: u64,
    /// What `iomodels --version` said there.
    pub version: String,
    pub note: String,
}

/// Where a run's servers listened and its load came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkSetting {
    /// `loopback` (one host), `netns` (two network namespaces and a veth pair) or
    /// `ssh` (the servers on another machine, `settings.server_host`).
    pub kind: String,
    /// A delay on each end of the link (so the round trip is twice it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_delay_us: Option<u64>,
    /// What made the delay: `netem`, or where the kernel has none, our delay line
    /// (TUN devices, forwarded in user space on the load generator's CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_delay_by: Option<String>,
    pub server: String,
    pub client: String,
}

impl NetworkSetting {
    pub fn loopback() -> NetworkSetting {
        NetworkSetting {
            kind: "loopback".into(),
            link_delay_us: None,
            link_delay_by: None,
            server: "127.0.0.1".into(),
            client: "127.0.0.1".into(),
        }
    }
}

/// A server's timeouts as given on its command line: a duration, or `off`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerTimeouts {
    pub header: String,
    pub idle: String,
}

impl ServerTimeouts {
    /// What the suite starts each model with: headers come whole at once here, and an
    /// idle connection must stay open for the whole run.
    pub fn suite() -> ServerTimeouts {
        ServerTimeouts {
            header: "10s".into(),
            idle: "off".into(),
        }
    }

    pub fn args(&self) -> [String; 4] {
        [
            "--header-timeout".into(),
            self.header.clone(),
            "--idle-timeout".into(),
            self.idle.clone(),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossCheck {
    pub model: String,
    pub connections: usize,
    pub ours_rps: f64,
    pub wrk_rps: f64,
    /// ours / wrk.
    pub ratio: f64,
}

/// What a run recorded of the quota (run.json `settings.server_cpu_quota`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuotaSetting {
    /// Of one CPU, in every period.
    pub share: f64,
    pub period_us: u64,
    /// The files written, e.g. "cgroup v1 cpu.cfs_quota_us 5000 / cpu.cfs_period_us 10000".
    pub how: String,
}

impl QuotaSetting {
    /// Whether it held the servers back at all (a share of 1: the cgroup only counted).
    pub fn limits(&self) -> bool {
        self.share < 1.0
    }

    /// The longest pause throttling can add to one request's latency.
    pub fn longest_pause_ms(&self) -> f64 {
        self.period_us as f64 * (1.0 - self.share) / 1000.0
    }
}

/// What one slowloris point found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slowloris {
    /// The server's `--header-timeout`.
    pub header_timeout: String,
    /// Slow connections asked for, and opened.
    pub slow: usize,
    pub opened: usize,
    /// Of those opened, closed by the server within the window (answered 408 or not).
    pub evicted: usize,
    pub answered_408: usize,
    /// Turned away with a 503 (no room for them).
    pub answered_503: usize,
    /// Fresh clients, and those answered 200 within their patience.
    pub fresh: usize,
    pub fresh_served: usize,
    /// The slowest fresh answer that came, in ms (tries included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_worst_ms: Option<f64>,
}

impl Slowloris {
    /// Percent of the opened slow connections the server no longer held at the end
    /// of the window: evicted by its timeout, or turned away at once (a 503).
    pub fn gone_pct(&self) -> f64 {
        100.0 * (self.evicted + self.answered_503) as f64 / self.opened.max(1) as f64
    }

    /// Percent of the opened slow connections evicted (by the timeout) in the window.
    pub fn evicted_pct(&self) -> f64 {
        100.0 * self.evicted as f64 / self.opened.max(1) as f64
    }
}

/// One measurement. Parameters that do not apply to an experiment are absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub experiment: Experiment,
    /// A model of the table, a peer (`nginx`, `tornado`), or for wait-cost the call.
    pub model: String,
    /// 0-based; the median over repeats is what tables and charts show.
    pub repeat: u32,
    /// Extra arguments the server was started with (e.g. a thread count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_args: Vec<String>,
    /// The worker processes a server of several (prefork) was started with here: as
    /// many as the point's connections need, so not part of its series' name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path is this series' own (a variant's route), not the experiment's: the
    /// series name says it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_path: bool,
    /// wait-cost: descriptors watched by each wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_per_wait: Option<f64>,
    /// slowloris: slow connections opened, and what the server did with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowloris: Option<Slowloris>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<u64>,
    /// The load generator's whole report (absent for wait-cost and for points not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerMetrics>,
    /// What else ran on the CPUs during its window (absent where not sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interference: Option<Interference>,
    /// Windows of this point measured before it and discarded, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discarded: Vec<Discarded>,
    /// Null, or why this model could not do this point (it is drawn as a limit).
    #[serde(deserialize_with = "limit_of_any_version")]
    pub limit: Option<Limit>,
}

/// Why a model could not do a point: drawn as a limit, never as a zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// What it could not do, in the suite's words ("held 1015 of 2000 idle connections").
    pub why: String,
    /// What the server itself printed about it (stderr), when it said anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_said: Option<String>,
    /// Not measured: its series had met this limit already at the smaller x `past`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub past: Option<usize>,
}

impl Limit {
    pub fn new(why: impl Into<String>) -> Limit {
        Limit {
            why: why.into(),
            ..Limit::default()
        }
    }

    /// The same limit, for a larger point of the series that is therefore not run.
    pub fn not_run_past(&self, x: usize) -> Limit {
        Limit {
            past: Some(x),
            ..self.clone()
        }
    }

    /// Schema 1 kept a limit as one string: "WHY[; the server said: SAID]", wrapped in
    /// "not run: past the limit met at X (…)" for the points after it.
    fn from_schema_1(text: &str) -> Limit {
        const SAID: &str = "; the server said: ";
        const PAST: &str = "not run: past the limit met at ";
        if let Some(rest) = text.strip_prefix(PAST) {
            if let Some((x, inner)) = rest.split_once(" (") {
                if let (Ok(x), Some(inner)) = (x.parse(), inner.strip_suffix(')')) {
                    return Limit::from_schema_1(inner).not_run_past(x);
                }
            }
        }
        match text.split_once(SAID) {
            Some((why, said)) => Limit {
                why: why.into(),
                server_said: Some(said.into()),
                past: None,
            },
            None => Limit::new(text),
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let said = match &self.server_said {
            Some(said) => format!("{}; the server said: {said}", self.why),
            None => self.why.clone(),
        };
        match self.past {
            Some(x) => write!(f, "not run: past the limit met at {x} ({said})"),
            None => f.write_str(&said),
        }
    }
}

/// A limit as any schema version wrote it: a [`Limit`], or schema 1's one string.
fn limit_of_any_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Now(Limit),
        Schema1(String),
    }
    Ok(Option::<Written>::deserialize(d)?.map(|w| match w {
        Written::Now(limit) => limit,
        Written::Schema1(text) => Limit::from_schema_1(&text),
    }))
}

/// The server process over the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerMetrics {
    /// CPU seconds in user and kernel mode during the window, all threads.
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// Resident memory at the window's end, and its peak so far.
    pub rss_kb: u64,
    pub rss_peak_kb: u64,
    /// Threads in the process at the window's end (/proc).
    pub threads: u64,
    /// The model's counters over the window (`open`, `threads`, `threads_peak`: at its
    /// end). Absent for peers, which keep none of ours.
    pub counters: Option<Snapshot>,
    /// Where the CPU times came from: `cpuacct` (the servers' cgroup, nanoseconds) or
    /// `ticks` (/proc/PID/stat, 10 ms); absent in runs from before (ticks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_from: Option<String>,
}

/// What else ran on the CPUs during a window (`bench/cpustat.rs`), in % of the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interference {
    /// Time the hypervisor gave the server's CPUs to another guest.
    pub server_steal_pct: f64,
    /// Time other tasks (and the kernel for them) ran on the server's CPUs.
    pub server_others_pct: f64,
    /// Time the hypervisor gave the load generator's CPUs to another guest.
    pub load_steal_pct: f64,
    /// How much slower a fixed piece of work ran on the server's CPU during the window
    /// than in the run's windows before it (`bench/pace.rs`): 1.3 is 30% slower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_slowdown: Option<f64>,
}

/// A window measured and then measured again, because something else ran in it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Discarded {
    pub why: String,
    pub interference: Interference,
    /// What it would have published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_request: Option<f64>,
}

/// The fewest answers in a window for its CPU per request to be shown.
pub const MIN_ANSWERS: u64 = 100;

impl Point {
    pub fn saturated(&self) -> bool {
        self.load.as_ref().is_some_and(|l| l.loadgen_saturated)
    }

    pub fn rps(&self) -> Option<f64> {
        self.load.as_ref().map(|l| l.throughput_rps)
    }

    /// p99 latency in milliseconds.
    pub fn p99_ms(&self) -> Option<f64> {
        self.load.as_ref().map(|l| l.latency_us.p99 as f64 / 1000.0)
    }

    /// Server CPU time (user + sys) per 2xx answer, in microseconds.
    /// None where the window had fewer than [`MIN_ANSWERS`]: the window's fixed costs
    /// (waits, timers, idle connections) spread over a handful of answers are no cost
    /// per request. The answers counted are those that arrived in the window, whenever
    /// sent: the work the server did in it (a request sent before the window and
    /// answered in it cost CPU in it too).
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let (load, server) = (self.load.as_ref()?, self.server.as_ref()?);
        let answered = load.answered_in_window;
        (answered >= MIN_ANSWERS)
            .then(|| (server.cpu_user_s + server.cpu_sys_s) * 1e6 / answered as f64)
    }

    /// Requests and errors that did not end as 2xx answers in the window.
    pub fn errors(&self) -> u64 {
        self.load.as_ref().map_or(0, |l| {
            l.errors.values().sum::<u64>() + l.non_2xx.values().sum::<u64>()
        })
    }
}

impl Run {
    pub fn load(dir: &Path) -> Result<Run, String> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // Where a hand-edited or truncated file goes wrong, by field: points[12].load…
        let mut json = serde_json::Deserializer::from_str(&text);
        let run: Run = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            format!(
                "{} is not a run file: {} (at {})",
                path.display(),
                e.inner(),
                e.path()
            )
        })?;
        if !READS_SCHEMA_VERSIONS.contains(&run.schema_version) {
            return Err(format!(
                "{} has schema_version {}; this iomodels reads versions {READS_SCHEMA_VERSIONS:?} \
                 and writes {SCHEMA_VERSION}",
                path.display(),
                run.schema_version
            ));
        }
        Ok(run)
    }

    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join("run.json");
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        // Write, flush to the disk, then rename: an interrupted or failed save (a full
        // disk) leaves the previous file whole, and no half-written one beside it.
        let tmp = dir.join("run.json.tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut file| {
            use std::io::Write;
            file.write_all(json.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
        written
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("cannot write {}: {e}", path.display())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_1_limit_comes_apart_into_why_what_the_server_said_and_where() {
        let said = "iomodels: fd 1024 >= FD_SETSIZE (1024): select cannot watch it";
        let held = "held 1015 of 2000 idle connections (0 closed by the server)";
        let limit = Limit::from_schema_1(&format!("{held}; the server said: {said}"));
        assert_eq!(limit.why, held);
        assert_eq!(limit.server_said.as_deref(), Some(said));
        assert_eq!(limit.past, None);
        let text = format!("not run: past the limit met at 2000 ({held}; the server said: {said})");
        let past = Limit::from_schema_1(&text);
        assert_eq!(past, limit.not_run_past(2000));
        // Written out again, each reads as it did.
        assert_eq!(past.to_string(), text);
        assert_eq!(
            Limit::from_schema_1("could not start: no"),
            Limit::new("could not start: no")
        );
    }

    /// A broken run.json is refused with the field that is wrong, or where the text
    /// stops; never a panic. And a save replaces the file whole.
    #[test]
    fn a_hand_edited_or_truncated_run_names_what_is_wrong() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run");
        let text = std::fs::read_to_string(fixture.join("run.json")).unwrap();
        let dir = std::env::temp_dir().join(format!("iomodels-broken-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["points"][1]["load"]["throughput_rps"] = "fast".into();
        std::fs::write(dir.join("run.json"), json.to_string()).unwrap();
        let err = Run::load(&dir).unwrap_err();
        assert!(err.contains("points[1].load.throughput_rps"), "{err}");
        std::fs::write(dir.join("run.json"), &text[..text.len() / 2]).unwrap();
        let err = Run::load(&dir).unwrap_err();
        assert!(err.contains("EOF while parsing"), "{err}");
        // Saved over the broken one: whole again, and nothing left beside it.
        let run: Run = serde_json::from_str(&text).unwrap();
        run.save(&dir).unwrap();
        assert_eq!(Run::load(&dir).unwrap().points.len(), run.points.len());
        assert!(!dir.join("run.json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
