//! The report as a person reads it: what `iomodels load` prints at the end of a run.

use std::fmt::Write as _;

use crate::report::{Percentiles, Report};

impl Report {
    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let mode = match c.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => format!("closed loop, {} in flight per connection", c.pipeline),
        };
        let _ = writeln!(
            s,
            "{} active connections ({mode}), {} idle, {:.1}s measured after {:.1}s warm-up, {}",
            c.connections,
            c.idle,
            self.measured_seconds,
            c.warmup.as_secs_f64(),
            if c.processes > 1 {
                format!("{} processes of {} threads", c.processes, c.threads)
            } else {
                format!("{} threads", c.threads)
            }
        );
        let _ = writeln!(
            s,
            "  throughput   {:>12.0} req/s (2xx answers in the window)   {} of {} sent in it answered",
            self.throughput_rps, self.completed, self.sent
        );
        if let Some(achieved) = self.achieved_rate_rps {
            let _ = writeln!(
                s,
                "  sent at      {:>12.0} req/s (asked {:.0})",
                achieved,
                c.rate.unwrap_or(0.0)
            );
        }
        let p = |name: &str, p: &Percentiles, s: &mut String| {
            let _ = writeln!(
                s,
                "  {name:<12} p50 {} p90 {} p99 {} p99.9 {} max {} (µs)",
                p.p50, p.p90, p.p99, p.p999, p.max
            );
        };
        let corrected = if c.rate.is_some() {
            "latency*"
        } else {
            "latency"
        };
        p(corrected, &self.latency_us, &mut s);
        if c.rate.is_some() {
            p("service", &self.service_latency_us, &mut s);
            let _ = writeln!(s, "  * from each request's intended send time");
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let non_2xx: Vec<String> = self
            .non_2xx
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "  errors       {}   non-2xx {}   in flight at end {}",
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            },
            if non_2xx.is_empty() {
                "none".into()
            } else {
                non_2xx.join(", ")
            },
            self.in_flight_at_end
        );
        if c.idle > 0 {
            let _ = writeln!(
                s,
                "  idle         {} requested, {} established, {} verified, {} closed by the server",
                self.idle.requested,
                self.idle.established,
                self.idle.verified,
                self.idle.closed_by_server
            );
        }
        let _ = writeln!(
            s,
            "  loadgen      {:.0}% busy, {} MB resident",
            self.loadgen_cpu * 100.0,
            self.loadgen_rss_kb / 1024
        );
        if self.loadgen_saturated {
            let _ = writeln!(
                s,
                "  load generator saturated: the numbers are a floor (add --threads or CPUs)"
            );
        }
        s
    }
}
