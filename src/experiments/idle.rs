//! The idle experiment's figures: CPU per request, throughput, p99 and memory beside
//! more and more idle connections, and the table of what each wait cost.

use std::fmt::Write as _;

use crate::charts::spec::{ChartSpec, Kind, XAxis};
use crate::results::{Point, Run};
use crate::roster::{Contender, ROSTER};
use crate::series::Series;
use crate::verdict;
use crate::words::thousands;

use super::caption::{and_list, changes, floor_mark, floor_note, floor_words, short, Change};
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
    let floor = verdict::floor_of(run, Point::rps);
    let series = run.series(Experiment::Idle, Point::rps);
    let changes = changes(&series, floor);
    let mut floors = false;
    let kept: Vec<String> = changes
        .iter()
        .filter(|c| !c.fell())
        .map(|c| {
            floors |= c.saturated;
            format!("{}{}", c.series.name, floor_mark(c.saturated))
        })
        .collect();
    let mut fell: Vec<&Change> = changes.iter().filter(|c| c.fell()).collect();
    fell.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    let fell: Vec<String> = fell
        .iter()
        .map(|c| {
            floors |= c.saturated;
            format!(
                "{} to {:.0}%{} at {}",
                c.series.name,
                c.ratio() * 100.0,
                floor_mark(c.saturated),
                thousands(c.at)
            )
        })
        .collect();
    let mut parts = Vec::new();
    if !kept.is_empty() {
        parts.push(format!(
            "{} kept their 0-idle throughput at the most idle connections each held \
             (within noise, or more)",
            and_list(&kept)
        ));
    }
    if !fell.is_empty() {
        parts.push(format!("fell, most first: {}", and_list(&fell)));
    }
    parts.extend(limits(&series));
    format!(
        "The same {} busy connections, with more and more idle ones beside them, held \
         against {}: {}.{}",
        run.settings.busy_connections,
        floor_words(floor),
        parts.join("; "),
        floor_note(floors)
    )
}

/// "select could not hold 1,000; a, b and c could not hold 30,000": where the series
/// met their limits, those that met it at the same x together.
fn limits(series: &[Series]) -> Option<String> {
    let mut at: Vec<(f64, Vec<String>)> = Vec::new();
    for s in series {
        let Some((x, _)) = s.limits.first() else {
            continue;
        };
        match at.iter_mut().find(|(y, _)| y == x) {
            Some((_, names)) => names.push(s.name.clone()),
            None => at.push((*x, vec![s.name.clone()])),
        }
    }
    at.sort_by(|a, b| a.0.total_cmp(&b.0));
    let met: Vec<String> = at
        .iter()
        .map(|(x, names)| format!("{} could not hold {}", and_list(names), thousands(*x)))
        .collect();
    (!met.is_empty()).then(|| met.join("; "))
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
        .filter(|q| q.limits())
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
    let floor = verdict::floor(run);
    let series = run.series(Experiment::Idle, Point::cpu_us_per_request);
    let changes = changes(&series, floor);
    let same: Vec<String> = changes
        .iter()
        .filter(|c| !c.grew() && !c.fell())
        .map(|c| c.series.name.clone())
        .collect();
    let mut grew: Vec<&Change> = changes.iter().filter(|c| c.grew()).collect();
    grew.sort_by(|a, b| b.ratio().total_cmp(&a.ratio()));
    let grew: Vec<String> = grew
        .iter()
        .map(|c| {
            format!(
                "{} {:.1} → {:.1} µs at {} ({:.1}×, {}/s a CPU)",
                c.series.name,
                c.from,
                c.to,
                thousands(c.at),
                c.ratio(),
                short(1e6 / c.to)
            )
        })
        .collect();
    let fell: Vec<String> = changes
        .iter()
        .filter(|c| c.fell())
        .map(|c| format!("{} ({:.1} → {:.1} µs)", c.series.name, c.from, c.to))
        .collect();
    let mut parts = Vec::new();
    if !same.is_empty() {
        parts.push(format!(
            "indistinguishable from 0 idle at the most each held: {}",
            and_list(&same)
        ));
    }
    if !grew.is_empty() {
        parts.push(format!("grew, most first: {}", and_list(&grew)));
    }
    if !fell.is_empty() {
        parts.push(format!("fell: {}", and_list(&fell)));
    }
    parts.extend(limits(&series));
    format!(
        "Server CPU time per answered request, the figure no load generator can cap (an \
         O(n) scan per wait shows up here first), from 0 idle connections to the most each \
         model held, held against {}: {}.",
        floor_words(floor),
        parts.join("; ")
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
         window, medians of repeats). Descriptors per wait: those the call scanned (select, \
         poll, busy-poll's asks), or, where the kernel keeps the list (epoll, io-uring, \
         sigio), those it handed back ready.\n\n| model | idle | server CPU per request (µs) \
         | system calls per request | wait calls per request | descriptors per wait | empty \
         reads per request | threads | RSS (MB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
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
