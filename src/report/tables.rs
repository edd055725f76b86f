//! An experiment's tables: a row per series, a column per x, the cell the median of
//! the repeats, `limit` where the series could not go.

use std::fmt::Write as _;

use crate::experiments::caption::short;
use crate::experiments::kind::Experiment;
use crate::results::{Point, Run, MIN_ANSWERS};
use crate::roster::Contender;
use crate::words::thousands;

/// Column headers (the xs) and rows (model, cells) of an experiment's table.
/// What a table shows: its name, the y of a point, and how a value is written.
pub(crate) struct Figure {
    name: &'static str,
    /// Its name in a terminal table's corner.
    pub(crate) short: &'static str,
    y: fn(&Point) -> Option<f64>,
    /// A value, with the spread of its repeats where there were several.
    cell: fn(f64, Option<f64>) -> String,
    /// A saturated load generator makes it a floor (starred); CPU per request is not.
    floors: bool,
    /// What a cell says where the point was measured yet has no figure.
    unmeasured: &'static str,
}

/// `12,345 ±678`: a value and its spread.
fn with_spread(v: f64, spread: Option<f64>) -> String {
    match spread {
        Some(s) => format!("{} ±{}", thousands(v), thousands(s)),
        None => thousands(v),
    }
}

impl Figure {
    /// The figure an experiment's table shows.
    pub(crate) fn of(experiment: Experiment) -> Figure {
        let facts = experiment.facts();
        Figure {
            name: facts.y_name,
            short: facts.y_name,
            y: facts.y,
            cell: with_spread,
            floors: true,
            unmeasured: "–",
        }
    }

    /// Server CPU per request, and the capacity it implies.
    pub(crate) const CPU: Figure = Figure {
        name: "server CPU µs per request (user + sys), and the requests per second one CPU \
               could serve at that cost",
        short: "server CPU µs per request (one CPU's capacity)",
        y: Point::cpu_us_per_request,
        cell: |v, spread| match spread {
            Some(s) => format!("{v:.1} ±{s:.1} ({}/s)", short(1e6 / v)),
            None => format!("{v:.1} ({}/s)", short(1e6 / v)),
        },
        floors: false,
        unmeasured: "few answers",
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
    let xs = crate::series::xs(&series);
    let measured = |s: &crate::series::Series, x: f64| {
        run.points.iter().any(|p| {
            let few = p
                .load
                .as_ref()
                .is_some_and(|l| l.answered_in_window < MIN_ANSWERS);
            p.experiment == experiment
                && p.x() == x
                && p.server.is_some()
                && few
                && p.series_key() == s.key
        })
    };
    let rows = series
        .iter()
        .map(|s| {
            let cells = xs
                .iter()
                .map(|&x| {
                    let at = s.values.iter().position(|v| v.0 == x);
                    if s.limits.iter().any(|l| l.0 == x) {
                        "limit".to_string()
                    } else if let Some(i) = at {
                        let v = s.values[i];
                        let star = if v.2 && figure.floors { "*" } else { "" };
                        let spread = s.spread(i).filter(|_| s.repeats[i].len() > 1);
                        format!("{}{star}", (figure.cell)(v.1, spread))
                    } else if measured(s, x) {
                        figure.unmeasured.to_string()
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
    "Each cell is the median of the point's repeats; `±` is half their range (lowest to \
    highest), where there were several. `limit`: the model could not hold this point \
    (reasons in the chart notes and run.json); `*`: the load generator was saturated, so \
    the figure is a floor; `few answers`: fewer than 100 answers in the window, too few \
    for a CPU per request.\n\n";
