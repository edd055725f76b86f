//! The wait-cost experiment's figures: nanoseconds per wait call, beside Kerrisk's.

use std::fmt::Write as _;

use crate::charts::spec::{ChartSpec, Kind, XAxis};
use crate::results::Run;
use crate::roster::{self, Contender};
use crate::verdict;
use crate::words::thousands;

use super::kind::Experiment;

/// Its charts, in the order the report shows them.
pub const CHARTS: &[ChartSpec] = &[ChartSpec {
    file: "wait-cost.svg",
    title: "Cost of one wait call with one descriptor ready (after Kerrisk)",
    experiment: Experiment::WaitCost,
    y_desc: "nanoseconds per call (log scale)",
    kind: Kind::Lines {
        x: XAxis::Log,
        log_y: true,
    },
    series: |run| run.series(Experiment::WaitCost, |p| p.ns_per_wait),
    sentence: wait_cost,
    latency: false,
}];

/// Its tables beside the main one.
pub const TABLES: &[fn(&Run) -> String] = &[kerrisk_md];

pub fn wait_cost(run: &Run) -> String {
    let series = run.series(Experiment::WaitCost, |p| p.ns_per_wait);
    let of = |call: &Contender| series.iter().find(|s| s.key.is_plain(call));
    let (Some(poll), Some(epoll)) = (of(&roster::POLL_CALL), of(&roster::EPOLL_CALL)) else {
        return "One descriptor ready among N: nanoseconds per wait call.".into();
    };
    let (Some(p), Some(e)) = (poll.values.last(), epoll.values.last()) else {
        return "One descriptor ready among N: nanoseconds per wait call.".into();
    };
    if p.0 != e.0 {
        return "One descriptor ready among N: nanoseconds per wait call.".into();
    }
    // The A/A pair measures servers, not wait calls: the floor for runs without one.
    let floor = verdict::FLOOR_WITHOUT_PAIR;
    let c = poll
        .repeats_at(p.0)
        .zip(epoll.repeats_at(e.0))
        .and_then(|(a, b)| verdict::compare(a, b, floor));
    let against = match c {
        Some(c) if c.higher() && c.ratio >= 2.0 => format!("{:.0} times less", c.ratio),
        Some(c) if c.higher() => format!("{:.0}% less", (1.0 - 1.0 / c.ratio) * 100.0),
        Some(c) if c.lower() && c.ratio <= 0.5 => format!("{:.0} times more", 1.0 / c.ratio),
        Some(c) if c.lower() => format!("{:.0}% more", (1.0 / c.ratio - 1.0) * 100.0),
        _ => "indistinguishable in this run".into(),
    };
    format!(
        "One descriptor ready among N: at {} descriptors a poll call costs {} ns and an \
         epoll_wait {} ns, {against}; select stops at FD_SETSIZE.",
        thousands(p.0),
        thousands(p.1),
        thousands(e.1),
    )
}

/// Kerrisk's seconds for 100,000 monitoring operations, at N = 10, 100, 1000, 10000
/// descriptors with one ready, from two sources that differ, each quoted as it is: his
/// book (The Linux Programming Interface, 2010, table 63-9) and his 2006 conference
/// slides, whose figures were long quoted here as the book's.
pub struct KerriskSource {
    pub name: &'static str,
    pub figures: &'static [(&'static Contender, [f64; 4])],
}

pub const KERRISK: &[KerriskSource] = &[
    KerriskSource {
        name: "TLPI table 63-9",
        figures: &[
            (&roster::POLL_CALL, [0.61, 2.9, 35.0, 990.0]),
            (&roster::SELECT_CALL, [0.73, 3.0, 35.0, 930.0]),
            (&roster::EPOLL_CALL, [0.41, 0.42, 0.53, 0.66]),
        ],
    },
    KerriskSource {
        name: "2006 slides",
        figures: &[
            (&roster::POLL_CALL, [1.12, 6.8, 157.0, 1750.0]),
            (&roster::SELECT_CALL, [1.28, 7.1, 151.0, 1087.0]),
            (&roster::EPOLL_CALL, [0.65, 0.68, 0.89, 0.97]),
        ],
    },
];

pub const KERRISK_N: [usize; 4] = [10, 100, 1000, 10_000];

fn kerrisk_md(run: &Run) -> String {
    let series = run.series(Experiment::WaitCost, |p| p.ns_per_wait);
    let mut md = String::from(
        "Beside Kerrisk's figures, from his book (*The Linux Programming Interface*, 2010, \
         table 63-9) and from his 2006 conference slides, which differ: seconds for \
         100,000 operations, each beside its ratio to its own N = 10. The absolute figures \
         differ by years of hardware; the growth with N is the lesson:\n\n\
         | call | N | ours (ns per call) | ours, × N=10 |",
    );
    for source in KERRISK {
        let _ = write!(md, " {} (s per 100k) | × N=10 |", source.name);
    }
    md.push_str("\n|---|---:|---:|---:|");
    md.push_str(&"---:|---:|".repeat(KERRISK.len()));
    md.push('\n');
    for (row, (call, _)) in KERRISK[0].figures.iter().enumerate() {
        let ours = series.iter().find(|s| s.key.is_plain(call));
        let base = ours
            .and_then(|s| s.values.iter().find(|v| v.0 == 10.0))
            .map(|v| v.1);
        for (i, n) in KERRISK_N.iter().enumerate() {
            let value = ours.and_then(|s| s.values.iter().find(|v| v.0 == *n as f64));
            let limited = ours.is_some_and(|s| s.limits.iter().any(|l| l.0 == *n as f64));
            let (ns, ratio) = match (value, base) {
                (Some(v), Some(b)) => (thousands(v.1), format!("{:.1}", v.1 / b)),
                (Some(v), None) => (thousands(v.1), "–".into()),
                _ if limited => ("limit".into(), "–".into()),
                _ => ("–".into(), "–".into()),
            };
            let _ = write!(
                md,
                "| {} | {} | {ns} | {ratio} |",
                call.name,
                thousands(*n as f64)
            );
            for source in KERRISK {
                let theirs = source.figures[row].1;
                let _ = write!(md, " {} | {:.1} |", theirs[i], theirs[i] / theirs[0]);
            }
            md.push('\n');
        }
    }
    md.push('\n');
    md
}
