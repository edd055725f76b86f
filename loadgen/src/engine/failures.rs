//! A thread's failures: broken connections, failed connects, timeouts, reconnects; and
//! its progress, published for the display.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::{Role, Worker, HOUSEKEEPING};
use crate::tally::ErrorClass;

impl Worker<'_> {
    /// The connection broke: its in-flight requests fail with `class`, and an active
    /// connection is replaced.
    pub(super) fn fail(&mut self, slot: usize, class: ErrorClass) {
        let now = Instant::now();
        let conn = self.conns[slot].as_mut().expect("conn is present");
        let role = self.slots[slot].role;
        let measured = conn.in_flight.iter().filter(|r| r.measured).count() as u64;
        if role == Role::Idle {
            if conn.checked {
                // Held, verified, then let go: whenever it happens (at the ramp too, when
                // a server at its cap closes it for a newcomer), it was not held.
                self.tally.idle_closed_by_server += 1;
            } else {
                conn.checked = true; // the check failed: it is not verified
                self.tally.error(class);
            }
            self.close(slot);
            return;
        }
        // A close after `Connection: close` with nothing pending is no failure.
        let expected = conn.closing && conn.in_flight.is_empty();
        if !expected {
            self.tally
                .failed(self.window.as_ref(), class, measured, now);
        }
        if self.window.is_some() {
            self.reconnect(slot, now);
        } else {
            self.close(slot);
        }
    }

    pub(super) fn connect_failed(&mut self, slot: usize, class: ErrorClass, now: Instant) {
        self.tally.connect_failed(self.window.as_ref(), class, now);
        self.shared.connect_failed.fetch_add(1, Relaxed);
        if self.window.is_some() {
            // Try again later rather than storm a server that refuses.
            self.close(slot);
            self.retry.push((now + HOUSEKEEPING, slot));
        } else {
            self.close(slot);
        }
    }

    pub(super) fn reconnect(&mut self, slot: usize, now: Instant) {
        self.close(slot);
        self.tally.reconnects += 1;
        let (role, index) = (self.slots[slot].role, self.plan.first_conn + slot);
        if self.open(role, index, Some(slot)).is_err() {
            self.retry.push((now + HOUSEKEEPING, slot));
        }
    }

    pub(super) fn retry_due(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .retry
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|&(_, slot)| slot)
            .collect();
        self.retry.retain(|(at, _)| *at > now);
        for slot in due {
            self.reconnect(slot, now);
        }
    }

    /// Drop the connection (closing the socket takes it out of the epoll set); the slot
    /// stays for a reconnect.
    pub(super) fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            if conn.connecting.is_none() {
                self.open_now -= 1;
            }
        }
    }

    pub(super) fn check_timeouts(&mut self, now: Instant) {
        let timeout = self.config.timeout;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            if let Some(since) = conn.connecting {
                if now - since > timeout {
                    self.connect_failed(slot, ErrorClass::ConnectTimeout, now);
                }
            } else if conn
                .in_flight
                .front()
                .is_some_and(|r| now - r.sent > timeout)
            {
                self.fail(slot, ErrorClass::Timeout);
            }
        }
    }

    pub(super) fn schedule_index(&self, slot: usize) -> usize {
        // Active connections follow the idle ones, in slot order.
        slot - self.plan.idle
    }

    /// Share progress with the display thread.
    pub(super) fn publish(&mut self) {
        let completed = self.tally.completed;
        let errors: u64 = self.tally.errors.iter().sum();
        self.shared
            .completed
            .fetch_add(completed - self.published.0, Relaxed);
        self.shared
            .errors
            .fetch_add(errors - self.published.1, Relaxed);
        self.published = (completed, errors);
    }
}
