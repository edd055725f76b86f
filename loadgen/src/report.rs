//! What a run measured, as the JSON report carries it: built once from the merged
//! [`Tally`], the same for a run of one process or of many.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::tally::{ErrorClass, Tally};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub count: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            count: h.len(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    pub requested: u64,
    pub established: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Idle {
    pub requested: u64,
    pub established: u64,
    /// Answered their one check request with a 2xx.
    pub verified: u64,
    /// Closed by the server after their check (at the ramp, the warm-up or the window).
    pub closed_by_server: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    pub second: usize,
    pub requests: u64,
    pub errors: u64,
    pub p99_us: u64,
    pub open_connections: u64,
}

/// The loadgen is called saturated when its threads were busy this much of the window.
pub const SATURATED: f64 = 0.9;

/// What a run measured: printed as a summary, written as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub config: Config,
    pub measured_seconds: f64,
    /// 2xx answers that arrived in the window, per second (as wrk counts them).
    pub throughput_rps: f64,
    /// Open loop: requests actually sent per second, beside `config.rate`.
    pub achieved_rate_rps: Option<f64>,
    /// Open loop: from the intended send time (coordinated omission corrected).
    pub latency_us: Percentiles,
    pub service_latency_us: Percentiles,
    pub connect_latency_us: Percentiles,
    /// Requests sent in the window ...
    pub sent: u64,
    /// ... of which answered 2xx in it (the rest: `non_2xx`, `failed`, in flight).
    pub completed: u64,
    /// 2xx answers that arrived in the window, whenever sent: `throughput_rps` per second.
    pub answered_in_window: u64,
    /// Answers that were not 2xx, by class ("4xx"): not counted as throughput.
    pub non_2xx: BTreeMap<String, u64>,
    pub failed: u64,
    pub in_flight_at_end: u64,
    /// By class: failed requests, plus failures that cost no request (a refused
    /// connect, a connection closed between open-loop sends). `failed` counts only the
    /// requests.
    pub errors: BTreeMap<String, u64>,
    pub reconnects: u64,
    pub active: Connections,
    pub idle: Idle,
    /// Fraction of its threads' time the load generator was busy.
    pub loadgen_cpu: f64,
    pub loadgen_saturated: bool,
    pub loadgen_rss_kb: u64,
    /// The merged latency histogram, HdrHistogram V2 + deflate, base64.
    pub latency_histogram: String,
    pub per_second: Vec<SecondReport>,
}

impl Report {
    /// `lanes`: how many of the run's threads could run at once (no more than the CPUs
    /// they were allowed), against which their busy time is measured.
    pub fn new(
        config: &Config,
        tally: &Tally,
        measured: Duration,
        rss_kb: u64,
        lanes: usize,
    ) -> Report {
        let secs = measured.as_secs_f64().max(1e-9);
        let loadgen_cpu = tally.cpu.as_secs_f64() / (secs * lanes.max(1) as f64);
        let non_2xx = tally
            .statuses
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| {
                let class = if i == 0 {
                    "other".to_string()
                } else {
                    format!("{i}xx")
                };
                (class, n)
            })
            .collect();
        let errors = ErrorClass::ALL
            .iter()
            .map(|&c| (c.name().to_string(), tally.errors[c as usize]))
            .collect();
        let mut serialized = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&tally.latency, &mut serialized)
            .expect("a histogram serializes");
        Report {
            config: config.clone(),
            measured_seconds: secs,
            throughput_rps: tally.answered_in_window as f64 / secs,
            achieved_rate_rps: config.rate.map(|_| tally.sent as f64 / secs),
            latency_us: Percentiles::of(&tally.latency),
            service_latency_us: Percentiles::of(&tally.service),
            connect_latency_us: Percentiles::of(&tally.connect),
            sent: tally.sent,
            completed: tally.completed,
            answered_in_window: tally.answered_in_window,
            non_2xx,
            failed: tally.failed,
            in_flight_at_end: tally.in_flight_at_end,
            errors,
            reconnects: tally.reconnects,
            active: Connections {
                requested: tally.active_requested,
                established: tally.active_established,
            },
            idle: Idle {
                requested: tally.idle_requested,
                established: tally.idle_established,
                verified: tally.idle_verified,
                closed_by_server: tally.idle_closed_by_server,
            },
            loadgen_cpu,
            loadgen_saturated: loadgen_cpu >= SATURATED,
            loadgen_rss_kb: rss_kb,
            latency_histogram: base64::engine::general_purpose::STANDARD.encode(&serialized),
            per_second: tally
                .seconds
                .iter()
                .enumerate()
                .map(|(i, s)| SecondReport {
                    second: i,
                    requests: s.completed,
                    errors: s.errors,
                    p99_us: if s.latency.is_empty() {
                        0
                    } else {
                        s.latency.value_at_quantile(0.99)
                    },
                    open_connections: s.open,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_every_error_class_and_flags_saturation() {
        let mut config = Config::new("127.0.0.1:1".parse().unwrap());
        config.threads = 2;
        let tally = Tally {
            sent: 100,
            completed: 100,
            cpu: Duration::from_millis(1900),
            ..Tally::default()
        };
        let report = Report::new(&config, &tally, Duration::from_secs(1), 0, 2);
        assert_eq!(report.errors.len(), ErrorClass::ALL.len());
        assert!(report.loadgen_saturated);
        assert!(report
            .summary()
            .contains("saturated: the numbers are a floor"));
        let idle = Tally {
            cpu: Duration::from_millis(100),
            ..tally
        };
        assert!(!Report::new(&config, &idle, Duration::from_secs(1), 0, 2).loadgen_saturated);
    }
}
