//! What the experiments' captions share: a floor marked as one, CPU per request from
//! the fewest to the most connections, how much throughput a series kept.

use crate::results::{Point, Run};
use crate::series::Series;
use crate::verdict::{compare, Comparison};
use crate::words::{short_number, thousands};

use super::kind::Experiment;

/// Marks a figure measured with the load generator saturated.
pub fn floor_mark(saturated: bool) -> &'static str {
    if saturated {
        " (a floor)"
    } else {
        ""
    }
}

/// Said after a sentence that quotes any such figure.
pub fn floor_note(any: bool) -> &'static str {
    if any {
        " Figures marked (a floor) were measured with the load generator saturated: the \
         server could have done more, so they are floors, and the server CPU per request \
         is the figure to compare."
    } else {
        ""
    }
}

/// "MODEL A → B µs at X (capacity /s)" for each series of an experiment's CPU per request.
pub fn cpu_parts(run: &Run, experiment: Experiment) -> Vec<String> {
    run.series(experiment, Point::cpu_us_per_request)
        .iter()
        .filter_map(|s| {
            let first = s.values.first()?;
            let last = s.values.last()?;
            Some(format!(
                "{} {:.1} → {:.1} µs at {} ({}/s)",
                s.name,
                first.1,
                last.1,
                thousands(last.0),
                short(1e6 / last.1)
            ))
        })
        .collect()
}

/// 123456 -> "123k": a capacity, rounded as it deserves. A window with no CPU time
/// measured (below /proc's 10 ms tick) has no capacity to speak of: "–", not "infM".
pub fn short(v: f64) -> String {
    if v.is_finite() {
        short_number((v / 1000.0).round() * 1000.0)
    } else {
        "–".into()
    }
}

/// (largest x held, throughput there / throughput at x = 0, either was a floor).
pub fn keep(s: &Series) -> Option<(f64, f64, bool)> {
    let base = s.values.iter().find(|v| v.0 == 0.0)?;
    let last = s.values.last()?;
    (last.0 > 0.0 && base.1 > 0.0).then(|| (last.0, last.1 / base.1, base.2 || last.2))
}

/// How a series changed from its first x (the fewest connections) to the most it held,
/// held against the run's noise floor.
pub struct Change<'a> {
    pub series: &'a Series,
    /// Its medians at the first x and the last.
    pub from: f64,
    pub to: f64,
    /// The last x.
    pub at: f64,
    /// Either end was measured with the load generator saturated.
    pub saturated: bool,
    /// The last x's repeats against the first's; None with too little to compare.
    pub comparison: Option<Comparison>,
}

impl Change<'_> {
    /// More than noise, up.
    pub fn grew(&self) -> bool {
        self.comparison.is_some_and(|c| c.higher())
    }

    /// More than noise, down.
    pub fn fell(&self) -> bool {
        self.comparison.is_some_and(|c| c.lower())
    }

    /// last / first.
    pub fn ratio(&self) -> f64 {
        self.to / self.from
    }
}

/// Each series' change from its first x to its last, against `floor`.
pub fn changes(series: &[Series], floor: f64) -> Vec<Change<'_>> {
    series
        .iter()
        .filter_map(|s| {
            let (first, last) = (s.values.first()?, s.values.last()?);
            if last.0 <= first.0 {
                return None;
            }
            let comparison = compare(s.repeats.last()?, s.repeats.first()?, floor);
            Some(Change {
                series: s,
                from: first.1,
                to: last.1,
                at: last.0,
                saturated: first.2 || last.2,
                comparison,
            })
        })
        .collect()
}

/// "a, b and c".
pub fn and_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// "this run's noise floor (6.5%)": what a reader holds the verdicts against.
pub fn floor_words(floor: f64) -> String {
    format!("this run's noise floor ({:.1}%)", floor * 100.0)
}
