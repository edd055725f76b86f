// ANCHOR: header
//! `select`: one thread, one select(2) over bit sets of descriptors, rebuilt each turn.
//!
//! - What blocks: select(2), until some descriptor is ready or the nearest deadline.
//! - Cost per wake-up: O(max fd). The sets are copied into the kernel, which checks every
//!   bit up to the highest descriptor; then we scan the bits for the few that are set.
//! - Limit: an fd_set has FD_SETSIZE (1024) bits. A descriptor >= 1024 cannot be
//!   watched at all (FD_SET on it writes past the set), so such a connection is refused.
//! - Against poll: bit sets instead of an array, and the limit; the same O(n) scans.
// ANCHOR_END: header

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Once};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::accept::{close_longest_idle, Acceptor};
use crate::conn::{close_expired, Conn};
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
    if listener.as_raw_fd() >= FD_SETSIZE as RawFd {
        return Err(io::Error::other(format!(
            "listener fd {} >= FD_SETSIZE ({FD_SETSIZE}): select cannot watch it",
            listener.as_raw_fd()
        )));
    }
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // select overwrites the fd_sets with its answer: rebuild them every turn, with the
        // waker that a stop request makes readable.
        let mut readfds = FdSet::new();
        let mut writefds = FdSet::new();
        readfds.insert(listener.as_fd());
        readfds.insert(waker.as_fd());
        for conn in conns.values() {
            if conn.wants_read() {
                readfds.insert(conn.stream.as_fd());
            }
            if conn.wants_write() {
                writefds.insert(conn.stream.as_fd());
            }
        }
        let nfds = readfds.highest().map_or(0, |fd| fd.as_raw_fd() + 1);
        let nfds = nfds.max(writefds.highest().map_or(0, |fd| fd.as_raw_fd() + 1));
        // Sleep until something is ready or the nearest deadline: nothing else wakes us.
        // (Linux writes the time left into the timeout: it is made anew each call.)
        let mut timeout = timers
            .timeout(now)
            .map(|left| TimeVal::microseconds(left.as_micros() as i64));
        server.stats.wait_begins("select");
        let ready = match select(nfds, &mut readfds, &mut writefds, None, timeout.as_mut()) {
            Ok(n) => n as usize,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        server.stats.waited(nfds as usize, ready);
        // One clock reading per turn, for every deadline the turn checks or starts.
        now = Instant::now();
        // ANCHOR_END: wait

        // ANCHOR: scan
        // select says how many are ready, not which: test every bit up to nfds.
        events.clear();
        for fd in readfds.fds(Some(nfds - 1)) {
            events.push(Event {
                token: fd.as_raw_fd(),
                readable: true,
                writable: false,
            });
        }
        for fd in writefds.fds(Some(nfds - 1)) {
            events.push(Event {
                token: fd.as_raw_fd(),
                readable: false,
                writable: true,
            });
        }
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
/// Take every waiting connection off the listen queue; turn away what select cannot watch.
/// Past the cap, the longest-idle keep-alive connection makes room (as nginx reuses
/// one); with none idle, a 503.
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
        if conn.fd() >= FD_SETSIZE as RawFd {
            // FD_SET on it would write past the end of the fd_set: turn it away.
            static WARN: Once = Once::new();
            WARN.call_once(|| {
                eprintln!(
                    "iomodels: fd {} >= FD_SETSIZE ({FD_SETSIZE}): select cannot watch it; \
                     refusing this and later connections past the limit (use poll or epoll)",
                    conn.fd()
                );
            });
            conn.refuse(stats);
            continue;
        }
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
