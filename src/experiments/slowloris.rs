//! The slowloris experiment's figures: what each server did with slow connections,
//! and the fresh clients it served beside them.

use std::fmt::Write as _;

use crate::charts::spec::{ChartSpec, Kind};
use crate::results::{Run, Slowloris};
use crate::series::SeriesKey;
use crate::words::thousands;

use super::kind::Experiment;

/// Its charts, in the order the report shows them.
pub const CHARTS: &[ChartSpec] = &[ChartSpec {
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
    sentence: slowloris,
    latency: false,
}];

/// Its tables beside the main one.
pub const TABLES: &[fn(&Run) -> String] = &[slowloris_md];

pub fn slowloris(run: &Run) -> String {
    let points = slowloris_medians(run);
    let kept: Vec<String> = points
        .iter()
        .filter(|(_, s)| s.gone_pct() >= 95.0 && s.fresh_served == s.fresh)
        .map(|(key, _)| key.to_string())
        .collect();
    let taken: Vec<String> = points
        .iter()
        .filter(|(_, s)| s.fresh_served < s.fresh)
        .map(|(name, s)| {
            format!(
                "{name} served {} of {} fresh clients",
                s.fresh_served, s.fresh
            )
        })
        .collect();
    let mut sentence = format!(
        "With a 2 s header timeout, {} of {} servers were rid of at least 95% of the slow \
         connections within 4 s (evicted with a 408, or turned away with a 503 where they \
         had no room) and served every fresh client beside them",
        kept.len(),
        points.len()
    );
    if !taken.is_empty() {
        let _ = write!(sentence, "; {}", taken.join(", "));
    }
    sentence.push('.');
    sentence
}

/// Per server, its median repeat of the slowloris experiment (by what was gone after
/// the window), in the order the servers ran.
fn slowloris_medians(run: &Run) -> Vec<(SeriesKey, &Slowloris)> {
    let mut order: Vec<SeriesKey> = Vec::new();
    let mut repeats: Vec<Vec<&Slowloris>> = Vec::new();
    for p in run
        .points
        .iter()
        .filter(|p| p.experiment == Experiment::Slowloris)
    {
        let Some(found) = &p.slowloris else { continue };
        let key = p.series_key();
        match order.iter().position(|k| *k == key) {
            Some(i) => repeats[i].push(found),
            None => {
                order.push(key);
                repeats.push(vec![found]);
            }
        }
    }
    order
        .into_iter()
        .zip(repeats)
        .map(|(name, mut found)| {
            found.sort_by(|a, b| a.gone_pct().total_cmp(&b.gone_pct()));
            (name, found[found.len() / 2])
        })
        .collect()
}

/// Per server: the slow connections held, evicted and turned away, and the fresh
/// clients served beside them (the median repeat).
fn slowloris_md(run: &Run) -> String {
    let mut md = String::from(
        "Each server's median repeat:\n\n\
         | server | slow opened | evicted in 4 s | answered 408 | turned away (503) | \
         fresh served | slowest fresh (ms) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, s) in slowloris_medians(run) {
        let worst = s.fresh_worst_ms.map_or("–".into(), |ms| format!("{ms:.0}"));
        let _ = writeln!(
            md,
            "| {name} | {} | {} ({:.0}%) | {} | {} | {} of {} | {worst} |",
            thousands(s.opened as f64),
            thousands(s.evicted as f64),
            s.evicted_pct(),
            thousands(s.answered_408 as f64),
            thousands(s.answered_503 as f64),
            s.fresh_served,
            s.fresh,
        );
    }
    for p in run
        .points
        .iter()
        .filter(|p| p.experiment == Experiment::Slowloris)
    {
        if let Some(limit) = &p.limit {
            let _ = writeln!(md, "\n{}: limit: {}", p.series_key(), limit.why);
        }
    }
    md.push('\n');
    md
}
