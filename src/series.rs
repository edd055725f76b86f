//! A run's points as the lines of its charts and the rows of its tables: each point
//! belongs to one series ([`SeriesKey`]: who ran, with which server arguments, asking
//! which route of its own) and sits at one x of its experiment; repeats of it are
//! taken as their median.

use std::collections::BTreeMap;
use std::fmt;

use crate::experiments::kind::{Axis, Experiment};
use crate::results::{Limit, Point, Run};
use crate::roster::{self, Contender};

/// Which series a point belongs to, built once from it: run.json keeps the three parts
/// apart (`model`, `server_args`, `path` with `own_path`), and so does this.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    who: String,
    args: Vec<String>,
    /// The route it asked instead of the experiment's (a variant's), if any.
    route: Option<String>,
}

impl SeriesKey {
    pub fn of(point: &Point) -> SeriesKey {
        SeriesKey {
            who: point.model.clone(),
            args: point.server_args.clone(),
            route: point.path.clone().filter(|_| point.own_path),
        }
    }

    /// The point's `"model"`: a model, a peer, a server of one's own, a wait call.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// The roster's row for it.
    pub fn contender(&self) -> &'static Contender {
        roster::find(&self.who)
    }

    /// Whether it is one of `contenders`' series (whatever its arguments).
    pub fn is_one_of(&self, contenders: &[&Contender]) -> bool {
        contenders.iter().any(|c| c.is(&self.who))
    }

    /// Whether it is `contender` as it comes: no server arguments, no route of its own.
    pub fn is_plain(&self, contender: &Contender) -> bool {
        contender.is(&self.who) && self.args.is_empty() && self.route.is_none()
    }

    /// Whether it is `contender` started with exactly `args`, asking no route of its own.
    pub fn is_with(&self, contender: &Contender, args: &[&str]) -> bool {
        contender.is(&self.who) && self.route.is_none() && self.args.iter().eq(args.iter())
    }

    /// Whether it belongs to one of the contenders `only` names (all when None).
    pub fn shown(&self, only: Option<&[&Contender]>) -> bool {
        only.is_none_or(|contenders| self.is_one_of(contenders))
    }

    /// Where it goes in a table of `only`'s: a chapter's own model first.
    pub fn rank(&self, only: &[&Contender]) -> Option<usize> {
        only.iter().position(|c| c.is(&self.who))
    }

    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }
}

/// As a legend and a table row say it: the name, then its arguments, then its route
/// ("reactor --executor 0 --waits coroutine /wait/100").
impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.who)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        if let Some(route) = &self.route {
            write!(f, " {route}")?;
        }
        Ok(())
    }
}

impl Point {
    /// The series this point belongs to.
    pub fn series_key(&self) -> SeriesKey {
        SeriesKey::of(self)
    }

    /// The x of this point in its experiment's charts.
    pub fn x(&self) -> f64 {
        let x = match self.experiment.axis() {
            Axis::Idle => self.idle,
            Axis::Connections => self.active,
            Axis::Descriptors => self.fds,
            Axis::SlowConnections => self.slow,
        };
        x.unwrap_or(0) as f64
    }
}

/// One line of a chart: the median of the repeats at each x, and the limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub key: SeriesKey,
    /// The key as a legend shows it.
    pub name: String,
    /// (x, median y, the load generator was saturated in some repeat).
    pub values: Vec<(f64, f64, bool)>,
    /// Every repeat's y at each of `values`' xs, in the order measured.
    pub repeats: Vec<Vec<f64>>,
    /// (x, why): where the model could not go.
    pub limits: Vec<(f64, Limit)>,
}

impl Series {
    fn new(key: SeriesKey) -> Series {
        Series {
            name: key.to_string(),
            key,
            values: Vec::new(),
            repeats: Vec::new(),
            limits: Vec::new(),
        }
    }

    /// The repeats' (lowest, highest) y at `values[i]`.
    pub fn range(&self, i: usize) -> Option<(f64, f64)> {
        let ys = self.repeats.get(i)?;
        let lo = ys.iter().copied().reduce(f64::min)?;
        let hi = ys.iter().copied().reduce(f64::max)?;
        Some((lo, hi))
    }

    /// The spread of the repeats at `values[i]`: half their range, the `±` of a table.
    pub fn spread(&self, i: usize) -> Option<f64> {
        self.range(i).map(|(lo, hi)| (hi - lo) / 2.0)
    }

    /// The repeats at x.
    pub fn repeats_at(&self, x: f64) -> Option<&[f64]> {
        let i = self.values.iter().position(|v| v.0 == x)?;
        self.repeats.get(i).map(Vec::as_slice)
    }
}

impl Run {
    /// The points of one experiment, grouped into one series per model (in the order
    /// the models first appear), with `y` taken as the median of the repeats.
    /// A point is a limit when any repeat of it was. The run's A/A twin is left out:
    /// it is the noise floor's ([`Run::all_series`]).
    pub fn series(&self, experiment: Experiment, y: impl Fn(&Point) -> Option<f64>) -> Vec<Series> {
        let mut all = self.all_series(experiment, y);
        all.retain(|s| s.key.contender().twin_of().is_none());
        all
    }

    /// [`Run::series`], the A/A twin included.
    pub fn all_series(
        &self,
        experiment: Experiment,
        y: impl Fn(&Point) -> Option<f64>,
    ) -> Vec<Series> {
        let mut order: Vec<SeriesKey> = Vec::new();
        let mut groups: BTreeMap<(SeriesKey, u64), Vec<&Point>> = BTreeMap::new();
        for p in self.points.iter().filter(|p| p.experiment == experiment) {
            let key = p.series_key();
            if !order.contains(&key) {
                order.push(key.clone());
            }
            groups.entry((key, p.x().to_bits())).or_default().push(p);
        }
        order
            .into_iter()
            .map(|key| {
                let mut xs: Vec<(f64, &Vec<&Point>)> = groups
                    .iter()
                    .filter(|((k, _), _)| *k == key)
                    .map(|((_, x), ps)| (f64::from_bits(*x), ps))
                    .collect();
                xs.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut series = Series::new(key);
                for (x, points) in xs {
                    if let Some(limited) = points.iter().find_map(|p| p.limit.as_ref()) {
                        series.limits.push((x, limited.clone()));
                        continue;
                    }
                    let ys: Vec<f64> = points.iter().filter_map(|p| y(p)).collect();
                    if let Some(m) = median(&ys) {
                        series
                            .values
                            .push((x, m, points.iter().any(|p| p.saturated())));
                        series.repeats.push(ys);
                    }
                }
                series
            })
            .collect()
    }

    /// Resident memory each idle connection adds: (RSS at N idle - RSS at 0 idle) / N,
    /// per model, from the idle experiment's medians.
    pub fn memory_per_idle_connection(&self) -> Vec<Series> {
        let rss = self.series(Experiment::Idle, |p| {
            p.server.as_ref().map(|s| s.rss_kb as f64)
        });
        rss.into_iter()
            .map(|s| {
                let base = s.values.iter().find(|v| v.0 == 0.0).map(|v| v.1);
                let per = |x: f64, rss: f64, base: f64| ((rss - base) / x).max(0.0);
                let mut values = Vec::new();
                let mut repeats = Vec::new();
                for (i, &(x, rss, sat)) in s.values.iter().enumerate() {
                    let Some(base) = base.filter(|_| x > 0.0) else {
                        continue;
                    };
                    values.push((x, per(x, rss, base), sat));
                    repeats.push(s.repeats[i].iter().map(|&r| per(x, r, base)).collect());
                }
                Series {
                    values,
                    repeats,
                    ..s
                }
            })
            .filter(|s| !s.values.is_empty() || !s.limits.is_empty())
            .collect()
    }
}

/// Every x any of `series` has a value or a limit at, in order: a table's columns, a
/// bar chart's groups.
pub fn xs(series: &[Series]) -> Vec<f64> {
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .map(|v| v.0)
                .chain(s.limits.iter().map(|l| l.0))
        })
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs
}

/// The median (the mean of the middle two for an even count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn a_key_keeps_its_parts_apart_and_says_them_in_run_json_order() {
        let p = Point {
            model: "reactor".into(),
            server_args: vec!["--executor".into(), "0".into()],
            path: Some("/wait/100".into()),
            own_path: true,
            ..Point::default()
        };
        let key = p.series_key();
        assert_eq!(key.who(), "reactor");
        assert_eq!(key.args(), ["--executor", "0"]);
        assert_eq!(key.route(), Some("/wait/100"));
        assert_eq!(key.to_string(), "reactor --executor 0 /wait/100");
        assert!(!key.is_with(&roster::REACTOR, &["--executor", "0"]));
        // The experiment's own route is not the series'.
        let asked = Point {
            own_path: false,
            ..p
        };
        assert_eq!(asked.series_key().route(), None);
        assert!(asked
            .series_key()
            .is_with(&roster::REACTOR, &["--executor", "0"]));
    }
}
