//! The open loop's clock: when each request is meant to be sent.
//!
//! Every active connection sends at `rate / connections` per second, its first send
//! staggered by its index so the connections do not fire together. A request's latency
//! is measured from the time written here, not from when it could finally be sent: a
//! server that stalls is charged for every request it kept waiting (wrk2's rule against
//! coordinated omission).

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    /// Seconds from `start` to the first send.
    offset: f64,
    /// Seconds between sends.
    interval: f64,
    /// Sends taken so far.
    taken: u64,
}

impl Schedule {
    /// Connection `index` of `of`, sending `per_conn` requests per second from `start`.
    pub fn new(start: Instant, per_conn: f64, index: usize, of: usize) -> Schedule {
        let interval = 1.0 / per_conn;
        Schedule {
            start,
            offset: interval * index as f64 / of.max(1) as f64,
            interval,
            taken: 0,
        }
    }

    /// When the next request is due. Computed from the start, so it never drifts.
    pub fn next(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.offset + self.taken as f64 * self.interval)
    }

    pub fn advance(&mut self) {
        self.taken += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_staggered_and_evenly_spaced() {
        let start = Instant::now();
        let a = Schedule::new(start, 100.0, 0, 4);
        let b = Schedule::new(start, 100.0, 2, 4);
        assert_eq!(a.next(), start);
        assert_eq!(b.next() - start, Duration::from_millis(5));
        let mut c = b.clone();
        for _ in 0..1000 {
            c.advance();
        }
        // 1000 sends at 100/s: exactly 10 s later, no drift from adding intervals.
        assert_eq!(c.next() - b.next(), Duration::from_secs(10));
    }

    #[test]
    fn all_connections_together_send_at_the_total_rate() {
        let start = Instant::now();
        let (rate, conns) = (20_000.0, 8);
        let end = start + Duration::from_secs(1);
        let mut sent = 0;
        for i in 0..conns {
            let mut s = Schedule::new(start, rate / conns as f64, i, conns);
            while s.next() < end {
                sent += 1;
                s.advance();
            }
        }
        assert_eq!(sent, 20_000);
    }
}
