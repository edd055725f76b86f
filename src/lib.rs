//! The iomodels suite: who runs, what is run, what it measured, and what a reader sees
//! of it.
//!
//! # Layout
//!
//! In the order data flows through them:
//!
//! - [`roster`]: who can run, one row each: our models, the peers (nginx, Tornado), the
//!   engineer's own `--server`s, the wait calls; how each starts, its colour, its
//!   chapter. Everything else asks it.
//! - [`experiments`]: the experiments, one row of facts each: its variants, its driver,
//!   and its figures (charts, their captions, its tables), each experiment in a file of
//!   its own; [`experiments::kind`] is the vocabulary of the run file.
//! - [`bench`]: the rig (pinning, descriptor limit, network, quota, remote host), the
//!   jobs, one point measured, the run saved; servers as pinned child processes, the
//!   load generator in this process, the wrk cross-check.
//! - [`results`]: the run.json schema, read back by everything after it.
//! - [`series`]: a run's points as series ([`series::SeriesKey`]: who, arguments,
//!   route), the median of repeats at each x.
//! - [`charts`]: SVG charts (plotters); it only draws what an experiment's chart says.
//! - [`report`]: REPORT.md and the terminal table, walking the experiments' figures.
//! - [`book`]: the book's generated pages (model diffs, the reference run's results,
//!   the myths' figures from [`myths`], the timelines from [`timeline`]).
//! - [`verdict`]: every comparative word, from one comparison held against the
//!   spread of the repeats and the run's A/A noise floor.
//! - [`words`]: numbers as the report, the charts and the book write them.

pub mod bench;
pub mod book;
pub mod charts;
pub mod experiments;
pub mod myths;
pub mod report;
pub mod results;
pub mod roster;
pub mod series;
pub mod timeline;
pub mod verdict;
pub mod words;

use std::path::Path;

pub use results::Run;

/// Draw the charts and write REPORT.md for the run in `dir`, from its run.json.
pub fn plot(dir: &Path) -> Result<(Run, Vec<&'static charts::ChartSpec>), String> {
    let run = Run::load(dir)?;
    let drawn = charts::draw_all(&run, dir, experiments::charts())?;
    let path = dir.join("REPORT.md");
    std::fs::write(&path, report::markdown(&run, &drawn))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((run, drawn))
}
