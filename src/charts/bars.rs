//! Bar charts: grouped bars, one group per x and one bar per series, or one row per
//! series where there is one x; limits as crosses, a saturated load generator pale.

use std::path::Path;

use plotters::prelude::*;

use crate::series::Series;
use crate::words::short_number;

use super::style::{colour, draw_notes, Area, FONT, PLOT_HEIGHT, SIZE};

/// Grouped bars: one group per x (connections), one bar per model; limits as crosses.
pub(crate) fn bar_chart(
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
    // A group of bars per x.
    let groups = crate::series::xs(series);
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
    let y_hi = highest(series) * 1.6; // headroom: the legend sits above the bars
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
        // The spread of the repeats: a whisker from the lowest to the highest.
        let whiskers = (0..s.values.len()).filter_map(|i| {
            let (lo, hi) = s.range(i).filter(|(lo, hi)| hi > lo)?;
            let mid = left(s.values[i].0) + width * 0.45;
            Some(PathElement::new(
                vec![(mid, lo), (mid, hi)],
                BLACK.stroke_width(1),
            ))
        });
        chart.draw_series(whiskers).map_err(|e| err(&e))?;
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

/// The highest bar or whisker (at least 1).
fn highest(series: &[Series]) -> f64 {
    series
        .iter()
        .flat_map(|s| {
            let repeats = s.repeats.iter().flatten().copied();
            s.values.iter().map(|v| v.1).chain(repeats)
        })
        .fold(1.0, f64::max)
}

/// Horizontal bars, one row per series with its name and value beside it.
pub(crate) fn row_chart(
    root: Area,
    (upper, lower): (Area, Area),
    title: &str,
    group_desc: &str,
    x_desc: &str,
    series: &[Series],
    notes: &[String],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let x_hi = highest(series) * 1.15; // room for the value after the longest bar
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
        for (i, &(_, value, saturated)) in s.values.iter().enumerate() {
            let style = if saturated {
                c.mix(0.35).filled()
            } else {
                c.filled()
            };
            let bar = Rectangle::new([(0.0, row + 0.15), (value, row + 0.85)], style);
            // The value is written past the whisker, where there is one.
            let (lo, hi) = s.range(i).unwrap_or((value, value));
            let text = format!(" {}", short_number(value));
            let label = Text::new(text, (hi.max(value), row + 0.62), (FONT, 13));
            chart.draw_series([bar]).map_err(|e| err(&e))?;
            if hi > lo {
                let whisker = PathElement::new(
                    vec![(lo, row + 0.5), (hi, row + 0.5)],
                    BLACK.stroke_width(1),
                );
                chart.draw_series([whisker]).map_err(|e| err(&e))?;
            }
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
