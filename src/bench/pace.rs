//! How fast the server's CPU ran during a window. On a shared virtual machine a CPU can
//! run slow without any steal time: another guest on the same core's other hyperthread,
//! or on the memory bus, takes part of every cycle, and every model measured in that
//! minute costs more per request. So a probe thread, pinned beside the server, does a
//! fixed piece of work every [`EVERY`] (about a millisecond of it, 1% of the server's
//! CPU) and times it in its own CPU time; the window's median against the median of the
//! run's windows before it says how slow the CPU was ([`crate::results::Interference`]).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

use crate::series::median;

/// How often the probe runs during a job.
pub const EVERY: Duration = Duration::from_millis(100);

/// Iterations of the probe's loop: about a millisecond on this machine.
const WORK: u64 = 400_000;

/// The probe's work, timed in the calling thread's CPU time, in seconds.
fn once(buffer: &mut [u64]) -> f64 {
    let cpu = || {
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
    };
    let start = cpu();
    let mask = buffer.len() - 1;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..WORK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buffer[(x as usize) & mask] = buffer[(x as usize) & mask].wrapping_add(x);
    }
    black_box(&buffer);
    cpu() - start
}

/// The pace of the server's CPU over a run: the median probe of every window measured
/// so far, against which the next window is held. Not a calibration taken before the
/// run: an idle CPU runs slower than one kept busy (its clock and sleep states), so the
/// first probes here ran a quarter slower than those taken beside a server under load.
pub struct Pace {
    cpu: usize,
    windows: Mutex<Vec<f64>>,
}

/// The windows a run measures before it holds one against the others.
const SETTLED: usize = 5;

impl Pace {
    /// The pace of `cpu`, with no window measured yet.
    pub fn on(cpu: usize) -> Pace {
        Pace {
            cpu,
            windows: Mutex::new(Vec::new()),
        }
    }

    /// A probe beside one job's server.
    pub fn start(&self) -> Pacer {
        Pacer::start(self.cpu)
    }

    /// How much slower the window from `from` to `to` ran than the run's windows before
    /// it (their median): 1.0 the same, 1.3 30% slower. None in the run's first
    /// [`SETTLED`] windows, or with fewer than three probes in this one.
    pub fn slowdown(&self, pacer: &Pacer, from: Instant, to: Instant) -> Option<f64> {
        let this = pacer.median(from, to)?;
        let mut windows = self.windows.lock().unwrap();
        let before = (windows.len() >= SETTLED)
            .then(|| median(&windows))
            .flatten();
        windows.push(this);
        before.filter(|b| *b > 0.0).map(|b| this / b)
    }
}

/// The probe running beside one job's server.
pub struct Pacer {
    stop: Arc<AtomicBool>,
    times: Arc<Mutex<Vec<(Instant, f64)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Start probing `cpu`.
    fn start(cpu: usize) -> Pacer {
        let stop = Arc::new(AtomicBool::new(false));
        let times = Arc::new(Mutex::new(Vec::new()));
        let (done, out) = (stop.clone(), times.clone());
        let thread = std::thread::spawn(move || {
            if super::machine::pin_this_thread(&[cpu]).is_err() {
                return;
            }
            let mut buffer = vec![0u64; 1 << 9];
            while !done.load(Ordering::Relaxed) {
                let took = once(&mut buffer);
                out.lock().unwrap().push((Instant::now(), took));
                std::thread::sleep(EVERY);
            }
        });
        Pacer {
            stop,
            times,
            thread: Some(thread),
        }
    }

    /// The median probe between `from` and `to`; None with fewer than three.
    fn median(&self, from: Instant, to: Instant) -> Option<f64> {
        let times = self.times.lock().unwrap();
        let inside: Vec<f64> = times
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, took)| *took)
            .collect();
        if inside.len() < 3 {
            return None;
        }
        median(&inside)
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_held_against_the_windows_before_it_once_there_are_enough() {
        let pace = Pace::on(0);
        for i in 0..=SETTLED {
            let from = Instant::now();
            let pacer = pace.start();
            std::thread::sleep(EVERY * 4);
            let slowdown = pace.slowdown(&pacer, from, Instant::now());
            if i < SETTLED {
                assert_eq!(slowdown, None, "window {i}: nothing to hold it against yet");
            } else {
                let s = slowdown.expect("probes ran");
                assert!(s > 0.2 && s < 5.0, "{s}");
            }
        }
        let pacer = pace.start();
        assert_eq!(pace.slowdown(&pacer, Instant::now(), Instant::now()), None);
    }
}
