//! The shared deadline structure: when each connection's time runs out, kept without
//! ever scanning every connection.
//!
//! A connection waits on at most one clock at a time (`Conn::timeout`):
//!
//! - **header**: a request has begun (or the connection is new) and its header is not
//!   complete. The clock starts at the first byte and is *not* restarted by the bytes
//!   that follow, so a client trickling a byte at a time (slowloris) cannot keep it alive:
//!   nginx's `client_header_timeout`, Apache's mod_reqtimeout.
//! - **idle**: a keep-alive connection between requests. The clock restarts after each
//!   answer: nginx's `keepalive_timeout`.
//! - none, while an answer is being written or blocking work runs for it.
//!
//! Every connection on one clock has the same timeout, so the order in which they
//! started is the order in which they expire. Each clock is therefore a list in start
//! order, and the first entry is the nearest deadline: starting or restarting a clock
//! moves the connection to the back (O(1), a doubly linked list over a vector indexed by
//! the model's token), expiry takes from the front (O(1) per expired connection), and
//! the idle list's front is also the longest-idle connection, the one to close when a
//! newcomer needs room (nginx keeps its reusable connections in such a queue). Redis and
//! libuv keep general timers in a heap or a radix tree; the two fixed timeouts need only
//! two lists.
//!
//! An event loop uses it in two lines: its wait's timeout is [`Timers::timeout`] (redis's
//! `aeSearchNearestTimer`), and after the wait it closes what [`Timers::expired`] gives.

use std::time::{Duration, Instant};

use nix::poll::PollTimeout;

use crate::server::Config;

/// The clock a connection waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// A request's header is not complete yet (or nothing has come on a new connection).
    Header,
    /// A keep-alive connection between requests.
    Idle,
}

/// Why the server closed a connection: its clock ran out, or it was the longest idle
/// when a newcomer needed room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicted {
    /// Answered 408 if part of a request had come, then closed.
    HeaderTimeout,
    /// Closed silently.
    IdleTimeout,
    /// Closed silently, to admit a newcomer at `--max-connections` or at EMFILE.
    Overload,
}

impl Evicted {
    /// How it is said (in a trace).
    pub fn name(self) -> &'static str {
        match self {
            Evicted::HeaderTimeout => "header timeout",
            Evicted::IdleTimeout => "idle timeout",
            Evicted::Overload => "overload",
        }
    }
}

/// What a connection's state says of its time (`Conn::clock`): the clock it waits on,
/// and the answers it has given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub on: Option<Timeout>,
    pub served: u64,
}

const NIL: usize = usize::MAX;

/// A token's place on a list.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The list it is on, if any.
    on: Option<Timeout>,
    /// The answers its connection had given when it went on the list: a new answer
    /// restarts either clock (a new request began); new bytes of the same request do not.
    served: u64,
    since: Instant,
    prev: usize,
    next: usize,
}

/// One list: the tokens on a clock, oldest first.
#[derive(Clone, Copy, Debug)]
struct List {
    limit: Option<Duration>,
    head: usize,
    tail: usize,
}

/// The deadlines of one loop's connections, by token (a descriptor or a slot number:
/// small integers, so a vector indexes them).
#[derive(Debug)]
pub struct Timers {
    nodes: Vec<Node>,
    /// Indexed by [`Timeout`]: header, idle.
    lists: [List; 2],
}

impl Timers {
    pub fn new(config: &Config) -> Timers {
        let list = |limit| List {
            limit,
            head: NIL,
            tail: NIL,
        };
        Timers {
            nodes: Vec::new(),
            lists: [list(config.header_timeout), list(config.idle_timeout)],
        }
    }

    // ANCHOR: watch
    /// Put `token` on the clock its connection's state calls for, as of `now`: started
    /// if it was on none or the other, restarted if the connection answered a request
    /// since, left alone otherwise. O(1).
    pub fn watch(&mut self, token: usize, clock: Clock, now: Instant) {
        self.set(token, clock.on, clock.served, now);
    }

    /// [`Timers::watch`] with the clock's parts given.
    pub fn set(&mut self, token: usize, want: Option<Timeout>, served: u64, now: Instant) {
        if token >= self.nodes.len() {
            let blank = Node {
                on: None,
                served: 0,
                since: now,
                prev: NIL,
                next: NIL,
            };
            self.nodes.resize(token + 1, blank);
        }
        let node = self.nodes[token];
        if node.on == want && node.served == served {
            return;
        }
        self.unlink(token);
        if let Some(clock) = want {
            self.push_back(token, clock, served, now);
        }
    }
    // ANCHOR_END: watch

    /// Take `token` off its clock (its connection is closing).
    pub fn forget(&mut self, token: usize) {
        if token < self.nodes.len() {
            self.unlink(token);
        }
    }

    // ANCHOR: nearest
    /// The nearest deadline: the earlier of the two lists' fronts.
    pub fn nearest(&self) -> Option<Instant> {
        self.lists
            .iter()
            .filter_map(|list| Some(self.nodes.get(list.head)?.since + list.limit?))
            .min()
    }

    /// How long a wait may sleep from `now`: until the nearest deadline, rounded up to a
    /// whole millisecond (a wait that counts in milliseconds would otherwise wake just
    /// before it and spin); None when no clock runs (sleep until something happens).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let left = self.nearest()?.saturating_duration_since(now);
        Some(Duration::from_millis(left.as_micros().div_ceil(1000) as u64))
    }

    /// [`Timers::timeout`] as poll(2) and epoll_wait(2) take it: -1 (none) waits for an
    /// event however long.
    pub fn poll_timeout(&self, now: Instant) -> PollTimeout {
        self.timeout(now).map_or(PollTimeout::NONE, |left| {
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
        })
    }

    /// A connection whose time ran out at `now`, taken off its clock, and why; None when
    /// no deadline has passed. Call until None.
    pub fn expired(&mut self, now: Instant) -> Option<(usize, Evicted)> {
        for (clock, why) in [
            (Timeout::Header, Evicted::HeaderTimeout),
            (Timeout::Idle, Evicted::IdleTimeout),
        ] {
            let list = self.lists[clock as usize];
            let (Some(limit), Some(front)) = (list.limit, self.nodes.get(list.head)) else {
                continue;
            };
            if front.since + limit <= now {
                let token = list.head;
                self.unlink(token);
                return Some((token, why));
            }
        }
        None
    }

    /// The keep-alive connection idle the longest, taken off its clock: the one to close
    /// so that a newcomer may come in. Never one with a request in progress.
    pub fn longest_idle(&mut self) -> Option<usize> {
        let token = self.lists[Timeout::Idle as usize].head;
        (token != NIL).then(|| {
            self.unlink(token);
            token
        })
    }
    // ANCHOR_END: nearest

    fn push_back(&mut self, token: usize, clock: Timeout, served: u64, now: Instant) {
        let list = &mut self.lists[clock as usize];
        let prev = list.tail;
        self.nodes[token] = Node {
            on: Some(clock),
            served,
            since: now,
            prev,
            next: NIL,
        };
        list.tail = token;
        if prev == NIL {
            list.head = token;
        } else {
            self.nodes[prev].next = token;
        }
    }

    fn unlink(&mut self, token: usize) {
        let Node { on, prev, next, .. } = self.nodes[token];
        let Some(clock) = on else { return };
        let list = &mut self.lists[clock as usize];
        if prev == NIL {
            list.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
        let node = &mut self.nodes[token];
        (node.on, node.prev, node.next) = (None, NIL, NIL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers(header: u64, idle: u64) -> Timers {
        let config = Config {
            header_timeout: Some(Duration::from_secs(header)),
            idle_timeout: Some(Duration::from_secs(idle)),
            ..Config::default()
        };
        Timers::new(&config)
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn the_nearest_deadline_is_the_earlier_front() {
        let (mut t, t0) = (timers(10, 60), Instant::now());
        assert_eq!(t.timeout(t0), None, "no clock runs: sleep until an event");
        t.set(3, Some(Timeout::Idle), 1, t0);
        assert_eq!(t.nearest(), Some(at(t0, 60)));
        t.set(7, Some(Timeout::Header), 0, at(t0, 5));
        assert_eq!(t.nearest(), Some(at(t0, 15)));
        assert_eq!(t.timeout(at(t0, 5)), Some(Duration::from_secs(10)));
    }

    #[test]
    fn new_bytes_do_not_restart_the_header_clock_but_an_answer_does() {
        let (mut t, t0) = (timers(10, 60), Instant::now());
        t.set(1, Some(Timeout::Header), 4, t0);
        // More of the same request (same answers given): the clock runs on.
        t.set(1, Some(Timeout::Header), 4, at(t0, 8));
        assert_eq!(t.expired(at(t0, 9)), None);
        assert_eq!(t.expired(at(t0, 10)), Some((1, Evicted::HeaderTimeout)));
        // An answer, then the next request: a new clock.
        t.set(1, Some(Timeout::Header), 5, at(t0, 11));
        assert_eq!(t.expired(at(t0, 20)), None);
        assert_eq!(t.nearest(), Some(at(t0, 21)));
    }

    #[test]
    fn expiry_takes_each_list_in_order_and_only_what_is_due() {
        let (mut t, t0) = (timers(10, 60), Instant::now());
        for token in 0..5 {
            t.set(token, Some(Timeout::Idle), 1, at(t0, token as u64));
        }
        // Token 2 asks again: it goes to the back.
        t.set(2, Some(Timeout::Idle), 2, at(t0, 30));
        let due: Vec<_> = std::iter::from_fn(|| t.expired(at(t0, 64))).collect();
        let tokens: Vec<_> = due.iter().map(|&(token, _)| token).collect();
        assert_eq!(tokens, [0, 1, 3, 4]);
        assert!(due.iter().all(|&(_, why)| why == Evicted::IdleTimeout));
        assert_eq!(t.nearest(), Some(at(t0, 90)));
    }

    #[test]
    fn the_longest_idle_goes_first_and_never_one_mid_request() {
        let (mut t, t0) = (timers(10, 60), Instant::now());
        t.set(1, Some(Timeout::Header), 0, t0);
        t.set(2, Some(Timeout::Idle), 1, at(t0, 1));
        t.set(3, Some(Timeout::Idle), 1, at(t0, 2));
        t.set(2, None, 1, at(t0, 3)); // answering: on no clock
        assert_eq!(t.longest_idle(), Some(3));
        assert_eq!(
            t.longest_idle(),
            None,
            "1 is mid-request, 2 is being answered"
        );
        t.forget(1);
        assert_eq!(t.nearest(), None);
    }

    #[test]
    fn off_means_never_but_the_idle_order_is_kept() {
        let config = Config {
            header_timeout: None,
            idle_timeout: None,
            ..Config::default()
        };
        let (mut t, t0) = (Timers::new(&config), Instant::now());
        t.set(5, Some(Timeout::Header), 0, t0);
        t.set(6, Some(Timeout::Idle), 1, t0);
        assert_eq!(t.timeout(t0), None);
        assert_eq!(t.expired(at(t0, 100_000)), None);
        assert_eq!(t.longest_idle(), Some(6));
    }

    #[test]
    fn a_timeout_rounds_up_to_a_whole_millisecond() {
        let (mut t, t0) = (timers(10, 60), Instant::now());
        t.set(0, Some(Timeout::Header), 0, t0);
        let now = at(t0, 10) - Duration::from_micros(300);
        assert_eq!(t.timeout(now), Some(Duration::from_millis(1)));
        assert_eq!(t.timeout(at(t0, 11)), Some(Duration::ZERO));
    }
}
