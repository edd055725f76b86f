// ANCHOR: header
//! `poll`: one thread, one poll(2) over an array of every descriptor, rebuilt each turn.
//!
//! - What blocks: poll(2), until some descriptor is ready or the nearest deadline.
//! - Cost per wake-up: O(n). The whole array is copied into the kernel, which checks
//!   every descriptor; then we scan the whole array for the few that are ready.
//! - Limit: none of its own; n idle connections make every wake-up n times dearer.
//! - Against select: an array of (fd, events, revents) instead of three bit sets, so no
//!   FD_SETSIZE; the same O(n) scans. Against epoll: the kernel forgets the set after
//!   each call, so it is handed over again every time.
// ANCHOR_END: header

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

use crate::accept::{close_longest_idle, Acceptor};
use crate::conn::{close_expired, Conn, Interest};
use crate::server::Server;
use crate::stats::Stats;
use crate::timers::Timers;

// ANCHOR: state
/// One ready descriptor, as found by the scan.
struct Event {
    token: RawFd,
    readable: bool,
    writable: bool,
}
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    listener.set_nonblocking(true)?;
    let mut acceptor = Acceptor::new(true)?;
    // A stop request makes the waker readable: the wait needs no timeout to notice it.
    let waker = server.waker()?;
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut timers = Timers::new(&server.config);
    let mut events: Vec<Event> = Vec::new();
    let mut now = Instant::now();
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // The kernel keeps nothing between calls: hand it every descriptor, every turn,
        // and the waker that a stop request makes readable.
        let mut pollfds = Vec::with_capacity(conns.len() + 2);
        pollfds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        pollfds.push(PollFd::new(waker.as_fd(), PollFlags::POLLIN));
        for conn in conns.values() {
            pollfds.push(PollFd::new(conn.stream.as_fd(), flags(conn.interest())));
        }
        // Sleep until something is ready or the nearest deadline: nothing else wakes us.
        server.stats.wait_begins("poll");
        let ready = match poll(&mut pollfds, timers.poll_timeout(now)) {
            Ok(n) => n as usize,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        server.stats.waited(pollfds.len(), ready);
        // One clock reading per turn, for every deadline the turn checks or starts.
        now = Instant::now();
        // ANCHOR_END: wait

        // ANCHOR: scan
        // poll says how many are ready, not which: look at every entry.
        events.clear();
        for pollfd in &pollfds {
            let revents = pollfd.revents().unwrap_or(PollFlags::empty());
            if !revents.is_empty() {
                // POLLHUP and POLLERR wake both sides; the read or write finds out what.
                let broken = PollFlags::POLLHUP | PollFlags::POLLERR;
                events.push(Event {
                    token: pollfd.as_fd().as_raw_fd(),
                    readable: revents.intersects(PollFlags::POLLIN | broken),
                    writable: revents.intersects(PollFlags::POLLOUT | broken),
                });
            }
        }
        drop(pollfds);
        // ANCHOR_END: scan

        // ANCHOR: dispatch
        for event in &events {
            let token = event.token;
            if token == listener.as_raw_fd() {
                let (conns, timers) = (&mut conns, &mut timers);
                accept(&listener, &mut acceptor, conns, timers, server);
                continue;
            }
            let Some(conn) = conns.get_mut(&token) else {
                continue; // the waker: the loop's condition sees the stop
            };
            if event.readable {
                readable(conn, server);
            }
            if event.writable {
                writable(conn, server);
            }
            if conn.is_done() {
                close(&mut conns, &mut timers, token, &server.stats);
            } else {
                timers.watch(token as usize, conn.clock(), now);
            }
        }
        // Then the deadlines: close every connection whose time ran out.
        close_expired(&mut conns, &mut timers, now, &server.stats);
        // ANCHOR_END: dispatch
    }
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue. Past the cap, the longest-idle
/// keep-alive connection makes room (as nginx reuses one); with none idle, a 503.
fn accept(
    listener: &TcpListener,
    acceptor: &mut Acceptor,
    conns: &mut HashMap<RawFd, Conn>,
    timers: &mut Timers,
    server: &Server,
) {
    let (now, stats) = (Instant::now(), &server.stats);
    for newcomer in acceptor.incoming(listener, server) {
        let make_room = || close_longest_idle(conns, timers, stats);
        let Some(conn) = newcomer.admit(make_room, stats) else {
            continue;
        };
        timers.watch(conn.fd() as usize, conn.clock(), now);
        conns.insert(conn.fd(), conn);
    }
}
// ANCHOR_END: accept

// ANCHOR: readable
/// Read once, and answer at once: the socket buffer is almost always free, so the
/// response need not wait a turn to hear that it is writable.
fn readable(conn: &mut Conn, server: &Server) {
    if conn.wants_read() {
        conn.read(&server.stats);
        if conn.wants_write() {
            conn.write(&server.stats);
        }
    }
}
// ANCHOR_END: readable

// ANCHOR: writable
/// Room in the socket buffer again: send what is still pending.
fn writable(conn: &mut Conn, server: &Server) {
    if conn.wants_write() {
        conn.write(&server.stats);
    }
}
// ANCHOR_END: writable

// ANCHOR: close
/// Nothing more will happen on this connection: off its clock, and drop it, which
/// closes its descriptor.
fn close(conns: &mut HashMap<RawFd, Conn>, timers: &mut Timers, token: RawFd, stats: &Stats) {
    timers.forget(token as usize);
    let conn = conns.remove(&token).expect("conn is present");
    conn.close(stats);
}
// ANCHOR_END: close

// ANCHOR: flags
/// What to ask poll to watch for.
fn flags(interest: Interest) -> PollFlags {
    let mut flags = PollFlags::empty();
    if interest.read {
        flags |= PollFlags::POLLIN;
    }
    if interest.write {
        flags |= PollFlags::POLLOUT;
    }
    flags
}
// ANCHOR_END: flags
