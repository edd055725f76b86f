//! What a chart is: its file, title and axes, what it draws from a run, and the
//! sentence under it. Each experiment keeps its own charts (`crate::experiments`); the
//! drawing code only reads them.

use crate::experiments::kind::Experiment;
use crate::results::Run;
use crate::series::Series;

/// One entry of the table of charts.
pub struct ChartSpec {
    pub file: &'static str,
    pub title: &'static str,
    /// The experiment whose points it draws; its x axis is that experiment's.
    pub experiment: Experiment,
    pub y_desc: &'static str,
    pub kind: Kind,
    /// What it draws: one series per model, from the run.
    pub series: fn(&Run) -> Vec<Series>,
    /// The sentence under it, computed from the run.
    pub sentence: fn(&Run) -> String,
    /// It shows latency, which a CPU quota on the server distorts: say so under it.
    pub latency: bool,
}

/// How a chart is drawn.
#[derive(Clone, Debug)]
pub enum Kind {
    /// One line per model over x, the legend beside the plot.
    Lines { x: XAxis, log_y: bool },
    /// Grouped bars: one group per x, one bar per model.
    Bars,
}

/// How a line chart spreads its x values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum XAxis {
    Log,
    /// Logarithmic, yet with room for 0: x is drawn at log10(1 + x / 100), so that 0,
    /// 500 and 100,000 idle connections all get a place of their own (linearly, the
    /// points up to 15,000 would share a sixth of the width).
    LogFromZero,
}

/// Where [`XAxis::LogFromZero`] turns from nearly linear to logarithmic.
pub const KNEE: f64 = 100.0;

impl XAxis {
    /// Where `x` is drawn.
    pub fn place(self, x: f64) -> f64 {
        match self {
            XAxis::LogFromZero => (1.0 + x / KNEE).log10(),
            XAxis::Log => x,
        }
    }

    /// The x drawn at `place`: what its tick says.
    pub fn value(self, place: f64) -> f64 {
        match self {
            XAxis::LogFromZero => ((10f64.powf(place) - 1.0) * KNEE).round(),
            XAxis::Log => place,
        }
    }
}
