//! Line charts: one line per series over x, the legend beside the plot, limits as
//! crosses on the axis, points measured with a saturated load generator hollow.

use std::path::Path;

use plotters::prelude::*;

use crate::series::Series;
use crate::words::short_number;

use super::spec::{ChartSpec, Kind, XAxis, KNEE};
use super::style::{colour, draw_notes, Area, Shape, FONT, LEGEND_WIDTH, PLOT_HEIGHT, SIZE};

pub(crate) fn line_chart(
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
            repeats: s.repeats.clone(),
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
    // Room for the whiskers too.
    let ys = series.iter().flat_map(|s| {
        let spread = s.repeats.iter().flatten().copied();
        s.values.iter().map(|v| v.1).chain(spread)
    });
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
pub(crate) struct Ticked {
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
pub(crate) fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
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
pub(crate) struct Labels<'a> {
    title: &'a str,
    x_desc: &'a str,
    /// What a tick of x says.
    x_label: &'a dyn Fn(&f64) -> String,
    y_desc: &'a str,
}

pub(crate) fn plot<X, Y>(
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
        // The spread of the repeats: a whisker from the lowest to the highest.
        let whiskers = (0..s.values.len()).filter_map(|i| {
            let (lo, hi) = s.range(i).filter(|(lo, hi)| hi > lo)?;
            let x = s.values[i].0;
            Some(PathElement::new(vec![(x, lo), (x, hi)], c.stroke_width(1)))
        });
        chart.draw_series(whiskers).map_err(|e| err(&e))?;
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
pub(crate) fn draw_legend(area: &Area, series: &[Series]) -> Result<(), String> {
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
