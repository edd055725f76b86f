//! Counting: every thread keeps a [`Tally`] of the measured window; tallies merge
//! exactly, across threads and across processes (every histogram bucket crosses the
//! pipe), and the merged one is what the report is made from.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::window::Window;

/// How a request (or a connection attempt) can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    ConnectRefused,
    ConnectTimeout,
    Reset,
    ClosedByServer,
    BadResponse,
    Timeout,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::ConnectRefused,
        ErrorClass::ConnectTimeout,
        ErrorClass::Reset,
        ErrorClass::ClosedByServer,
        ErrorClass::BadResponse,
        ErrorClass::Timeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::ConnectRefused => "connect_refused",
            ErrorClass::ConnectTimeout => "connect_timeout",
            ErrorClass::Reset => "reset",
            ErrorClass::ClosedByServer => "closed_by_server",
            ErrorClass::BadResponse => "bad_response",
            ErrorClass::Timeout => "timeout",
        }
    }
}

/// Latencies are recorded in microseconds, from 1 µs to this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_LATENCY_US)
}

/// One second of the measured window, as one thread saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Second {
    pub completed: u64,
    pub errors: u64,
    #[serde(with = "exact")]
    pub latency: Histogram<u64>,
    /// Connections open when the second was last touched.
    pub open: u64,
}

/// One answer, as [`Tally::answered`] counts it.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub status: u16,
    /// Its request was sent inside the window.
    pub measured: bool,
    /// Open loop: when the schedule said to send; closed loop: when it was sent.
    pub intended: Instant,
    pub sent: Instant,
}

/// One thread's counts for the measured window (or one process's, sent whole to the
/// process that merges them: every histogram bucket travels, so the merge is exact).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tally {
    /// Requests sent (open loop: scheduled) inside the window.
    pub sent: u64,
    /// Of those: answered 2xx ...
    pub completed: u64,
    /// ... answered with another status, by class: index status / 100 (0: not 1xx-5xx) ...
    pub statuses: [u64; 6],
    /// ... failed (by class in `errors`) ...
    pub failed: u64,
    /// ... or still unanswered when the window closed.
    pub in_flight_at_end: u64,
    /// By class: failed requests (a broken connection counts each measured request it
    /// carried), plus failures that cost no request (a refused connect, a connection
    /// closed while idle between open-loop sends).
    pub errors: [u64; 6],
    pub reconnects: u64,
    /// 2xx answers that arrived inside the window, whenever their request was sent:
    /// the throughput. Latencies are recorded for these.
    pub answered_in_window: u64,
    /// From the intended send time (open loop) or the send (closed loop).
    #[serde(with = "exact")]
    pub latency: Histogram<u64>,
    /// From the actual send: what the server took, queueing in our client excluded.
    #[serde(with = "exact")]
    pub service: Histogram<u64>,
    #[serde(with = "exact")]
    pub connect: Histogram<u64>,
    pub seconds: Vec<Second>,
    pub active_requested: u64,
    pub active_established: u64,
    pub idle_requested: u64,
    pub idle_established: u64,
    pub idle_verified: u64,
    pub idle_closed_by_server: u64,
    /// This thread's CPU time inside the window.
    pub cpu: Duration,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            sent: 0,
            completed: 0,
            statuses: [0; 6],
            failed: 0,
            in_flight_at_end: 0,
            errors: [0; 6],
            reconnects: 0,
            answered_in_window: 0,
            latency: histogram(),
            service: histogram(),
            connect: histogram(),
            seconds: Vec::new(),
            active_requested: 0,
            active_established: 0,
            idle_requested: 0,
            idle_established: 0,
            idle_verified: 0,
            idle_closed_by_server: 0,
            cpu: Duration::ZERO,
        }
    }
}

impl Tally {
    pub fn error(&mut self, class: ErrorClass) {
        self.errors[class as usize] += 1;
    }

    /// The second `index` of the window, created on first touch.
    pub fn second(&mut self, index: usize) -> &mut Second {
        while self.seconds.len() <= index {
            self.seconds.push(Second {
                completed: 0,
                errors: 0,
                latency: histogram(),
                open: 0,
            });
        }
        &mut self.seconds[index]
    }

    pub fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.completed += other.completed;
        self.answered_in_window += other.answered_in_window;
        self.failed += other.failed;
        self.in_flight_at_end += other.in_flight_at_end;
        for i in 0..6 {
            self.statuses[i] += other.statuses[i];
            self.errors[i] += other.errors[i];
        }
        self.reconnects += other.reconnects;
        self.latency.add(&other.latency).expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
        self.connect.add(&other.connect).expect("same bounds");
        for (i, s) in other.seconds.iter().enumerate() {
            let mine = self.second(i);
            mine.completed += s.completed;
            mine.errors += s.errors;
            mine.open += s.open;
            mine.latency.add(&s.latency).expect("same bounds");
        }
        self.active_requested += other.active_requested;
        self.active_established += other.active_established;
        self.idle_requested += other.idle_requested;
        self.idle_established += other.idle_established;
        self.idle_verified += other.idle_verified;
        self.idle_closed_by_server += other.idle_closed_by_server;
        self.cpu += other.cpu;
    }

    /// An answer with `status` arrived at `now` for a request that was `measured` (sent
    /// inside the window), meant for `intended` and sent at `sent`; `open` connections
    /// were open then. Throughput counts every 2xx arriving in the window, whenever its
    /// request left (a slow answer to a warm-up request too, as wrk counts it); the books
    /// of `sent` count the requests sent in the window.
    pub fn answered(&mut self, window: &Window, answer: &Answered, now: Instant, open: u64) {
        if !answer.measured && !window.opened_by(now) {
            return;
        }
        let second = window.second_of(now);
        if (200..300).contains(&answer.status) {
            if answer.measured {
                self.completed += 1;
            }
            self.answered_in_window += 1;
            let latency = micros(now - answer.intended);
            let _ = self.latency.record(latency);
            let _ = self.service.record(micros(now - answer.sent));
            let s = self.second(second);
            s.completed += 1;
            let _ = s.latency.record(latency);
            s.open = open;
        } else if answer.measured {
            let class = (answer.status / 100) as usize;
            self.statuses[if (1..=5).contains(&class) { class } else { 0 }] += 1;
            self.second(second).open = open;
        }
    }

    /// A connection broke at `now` with `measured` requests of the window in flight:
    /// each fails with `class`. A failure that cost no measured request still counts
    /// once if it happened in the window or during the ramp (`window` None).
    pub fn failed(
        &mut self,
        window: Option<&Window>,
        class: ErrorClass,
        measured: u64,
        now: Instant,
    ) {
        self.failed += measured;
        let counted = if measured > 0 {
            measured
        } else {
            u64::from(window.is_none_or(|w| w.contains(now)))
        };
        self.errors[class as usize] += counted;
        if let (Some(w), true) = (window, counted > 0) {
            self.second(w.second_of(now)).errors += counted;
        }
    }

    /// A connect failed at `now`: counted during the ramp and in the window, like every
    /// error; not in warm-up.
    pub fn connect_failed(&mut self, window: Option<&Window>, class: ErrorClass, now: Instant) {
        if window.is_none_or(|w| w.contains(now)) {
            self.error(class);
        }
    }

    /// Every request sent in the window is accounted for exactly once: answered (2xx or
    /// another status), failed, or still in flight at the end.
    pub fn adds_up(&self) -> bool {
        let answered_other: u64 = self.statuses.iter().sum();
        self.sent == self.completed + answered_other + self.failed + self.in_flight_at_end
    }
}

/// A histogram as it crosses a pipe: HdrHistogram's V2 encoding (every bucket, no
/// compression: the pipe is local), in base64.
mod exact {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Deserializer as HdrDe, Serializer as _, V2Serializer};
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        let read: Histogram<u64> = HdrDe::new()
            .deserialize(&mut &bytes[..])
            .map_err(serde::de::Error::custom)?;
        // The same bounds as every tally's, so that merging cannot fail.
        let mut h = super::histogram();
        h.add(&read).map_err(serde::de::Error::custom)?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_add_up() {
        let mut a = Tally {
            sent: 10,
            completed: 6,
            failed: 2,
            in_flight_at_end: 1,
            ..Tally::default()
        };
        a.statuses[5] = 1;
        a.error(ErrorClass::Reset);
        a.error(ErrorClass::Timeout);
        a.latency.record(100).unwrap();
        a.second(2).completed = 6;
        assert!(a.adds_up());
        let mut b = Tally {
            sent: 3,
            completed: 3,
            ..Tally::default()
        };
        b.latency.record(300).unwrap();
        b.second(0).completed = 3;
        b.merge(&a);
        assert!(b.adds_up());
        assert_eq!((b.sent, b.completed, b.latency.len()), (13, 9, 2));
        assert_eq!(b.seconds.len(), 3);
        assert_eq!(b.errors[ErrorClass::Reset as usize], 1);
        b.in_flight_at_end += 1;
        assert!(!b.adds_up(), "one request too many must show");
    }
}
