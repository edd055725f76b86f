//! What a run shows as it goes: a progress bar, and one line per point above it (or
//! on stderr when there is no terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::results::Point;

pub struct Log {
    /// Its message says the job under way, and the load generator's progress in it.
    pub(super) bar: ProgressBar,
}

impl Log {
    pub(super) fn new(jobs: usize) -> Log {
        let bar = ProgressBar::new(jobs as u64);
        bar.set_style(
            ProgressStyle::with_template("{pos}/{len} [{elapsed_precise}] {msg}")
                .expect("valid template"),
        );
        Log { bar }
    }

    /// A line the run says only where there is no bar to show it.
    pub(super) fn without_bar(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        }
    }

    /// What point `what` measured.
    pub(super) fn point(&self, what: &str, p: &Point) {
        let result = if let Some(limit) = &p.limit {
            format!("LIMIT: {limit}")
        } else if let Some(ns) = p.ns_per_wait {
            format!("{ns:.0} ns per wait")
        } else if let Some(s) = &p.slowloris {
            format!(
                "{} of {} slow connections gone within 4 s ({} answered 408, {} turned \
                 away); {} of {} fresh clients served",
                s.evicted + s.answered_503,
                s.opened,
                s.answered_408,
                s.answered_503,
                s.fresh_served,
                s.fresh
            )
        } else if let Some(l) = &p.load {
            format!(
                "{:.0} req/s, p99 {:.2} ms{}{}",
                l.throughput_rps,
                l.latency_us.p99 as f64 / 1000.0,
                match p.errors() {
                    0 => String::new(),
                    n => format!(", {n} errors"),
                },
                if l.loadgen_saturated {
                    " (load generator saturated)"
                } else {
                    ""
                }
            )
        } else {
            "nothing measured".into()
        };
        self.say(&format!("{what}: {result}"));
    }

    /// A line above the bar, or on stderr when there is none.
    pub(super) fn say(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// `iomodels load`'s progress line on stderr (hidden when stderr is not a terminal).
pub struct Bar(ProgressBar);

impl Bar {
    pub fn spinner() -> Bar {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(bar)
    }
}

impl iomodels_loadgen::Progress for Bar {
    fn warn(&self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("iomodels: {line}");
        } else {
            self.0.println(format!("iomodels: {line}"));
        }
    }

    fn ramp(&self, established: u64, failed: u64, total: u64) {
        self.0.set_message(format!(
            "established {established} of {total} ({failed} failed)"
        ));
    }

    fn running(&self, elapsed: Duration, completed: u64, errors: u64) {
        self.0.set_message(format!(
            "{:.1}s  {completed} answered  {errors} errors",
            elapsed.as_secs_f64()
        ));
    }

    fn done(&self) {
        self.0.finish_and_clear();
    }
}
