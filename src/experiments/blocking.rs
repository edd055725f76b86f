//! The blocking experiment's figure: a handler that blocks, and one that only waits.

use std::collections::BTreeSet;

use crate::charts::spec::{ChartSpec, Kind};
use crate::results::{Point, Run};

use super::caption::{floor_mark, floor_note};
use super::kind::Experiment;

/// Its charts, in the order the report shows them.
pub const CHARTS: &[ChartSpec] = &[ChartSpec {
    file: "blocking.svg",
    title: "A handler that blocks (/sleep), and one that only waits (/wait)",
    experiment: Experiment::Blocking,
    y_desc: "requests per second (2xx)",
    kind: Kind::Bars,
    series: |run| run.series(Experiment::Blocking, Point::rps),
    sentence: blocking,
    latency: false,
}];

pub fn blocking(run: &Run) -> String {
    let blocking = run
        .points
        .iter()
        .filter(|p| p.experiment == Experiment::Blocking);
    let path = blocking
        .clone()
        .find(|p| !p.own_path)
        .and_then(|p| p.path.clone())
        .unwrap_or_default();
    let own: BTreeSet<String> = blocking
        .filter(|p| p.own_path)
        .filter_map(|p| p.path.clone())
        .filter(|own| *own != path)
        .collect();
    let mut floors = false;
    let parts: Vec<String> = run
        .series(Experiment::Blocking, Point::rps)
        .iter()
        .filter_map(|s| {
            let v = s.values.first()?;
            floors |= v.2;
            Some(format!("{} {:.1}{}", s.name, v.1, floor_mark(v.2)))
        })
        .collect();
    let others = if own.is_empty() {
        String::new()
    } else {
        let own: Vec<String> = own.into_iter().collect();
        format!(
            " A series that ends with a path asks that path instead ({}): /wait/MS \
             answers after the same time, holding no thread where its server has a timer \
             for it.",
            own.join(", ")
        )
    };
    format!(
        "Every request asks {path}, whose handler blocks: where the wait runs on the \
         only loop, one request is served per sleep; a thread per connection sleeps \
         in parallel.{others} Requests per second: {}.{}",
        parts.join(", "),
        floor_note(floors)
    )
}
