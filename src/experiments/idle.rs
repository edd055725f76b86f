//! The idle experiment's figures: CPU per request, throughput, p99 and memory beside
//! more and more idle connections, and the table of what each wait cost.

use std::fmt::Write as _;

use crate::charts::spec::{ChartSpec, Kind, XAxis};
use crate::results::{Point, Run};
use crate::roster::{Contender, ROSTER};
use crate::series::Series;
use crate::words::thousands;

use super::caption::{cpu_parts, floor_mark, floor_note, keep};
use super::kind::Experiment;

/// Its charts, in the order the report shows them.
pub const CHARTS: &[ChartSpec] = &[
    ChartSpec {
        file: "idle-cpu-per-request.svg",
        title: "Server CPU time per request beside idle connections",
        experiment: Experiment::Idle,
        y_desc: "server CPU per request (µs, user + sys, log scale)",
        kind: Kind::Lines {
            x: XAxis::LogFromZero,
            log_y: true,
        },
        series: |run| run.series(Experiment::Idle, Point::cpu_us_per_request),
        sentence: idle_cpu_per_request,
        latency: false,
    },
    ChartSpec {
        file: "idle-throughput.svg",
        title: "Throughput of a few busy connections beside idle ones",
        experiment: Experiment::Idle,
        y_desc: "requests per second (2xx)",
        kind: Kind::Lines {
            x: XAxis::LogFromZero,
            log_y: false,
        },
        series: |run| run.series(Experiment::Idle, Point::rps),
        sentence: idle_throughput,
        latency: false,
    },
    ChartSpec {
        file: "idle-p99.svg",
        title: "p99 latency of the busy connections beside idle ones",
        experiment: Experiment::Idle,
        y_desc: "p99 latency (ms, log scale)",
        kind: Kind::Lines {
            x: XAxis::LogFromZero,
            log_y: true,
        },
        series: |run| run.series(Experiment::Idle, Point::p99_ms),
        sentence: idle_p99,
        latency: true,
    },
    ChartSpec {
        file: "memory-per-connection.svg",
        title: "Server memory per idle connection",
        experiment: Experiment::Idle,
        y_desc: "resident memory per idle connection (KiB)",
        kind: Kind::Lines {
            x: XAxis::LogFromZero,
            log_y: false,
        },
        series: Run::memory_per_idle_connection,
        sentence: memory_per_connection,
        latency: false,
    },
];

/// Its tables beside the main one.
pub const TABLES: &[fn(&Run) -> String] = &[|run| counters_md(run, None)];

pub fn idle_throughput(run: &Run) -> String {
    let mut floors = false;
    let parts: Vec<String> = run
        .series(Experiment::Idle, Point::rps)
        .iter()
        .filter_map(|s| keep(s).map(|k| (s, k)))
        .map(|(s, (x, ratio, saturated))| {
            floors |= saturated;
            let limit = s.limits.first().map_or(String::new(), |l| {
                format!(", and cannot hold {}", thousands(l.0))
            });
            format!(
                "{} keeps {:.0}%{} of its 0-idle throughput at {} idle{limit}",
                s.name,
                ratio * 100.0,
                floor_mark(saturated),
                thousands(x)
            )
        })
        .collect();
    format!(
        "The same {} busy connections, with more and more idle ones beside them: {}.{}",
        run.settings.busy_connections,
        parts.join("; "),
        floor_note(floors)
    )
}

pub fn idle_p99(run: &Run) -> String {
    let parts: Vec<String> = run
        .series(Experiment::Idle, Point::p99_ms)
        .iter()
        .filter_map(|s| {
            let first = s.values.first()?;
            let last = s.values.last()?;
            Some(format!("{} {:.2} → {:.2} ms", s.name, first.1, last.1))
        })
        .collect();
    let quota = run
        .settings
        .server_cpu_quota
        .as_ref()
        .map_or(String::new(), |q| {
            format!(
            " Measured under the servers' CPU quota: a throttled server pauses up to {:.0} ms, \
             so these tails hold throttling as well as the model's own work.",
            q.longest_pause_ms()
        )
        });
    format!(
        "p99 latency of the busy connections from the fewest to the most idle ones each \
         model held: {}.{quota}",
        parts.join(", ")
    )
}

pub fn idle_cpu_per_request(run: &Run) -> String {
    let parts = cpu_parts(run, Experiment::Idle);
    format!(
        "Server CPU time per answered request, the figure no load generator can cap, from 0 \
         idle connections to the most each model held (an O(n) scan per wait shows up here \
         first), and the requests per second one CPU could serve at that cost: {}.",
        parts.join(", ")
    )
}

pub fn memory_per_connection(run: &Run) -> String {
    let per_idle = run.memory_per_idle_connection();
    let parts: Vec<String> = per_idle
        .iter()
        .filter_map(|s| {
            let last = s.values.last()?;
            Some(format!("{} {:.1} KiB", s.name, last.1))
        })
        .collect();
    // What the roster says of each series measured that costs more than a little.
    let why: Vec<String> = ROSTER
        .iter()
        .flat_map(|c| c.memory.iter().map(move |(args, why)| (c, args, why)))
        .filter_map(|(c, args, why)| {
            let s = per_idle.iter().find(|s| s.key.is_with(c, args))?;
            Some(format!("{} pays for {why}", s.name))
        })
        .collect();
    let mut sentence = format!(
        "Resident memory each idle connection adds, at the most idle connections each \
         model held: {}.",
        parts.join(", ")
    );
    if !why.is_empty() {
        let _ = write!(
            sentence,
            " Where it is more than a few hundred bytes: {}.",
            why.join("; ")
        );
    }
    sentence
}

/// The model's own counters at the largest idle point it held: what its waits cost.
pub fn counters_md(run: &Run, only: Option<&[&Contender]>) -> String {
    let mut md = String::from(
        "What each wait cost at the largest idle point each model held (its counters over the \
         window, medians of repeats):\n\n| model | idle | server CPU per request (µs) | system \
         calls per request | wait calls per request | fds scanned per wait | empty reads per \
         request | threads | RSS (MB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let per = |f: fn(&iomodels_servers::Snapshot) -> f64| {
        move |p: &Point| p.server.as_ref()?.counters.as_ref().map(f)
    };
    let wait_per_req = run.series(
        Experiment::Idle,
        per(|c| c.wait_calls as f64 / c.requests.max(1) as f64),
    );
    let scanned = run.series(
        Experiment::Idle,
        per(|c| c.fds_scanned as f64 / c.wait_calls.max(1) as f64),
    );
    let empty = run.series(
        Experiment::Idle,
        per(|c| c.empty_reads as f64 / c.requests.max(1) as f64),
    );
    let cpu = run.series(Experiment::Idle, Point::cpu_us_per_request);
    // Counted since schema 2: "–" for older runs.
    let syscalls = run.series(Experiment::Idle, |p| {
        let c = p.server.as_ref()?.counters.as_ref()?;
        (c.syscalls > 0).then(|| c.syscalls as f64 / c.requests.max(1) as f64)
    });
    let threads = run.series(Experiment::Idle, |p| {
        p.server.as_ref().map(|s| s.threads as f64)
    });
    let rss = run.series(Experiment::Idle, |p| {
        p.server.as_ref().map(|s| s.rss_kb as f64 / 1024.0)
    });
    let mut rows: Vec<&Series> = cpu.iter().filter(|s| s.key.shown(only)).collect();
    if let Some(only) = only {
        rows.sort_by_key(|s| s.key.rank(only));
    }
    for s in rows {
        let Some(&(x, _, _)) = s.values.last() else {
            continue;
        };
        let at = |all: &[Series], digits: usize| {
            all.iter()
                .find(|t| t.key == s.key)
                .and_then(|t| t.values.iter().find(|v| v.0 == x))
                .map_or("–".to_string(), |v| format!("{:.*}", digits, v.1))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            thousands(x),
            at(&cpu, 1),
            at(&syscalls, 2),
            at(&wait_per_req, 3),
            at(&scanned, 0),
            at(&empty, 2),
            at(&threads, 0),
            at(&rss, 1)
        );
    }
    md.push('\n');
    md
}
