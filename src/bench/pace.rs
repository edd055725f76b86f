//! How fast the server's CPU ran during a window. On a shared virtual machine a CPU can
//! run slow without any steal time: another guest on the same core's other hyperthread,
//! or on the memory bus, takes part of every cycle, and every model measured in that
//! minute costs more per request. So a probe thread, pinned beside the server, does a
//! fixed piece of work every [`EVERY`] (about a millisecond of it, 1% of the server's
//! CPU) and times it in its own CPU time; the window's median against the median taken
//! when the run began says how slow the CPU was ([`crate::results::Interference`]).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;

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

fn pin(cpu: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

/// The probe's median time on `cpu` with nothing else measured: the run's baseline.
pub fn calibrate(cpu: usize) -> Option<f64> {
    std::thread::spawn(move || {
        if !pin(cpu) {
            return None;
        }
        let mut buffer = vec![0u64; 1 << 9];
        let times: Vec<f64> = (0..25)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                once(&mut buffer)
            })
            .collect();
        median(&times)
    })
    .join()
    .ok()
    .flatten()
}

/// The probe running beside one job's server; [`Pacer::slowdown`] reads it.
pub struct Pacer {
    stop: Arc<AtomicBool>,
    times: Arc<Mutex<Vec<(Instant, f64)>>>,
    thread: Option<JoinHandle<()>>,
    baseline: f64,
}

impl Pacer {
    /// Start probing `cpu`, against `baseline` ([`calibrate`]).
    pub fn start(cpu: usize, baseline: f64) -> Pacer {
        let stop = Arc::new(AtomicBool::new(false));
        let times = Arc::new(Mutex::new(Vec::new()));
        let (done, out) = (stop.clone(), times.clone());
        let thread = std::thread::spawn(move || {
            if !pin(cpu) {
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
            baseline,
        }
    }

    /// The median probe between `from` and `to` against the baseline: 1.0 is the pace
    /// the run began at, 1.3 a CPU 30% slower. None with fewer than three probes.
    pub fn slowdown(&self, from: Instant, to: Instant) -> Option<f64> {
        let times = self.times.lock().unwrap();
        let inside: Vec<f64> = times
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, took)| *took)
            .collect();
        if inside.len() < 3 || self.baseline <= 0.0 {
            return None;
        }
        median(&inside).map(|m| m / self.baseline)
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
    fn the_probe_takes_cpu_time_and_a_pacer_reads_its_window() {
        let base = calibrate(0).expect("CPU 0 is there");
        assert!(base > 0.0 && base < 1.0, "{base}");
        let from = Instant::now();
        let pacer = Pacer::start(0, base);
        std::thread::sleep(EVERY * 6);
        let slowdown = pacer.slowdown(from, Instant::now()).expect("probes ran");
        assert!(slowdown > 0.2 && slowdown < 5.0, "{slowdown}");
        assert_eq!(pacer.slowdown(Instant::now(), Instant::now()), None);
    }
}
