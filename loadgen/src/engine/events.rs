//! A thread's events: connects completing, answers arriving and being counted.

use std::cmp::Reverse;
use std::io::{self, Read};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use nix::sys::epoll::{EpollEvent, EpollFlags};

use super::{classify, untoken, Req, Role, Worker, TIMER};
use crate::response::{Answer, Read as Parsed};
use crate::tally::{micros, Answered, ErrorClass};

impl Worker<'_> {
    pub(super) fn event(&mut self, event: &EpollEvent, now: Instant) {
        if event.data() == TIMER {
            let _ = self.timer.wait(); // read the expiration count: it is level-triggered
            return;
        }
        let (slot, generation) = untoken(event.data());
        let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        if self.slots[slot].generation != generation {
            return; // an event for the socket this slot held before a reconnect
        }
        let flags = event.events();
        if let Some(since) = conn.connecting {
            if !flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
            {
                return;
            }
            match conn.stream.take_error() {
                Ok(None) => self.connected(slot, since, now),
                Ok(Some(e)) | Err(e) => {
                    let class = if e.kind() == io::ErrorKind::ConnectionRefused {
                        ErrorClass::ConnectRefused
                    } else {
                        ErrorClass::ConnectTimeout
                    };
                    self.connect_failed(slot, class, now);
                }
            }
            return;
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(slot);
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
            self.readable(slot, now);
        }
    }

    pub(super) fn connected(&mut self, slot: usize, since: Instant, now: Instant) {
        let conn = self.conns[slot].as_mut().expect("conn is present");
        conn.connecting = None;
        let role = self.slots[slot].role;
        self.open_now += 1;
        let _ = self.tally.connect.record(micros(now - since));
        self.shared.established.fetch_add(1, Relaxed);
        if self.window.is_none() {
            match role {
                Role::Idle => self.tally.idle_established += 1,
                Role::Active => self.tally.active_established += 1,
            }
        }
        match role {
            // The check request: can the server really serve this connection?
            Role::Idle => self.send(slot, now, now),
            Role::Active if self.window.is_some() => self.resume(slot, now),
            Role::Active => self.flush(slot),
        }
    }

    /// An active connection (new or reconnected) joins the run.
    pub(super) fn resume(&mut self, slot: usize, now: Instant) {
        if self.config.rate.is_some() {
            let index = self.schedule_index(slot);
            self.due.push(Reverse((self.schedules[index].next(), slot)));
        } else {
            self.fill_pipeline(slot, now);
        }
    }

    pub(super) fn readable(&mut self, slot: usize, now: Instant) {
        let conn = self.conns[slot].as_mut().expect("conn is present");
        let got = (&conn.stream).read(&mut self.scratch);
        match got {
            Ok(0) => {
                let class = ErrorClass::ClosedByServer;
                self.fail(slot, class)
            }
            Ok(n) => {
                conn.input.extend_from_slice(&self.scratch[..n]);
                self.answers(slot, now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let class = classify(&e);
                self.fail(slot, class)
            }
        }
    }

    /// Take every complete answer out of the connection's input.
    pub(super) fn answers(&mut self, slot: usize, now: Instant) {
        let mut answered = 0;
        loop {
            let conn = self.conns[slot].as_mut().expect("conn is present");
            match conn.reader.next(&conn.input) {
                Parsed::Partial { consumed } => {
                    conn.input.drain(..consumed);
                    break;
                }
                Parsed::Done { consumed, answer } => {
                    conn.input.drain(..consumed);
                    let Some(req) = conn.in_flight.pop_front() else {
                        self.fail(slot, ErrorClass::BadResponse);
                        return;
                    };
                    // Without keep-alive we asked for the close ourselves, whatever the
                    // answer says (Tornado answers HTTP/1.0 with an HTTP/1.1 head, no
                    // `Connection: close`, and closes).
                    if answer.close || !self.config.keep_alive {
                        conn.closing = true;
                    }
                    self.answered(slot, req, answer, now);
                    answered += 1;
                }
                Parsed::Bad(_) => {
                    self.fail(slot, ErrorClass::BadResponse);
                    return;
                }
            }
        }
        if answered == 0 {
            return;
        }
        let conn = self.conns[slot].as_ref().expect("conn is present");
        let (role, closing, free) = (
            self.slots[slot].role,
            conn.closing,
            conn.in_flight.is_empty(),
        );
        if role == Role::Active && self.window.is_some() {
            if closing && free {
                // The server said it would close: open a new connection in its place.
                self.reconnect(slot, now);
            } else if self.config.rate.is_some() {
                if free {
                    self.resume(slot, now);
                }
            } else {
                self.fill_pipeline(slot, now);
            }
        }
    }

    pub(super) fn answered(&mut self, slot: usize, req: Req, answer: Answer, now: Instant) {
        if self.slots[slot].role == Role::Idle {
            let conn = self.conns[slot].as_mut().expect("conn is present");
            conn.checked = true;
            if (200..300).contains(&answer.status) {
                self.tally.idle_verified += 1;
            }
            return;
        }
        let Some(window) = self.window else {
            return;
        };
        let answered = Answered {
            status: answer.status,
            measured: req.measured,
            intended: req.intended,
            sent: req.sent,
        };
        self.tally.answered(&window, &answered, now, self.open_now);
    }
}
