//! A model's loop, recorded: when it waited and what it did, thread by thread, for the
//! book's timelines (`iomodels trace` runs a short scripted scenario against each
//! model with `serve --trace FILE`, and `iomodels book` draws what was recorded).
//!
//! Off unless asked for: then every event takes a lock and allocates, which is why it
//! is for a few clients, never for a measured run.

use std::os::fd::RawFd;
use std::sync::Mutex;

use nix::time::{clock_gettime, ClockId};

use serde::{Deserialize, Serialize};

/// One thing a model did, when, and on which thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// CLOCK_MONOTONIC, in microseconds: the same clock in every process, so a
    /// client's events and the server's share one axis.
    pub us: u64,
    /// The thread: its name and its kernel id, `main/4242` (threads may share a name:
    /// every connection thread of `blocking` is `conn`).
    pub thread: String,
    #[serde(flatten)]
    pub what: What,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum What {
    /// The model's wait call begins: select, poll, epoll_wait, io_uring_enter, …
    WaitBegins {
        call: String,
    },
    /// It returns, with this many descriptors (or completions) ready.
    WaitEnds {
        ready: usize,
    },
    Accept {
        fd: RawFd,
    },
    /// A read that brought `bytes` (0: the peer's EOF).
    Read {
        fd: RawFd,
        bytes: usize,
    },
    /// A read that found nothing (EAGAIN).
    EmptyRead {
        fd: RawFd,
    },
    /// Reads that found nothing, one after another on this thread, until `until_us`:
    /// busy-poll's spinning, recorded as one event rather than one per read.
    Spun {
        empty_reads: u64,
        until_us: u64,
    },
    Write {
        fd: RawFd,
        bytes: usize,
    },
    /// The server's clock ran out for this connection (or a newcomer took its room).
    Expired {
        fd: RawFd,
        why: String,
    },
    Close {
        fd: RawFd,
    },
    /// Not the server's: what a client of the scenario did, so the picture shows cause
    /// and effect on one time axis.
    Client {
        client: String,
        did: String,
    },
}

/// The recorder a [`crate::Stats`] holds when tracing.
#[derive(Debug, Default)]
pub struct Tracer {
    events: Mutex<Vec<Event>>,
}

/// Now on CLOCK_MONOTONIC, in microseconds.
pub fn now_us() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

impl Tracer {
    pub fn new() -> Tracer {
        Tracer::default()
    }

    pub fn record(&self, what: What) {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        self.record_as(&format!("{name}/{}", nix::unistd::gettid()), what);
    }

    /// Record `what` in the lane called `thread` (a demonstration's own lanes).
    pub fn record_as(&self, thread: &str, what: What) {
        let us = now_us();
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        // Empty reads in a row on one thread become one `Spun`.
        if let (What::EmptyRead { .. }, Some(last)) = (&what, events.last_mut()) {
            if last.thread == thread {
                match &mut last.what {
                    What::EmptyRead { .. } => {
                        last.what = What::Spun {
                            empty_reads: 2,
                            until_us: us,
                        };
                        return;
                    }
                    What::Spun {
                        empty_reads,
                        until_us,
                    } => {
                        *empty_reads += 1;
                        *until_us = us;
                        return;
                    }
                    _ => {}
                }
            }
        }
        events.push(Event {
            us,
            thread: thread.to_string(),
            what,
        });
    }

    /// Events recorded elsewhere (prefork's workers), kept in time order.
    pub fn extend(&self, more: impl IntoIterator<Item = Event>) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.extend(more);
        events.sort_by_key(|e| e.us);
    }

    /// Everything recorded, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
