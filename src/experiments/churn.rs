//! The churn experiment's figure: connections per second, one request each.

use crate::charts::spec::{ChartSpec, Kind};
use crate::results::{Point, Run};
use crate::words::thousands;

use super::caption::{floor_mark, floor_note};
use super::kind::Experiment;

/// Its charts, in the order the report shows them.
pub const CHARTS: &[ChartSpec] = &[ChartSpec {
    file: "churn.svg",
    title: "Connection churn: a new connection per request (HTTP/1.0)",
    experiment: Experiment::Churn,
    y_desc: "connections per second (one request each)",
    kind: Kind::Bars,
    series: |run| run.series(Experiment::Churn, Point::rps),
    sentence: churn,
    latency: false,
}];

pub fn churn(run: &Run) -> String {
    let mut floors = false;
    let parts: Vec<String> = run
        .series(Experiment::Churn, Point::rps)
        .iter()
        .filter_map(|s| {
            let best = s.values.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
            floors |= best.2;
            Some(format!(
                "{} {}{}",
                s.name,
                thousands(best.1),
                floor_mark(best.2)
            ))
        })
        .collect();
    format!(
        "New connections per second, each carrying one request (the best over the \
         connection counts tried): {}.{}",
        parts.join(", "),
        floor_note(floors)
    )
}
