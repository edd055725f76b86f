//! The figures the book's myths page answers each claim with, from results/reference:
//! one table, one generated sentence per myth (`book/src/generated/myths/KEY.md`). The
//! page's reasoning is prose; its numbers are these.

use crate::experiments::Experiment;
use crate::results::{Point, Run};
use crate::roster::{Contender, EPOLL_CALL, EPOLL_ET, EPOLL_LT, IO_URING, SELECT, TORNADO};
use crate::series::Series;
use crate::verdict;
use crate::words::thousands;

/// One claim of the blog notes, and the sentence of measured figures that answers it.
pub struct Myth {
    /// The generated file's name.
    pub key: &'static str,
    pub figures: fn(&Run) -> String,
}

pub const MYTHS: &[Myth] = &[
    Myth {
        key: "epoll-mmap",
        figures: epoll_mmap,
    },
    Myth {
        key: "et-faster",
        figures: et_faster,
    },
    Myth {
        key: "select-limit",
        figures: select_limit,
    },
    Myth {
        key: "async-blocking",
        figures: async_blocking,
    },
    Myth {
        key: "uring-beats-epoll",
        figures: uring_beats_epoll,
    },
    Myth {
        key: "tornado-async",
        figures: tornado_async,
    },
];

/// A series: a contender, started with these server arguments.
type Pick = (&'static Contender, &'static [&'static str]);

/// A contender as it comes.
const fn plain(who: &'static Contender) -> Pick {
    (who, &[])
}

/// The series `pick` names.
fn named(series: &[Series], pick: Pick) -> Option<&Series> {
    series.iter().find(|s| s.key.is_with(pick.0, pick.1))
}

/// "4.1 µs" or "4.1 µs (a floor)" style: the value at x, if measured there.
fn at(series: &[Series], pick: Pick, x: f64) -> Option<(f64, bool)> {
    named(series, pick)?
        .values
        .iter()
        .find(|v| v.0 == x)
        .map(|v| (v.1, v.2))
}

/// The largest x every one of `picks` was measured at.
fn common_max(series: &[Series], picks: &[Pick]) -> Option<f64> {
    let mut xs: Option<Vec<f64>> = None;
    for pick in picks {
        let mine: Vec<f64> = named(series, *pick)?.values.iter().map(|v| v.0).collect();
        xs = Some(match xs {
            None => mine,
            Some(prev) => prev.into_iter().filter(|x| mine.contains(x)).collect(),
        });
    }
    xs?.into_iter().reduce(f64::max)
}

/// "a costs 6% less than b", or "a and b are indistinguishable in this run": the CPU
/// per request of two series at x, held against the run's floor.
fn verdict_at(run: &Run, a: Pick, b: Pick, x: f64) -> Option<String> {
    let cpu = run.series(Experiment::Idle, Point::cpu_us_per_request);
    let (sa, sb) = (named(&cpu, a)?, named(&cpu, b)?);
    let c = verdict::compare(sa.repeats_at(x)?, sb.repeats_at(x)?, verdict::floor(run))?;
    let pct = (c.ratio - 1.0).abs() * 100.0;
    Some(if c.lower() {
        format!("{} costs {pct:.0}% less than {}", sa.name, sb.name)
    } else if c.higher() {
        format!("{} costs {pct:.0}% more than {}", sa.name, sb.name)
    } else {
        format!(
            "{} and {} are indistinguishable in this run ({pct:.0}% apart, inside the \
             noise floor of {:.0}% or the spread of their repeats)",
            sa.name,
            sb.name,
            c.floor * 100.0
        )
    })
}

/// The verdicts of `a` against `b` at 0 idle connections and at `max`, as a sentence.
fn verdicts(run: &Run, a: Pick, b: Pick, max: f64) -> String {
    let said: Vec<String> = [(0.0, "at 0 idle connections"), (max, "at the most")]
        .iter()
        .filter_map(|&(x, at)| {
            let words = verdict_at(run, a, b, x)?;
            Some(if x == 0.0 {
                format!("{at}, {words}")
            } else {
                format!("at {} idle, {words}", thousands(x))
            })
        })
        .collect();
    if said.is_empty() {
        String::new()
    } else {
        format!(" Held against each other: {}.", said.join("; "))
    }
}

/// A counter per answered request over the window.
fn per_request(p: &Point, counter: fn(&iomodels_servers::Snapshot) -> u64) -> Option<f64> {
    let c = p.server.as_ref()?.counters.as_ref()?;
    (c.requests > 0).then(|| counter(c) as f64 / c.requests as f64)
}

fn floor(saturated: bool) -> &'static str {
    if saturated {
        " (a floor: the load generator was saturated)"
    } else {
        ""
    }
}

/// "NAME a µs" for each series picked, at x, of CPU per request in the idle experiment.
fn cpu_at(run: &Run, picks: &[Pick], x: f64) -> Vec<String> {
    let cpu = run.series(Experiment::Idle, Point::cpu_us_per_request);
    picks
        .iter()
        .filter_map(|pick| {
            let (v, _) = at(&cpu, *pick, x)?;
            Some(format!("{} {v:.2} µs", named(&cpu, *pick)?.name))
        })
        .collect()
}

fn epoll_mmap(run: &Run) -> String {
    let cost = run.series(Experiment::WaitCost, |p| p.ns_per_wait);
    let Some(epoll) = named(&cost, plain(&EPOLL_CALL)) else {
        return "The reference run has no wait-cost figures for epoll.".into();
    };
    let (Some(first), Some(last)) = (epoll.values.first(), epoll.values.last()) else {
        return "The reference run has no wait-cost figures for epoll.".into();
    };
    format!(
        "In the reference run one epoll_wait with one descriptor ready costs {} ns among \
         {} descriptors and {} ns among {}: its cost follows what is ready, not what is \
         watched, with no shared memory at all.",
        thousands(first.1),
        thousands(first.0),
        thousands(last.1),
        thousands(last.0)
    )
}

fn et_faster(run: &Run) -> String {
    let names = [
        plain(&EPOLL_ET),
        plain(&EPOLL_LT),
        (&EPOLL_ET, &["--et-drain", "eagain"]),
    ];
    let cpu = run.series(Experiment::Idle, Point::cpu_us_per_request);
    let calls = run.series(Experiment::Idle, |p| per_request(p, |c| c.syscalls));
    let Some(max) = common_max(&cpu, &names) else {
        return "The reference run has no idle figures for the two epoll models.".into();
    };
    let syscalls: Vec<String> = names
        .iter()
        .filter_map(|pick| {
            let (v, _) = at(&calls, *pick, max)?;
            Some(format!("{} {v:.2}", named(&calls, *pick)?.name))
        })
        .collect();
    format!(
        "Server CPU per request in the reference run, at 0 idle connections: {}; at {} \
         idle: {}. System calls per request at {}: {}.{}",
        cpu_at(run, &names, 0.0).join(", "),
        thousands(max),
        cpu_at(run, &names, max).join(", "),
        thousands(max),
        syscalls.join(", "),
        verdicts(run, names[0], names[1], max) + &verdicts(run, names[2], names[0], max)
    )
}

fn select_limit(run: &Run) -> String {
    let rps = run.series(Experiment::Idle, Point::rps);
    let Some(select) = named(&rps, plain(&SELECT)) else {
        return "The reference run did not run select.".into();
    };
    let held = select.values.iter().map(|v| v.0).reduce(f64::max);
    match (held, select.limits.first()) {
        (Some(held), Some((x, limit))) => format!(
            "In the reference run select held {} idle connections and met its limit at {}: \
             {}.",
            thousands(held),
            thousands(*x),
            limit.why
        ),
        (Some(held), None) => format!(
            "In the reference run select held every point asked of it, up to {} idle \
             connections.",
            thousands(held)
        ),
        _ => "The reference run has no idle figures for select.".into(),
    }
}

fn async_blocking(run: &Run) -> String {
    let reads = run.series(Experiment::Idle, |p| per_request(p, |c| c.reads));
    let waits = run.series(Experiment::Idle, |p| per_request(p, |c| c.wait_calls));
    let parts: Vec<String> = [plain(&EPOLL_ET), plain(&IO_URING)]
        .iter()
        .filter_map(|pick| {
            let (r, _) = at(&reads, *pick, 0.0)?;
            let (w, _) = at(&waits, *pick, 0.0)?;
            Some(format!(
                "{} made {r:.2} read calls and {w:.2} waits per request",
                pick.0.name
            ))
        })
        .collect();
    if parts.is_empty() {
        return "The reference run has no counters for epoll-et and io-uring.".into();
    }
    format!(
        "At 10 busy connections in the reference run, {}: epoll-et waits, then copies \
         with a read of its own; io-uring's bytes are in its buffers when the \
         completion arrives.",
        parts.join("; ")
    )
}

fn uring_beats_epoll(run: &Run) -> String {
    let names = [
        plain(&IO_URING),
        plain(&EPOLL_ET),
        (&IO_URING, &["--uring-mode", "basic"]),
    ];
    let cpu = run.series(Experiment::Idle, Point::cpu_us_per_request);
    let Some(max) = common_max(&cpu, &names) else {
        return "The reference run has no idle figures for io-uring and epoll-et.".into();
    };
    let memory = run.memory_per_idle_connection();
    let kib: Vec<String> = names
        .iter()
        .filter_map(|pick| {
            let s = named(&memory, *pick)?;
            let last = s.values.last()?;
            Some(format!("{} {:.2} KiB", s.name, last.1))
        })
        .collect();
    format!(
        "Server CPU per request in the reference run, at 0 idle connections: {}; at {} \
         idle: {}.{} Memory per idle connection: {}.",
        cpu_at(run, &names, 0.0).join(", "),
        thousands(max),
        cpu_at(run, &names, max).join(", "),
        verdicts(run, names[0], names[1], max),
        kib.join(", ")
    )
}

fn tornado_async(run: &Run) -> String {
    let rps = run.series(Experiment::Blocking, Point::rps);
    let parts: Vec<String> = rps
        .iter()
        .filter(|s| s.key.is_one_of(&[&TORNADO]))
        .filter_map(|s| {
            let v = s.values.first()?;
            Some(format!("{} {:.0} req/s{}", s.name, v.1, floor(v.2)))
        })
        .collect();
    if parts.is_empty() {
        return "Tornado was not installed for the reference run, so it has no figures \
                here; `pip install tornado` and run the blocking experiment."
            .into();
    }
    format!(
        "20 connections, each asking in turn, in the reference run: {}.",
        parts.join(", ")
    )
}
