//! What the caller hears while a run goes on, and where it may answer (the gate).

use std::time::Duration;

/// What the caller wants to hear while a run goes on.
pub trait Progress: Sync {
    /// Ramping up: `established` of `total` connections.
    fn ramp(&self, established: u64, failed: u64, total: u64);
    /// Something the user must hear now (a listen queue overflowing): one line.
    fn warn(&self, line: &str) {
        eprintln!("iomodels: {line}");
    }
    /// The ramp is over; `ready`: every connection is open. Answer whether to start (a
    /// worker process asks its parent here, so that every process starts together).
    fn gate(&self, ready: bool) -> bool {
        ready
    }
    /// The warm-up begins now.
    fn started(&self) {}
    /// Running: `elapsed` since the start (warm-up included), answers and errors so far.
    fn running(&self, elapsed: Duration, completed: u64, errors: u64);
    /// The measured window opens (warm-up is over): a caller snapshots the server here.
    fn window_opened(&self) {}
    /// The measured window has closed; threads are finishing.
    fn window_closed(&self) {}
    fn done(&self);
}

/// Say nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn ramp(&self, _: u64, _: u64, _: u64) {}
    fn running(&self, _: Duration, _: u64, _: u64) {}
    fn done(&self) {}
}
