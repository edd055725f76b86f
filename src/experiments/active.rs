//! The active experiment's figures: CPU per request and throughput as every
//! connection is busy.

use crate::charts::spec::{ChartSpec, Kind, XAxis};
use crate::results::{Point, Run};
use crate::words::thousands;

use super::caption::{cpu_parts, floor_mark, floor_note};
use super::kind::Experiment;

/// Its charts, in the order the report shows them.
pub const CHARTS: &[ChartSpec] = &[
    ChartSpec {
        file: "active-cpu-per-request.svg",
        title: "Server CPU time per request as active connections grow",
        experiment: Experiment::Active,
        y_desc: "server CPU per request (µs, user + sys, log scale)",
        kind: Kind::Lines {
            x: XAxis::Log,
            log_y: true,
        },
        series: |run| run.series(Experiment::Active, Point::cpu_us_per_request),
        sentence: active_cpu_per_request,
        latency: false,
    },
    ChartSpec {
        file: "active-throughput.svg",
        title: "Throughput as active connections grow (no idle ones)",
        experiment: Experiment::Active,
        y_desc: "requests per second (2xx)",
        kind: Kind::Lines {
            x: XAxis::Log,
            log_y: false,
        },
        series: |run| run.series(Experiment::Active, Point::rps),
        sentence: active_throughput,
        latency: false,
    },
];

pub fn active_cpu_per_request(run: &Run) -> String {
    let parts = cpu_parts(run, Experiment::Active);
    format!(
        "Server CPU time per answered request, from the fewest active connections to the \
         most, and what one CPU could serve at that cost: {}.",
        parts.join(", ")
    )
}

pub fn active_throughput(run: &Run) -> String {
    let mut floors = false;
    let parts: Vec<String> = run
        .series(Experiment::Active, Point::rps)
        .iter()
        .filter_map(|s| {
            let best = s.values.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
            let last = s.values.last()?;
            floors |= best.2 || last.2;
            Some(format!(
                "{} peaks at {} req/s{} ({} connections) and gives {}{} at {}",
                s.name,
                thousands(best.1),
                floor_mark(best.2),
                thousands(best.0),
                thousands(last.1),
                floor_mark(last.2),
                thousands(last.0)
            ))
        })
        .collect();
    format!(
        "Every connection busy: {}.{}",
        parts.join("; "),
        floor_note(floors)
    )
}
