//! The charts of a run, as SVG (plotters): one line per model, the same colour for a
//! model in every chart, limits drawn as crosses on the axis, points measured with a
//! saturated load generator drawn hollow. This code only draws: what a chart shows is
//! its experiment's ([`spec::ChartSpec`], kept in `crate::experiments`).

mod bars;
mod lines;
pub mod spec;
mod style;

use std::path::Path;

use crate::results::Run;

pub use spec::{ChartSpec, Kind, XAxis};
pub use style::{notes, wrap};

/// Draw every chart of `charts` (each with its experiment's name for x) the run has
/// data for into `dir`; returns what was drawn.
pub fn draw_all(
    run: &Run,
    dir: &Path,
    charts: impl Iterator<Item = (&'static ChartSpec, &'static str)>,
) -> Result<Vec<&'static ChartSpec>, String> {
    let mut drawn = Vec::new();
    for (spec, x_name) in charts {
        let series = (spec.series)(run);
        if series.is_empty() {
            continue;
        }
        let mut notes = notes(&series);
        let quota = run
            .settings
            .server_cpu_quota
            .as_ref()
            .filter(|q| q.limits());
        if let (true, Some(quota)) = (spec.latency, quota) {
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
        match &spec.kind {
            Kind::Lines { x, .. } => {
                let x_desc = match x {
                    XAxis::Log => format!("{} (log scale)", x_name),
                    XAxis::LogFromZero => format!("{} (log scale, from 0)", x_name),
                };
                lines::line_chart(&path, spec, &x_desc, &series, &notes)
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
                        x_name
                    ),
                    Some(asked) => format!("{}, each asking {asked}", x_name),
                    None => x_name.to_string(),
                };
                bars::bar_chart(&path, spec.title, &group, spec.y_desc, &series, &notes)
            }
        }
        .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        drawn.push(spec);
    }
    Ok(drawn)
}
