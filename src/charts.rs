//! The charts of a run, as SVG (plotters): one line per model, the same colour for a
//! model in every chart, limits drawn as crosses on the axis, points measured with a
//! saturated load generator drawn hollow.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::experiments::Experiment;
use crate::report;
use crate::results::{Point, Run};
use crate::series::Series;

const SIZE: (u32, u32) = (900, 680);
/// Height of the plot; the rest is the notes under it.
const PLOT_HEIGHT: u32 = 500;
/// Room beside a line chart for its legend, which inside the plot would hide lines.
const LEGEND_WIDTH: u32 = 250;
const FONT: &str = "sans-serif";

/// The colour of a series: its contender's, as the roster draws it.
fn colour(s: &Series) -> RGBColor {
    s.key
        .contender()
        .colour(s.key.args(), s.key.route().is_some())
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
const KNEE: f64 = 100.0;

impl XAxis {
    /// Where `x` is drawn.
    fn place(self, x: f64) -> f64 {
        match self {
            XAxis::LogFromZero => (1.0 + x / KNEE).log10(),
            XAxis::Log => x,
        }
    }

    /// The x drawn at `place`: what its tick says.
    fn value(self, place: f64) -> f64 {
        match self {
            XAxis::LogFromZero => ((10f64.powf(place) - 1.0) * KNEE).round(),
            XAxis::Log => place,
        }
    }
}

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

/// Every chart, in the order the report shows them.
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
        sentence: report::idle_cpu_per_request,
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
        sentence: report::idle_throughput,
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
        sentence: report::idle_p99,
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
        sentence: report::memory_per_connection,
        latency: false,
    },
    ChartSpec {
        file: "active-cpu-per-request.svg",
        title: "Server CPU time per request as active connections grow",
        experiment: Experiment::Active,
        y_desc: "server CPU per request (µs, user + sys, log scale)",
        kind: Kind::Lines {
            x: XAxis::Log,
            log_y: true,
        },
        series: |run| run.series(Experiment::Active, Point::cpu_us_per_request),
        sentence: report::active_cpu_per_request,
        latency: false,
    },
    ChartSpec {
        file: "active-throughput.svg",
        title: "Throughput as active connections grow (no idle ones)",
        experiment: Experiment::Active,
        y_desc: "requests per second (2xx)",
        kind: Kind::Lines {
            x: XAxis::Log,
            log_y: false,
        },
        series: |run| run.series(Experiment::Active, Point::rps),
        sentence: report::active_throughput,
        latency: false,
    },
    ChartSpec {
        file: "churn.svg",
        title: "Connection churn: a new connection per request (HTTP/1.0)",
        experiment: Experiment::Churn,
        y_desc: "connections per second (one request each)",
        kind: Kind::Bars,
        series: |run| run.series(Experiment::Churn, Point::rps),
        sentence: report::churn,
        latency: false,
    },
    ChartSpec {
        file: "blocking.svg",
        title: "A handler that blocks (/sleep), and one that only waits (/wait)",
        experiment: Experiment::Blocking,
        y_desc: "requests per second (2xx)",
        kind: Kind::Bars,
        series: |run| run.series(Experiment::Blocking, Point::rps),
        sentence: report::blocking,
        latency: false,
    },
    ChartSpec {
        file: "slowloris.svg",
        title: "Slow clients: 3,000 trickled headers, a 2 s header timeout",
        experiment: Experiment::Slowloris,
        y_desc: "% of slow connections no longer held after 4 s",
        kind: Kind::Bars,
        series: |run| {
            run.series(Experiment::Slowloris, |p| {
                p.slowloris.as_ref().map(|s| s.gone_pct())
            })
        },
        sentence: report::slowloris,
        latency: false,
    },
    ChartSpec {
        file: "wait-cost.svg",
        title: "Cost of one wait call with one descriptor ready (after Kerrisk)",
        experiment: Experiment::WaitCost,
        y_desc: "nanoseconds per call (log scale)",
        kind: Kind::Lines {
            x: XAxis::Log,
            log_y: true,
        },
        series: |run| run.series(Experiment::WaitCost, |p| p.ns_per_wait),
        sentence: report::wait_cost,
        latency: false,
    },
];

/// Draw every chart the run has data for into `dir`; returns what was drawn.
pub fn draw_all(run: &Run, dir: &Path) -> Result<Vec<&'static ChartSpec>, String> {
    let mut drawn = Vec::new();
    for spec in CHARTS {
        let series = (spec.series)(run);
        if series.is_empty() {
            continue;
        }
        let mut notes = notes(&series);
        if let (true, Some(quota)) = (spec.latency, &run.settings.server_cpu_quota) {
            notes.push(format!(
                "Latency under the servers' CPU quota ({:.0}% of a CPU per {} ms): a throttled \
                 server pauses up to {:.0} ms, and the tail shows it. Compare the models with \
                 each other, not with an unthrottled server.",
                quota.share * 100.0,
                quota.period_us / 1000,
                quota.longest_pause_ms()
            ));
        }
        let path = dir.join(spec.file);
        let facts = spec.experiment.facts();
        match &spec.kind {
            Kind::Lines { x, .. } => {
                let x_desc = match x {
                    XAxis::Log => format!("{} (log scale)", facts.x_name),
                    XAxis::LogFromZero => format!("{} (log scale, from 0)", facts.x_name),
                };
                line_chart(&path, spec, &x_desc, &series, &notes)
            }
            Kind::Bars => {
                // The path every request asked, where the experiment has one.
                let path_asked = run
                    .points
                    .iter()
                    .find(|p| p.experiment == spec.experiment && !p.own_path)
                    .and_then(|p| p.path.clone());
                let own = run
                    .points
                    .iter()
                    .any(|p| p.experiment == spec.experiment && p.own_path);
                let group = match path_asked {
                    Some(asked) if own => format!(
                        "{}, each asking {asked} unless the name ends with another path",
                        facts.x_name
                    ),
                    Some(asked) => format!("{}, each asking {asked}", facts.x_name),
                    None => facts.x_name.to_string(),
                };
                bar_chart(&path, spec.title, &group, spec.y_desc, &series, &notes)
            }
        }
        .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        drawn.push(spec);
    }
    Ok(drawn)
}

/// The lines under a chart: its limits, and where the load generator was the limit.
pub fn notes(series: &[Series]) -> Vec<String> {
    let mut notes = Vec::new();
    // Where several servers met the same limit at the same x (every server of one
    // process past its descriptor limit), one note names them all.
    let mut limits: Vec<(f64, String, &str, Vec<&str>)> = Vec::new();
    for s in series {
        if let Some((x, limit)) = s.limits.first() {
            let model = s.key.who();
            let why = limit.why.replace(&format!(" {model} "), " it ");
            match limits.iter_mut().find(|l| l.0 == *x && l.1 == why) {
                Some(same) => same.3.push(&s.name),
                None => limits.push((*x, why, &limit.why, vec![&s.name])),
            }
        }
    }
    for (x, why, own, names) in limits {
        let why = if names.len() == 1 { own } else { &why };
        notes.push(format!("× {}: limit from {x} ({why})", names.join(", ")));
    }
    let saturated: Vec<String> = series
        .iter()
        .filter(|s| s.values.iter().any(|v| v.2))
        .map(|s| {
            let xs: Vec<String> = s
                .values
                .iter()
                .filter(|v| v.2)
                .map(|v| short_number(v.0))
                .collect();
            format!("{} at {}", s.name, xs.join(", "))
        })
        .collect();
    if !saturated.is_empty() {
        notes.push(format!(
            "○ hollow dot or pale bar: load generator saturated, the figure is a floor: {}",
            saturated.join("; ")
        ));
    }
    notes
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn line_chart(
    path: &Path,
    spec: &ChartSpec,
    x_desc: &str,
    series: &[Series],
    notes: &[String],
) -> Result<(), String> {
    let Kind::Lines { x: x_axis, log_y } = spec.kind else {
        return Err(format!("{} is not a line chart", spec.file));
    };
    // Every x where it is drawn.
    let placed: Vec<Series> = series
        .iter()
        .map(|s| Series {
            key: s.key.clone(),
            name: s.name.clone(),
            values: s
                .values
                .iter()
                .map(|&(x, y, sat)| (x_axis.place(x), y, sat))
                .collect(),
            limits: s
                .limits
                .iter()
                .map(|(x, l)| (x_axis.place(*x), l.clone()))
                .collect(),
        })
        .collect();
    let series = &placed[..];
    let root = SVGBackend::new(path, (SIZE.0 + LEGEND_WIDTH, SIZE.1)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (upper, lower) = root.split_vertically(PLOT_HEIGHT);
    let (upper, beside) = upper.split_horizontally(SIZE.0);
    draw_legend(&beside, series)?;

    let xs = series.iter().flat_map(|s| {
        s.values
            .iter()
            .map(|v| v.0)
            .chain(s.limits.iter().map(|l| l.0))
    });
    let log_x = x_axis == XAxis::Log;
    let (x_lo, x_hi) = bounds(xs, log_x);
    let ys = series.iter().flat_map(|s| s.values.iter().map(|v| v.1));
    let (y_lo, y_hi) = bounds(ys, log_y);
    let y_lo = if log_y { y_lo } else { 0.0 };
    let y_hi = if log_y { y_hi * 1.5 } else { y_hi * 1.12 };

    let x_label = move |x: &f64| short_number(x_axis.value(*x));
    let labels = Labels {
        title: spec.title,
        x_desc,
        x_label: &x_label,
        y_desc: spec.y_desc,
    };
    match x_axis {
        XAxis::LogFromZero => {
            // Ticks at 0, 100, 1k, 10k, … as far as the data goes.
            let ticks = std::iter::successors(Some(0.0), |&t: &f64| Some((t * 10.0).max(KNEE)))
                .take_while(|&t| x_axis.place(t) <= x_hi * 1.001)
                .map(|t| x_axis.place(t))
                .collect();
            let x_range = Ticked {
                linear: (x_lo..x_hi * 1.03).into(),
                ticks,
            };
            match log_y {
                false => plot(&upper, &labels, series, x_range, y_lo..y_hi),
                true => plot(&upper, &labels, series, x_range, (y_lo..y_hi).log_scale()),
            }
        }
        XAxis::Log => {
            let x_range = (x_lo..x_hi).log_scale();
            match log_y {
                false => plot(&upper, &labels, series, x_range, y_lo..y_hi),
                true => plot(&upper, &labels, series, x_range, (y_lo..y_hi).log_scale()),
            }
        }
    }?;
    draw_notes(&lower, notes)?;
    root.present().map_err(|e| e.to_string())
}

/// A linear axis ticked where it is told (plotters' own `with_key_points` has no
/// formatter to draw its labels with).
struct Ticked {
    linear: plotters::coord::types::RangedCoordf64,
    ticks: Vec<f64>,
}

impl plotters::coord::ranged1d::Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, _: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.linear.range()
    }
}

/// The range an axis needs for `values` (positive only on a log axis).
fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let v: Vec<f64> = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if log {
        (lo / 1.5, hi.max(lo * 10.0))
    } else {
        (lo.min(0.0), if hi > lo { hi } else { lo + 1.0 })
    }
}

/// The words on a line chart.
struct Labels<'a> {
    title: &'a str,
    x_desc: &'a str,
    /// What a tick of x says.
    x_label: &'a dyn Fn(&f64) -> String,
    y_desc: &'a str,
}

fn plot<X, Y>(
    area: &Area,
    spec: &Labels,
    series: &[Series],
    x_range: X,
    y_range: Y,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(spec.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(spec.x_desc)
        .y_desc(spec.y_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 13))
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(spec.x_label)
        .y_label_formatter(&|y| short_number(*y))
        .draw()
        .map_err(|e| err(&e))?;
    let y_floor = chart.y_range().start;
    for (i, s) in series.iter().enumerate() {
        let c = colour(s);
        // Colour alone cannot tell thirteen lines apart: each also has its own marker,
        // and every other line is dashed.
        let (shape, dashed) = (Shape::of(i), i % 2 == 1);
        let line: Vec<(f64, f64)> = s.values.iter().map(|v| (v.0, v.1)).collect();
        let drawn = if dashed {
            chart.draw_series(DashedLineSeries::new(line, 6, 4, c.stroke_width(2)))
        } else {
            chart.draw_series(LineSeries::new(line, c.stroke_width(2)))
        };
        drawn.map_err(|e| err(&e))?;
        chart
            .draw_series(s.values.iter().map(|&(x, y, saturated)| {
                // Hollow: the load generator was saturated; the figure is a floor.
                let style = if saturated {
                    c.stroke_width(2)
                } else {
                    c.filled()
                };
                EmptyElement::at((x, y)) + shape.marker((0, 0), style)
            }))
            .map_err(|e| err(&e))?;
        // A limit sits on the x axis as a cross: the model could not go there.
        chart
            .draw_series(
                s.limits
                    .iter()
                    .map(|(x, _)| Cross::new((*x, y_floor), 7, c.stroke_width(3))),
            )
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// The legend of a line chart, beside it (inside, it would hide lines): each series'
/// line, dashed or not, its marker and its name, in the order they were drawn.
fn draw_legend(area: &Area, series: &[Series]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    for (i, s) in series.iter().enumerate() {
        let (c, shape, dashed) = (colour(s), Shape::of(i), i % 2 == 1);
        let y = 60 + 20 * i as i32;
        let pieces: &[(i32, i32)] = if dashed {
            &[(0, 9), (15, 24)]
        } else {
            &[(0, 24)]
        };
        for &(from, to) in pieces {
            area.draw(&PathElement::new(
                vec![(from, y), (to, y)],
                c.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
        }
        area.draw(&(EmptyElement::at((12, y)) + shape.marker((0, 0), c.filled())))
            .map_err(|e| err(&e))?;
        area.draw(&Text::new(s.name.clone(), (32, y - 7), (FONT, 14)))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// Grouped bars: one group per x (connections), one bar per model; limits as crosses.
fn bar_chart(
    path: &Path,
    title: &str,
    group_desc: &str,
    y_desc: &str,
    series: &[Series],
    notes: &[String],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (upper, lower) = root.split_vertically(PLOT_HEIGHT);
    let mut groups: Vec<f64> = series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .map(|v| v.0)
                .chain(s.limits.iter().map(|l| l.0))
        })
        .collect();
    groups.sort_by(f64::total_cmp);
    groups.dedup();
    if let [group] = groups[..] {
        // One x only: a row per series, named beside its bar, so no legend is needed
        // and no two bars are told apart by colour alone.
        let group_desc = format!("{} {group_desc}", short_number(group));
        return row_chart(
            root,
            (upper, lower),
            title,
            &group_desc,
            y_desc,
            series,
            notes,
        );
    }
    let y_hi = series
        .iter()
        .flat_map(|s| s.values.iter().map(|v| v.1))
        .fold(1.0, f64::max)
        * 1.6; // headroom: the legend sits above the bars
    let n = groups.len() as f64;
    let labels = groups.clone();
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, (FONT, 22))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..n, 0.0..y_hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            // Label the middle of each group with its connection count.
            let i = x.floor();
            if (x - i - 0.5).abs() < 0.01 && (i as usize) < labels.len() {
                short_number(labels[i as usize])
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| short_number(*y))
        .x_desc(group_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (j, s) in series.iter().enumerate() {
        let c = colour(s);
        let left = |x: f64| {
            let g = groups.iter().position(|&v| v == x).unwrap_or(0) as f64;
            g + 0.1 + j as f64 * width
        };
        chart
            .draw_series(s.values.iter().map(|&(x, y, saturated)| {
                let style = if saturated {
                    c.mix(0.35).filled()
                } else {
                    c.filled()
                };
                Rectangle::new([(left(x), 0.0), (left(x) + width * 0.9, y)], style)
            }))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        chart
            .draw_series(
                s.limits
                    .iter()
                    .map(|(x, _)| Cross::new((left(*x) + width * 0.45, 0.0), 7, c.stroke_width(3))),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14))
        .draw()
        .map_err(|e| err(&e))?;
    draw_notes(&lower, notes)?;
    root.present().map_err(|e| err(&e))
}

/// Horizontal bars, one row per series with its name and value beside it.
fn row_chart(
    root: Area,
    (upper, lower): (Area, Area),
    title: &str,
    group_desc: &str,
    x_desc: &str,
    series: &[Series],
    notes: &[String],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let x_hi = series
        .iter()
        .flat_map(|s| s.values.iter().map(|v| v.1))
        .fold(1.0, f64::max)
        * 1.15; // room for the value after the longest bar
    let n = series.len();
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, (FONT, 22))
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(360)
        .build_cartesian_2d(0.0..x_hi, 0.0..n as f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            // The middle of each row is labelled with its series, the first at the top.
            let i = y.floor();
            if (y - i - 0.5).abs() < 0.01 && (i as usize) < names.len() {
                names[names.len() - 1 - i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| short_number(*x))
        .x_desc(x_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    for (j, s) in series.iter().enumerate() {
        let c = colour(s);
        let row = (n - 1 - j) as f64;
        for &(_, value, saturated) in &s.values {
            let style = if saturated {
                c.mix(0.35).filled()
            } else {
                c.filled()
            };
            let bar = Rectangle::new([(0.0, row + 0.15), (value, row + 0.85)], style);
            let text = format!(" {}", short_number(value));
            let label = Text::new(text, (value, row + 0.62), (FONT, 13));
            chart.draw_series([bar]).map_err(|e| err(&e))?;
            chart.draw_series([label]).map_err(|e| err(&e))?;
        }
        for _ in &s.limits {
            let cross = Cross::new((0.0, row + 0.5), 7, c.stroke_width(3));
            let label = Text::new(" limit", (0.0, row + 0.62), (FONT, 13));
            chart.draw_series([cross]).map_err(|e| err(&e))?;
            chart.draw_series([label]).map_err(|e| err(&e))?;
        }
    }
    // What every row measured comes first under the chart.
    let notes: Vec<String> = std::iter::once(format!("Each row: {group_desc}."))
        .chain(notes.iter().cloned())
        .collect();
    draw_notes(&lower, &notes)?;
    root.present().map_err(|e| err(&e))
}

/// The notes under a chart, each wrapped at a word to fit the width: none is cut off.
fn draw_notes(area: &Area, notes: &[String]) -> Result<(), String> {
    let lines: Vec<String> = notes.iter().flat_map(|n| wrap(n, NOTE_WIDTH)).collect();
    for (i, line) in lines.into_iter().enumerate() {
        area.draw(&Text::new(line, (20, 8 + 16 * i as i32), (FONT, 12)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Characters of a note's line.
const NOTE_WIDTH: usize = 135;

/// `text` in lines of at most `width` characters, broken at spaces; later lines indented.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line at least");
        if !line.trim().is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(format!("    {word}"));
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// The marker of a line, by its place in the chart.
#[derive(Clone, Copy)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

impl Shape {
    fn of(i: usize) -> Shape {
        [
            Shape::Circle,
            Shape::Square,
            Shape::Triangle,
            Shape::Diamond,
        ][(i / 2) % 4]
    }

    /// The marker centred on `at` (pixels, relative to its element).
    fn marker<DB: DrawingBackend>(
        self,
        at: (i32, i32),
        style: ShapeStyle,
    ) -> DynElement<'static, DB, (i32, i32)> {
        let (x, y) = at;
        let r = 4;
        match self {
            Shape::Circle => Circle::new((x, y), r, style).into_dyn(),
            Shape::Square => Rectangle::new([(x - r, y - r), (x + r, y + r)], style).into_dyn(),
            Shape::Triangle => Polygon::new(
                vec![(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)],
                style,
            )
            .into_dyn(),
            Shape::Diamond => Polygon::new(
                vec![
                    (x, y - r - 1),
                    (x + r + 1, y),
                    (x, y + r + 1),
                    (x - r - 1, y),
                ],
                style,
            )
            .into_dyn(),
        }
    }
}

/// 1500 -> "1.5k", 2000000 -> "2M", 0.25 -> "0.25".
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.2}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(1500.0), "1.5k");
        assert_eq!(short_number(2_000_000.0), "2M");
        assert_eq!(short_number(10_000.0), "10k");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(42.0), "42");
    }
}
