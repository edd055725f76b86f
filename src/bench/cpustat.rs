//! What else ran on the CPUs during a window: steal time (the hypervisor gave the CPU
//! to another guest) and other tasks' time, from `/proc/stat`'s line per CPU, sampled at
//! the window's edges beside the server's own CPU time. A window disturbed past
//! [`Threshold`] is measured again (`bench/mod.rs`).
//!
//! /proc/stat counts in clock ticks (USER_HZ, 10 ms): in a 1 s window, one tick is 1% of
//! a CPU, fine enough to tell a quiet window from a burst of interference.

use crate::results::Interference;

/// One CPU's times since boot, in seconds (`/proc/stat`: `cpuN user nice system idle
/// iowait irq softirq steal ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    /// Time the CPU ran tasks or the kernel for them (user, nice, system, irq, softirq).
    pub busy_s: f64,
    pub idle_s: f64,
    pub steal_s: f64,
}

/// Every CPU's times, by CPU number.
pub fn sample() -> Vec<(usize, CpuTimes)> {
    std::fs::read_to_string("/proc/stat").map_or_else(|_| Vec::new(), |text| parse(&text))
}

/// The per-CPU lines of /proc/stat's text.
pub fn parse(text: &str) -> Vec<(usize, CpuTimes)> {
    let ticks = super::procfs::clock_ticks();
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(' ')?;
            let cpu: usize = name.strip_prefix("cpu")?.parse().ok()?;
            let f: Vec<f64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / ticks;
            Some((
                cpu,
                CpuTimes {
                    busy_s: at(0) + at(1) + at(2) + at(5) + at(6),
                    idle_s: at(3) + at(4),
                    steal_s: at(7),
                },
            ))
        })
        .collect()
}

/// The increase of `cpus`' times from `before` to `after`, summed.
fn between(before: &[(usize, CpuTimes)], after: &[(usize, CpuTimes)], cpus: &[usize]) -> CpuTimes {
    let find = |all: &[(usize, CpuTimes)], cpu: usize| {
        all.iter()
            .find(|(c, _)| *c == cpu)
            .map_or(CpuTimes::default(), |(_, t)| *t)
    };
    cpus.iter().fold(CpuTimes::default(), |sum, &cpu| {
        let (a, b) = (find(before, cpu), find(after, cpu));
        CpuTimes {
            busy_s: sum.busy_s + (b.busy_s - a.busy_s).max(0.0),
            idle_s: sum.idle_s + (b.idle_s - a.idle_s).max(0.0),
            steal_s: sum.steal_s + (b.steal_s - a.steal_s).max(0.0),
        }
    })
}

/// What else ran in a window of `window_s` seconds: on the server's CPUs, steal and the
/// time of every task but the server (their busy time less the server's own CPU time,
/// `server_cpu_s`); on the load generator's, steal.
pub fn interference(
    before: &[(usize, CpuTimes)],
    after: &[(usize, CpuTimes)],
    server_cpus: &[usize],
    load_cpus: &[usize],
    server_cpu_s: f64,
    window_s: f64,
) -> Interference {
    let server = between(before, after, server_cpus);
    let load = between(before, after, load_cpus);
    let pct = |s: f64, cpus: usize| 100.0 * s / (window_s * cpus.max(1) as f64);
    Interference {
        server_steal_pct: pct(server.steal_s, server_cpus.len()),
        server_others_pct: pct((server.busy_s - server_cpu_s).max(0.0), server_cpus.len()),
        load_steal_pct: pct(load.steal_s, load_cpus.len()),
        server_slowdown: None,
    }
}

/// The interference a window may carry and still count (chosen by measurement: see
/// the methodology chapter, "Noise").
pub const THRESHOLD: Threshold = Threshold {
    steal_pct: 3.0,
    others_pct: 8.0,
    slowdown: 1.2,
};

/// How much interference a window may carry and still count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    /// Steal on the server's CPUs or on the load generator's (each side averaged over
    /// its CPUs), in % of the window.
    pub steal_pct: f64,
    /// Other tasks on the server's CPUs, in % of the window.
    pub others_pct: f64,
    /// How much slower the server's CPU may run than in the run's windows before.
    pub slowdown: f64,
}

impl Threshold {
    /// Why a window with `found` is measured again, or None when it counts.
    pub fn exceeded(&self, found: &Interference) -> Option<String> {
        let steal = found.server_steal_pct.max(found.load_steal_pct);
        if steal > self.steal_pct {
            Some(format!(
                "{steal:.1}% of the window was stolen by the hypervisor (over {:.0}%)",
                self.steal_pct
            ))
        } else if found.server_others_pct > self.others_pct {
            Some(format!(
                "other tasks took {:.1}% of the server's CPU (over {:.0}%)",
                found.server_others_pct, self.others_pct
            ))
        } else {
            let slow = found.server_slowdown.filter(|s| *s > self.slowdown);
            slow.map(|slow| {
                format!(
                    "the server's CPU ran {:.0}% slower than in the run's windows before \
                     (over {:.0}%)",
                    (slow - 1.0) * 100.0,
                    (self.slowdown - 1.0) * 100.0
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  300 0 100 1000 0 0 0 20 0 0\n\
                        cpu0 100 0 50 500 0 0 0 10 0 0\n\
                        cpu1 200 0 50 500 0 0 0 10 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn per_cpu_lines_only_and_their_parts() {
        let cpus = parse(STAT);
        assert_eq!(cpus.len(), 2);
        let ticks = super::super::procfs::clock_ticks();
        assert_eq!(cpus[1].0, 1);
        assert_eq!(cpus[1].1.busy_s, 250.0 / ticks);
        assert_eq!(cpus[1].1.steal_s, 10.0 / ticks);
    }

    #[test]
    fn others_are_the_server_cpus_busy_time_less_the_servers_own() {
        let t = |busy: f64, steal: f64| CpuTimes {
            busy_s: busy,
            idle_s: 0.0,
            steal_s: steal,
        };
        let before = vec![(0, t(10.0, 1.0)), (1, t(10.0, 1.0))];
        let after = vec![(0, t(10.6, 1.05)), (1, t(11.0, 1.2))];
        let found = interference(&before, &after, &[0], &[1], 0.5, 1.0);
        assert!((found.server_others_pct - 10.0).abs() < 1e-6, "{found:?}");
        assert!((found.server_steal_pct - 5.0).abs() < 1e-6);
        assert!((found.load_steal_pct - 20.0).abs() < 1e-6);
        let threshold = Threshold {
            steal_pct: 10.0,
            others_pct: 20.0,
            slowdown: 1.5,
        };
        assert!(threshold.exceeded(&found).unwrap().contains("stolen"));
        let quiet = interference(&before, &before, &[0], &[1], 0.0, 1.0);
        assert_eq!(threshold.exceeded(&quiet), None);
        let slow = Interference {
            server_slowdown: Some(1.6),
            ..quiet
        };
        assert!(threshold.exceeded(&slow).unwrap().contains("60% slower"));
    }
}
