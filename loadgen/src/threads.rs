//! The run of one process: limits checked, a thread per share of the connections, the
//! ramp, the common start, the window watched for the caller, the tallies merged.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::engine::{self, Plan, Shared, Start};
use crate::limits;
use crate::progress::Progress;
use crate::report::Report;
use crate::tally::{ErrorClass, Tally};
use crate::window::Window;

/// Run the load described by `config`; `Err` says why it could not run or could not
/// reach what was asked.
pub fn run(config: &Config, progress: &dyn Progress) -> Result<Report, String> {
    let (tally, measured) = run_tally(config, progress)?;
    let report = Report::new(
        config,
        &tally,
        measured,
        peak_rss_kb(),
        lanes(config.threads),
    );
    Ok(report)
}

/// How many of `threads` can run at once here: no more than the CPUs this process may use.
pub fn lanes(threads: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads.min(cpus).max(1)
}

/// [`run`], up to the merged tally of its threads and the time it measured.
pub fn run_tally(config: &Config, progress: &dyn Progress) -> Result<(Tally, Duration), String> {
    config.check()?;
    if config.processes > 1 {
        return Err("a run of several processes is processes::run's".into());
    }
    let total = config.connections + config.idle;
    limits::ensure_fds(total)?;
    limits::check_ports(total, config.source_addrs.len(), limits::ephemeral_ports())?;

    let plans = plans(config);
    let shared = Shared::default();
    let overflows = limits::Overflows::start();
    let (tallies, measured, ready) = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn_scoped(scope, move || engine::run(config, plan, shared))
                    .expect("spawn a load thread")
            })
            .collect();
        let everyone_ready = ramp(&handles, &shared, total, &overflows, progress);
        let ready = everyone_ready && shared.established.load(Relaxed) as usize >= total;
        let start = gate(&shared, everyone_ready, total, progress);
        if let Some(start) = start {
            progress.started();
            let window = Window::after(start, config.warmup, config.duration);
            watch(start, window, &handles, &shared, progress);
        }
        shared.release_threads();
        let tallies: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (tallies, start.map(|_| config.duration), ready)
    });
    progress.done();

    let tally = merge(tallies)?;
    let Some(measured) = measured else {
        if ready {
            // Every connection was up; whoever runs us (a parent over several load
            // processes) said stop, because another was not.
            return Err(format!(
                "established all {total} connections, then was told to stop before the \
                 window (another load process was not ready)"
            ));
        }
        return Err(nothing_measured(&tally, total, overflows.since()));
    };
    Ok((tally, measured))
}

/// A load thread, as the main thread holds it.
type Handle<'scope> = ScopedJoinHandle<'scope, io::Result<Tally>>;

/// Each thread's share: the connections and the connect rate split as evenly as they go,
/// with the global index of its first connection of each kind.
fn plans(config: &Config) -> Vec<Plan> {
    let threads = config.threads;
    (0..threads)
        .map(|t| {
            let share = |n: usize| n / threads + usize::from(t < n % threads);
            let before = |n: usize| {
                (0..t)
                    .map(|u| n / threads + usize::from(u < n % threads))
                    .sum::<usize>()
            };
            Plan {
                idle: share(config.idle),
                active: share(config.connections),
                first_active: before(config.connections),
                first_conn: before(config.idle) + before(config.connections),
                connect_rate: config.connect_rate / threads as f64,
            }
        })
        .collect()
}

/// The ramp: wait for every thread to have opened (or failed) its connections; false if
/// one ended before it was ready. A listen queue that overflows meanwhile is said at once
/// (within a quarter of a second): each connection it turned away waits a second.
fn ramp(
    handles: &[Handle<'_>],
    shared: &Shared,
    total: usize,
    overflows: &limits::Overflows,
    progress: &dyn Progress,
) -> bool {
    let mut told = false;
    for turn in 0u64.. {
        if !told && turn % 5 == 4 {
            if let Some(n) = overflows.since().filter(|&n| n > 0) {
                let up = shared.established.load(Relaxed);
                progress.warn(&limits::Overflows::explain(n, up, total as u64));
                told = true;
            }
        }
        let ready = shared.ready.load(Relaxed) as usize;
        progress.ramp(
            shared.established.load(Relaxed),
            shared.connect_failed.load(Relaxed),
            total as u64,
        );
        if ready == handles.len() {
            return true;
        }
        if handles.iter().any(|h| h.is_finished()) {
            return false; // a thread failed before it was ready
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!("the ramp's turns never run out")
}

/// The gate: the caller decides whether to start; every thread starts at the instant
/// returned, or none does (None).
fn gate(
    shared: &Shared,
    everyone_ready: bool,
    total: usize,
    progress: &dyn Progress,
) -> Option<Instant> {
    let established = shared.established.load(Relaxed) as usize;
    let go = progress.gate(everyone_ready && established >= total);
    let start = Instant::now() + Duration::from_millis(10);
    *shared.start.lock().unwrap() = if go { Start::At(start) } else { Start::Abort };
    shared.go.notify_all();
    go.then_some(start)
}

/// The run from `start`: progress for the caller, told on time when the window opens and
/// when it closes.
fn watch(
    start: Instant,
    window: Window,
    handles: &[Handle<'_>],
    shared: &Shared,
    progress: &dyn Progress,
) {
    let (opens, end) = (window.from, window.end);
    let mut opened = false;
    // The threads stop at `end` by their own clocks: one may finish just before
    // this loop sees `end`, so the window is closed after the loop, whichever
    // way it ends.
    while !handles.iter().any(|h| h.is_finished()) {
        let now = Instant::now();
        if !opened && now >= opens {
            progress.window_opened();
            opened = true;
        }
        if now >= end {
            break;
        }
        progress.running(
            start.elapsed(),
            shared.completed.load(Relaxed),
            shared.errors.load(Relaxed),
        );
        // Wake at the window's edges exactly, to tell the caller on time.
        let next = now + Duration::from_millis(200);
        let next = if opened {
            next.min(end)
        } else {
            next.min(opens)
        };
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    if opened {
        progress.window_closed();
    }
}

/// The threads' tallies as one, or why a thread has none.
fn merge(results: Vec<std::thread::Result<io::Result<Tally>>>) -> Result<Tally, String> {
    let mut tally = Tally::default();
    for result in results {
        match result {
            Ok(Ok(t)) => tally.merge(&t),
            Ok(Err(e)) => return Err(format!("a load thread failed: {e}")),
            Err(_) => return Err("a load thread panicked".into()),
        }
    }
    Ok(tally)
}

/// Why a run that never started measured nothing, with the errors of its ramp and the
/// listen queues' overflows meanwhile.
fn nothing_measured(tally: &Tally, total: usize, overflows: Option<u64>) -> String {
    let errors: Vec<String> = ErrorClass::ALL
        .iter()
        .filter(|&&c| tally.errors[c as usize] > 0)
        .map(|&c| format!("{} {}", c.name(), tally.errors[c as usize]))
        .collect();
    let established = tally.active_established + tally.idle_established;
    let refused = tally.errors[ErrorClass::ConnectRefused as usize];
    let why = match overflows {
        _ if established == 0 && refused > 0 => {
            "every connect was refused: is the server up, and listening at --target?".into()
        }
        Some(n) if n > 0 => limits::Overflows::explain(n, established, total as u64),
        Some(_) => "no listen queue overflowed; is the server up and accepting?".into(),
        None => "is the server up, and its backlog deep enough for --connect-rate?".into(),
    };
    format!(
        "established {established} of {total} connections ({}); nothing was measured: {why}",
        if errors.is_empty() {
            "no errors".into()
        } else {
            errors.join(", ")
        }
    )
}

/// This process's peak resident memory, from /proc.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that measured nothing names the likeliest cause from what it saw: refusals
    /// (nothing listens), overflows (a queue too short), or neither (a server not
    /// accepting).
    #[test]
    fn nothing_measured_names_what_was_seen() {
        let mut refused = Tally::default();
        refused.errors[ErrorClass::ConnectRefused as usize] = 3;
        let said = nothing_measured(&refused, 3, Some(0));
        assert!(said.contains("every connect was refused"), "{said}");

        let mut timed_out = Tally::default();
        timed_out.errors[ErrorClass::ConnectTimeout as usize] = 48;
        timed_out.idle_established = 2;
        let said = nothing_measured(&timed_out, 50, Some(336));
        assert!(
            said.starts_with("established 2 of 50 connections (connect_timeout 48)")
                && said.contains("overflowed 336 times"),
            "{said}"
        );
        let said = nothing_measured(&timed_out, 50, Some(0));
        assert!(said.contains("no listen queue overflowed"), "{said}");
    }
}
