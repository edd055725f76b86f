//! The same servers over several networks, and one connection alone over each link.

use std::fmt::Write as _;

use crate::experiments::kind::Experiment;
use crate::results::{Point, Run};
use crate::series::Series;
use crate::words::thousands;

/// The same servers over several networks (the book's "One host or two"): a row per
/// server, a column per network, each cell the medians of every window measured over
/// that network (the runs of one network merged into one), at the idle experiment's
/// one point.
pub fn networks_md(networks: &[(&str, Run)]) -> String {
    let mut md = String::from("| server |");
    for (label, _) in networks {
        let _ = write!(md, " {label} |");
    }
    let _ = writeln!(md, "\n|---|{}", "---|".repeat(networks.len()));
    let p50 = |p: &Point| p.load.as_ref().map(|l| l.latency_us.p50 as f64);
    let columns: Vec<[Vec<Series>; 3]> = networks
        .iter()
        .map(|(_, run)| {
            [Point::rps, Point::cpu_us_per_request, p50].map(|y| run.series(Experiment::Idle, y))
        })
        .collect();
    let Some(first) = columns.first() else {
        return md;
    };
    for key in first[0].iter().map(|s| &s.key) {
        let _ = write!(md, "| {key} |");
        for column in &columns {
            let at = |i: usize| {
                let series = column[i].iter().find(|s| &s.key == key)?;
                series.values.first().map(|v| v.1)
            };
            match (at(0), at(1), at(2)) {
                (Some(rps), Some(cpu), Some(p50)) => {
                    let _ = write!(
                        md,
                        " {} req/s, {cpu:.1} µs/req, p50 {} µs |",
                        thousands(rps),
                        thousands(p50)
                    );
                }
                _ => md.push_str(" not measured |"),
            }
        }
        md.push('\n');
    }
    md
}

/// One connection's median round trip over each link (the active experiment at one
/// connection), as a sentence.
pub fn one_connection_md(links: &[(&str, Run)]) -> String {
    let p50 = |p: &Point| p.load.as_ref().map(|l| l.latency_us.p50 as f64);
    let said: Vec<String> = links
        .iter()
        .filter_map(|(label, run)| {
            let series = run.series(Experiment::Active, p50);
            let us = series.first()?.values.first()?.1;
            Some(format!("{} µs {label}", thousands(us)))
        })
        .collect();
    format!(
        "One connection alone, one request at a time: a median round trip of {}.\n",
        said.join(", against ")
    )
}
