//! Comparative words from the data: whether two sets of repeats differ, held against
//! the spread of the repeats and the run's own noise floor.
//!
//! Two figures differ when both tests say so:
//! - the bootstrap: the repeats of each side are drawn again with replacement, many
//!   times, and the ratio of the two medians taken each time; the middle 95% of those
//!   ratios must leave out 1;
//! - the noise floor: the ratio must be further from 1 than the gap between the run's
//!   A/A pair, the same server measured as two series ([`NoiseFloor`]). Two identical
//!   servers on this machine differ by that much with nothing to tell them apart.
//!
//! Otherwise they are "indistinguishable in this run". With three repeats a side the
//! bootstrap alone is generous (a few draws decide it); the floor is what holds a 5%
//! gap on a machine whose identical servers differ by 8% from being called a lesson.

use crate::experiments::kind::Experiment;
use crate::results::{Point, Run};
use crate::series::median;

/// Where no A/A pair was measured (runs from before it), the floor taken.
pub const FLOOR_WITHOUT_PAIR: f64 = 0.10;

/// How two sets of repeats compare: `a` against `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// median(a) / median(b).
    pub ratio: f64,
    /// The middle 95% of the bootstrap's ratios.
    pub low: f64,
    pub high: f64,
    /// The floor it was held against (a fraction: 0.08 is 8%).
    pub floor: f64,
}

impl Comparison {
    /// Both tests say they differ: the bootstrap's interval leaves out 1, and the gap
    /// (|a - b| over their mean, as the A/A gap is taken) is wider than the floor.
    pub fn differs(&self) -> bool {
        let outside = self.low > 1.0 || self.high < 1.0;
        let gap = (self.ratio - 1.0).abs() / ((self.ratio + 1.0) / 2.0);
        outside && gap > self.floor
    }

    /// a is lower than b, and that is more than noise.
    pub fn lower(&self) -> bool {
        self.differs() && self.ratio < 1.0
    }

    /// a is higher than b, and that is more than noise.
    pub fn higher(&self) -> bool {
        self.differs() && self.ratio > 1.0
    }
}

/// `a` against `b`, held against `floor` (a fraction); None when either side has fewer
/// than two repeats (one window a side has no spread to hold a difference against, so
/// nothing is said to differ: "indistinguishable in this run").
pub fn compare(a: &[f64], b: &[f64], floor: f64) -> Option<Comparison> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let ratio = median(a)? / median(b)?;
    if !ratio.is_finite() {
        return None;
    }
    // Deterministic draws: a report drawn twice from one run.json says the same.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    const DRAWS: usize = 2000;
    let mut ratios: Vec<f64> = (0..DRAWS)
        .filter_map(|_| {
            let ma = median(&rng.resample(a))?;
            let mb = median(&rng.resample(b))?;
            Some(ma / mb).filter(|r| r.is_finite())
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    Some(Comparison {
        ratio,
        low: at(0.025),
        high: at(0.975),
        floor,
    })
}

/// xorshift64*: enough randomness to resample a handful of repeats, and no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn resample(&mut self, values: &[f64]) -> Vec<f64> {
        (0..values.len())
            .map(|_| values[(self.next() % values.len() as u64) as usize])
            .collect()
    }
}

/// The run's A/A pair in the idle experiment: at each x, the server's median of a figure
/// (CPU per request, unless said otherwise) and its twin's, and how far apart they are.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseFloor {
    /// Who was measured twice.
    pub name: &'static str,
    pub twin: &'static str,
    /// (x, its median, its twin's median, the gap: |a - b| / mean).
    pub gaps: Vec<(f64, f64, f64, f64)>,
}

impl NoiseFloor {
    /// The run's pair in CPU per request, if it measured one.
    pub fn of(run: &Run) -> Option<NoiseFloor> {
        NoiseFloor::of_figure(run, Point::cpu_us_per_request)
    }

    /// The run's pair in the figure `y`, if it measured one.
    pub fn of_figure(run: &Run, y: fn(&Point) -> Option<f64>) -> Option<NoiseFloor> {
        let all = run.all_series(Experiment::Idle, y);
        let twin = all.iter().find_map(|s| {
            let of = s.key.contender().twin_of()?;
            Some((s, of))
        });
        let (twin, of) = twin?;
        let original = all.iter().find(|s| s.key.is_plain(of))?;
        let gaps: Vec<(f64, f64, f64, f64)> = original
            .values
            .iter()
            .filter_map(|&(x, a, _)| {
                let b = twin.values.iter().find(|v| v.0 == x)?.1;
                Some((x, a, b, (a - b).abs() / ((a + b) / 2.0)))
            })
            .collect();
        (!gaps.is_empty()).then_some(NoiseFloor {
            name: of.name,
            twin: twin.key.contender().name,
            gaps,
        })
    }

    /// The widest gap at any x: the floor the run's verdicts are held against.
    pub fn worst(&self) -> f64 {
        self.gaps.iter().map(|g| g.3).fold(0.0, f64::max)
    }

    /// The median gap over the xs.
    pub fn median(&self) -> f64 {
        median(&self.gaps.iter().map(|g| g.3).collect::<Vec<_>>()).unwrap_or(0.0)
    }
}

/// The floor a run's verdicts on CPU per request are held against: its A/A pair's
/// widest gap, or [`FLOOR_WITHOUT_PAIR`] where it has none.
pub fn floor(run: &Run) -> f64 {
    floor_of(run, Point::cpu_us_per_request)
}

/// The floor for verdicts on the figure `y`: the pair's widest gap in that figure (it
/// was measured in the idle experiment), or [`FLOOR_WITHOUT_PAIR`] where there is none.
pub fn floor_of(run: &Run, y: fn(&Point) -> Option<f64>) -> f64 {
    NoiseFloor::of_figure(run, y).map_or(FLOOR_WITHOUT_PAIR, |f| f.worst())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_repeats_are_indistinguishable() {
        let c = compare(&[10.0, 10.2, 9.9], &[10.1, 9.8, 10.0], 0.05).unwrap();
        assert!(!c.differs(), "{c:?}");
        assert!((c.ratio - 1.0).abs() < 0.02);
    }

    #[test]
    fn a_clear_difference_is_told_in_its_direction() {
        let c = compare(&[5.0, 5.1, 4.9], &[10.0, 10.3, 9.8], 0.08).unwrap();
        assert!(c.lower() && !c.higher(), "{c:?}");
        let c = compare(&[10.0, 10.3, 9.8], &[5.0, 5.1, 4.9], 0.08).unwrap();
        assert!(c.higher(), "{c:?}");
    }

    #[test]
    fn a_gap_inside_the_floor_is_noise_even_when_the_repeats_are_tight() {
        // 5% apart, every repeat on its side: the bootstrap alone would call it.
        let c = compare(&[10.5, 10.5, 10.5], &[10.0, 10.0, 10.0], 0.08).unwrap();
        assert!(c.low > 1.0);
        assert!(!c.differs(), "{c:?}");
        assert!(compare(&[10.5, 10.5, 10.5], &[10.0, 10.0, 10.0], 0.02)
            .unwrap()
            .differs());
    }

    #[test]
    fn one_burst_among_the_repeats_does_not_make_a_difference() {
        // One repeat of three doubled by a burst: the medians stay together.
        let c = compare(&[10.0, 20.5, 10.1], &[10.2, 9.9, 10.0], 0.05).unwrap();
        assert!(!c.differs(), "{c:?}");
    }

    #[test]
    fn nothing_to_compare_is_none() {
        assert_eq!(compare(&[], &[1.0], 0.1), None);
        assert_eq!(compare(&[1.0, 1.0], &[0.0, 0.0], 0.1), None);
        // One window a side: no spread to hold a difference against.
        assert_eq!(compare(&[1.0], &[2.0], 0.1), None);
    }
}
