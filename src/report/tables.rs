//! An experiment's tables: a row per series, a column per x, the cell the median of
//! the repeats, `limit` where the series could not go.

use std::fmt::Write as _;

use crate::experiments::caption::short;
use crate::experiments::kind::Experiment;
use crate::results::{Point, Run};
use crate::roster::Contender;
use crate::words::thousands;

/// Column headers (the xs) and rows (model, cells) of an experiment's table.
/// What a table shows: its name, the y of a point, and how a value is written.
pub(crate) struct Figure {
    name: &'static str,
    /// Its name in a terminal table's corner.
    pub(crate) short: &'static str,
    y: fn(&Point) -> Option<f64>,
    cell: fn(f64) -> String,
    /// A saturated load generator makes it a floor (starred); CPU per request is not.
    floors: bool,
}

impl Figure {
    /// The figure an experiment's table shows.
    pub(crate) fn of(experiment: Experiment) -> Figure {
        let facts = experiment.facts();
        Figure {
            name: facts.y_name,
            short: facts.y_name,
            y: facts.y,
            cell: thousands,
            floors: true,
        }
    }

    /// Server CPU per request, and the capacity it implies.
    pub(crate) const CPU: Figure = Figure {
        name: "server CPU µs per request (user + sys), and the requests per second one CPU \
               could serve at that cost",
        short: "server CPU µs per request (one CPU's capacity)",
        y: Point::cpu_us_per_request,
        cell: |v| format!("{v:.1} ({}/s)", short(1e6 / v)),
        floors: false,
    };
}

pub(crate) fn grid(
    run: &Run,
    experiment: Experiment,
    figure: &Figure,
    only: Option<&[&Contender]>,
) -> (Vec<f64>, Vec<(String, Vec<String>)>) {
    let mut series = run.series(experiment, figure.y);
    series.retain(|s| s.key.shown(only));
    if let Some(only) = only {
        // In the order asked for: a chapter's own model first.
        series.sort_by_key(|s| s.key.rank(only));
    }
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .map(|v| v.0)
                .chain(s.limits.iter().map(|l| l.0))
        })
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let rows = series
        .iter()
        .map(|s| {
            let cells = xs
                .iter()
                .map(|&x| {
                    if s.limits.iter().any(|l| l.0 == x) {
                        "limit".to_string()
                    } else if let Some(v) = s.values.iter().find(|v| v.0 == x) {
                        let star = if v.2 && figure.floors { "*" } else { "" };
                        format!("{}{star}", (figure.cell)(v.1))
                    } else {
                        "–".to_string()
                    }
                })
                .collect();
            (s.name.clone(), cells)
        })
        .collect();
    (xs, rows)
}

/// An experiment's table, every model, with the legend.
pub fn table(run: &Run, experiment: Experiment) -> String {
    table_md(run, experiment, None)
}

/// An experiment's tables: the server's CPU per request first where the load generator
/// can be the limit, then the experiment's own figure.
pub(crate) fn table_md(run: &Run, experiment: Experiment, only: Option<&[&Contender]>) -> String {
    let mut md = String::new();
    if experiment.facts().cpu_leads {
        md.push_str(&figure_md(run, experiment, &Figure::CPU, only));
    }
    let main = figure_md(run, experiment, &Figure::of(experiment), only);
    if main.is_empty() {
        return main;
    }
    md.push_str(&main);
    if only.is_none() {
        md.push_str(LEGEND);
    }
    md
}

pub(crate) fn figure_md(
    run: &Run,
    experiment: Experiment,
    figure: &Figure,
    only: Option<&[&Contender]>,
) -> String {
    let facts = experiment.facts();
    let (xs, rows) = grid(run, experiment, figure, only);
    if rows.is_empty() {
        return String::new();
    }
    let mut md = format!("{}, by {}:\n\n| model |", figure.name, facts.x_name);
    for x in &xs {
        let _ = write!(md, " {} |", thousands(*x));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(xs.len()));
    md.push('\n');
    for (name, cells) in rows {
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
    md.push('\n');
    md
}

pub(crate) const LEGEND: &str =
    "`limit`: the model could not hold this point (reasons in the chart notes \
    and run.json); `*`: the load generator was saturated, so the figure is a floor.\n\n";
