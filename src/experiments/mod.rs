//! The experiments: one enum, and one table of facts per experiment, shaped like the
//! models table. The suite, the report, the charts and the CLI read these facts; none of
//! them matches on an experiment's name.

pub mod active;
pub mod blocking;
pub mod caption;
pub mod churn;
pub mod idle;
pub mod kind;
pub mod slowloris;
pub mod wait_cost;

use crate::bench::measure;
use crate::charts::spec::ChartSpec;
use crate::results::{Point, Run};
use crate::roster::{self, Contender};

pub use kind::{Axis, Experiment};

/// How an experiment measures one of its points: the function its row names
/// (`bench/measure.rs`).
pub use crate::bench::measure::Driver;

/// One entry of the table of experiments.
pub struct Facts {
    pub experiment: Experiment,
    /// The spelling of [`Experiment`] (the same as its serde and CLI spelling).
    pub name: &'static str,
    /// Its heading in the report and the book.
    pub title: &'static str,
    pub driver: Driver,
    /// What x counts is [`Experiment::axis`]; its name on an axis and in a table header:
    pub x_name: &'static str,
    /// What its table shows (the y), and its unit.
    pub y_name: &'static str,
    pub y: fn(&Point) -> Option<f64>,
    /// Its report leads with the server's CPU per request: the load generator can be the
    /// limit of its throughput, never of that.
    pub cpu_leads: bool,
    /// Keep-alive connections (false: a new connection per request).
    pub keep_alive: bool,
    /// Every request asks this route, with the profile's number after it
    /// (`/sleep/` and 100: `/sleep/100`); None: `/`.
    pub route: Option<&'static str>,
    /// Real peers (nginx, Tornado) join it: they serve `/` only.
    pub peers: bool,
    /// Its models include the run's A/A pair (a model measured again under another
    /// name): the gap between the two is the noise floor its verdicts are held against.
    pub noise_floor: bool,
    /// Models (and peers) run more than once, once per variant (the lesson of the
    /// experiment); other models run once, as they are.
    pub variants: &'static [(&'static Contender, &'static [Variant])],
    /// Its charts, each with the sentence under it.
    pub charts: &'static [ChartSpec],
    /// Its tables beside the main one (the main one is drawn from `y`).
    pub tables: &'static [fn(&Run) -> String],
}

/// One way to run a model or peer in an experiment: its server arguments, and the
/// route it is asked instead of the experiment's, if any.
pub struct Variant {
    pub args: &'static [&'static str],
    /// Asked before the profile's number, as [`Facts::route`]; the series name says it.
    pub route: Option<&'static str>,
}

impl Variant {
    /// The experiment's requests, with these server arguments.
    pub const fn args(args: &'static [&'static str]) -> Variant {
        Variant { args, route: None }
    }

    /// Another route, with these server arguments.
    pub const fn asking(route: &'static str, args: &'static [&'static str]) -> Variant {
        Variant {
            args,
            route: Some(route),
        }
    }
}

/// The experiments, in the order they run and are reported.
pub const EXPERIMENTS: &[Facts] = &[
    Facts {
        experiment: Experiment::Idle,
        name: "idle",
        title: "Idle connections: a few busy connections beside 0 … N idle ones",
        driver: measure::load_generator,
        x_name: "idle connections",
        y_name: "requests per second (2xx)",
        y: Point::rps,
        cpu_leads: true,
        keep_alive: true,
        route: None,
        noise_floor: true,
        peers: true,
        // Each model as its practitioners write it, beside the naive form it replaced.
        variants: &[
            (
                &roster::EPOLL_ET,
                &[Variant::args(&[]), Variant::args(&["--et-drain", "eagain"])],
            ),
            (
                &roster::IO_URING,
                &[
                    Variant::args(&[]),
                    Variant::args(&["--uring-mode", "basic"]),
                ],
            ),
        ],
        charts: idle::CHARTS,
        tables: idle::TABLES,
    },
    Facts {
        experiment: Experiment::Active,
        name: "active",
        title: "Active connections: every connection busy, none idle",
        driver: measure::load_generator,
        x_name: "active connections",
        y_name: "requests per second (2xx)",
        y: Point::rps,
        cpu_leads: true,
        keep_alive: true,
        route: None,
        noise_floor: false,
        peers: true,
        variants: &[],
        charts: active::CHARTS,
        tables: &[],
    },
    Facts {
        experiment: Experiment::Churn,
        name: "churn",
        title: "Connection churn: HTTP/1.0, a new connection per request",
        driver: measure::load_generator,
        x_name: "connections",
        y_name: "connections per second (one request each)",
        y: Point::rps,
        cpu_leads: true,
        keep_alive: false,
        route: None,
        noise_floor: false,
        peers: true,
        variants: &[],
        charts: churn::CHARTS,
        tables: &[],
    },
    Facts {
        experiment: Experiment::Blocking,
        name: "blocking",
        title: "Blocking work in the handler",
        driver: measure::load_generator,
        x_name: "connections",
        y_name: "requests per second (2xx)",
        y: Point::rps,
        cpu_leads: false,
        keep_alive: true,
        route: Some("/sleep/"),
        noise_floor: false,
        peers: false,
        // Tornado's lesson: the blocking work on the loop, then on an executor of more
        // threads than there are connections, so that none waits for a thread; and a
        // wait that needs no thread at all, as a coroutine and as a callback. Tornado
        // itself, the same three ways (scripts/tornado_server.py).
        variants: &[
            (
                &roster::REACTOR,
                &[
                    Variant::args(&["--executor", "0"]),
                    Variant::args(&["--executor", "30"]),
                    Variant::asking("/wait/", &["--executor", "0", "--waits", "coroutine"]),
                    Variant::asking("/wait/", &["--executor", "0", "--waits", "callback"]),
                ],
            ),
            (
                &roster::TORNADO,
                &[
                    Variant::asking("/sleep/", &[]),
                    Variant::asking("/sleep-on-executor/", &[]),
                    Variant::asking("/wait/", &[]),
                ],
            ),
        ],
        charts: blocking::CHARTS,
        tables: &[],
    },
    Facts {
        experiment: Experiment::WaitCost,
        name: "wait-cost",
        title: "The cost of one wait call (after Kerrisk)",
        driver: measure::wait_calls,
        x_name: "descriptors watched",
        y_name: "ns per wait",
        y: |p| p.ns_per_wait,
        cpu_leads: false,
        keep_alive: true,
        route: None,
        noise_floor: false,
        peers: false,
        variants: &[],
        charts: wait_cost::CHARTS,
        tables: wait_cost::TABLES,
    },
    Facts {
        experiment: Experiment::Slowloris,
        name: "slowloris",
        title: "Slow clients: connections that trickle a header, beside fresh clients",
        driver: measure::slow_clients,
        x_name: "slow connections",
        y_name: "% of slow connections no longer held after 4 s (header timeout 2 s)",
        y: |p| p.slowloris.as_ref().map(|s| s.gone_pct()),
        cpu_leads: false,
        keep_alive: true,
        route: None,
        noise_floor: false,
        peers: false,
        // The thread pool as it comes, and with its main thread buffering headers.
        variants: &[(
            &roster::THREAD_POOL,
            &[Variant::args(&[]), Variant::args(&["--buffer-headers"])],
        )],
        charts: slowloris::CHARTS,
        tables: slowloris::TABLES,
    },
];

impl Experiment {
    pub fn facts(self) -> &'static Facts {
        EXPERIMENTS
            .iter()
            .find(|f| f.experiment == self)
            .expect("every experiment has its facts")
    }

    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// Whether it runs servers (wait-cost times the calls themselves, with none: its x
    /// counts the descriptors they watch).
    pub fn has_load(self) -> bool {
        self.axis() != Axis::Descriptors
    }

    /// Every experiment, in the table's order.
    pub fn all() -> impl Iterator<Item = Experiment> {
        EXPERIMENTS.iter().map(|f| f.experiment)
    }
}

/// Every chart of every experiment, in order, with the name of its x.
pub fn charts() -> impl Iterator<Item = (&'static ChartSpec, &'static str)> {
    EXPERIMENTS
        .iter()
        .flat_map(|f| f.charts.iter().map(move |c| (c, f.x_name)))
}

impl std::fmt::Display for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_experiment_has_one_row_spelled_as_serde_and_clap_spell_it() {
        for e in Experiment::value_variants() {
            let rows = EXPERIMENTS.iter().filter(|f| f.experiment == *e).count();
            assert_eq!(rows, 1, "{e:?}");
            let json = serde_json::to_string(e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.name()));
            let clap = e.to_possible_value().unwrap();
            assert_eq!(clap.get_name(), e.name());
        }
    }
}
