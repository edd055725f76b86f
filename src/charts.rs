//! The charts of a run, as SVG (plotters): one line per model, the same colour for a
//! model in every chart, limits drawn as crosses on the axis, points measured with a
//! saturated load generator drawn hollow.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::results::{Run, Series};

const SIZE: (u32, u32) = (900, 620);
/// Height of the plot; the rest is the notes under it.
const PLOT_HEIGHT: u32 = 500;
const FONT: &str = "sans-serif";

/// A chart written by [`draw_all`]: file name, title, what it shows (generated).
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub file: String,
    pub title: String,
    pub experiment: String,
}

/// The colour of a model (or peer, or wait call) in every chart; the reactor with its
/// work on the loop (`--executor 0`) is a darker shade of the reactor.
pub fn colour(name: &str) -> RGBColor {
    let model = name.split_whitespace().next().unwrap_or(name);
    if name.ends_with("--executor 0") {
        let RGBColor(r, g, b) = colour(model);
        return RGBColor(r / 2, g / 2, b / 2);
    }
    match model {
        "blocking" => RGBColor(214, 39, 40),
        "busy-poll" => RGBColor(140, 86, 75),
        "select" => RGBColor(255, 127, 14),
        "poll" => RGBColor(148, 103, 189),
        "epoll-lt" => RGBColor(23, 190, 207),
        "epoll-et" | "epoll" => RGBColor(31, 119, 180),
        "thread-pool" => RGBColor(227, 119, 194),
        "reactor" => RGBColor(188, 189, 34),
        "sigio" => RGBColor(127, 127, 127),
        "io-uring" => RGBColor(0, 0, 0),
        "epoll-mt" => RGBColor(57, 59, 121),
        "nginx" => RGBColor(44, 160, 44),
        "tornado" => RGBColor(140, 162, 82),
        _ => RGBColor(120, 120, 120),
    }
}

/// How a chart's y comes out of a point.
struct Spec {
    file: &'static str,
    title: &'static str,
    experiment: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    log_x: bool,
    log_y: bool,
    /// Where the legend covers no line.
    legend: SeriesLabelPosition,
}

/// Draw every chart the run has data for into `dir`; returns what was drawn.
pub fn draw_all(run: &Run, dir: &Path) -> Result<Vec<Chart>, String> {
    let mut drawn = Vec::new();
    let lines: [(Spec, Vec<Series>); 6] = [
        (
            Spec {
                file: "idle-throughput.svg",
                title: "Throughput of a few busy connections beside idle ones",
                experiment: "idle",
                x_desc: "idle connections",
                y_desc: "requests per second (2xx)",
                log_x: false,
                log_y: false,
                legend: SeriesLabelPosition::UpperRight,
            },
            run.series("idle", |p| p.rps()),
        ),
        (
            Spec {
                file: "idle-p99.svg",
                title: "p99 latency of the busy connections beside idle ones",
                experiment: "idle",
                x_desc: "idle connections",
                y_desc: "p99 latency (ms, log scale)",
                log_x: false,
                log_y: true,
                legend: SeriesLabelPosition::UpperLeft,
            },
            run.series("idle", |p| p.p99_ms()),
        ),
        (
            Spec {
                file: "idle-cpu-per-request.svg",
                title: "Server CPU time per request beside idle connections",
                experiment: "idle",
                x_desc: "idle connections",
                y_desc: "server CPU per request (µs, user + sys)",
                log_x: false,
                log_y: false,
                legend: SeriesLabelPosition::UpperLeft,
            },
            run.series("idle", |p| p.cpu_us_per_request()),
        ),
        (
            Spec {
                file: "memory-per-connection.svg",
                title: "Server memory per idle connection",
                experiment: "idle",
                x_desc: "idle connections",
                y_desc: "resident memory per idle connection (KiB)",
                log_x: false,
                log_y: false,
                legend: SeriesLabelPosition::UpperRight,
            },
            memory_per_connection(run),
        ),
        (
            Spec {
                file: "active-throughput.svg",
                title: "Throughput as active connections grow (no idle ones)",
                experiment: "active",
                x_desc: "active connections (log scale)",
                y_desc: "requests per second (2xx)",
                log_x: true,
                log_y: false,
                legend: SeriesLabelPosition::UpperRight,
            },
            run.series("active", |p| p.rps()),
        ),
        (
            Spec {
                file: "wait-cost.svg",
                title: "Cost of one wait call with one descriptor ready (Kerrisk's table 63-9)",
                experiment: "wait-cost",
                x_desc: "descriptors watched (log scale)",
                y_desc: "nanoseconds per call (log scale)",
                log_x: true,
                log_y: true,
                legend: SeriesLabelPosition::UpperLeft,
            },
            run.series("wait-cost", |p| p.ns_per_wait),
        ),
    ];
    for (spec, series) in lines {
        if series.is_empty() {
            continue;
        }
        let notes = notes(&series);
        let path = dir.join(spec.file);
        line_chart(&path, &spec, &series, &notes)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        drawn.push(Chart {
            file: spec.file.into(),
            title: spec.title.into(),
            experiment: spec.experiment.into(),
        });
    }
    let bars = [
        (
            "churn.svg",
            "Connection churn: a new connection per request (HTTP/1.0)",
            "churn",
            "connections per second (one request each)",
        ),
        (
            "blocking.svg",
            "A handler that blocks: /sleep in the handler",
            "blocking",
            "requests per second (2xx)",
        ),
    ];
    for (file, title, experiment, y_desc) in bars {
        let series = run.series(experiment, |p| p.rps());
        if series.is_empty() {
            continue;
        }
        let group = match experiment {
            "churn" => "connections".to_string(),
            _ => {
                let path = run
                    .points
                    .iter()
                    .find(|p| p.experiment == experiment)
                    .and_then(|p| p.path.clone())
                    .unwrap_or_default();
                format!("connections, each asking {path}")
            }
        };
        let notes = notes(&series);
        let path = dir.join(file);
        bar_chart(&path, title, &group, y_desc, &series, &notes)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        drawn.push(Chart {
            file: file.into(),
            title: title.into(),
            experiment: experiment.into(),
        });
    }
    Ok(drawn)
}

/// (RSS at N idle - RSS at 0 idle) / N, per model, from the idle experiment's medians.
pub fn memory_per_connection(run: &Run) -> Vec<Series> {
    run.series("idle", |p| p.server.as_ref().map(|s| s.rss_kb as f64))
        .into_iter()
        .map(|s| {
            let base = s.values.iter().find(|v| v.0 == 0.0).map(|v| v.1);
            Series {
                values: match base {
                    Some(base) => s
                        .values
                        .iter()
                        .filter(|v| v.0 > 0.0)
                        .map(|&(x, rss, sat)| (x, ((rss - base) / x).max(0.0), sat))
                        .collect(),
                    None => Vec::new(),
                },
                limits: s.limits.clone(),
                name: s.name,
            }
        })
        .filter(|s| !s.values.is_empty() || !s.limits.is_empty())
        .collect()
}

/// The lines under a chart: its limits, and where the load generator was the limit.
pub fn notes(series: &[Series]) -> Vec<String> {
    let mut notes = Vec::new();
    for s in series {
        if let Some((x, why)) = s.limits.first() {
            let why = why.split("; the server said").next().unwrap_or(why);
            notes.push(format!("× {}: limit from {x} ({why})", s.name));
        }
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

fn line_chart(path: &Path, spec: &Spec, series: &[Series], notes: &[String]) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (upper, lower) = root.split_vertically(PLOT_HEIGHT);

    let xs = series.iter().flat_map(|s| {
        s.values
            .iter()
            .map(|v| v.0)
            .chain(s.limits.iter().map(|l| l.0))
    });
    let (x_lo, x_hi) = bounds(xs, spec.log_x);
    let ys = series.iter().flat_map(|s| s.values.iter().map(|v| v.1));
    let (y_lo, y_hi) = bounds(ys, spec.log_y);
    let y_lo = if spec.log_y { y_lo } else { 0.0 };
    let y_hi = if spec.log_y { y_hi * 1.5 } else { y_hi * 1.12 };

    match (spec.log_x, spec.log_y) {
        (false, false) => plot(&upper, spec, series, x_lo..x_hi, y_lo..y_hi),
        (true, false) => plot(&upper, spec, series, (x_lo..x_hi).log_scale(), y_lo..y_hi),
        (false, true) => plot(&upper, spec, series, x_lo..x_hi, (y_lo..y_hi).log_scale()),
        (true, true) => plot(
            &upper,
            spec,
            series,
            (x_lo..x_hi).log_scale(),
            (y_lo..y_hi).log_scale(),
        ),
    }?;
    draw_notes(&lower, notes)?;
    root.present().map_err(|e| e.to_string())
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

fn plot<X, Y>(
    area: &Area,
    spec: &Spec,
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
        .x_label_formatter(&|x| short_number(*x))
        .y_label_formatter(&|y| short_number(*y))
        .draw()
        .map_err(|e| err(&e))?;
    let y_floor = chart.y_range().start;
    for s in series {
        let c = colour(&s.name);
        let line: Vec<(f64, f64)> = s.values.iter().map(|v| (v.0, v.1)).collect();
        chart
            .draw_series(LineSeries::new(line, c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3)));
        chart
            .draw_series(s.values.iter().map(|&(x, y, saturated)| {
                let style = if saturated {
                    c.stroke_width(2)
                } else {
                    c.filled()
                };
                Circle::new((x, y), 4, style)
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
    chart
        .configure_series_labels()
        .position(spec.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14))
        .draw()
        .map_err(|e| err(&e))
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
        let c = colour(&s.name);
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

fn draw_notes(area: &Area, notes: &[String]) -> Result<(), String> {
    for (i, note) in notes.iter().take(6).enumerate() {
        let mut line = note.clone();
        if line.chars().count() > 120 {
            line = line.chars().take(117).collect::<String>() + "…";
        }
        area.draw(&Text::new(line, (20, 10 + 18 * i as i32), (FONT, 13)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
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

    #[test]
    fn every_model_has_its_own_colour() {
        let names: Vec<&str> = iomodels_servers::MODELS.iter().map(|m| m.name).collect();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(colour(a), colour(b), "{a} and {b}");
            }
        }
    }
}
