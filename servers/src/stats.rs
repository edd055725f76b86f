//! The counters every model keeps the same way, read by the suite as JSON.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use crate::trace::{Tracer, What};

/// Counters shared by a model's threads. Relaxed atomics: each is a tally, not a lock.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections taken off the listen queue.
    pub accepted: AtomicU64,
    /// Of those, turned away by a limit (select's FD_SETSIZE, EMFILE, a failed spawn).
    pub refused: AtomicU64,
    /// Connections closed, refused ones included.
    pub closed: AtomicU64,
    /// HTTP requests answered (echo has none).
    pub requests: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Calls that wait: select, poll, epoll_wait; a busy-poll turn; a blocking accept.
    pub wait_calls: AtomicU64,
    /// Descriptors the wait had to look at: what select and poll pay for per call.
    pub fds_scanned: AtomicU64,
    /// Ready descriptors the waits returned.
    pub events: AtomicU64,
    /// Reads that found nothing (EAGAIN): busy-poll's waste, and ET's last read.
    pub empty_reads: AtomicU64,
    /// read(2)/recv(2) calls made, empty ones included (not the kernel's own receives
    /// under io_uring: those are no system call of ours).
    pub reads: AtomicU64,
    /// write(2)/send(2) calls made.
    pub writes: AtomicU64,
    /// Calls that change what is watched: epoll_ctl, and sigio's fcntl arming.
    pub ctl_calls: AtomicU64,
    /// Every system call the model makes on its connections' behalf: the waits (not a
    /// busy-poll turn, nor a blocking read that is its own wait), accepts, reads,
    /// writes, interest changes and closes. Thread hand-overs (futex) are not counted.
    pub syscalls: AtomicU64,
    /// Threads running now (the blocking model: one per connection).
    pub threads: AtomicU64,
    pub threads_peak: AtomicU64,
    /// `thread-pool`: connections with a request waiting for a free worker, now and at most.
    pub queued: AtomicU64,
    pub queued_peak: AtomicU64,
    /// Connections closed by the server's timekeeping and overload handling, by cause:
    /// a header not complete in time (answered 408), a keep-alive connection idle too
    /// long, and an idle one closed to admit a newcomer at the cap.
    pub header_timeouts: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub overload_evictions: AtomicU64,
    /// `prefork`: worker processes that died and were started again.
    pub worker_restarts: AtomicU64,
    /// What the kernel offered the model and it uses (io-uring: single-issuer, …).
    pub features: Mutex<Vec<String>>,
    /// Set with `serve --trace`: every event recorded, for the book's timelines.
    pub tracer: OnceLock<Tracer>,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// One wait call (a system call of its own) that looked at `scanned` descriptors
    /// and found `ready`.
    pub fn waited(&self, scanned: usize, ready: usize) {
        self.turned(scanned, ready);
        Stats::add(&self.syscalls, 1);
        self.trace(|| What::WaitEnds { ready });
    }

    /// A wait call (`call`) is about to begin: recorded when tracing, nothing else.
    pub fn wait_begins(&self, call: &str) {
        self.trace(|| What::WaitBegins { call: call.into() });
    }

    /// Record what `what` says, if tracing (the closure runs only then).
    pub fn trace(&self, what: impl FnOnce() -> What) {
        if let Some(tracer) = self.tracer.get() {
            tracer.record(what());
        }
    }

    /// A wait that is no system call of its own: a busy-poll turn, or a blocking read
    /// or accept, whose call is counted as the read or accept it is.
    pub fn turned(&self, scanned: usize, ready: usize) {
        Stats::add(&self.wait_calls, 1);
        Stats::add(&self.fds_scanned, scanned as u64);
        Stats::add(&self.events, ready as u64);
    }

    /// One read(2) or recv(2).
    pub fn read_call(&self) {
        Stats::add(&self.reads, 1);
        Stats::add(&self.syscalls, 1);
    }

    /// One write(2) or send(2).
    pub fn write_call(&self) {
        Stats::add(&self.writes, 1);
        Stats::add(&self.syscalls, 1);
    }

    /// `n` calls that change what is watched (epoll_ctl, fcntl).
    pub fn ctl_calls(&self, n: u64) {
        Stats::add(&self.ctl_calls, n);
        Stats::add(&self.syscalls, n);
    }

    /// `n` other system calls (accept4, setsockopt, close, shutdown, a waker's write).
    pub fn other_calls(&self, n: u64) {
        Stats::add(&self.syscalls, n);
    }

    /// Record a kernel feature the model found and uses.
    pub fn feature(&self, name: &str) {
        let mut features = self.features.lock().unwrap_or_else(|e| e.into_inner());
        if !features.iter().any(|f| f == name) {
            features.push(name.to_string());
        }
    }

    /// Connections open now: accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.accepted
            .load(Relaxed)
            .saturating_sub(self.closed.load(Relaxed))
    }

    pub fn thread_started(&self) {
        let now = self.threads.fetch_add(1, Relaxed) + 1;
        self.threads_peak.fetch_max(now, Relaxed);
    }

    pub fn queued_more(&self) {
        let now = self.queued.fetch_add(1, Relaxed) + 1;
        self.queued_peak.fetch_max(now, Relaxed);
    }

    pub fn queued_less(&self) {
        self.queued.fetch_sub(1, Relaxed);
    }

    pub fn thread_ended(&self) {
        self.threads.fetch_sub(1, Relaxed);
    }

    pub fn snapshot(&self, model: &str) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Relaxed);
        let accepted = get(&self.accepted);
        let closed = get(&self.closed);
        Snapshot {
            model: model.to_string(),
            accepted,
            refused: get(&self.refused),
            closed,
            open: accepted.saturating_sub(closed),
            requests: get(&self.requests),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            wait_calls: get(&self.wait_calls),
            fds_scanned: get(&self.fds_scanned),
            events: get(&self.events),
            empty_reads: get(&self.empty_reads),
            reads: get(&self.reads),
            writes: get(&self.writes),
            ctl_calls: get(&self.ctl_calls),
            syscalls: get(&self.syscalls),
            threads: get(&self.threads),
            threads_peak: get(&self.threads_peak),
            queued: get(&self.queued),
            queued_peak: get(&self.queued_peak),
            header_timeouts: get(&self.header_timeouts),
            idle_timeouts: get(&self.idle_timeouts),
            overload_evictions: get(&self.overload_evictions),
            worker_restarts: get(&self.worker_restarts),
            features: self
                .features
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// The counters at one instant, as printed (one JSON line) on SIGUSR1 and at exit.
///
/// Tallies only grow; `open`, `threads`, `queued` and their peaks are levels, read at the
/// instant. [`Snapshot::since`] turns two snapshots into what happened between them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub model: String,
    pub accepted: u64,
    pub refused: u64,
    pub closed: u64,
    /// Connections open at the instant: accepted - closed.
    pub open: u64,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub wait_calls: u64,
    pub fds_scanned: u64,
    pub events: u64,
    pub empty_reads: u64,
    // Counted since schema 2 of the suite's run files; absent (0) in older ones.
    #[serde(skip_serializing_if = "is_zero")]
    pub reads: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub writes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub ctl_calls: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub syscalls: u64,
    pub threads: u64,
    pub threads_peak: u64,
    pub queued: u64,
    pub queued_peak: u64,
    /// Connections the server closed, by cause (see [`Stats::header_timeouts`]); absent
    /// (0) in run files older than the timeouts.
    #[serde(skip_serializing_if = "is_zero")]
    pub header_timeouts: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub idle_timeouts: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub overload_evictions: u64,
    /// `prefork`: workers started again after they died.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub worker_restarts: u64,
    /// Kernel features the model uses (io-uring), once at start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

impl Snapshot {
    /// What happened between `earlier` and `self`: each tally's increase (saturating, so a
    /// restarted server reads as zero, never as a wrap), each level as it is now.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        Snapshot {
            model: self.model.clone(),
            accepted: delta(self.accepted, earlier.accepted),
            refused: delta(self.refused, earlier.refused),
            closed: delta(self.closed, earlier.closed),
            open: self.open,
            requests: delta(self.requests, earlier.requests),
            bytes_in: delta(self.bytes_in, earlier.bytes_in),
            bytes_out: delta(self.bytes_out, earlier.bytes_out),
            wait_calls: delta(self.wait_calls, earlier.wait_calls),
            fds_scanned: delta(self.fds_scanned, earlier.fds_scanned),
            events: delta(self.events, earlier.events),
            empty_reads: delta(self.empty_reads, earlier.empty_reads),
            reads: delta(self.reads, earlier.reads),
            writes: delta(self.writes, earlier.writes),
            ctl_calls: delta(self.ctl_calls, earlier.ctl_calls),
            syscalls: delta(self.syscalls, earlier.syscalls),
            threads: self.threads,
            threads_peak: self.threads_peak,
            queued: self.queued,
            queued_peak: self.queued_peak,
            header_timeouts: delta(self.header_timeouts, earlier.header_timeouts),
            idle_timeouts: delta(self.idle_timeouts, earlier.idle_timeouts),
            overload_evictions: delta(self.overload_evictions, earlier.overload_evictions),
            worker_restarts: delta(self.worker_restarts, earlier.worker_restarts),
            features: self.features.clone(),
        }
    }

    /// No counts yet, for `model`.
    pub fn empty(model: &str) -> Snapshot {
        Snapshot {
            model: model.to_string(),
            ..Snapshot::default()
        }
    }

    /// Add another process's counters to these (`prefork` sums its workers'): tallies
    /// and levels alike, since the processes share nothing.
    pub fn add(&mut self, other: &Snapshot) {
        let Snapshot {
            model: _,
            accepted,
            refused,
            closed,
            open,
            requests,
            bytes_in,
            bytes_out,
            wait_calls,
            fds_scanned,
            events,
            empty_reads,
            reads,
            writes,
            ctl_calls,
            syscalls,
            threads,
            threads_peak,
            queued,
            queued_peak,
            header_timeouts,
            idle_timeouts,
            overload_evictions,
            worker_restarts,
            features,
        } = other;
        self.accepted += accepted;
        self.refused += refused;
        self.closed += closed;
        self.open += open;
        self.requests += requests;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.wait_calls += wait_calls;
        self.fds_scanned += fds_scanned;
        self.events += events;
        self.empty_reads += empty_reads;
        self.reads += reads;
        self.writes += writes;
        self.ctl_calls += ctl_calls;
        self.syscalls += syscalls;
        self.threads += threads;
        self.threads_peak += threads_peak;
        self.queued += queued;
        self.queued_peak += queued_peak;
        self.header_timeouts += header_timeouts;
        self.idle_timeouts += idle_timeouts;
        self.overload_evictions += overload_evictions;
        self.worker_restarts += worker_restarts;
        for f in features {
            if !self.features.contains(f) {
                self.features.push(f.clone());
            }
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
