//! What every chart shares: its size and font, a series' colour (the roster's), the
//! marker of a line by its place, the notes under the plot.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::series::Series;
use crate::words::short_number;

pub(crate) const SIZE: (u32, u32) = (900, 680);

/// Height of the plot; the rest is the notes under it.
pub(crate) const PLOT_HEIGHT: u32 = 500;

/// Room beside a line chart for its legend, which inside the plot would hide lines.
pub(crate) const LEGEND_WIDTH: u32 = 250;

pub(crate) const FONT: &str = "sans-serif";

/// The colour of a series: its contender's, as the roster draws it.
pub(crate) fn colour(s: &Series) -> RGBColor {
    s.key
        .contender()
        .colour(s.key.args(), s.key.route().is_some())
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

pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The notes under a chart, each wrapped at a word to fit the width: none is cut off.
pub(crate) fn draw_notes(area: &Area, notes: &[String]) -> Result<(), String> {
    let lines: Vec<String> = notes.iter().flat_map(|n| wrap(n, NOTE_WIDTH)).collect();
    for (i, line) in lines.into_iter().enumerate() {
        area.draw(&Text::new(line, (20, 8 + 16 * i as i32), (FONT, 12)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Characters of a note's line.
pub(crate) const NOTE_WIDTH: usize = 135;

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
pub(crate) enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

impl Shape {
    pub(crate) fn of(i: usize) -> Shape {
        [
            Shape::Circle,
            Shape::Square,
            Shape::Triangle,
            Shape::Diamond,
        ][(i / 2) % 4]
    }

    /// The marker centred on `at` (pixels, relative to its element).
    pub(crate) fn marker<DB: DrawingBackend>(
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
