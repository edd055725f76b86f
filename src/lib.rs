//! The iomodels suite: run the experiments (`bench`), keep what they measured
//! (`results`), and turn it into charts and a report (`charts`, `report`).
//!
//! # Layout
//!
//! - [`bench`]: servers as pinned child processes, the load generator in this process,
//!   the wait-cost loop, peers (nginx, Tornado) and the wrk cross-check.
//! - [`experiments`]: the experiments, one table of facts per experiment.
//! - [`results`]: the run.json schema, read back by everything else.
//! - [`charts`]: SVG charts (plotters), one table of chart specs, one colour per model.
//! - [`report`]: REPORT.md and the terminal table, generated from run.json.
//! - [`book`]: the book's generated pages (model diffs, the reference run's results).

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
