//! The run file (`run.json`): what a bench run measured, in one versioned schema that
//! the charts, the report and the tests read back.
//!
//! One [`Point`] per measurement. Repeats of the same point are separate points with
//! the same [`Point::key`]; tables and charts take their median ([`Run::series`]).

use std::collections::BTreeMap;
use std::path::Path;

use iomodels_loadgen::Report;
use iomodels_servers::Snapshot;
use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning or goes away; `plot` refuses other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// The experiments, in the order they run and are reported.
pub const EXPERIMENTS: &[&str] = &["idle", "active", "churn", "blocking", "wait-cost"];

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
    /// Busy (closed-loop) connections in the idle experiment.
    pub busy_connections: usize,
    pub load_threads: usize,
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

/// One measurement. Parameters that do not apply to an experiment are absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub experiment: String,
    /// A model of the table, a peer (`nginx`, `tornado`), or for wait-cost the call.
    pub model: String,
    /// 0-based; the median over repeats is what tables and charts show.
    pub repeat: u32,
    /// Extra arguments the server was started with (e.g. a thread count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// wait-cost: descriptors watched by each wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_per_wait: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits: Option<u64>,
    /// The load generator's whole report (absent for wait-cost and for points not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerMetrics>,
    /// Null, or why this model could not do this point (it is drawn as a limit).
    pub limit: Option<String>,
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
}

impl Point {
    /// The point's identity, repeats aside: experiment, model, parameters.
    pub fn key(&self) -> (String, String, Vec<String>, String) {
        (
            self.experiment.clone(),
            self.model.clone(),
            self.server_args.clone(),
            format!(
                "{:?}/{:?}/{:?}/{:?}",
                self.idle, self.active, self.path, self.fds
            ),
        )
    }

    /// The line this point belongs to in a chart: the model, with its arguments.
    pub fn series_name(&self) -> String {
        if self.server_args.is_empty() {
            self.model.clone()
        } else {
            format!("{} {}", self.model, self.server_args.join(" "))
        }
    }

    /// The x of this point in its experiment's charts.
    pub fn x(&self) -> f64 {
        match self.experiment.as_str() {
            "idle" => self.idle.unwrap_or(0) as f64,
            "wait-cost" => self.fds.unwrap_or(0) as f64,
            _ => self.active.unwrap_or(0) as f64,
        }
    }

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
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let (load, server) = (self.load.as_ref()?, self.server.as_ref()?);
        let answered = load.completed.max(1) as f64;
        Some((server.cpu_user_s + server.cpu_sys_s) * 1e6 / answered)
    }

    /// Requests and errors that did not end as 2xx answers in the window.
    pub fn errors(&self) -> u64 {
        self.load.as_ref().map_or(0, |l| {
            l.errors.values().sum::<u64>() + l.non_2xx.values().sum::<u64>()
        })
    }
}

/// One line of a chart: the median of the repeats at each x, and the limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    /// (x, median y, the load generator was saturated in some repeat).
    pub values: Vec<(f64, f64, bool)>,
    /// (x, reason): where the model could not go.
    pub limits: Vec<(f64, String)>,
}

impl Run {
    pub fn load(dir: &Path) -> Result<Run, String> {
        let path = dir.join("run.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let run: Run = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a run file: {e}", path.display()))?;
        if run.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "{} has schema_version {}; this iomodels reads version {SCHEMA_VERSION}",
                path.display(),
                run.schema_version
            ));
        }
        Ok(run)
    }

    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join("run.json");
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        // Write then rename, so an interrupted save never leaves half a file.
        let tmp = dir.join("run.json.tmp");
        std::fs::write(&tmp, json + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The points of one experiment, grouped into one series per model (in the order
    /// the models first appear), with `y` taken as the median of the repeats.
    /// A point is a limit when any repeat of it was.
    pub fn series(&self, experiment: &str, y: impl Fn(&Point) -> Option<f64>) -> Vec<Series> {
        let mut order: Vec<String> = Vec::new();
        let mut groups: BTreeMap<(String, u64), Vec<&Point>> = BTreeMap::new();
        for p in self.points.iter().filter(|p| p.experiment == experiment) {
            let name = p.series_name();
            if !order.contains(&name) {
                order.push(name.clone());
            }
            groups.entry((name, p.x().to_bits())).or_default().push(p);
        }
        order
            .into_iter()
            .map(|name| {
                let mut series = Series {
                    name: name.clone(),
                    values: Vec::new(),
                    limits: Vec::new(),
                };
                let mut xs: Vec<(f64, &Vec<&Point>)> = groups
                    .iter()
                    .filter(|((n, _), _)| *n == name)
                    .map(|((_, x), ps)| (f64::from_bits(*x), ps))
                    .collect();
                xs.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (x, points) in xs {
                    if let Some(limited) = points.iter().find_map(|p| p.limit.as_ref()) {
                        series.limits.push((x, limited.clone()));
                        continue;
                    }
                    let ys: Vec<f64> = points.iter().filter_map(|p| y(p)).collect();
                    if let Some(m) = median(&ys) {
                        series
                            .values
                            .push((x, m, points.iter().any(|p| p.saturated())));
                    }
                }
                series
            })
            .collect()
    }
}

/// The median (the mean of the middle two for an even count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }
}
