// ANCHOR: header
//! `select`: one thread, one select(2) over bit sets of descriptors, rebuilt each turn.
//!
//! - What blocks: select(2), until some descriptor is ready or the timeout passes.
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

use nix::errno::Errno;
use nix::sys::select::{select, FdSet, FD_SETSIZE};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::conn::{Acceptor, Conn, WAIT_TIMEOUT};
use crate::server::Server;
use crate::stats::Stats;

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
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut events: Vec<Event> = Vec::new();
    if listener.as_raw_fd() >= FD_SETSIZE as RawFd {
        return Err(io::Error::other(format!(
            "listener fd {} >= FD_SETSIZE ({FD_SETSIZE}): select cannot watch it",
            listener.as_raw_fd()
        )));
    }
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // select overwrites the fd_sets with its answer: rebuild them every turn.
        let mut readfds = FdSet::new();
        let mut writefds = FdSet::new();
        readfds.insert(listener.as_fd());
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
        // Linux writes the time left into the timeout: set it anew each call too.
        let mut timeout = TimeVal::milliseconds(WAIT_TIMEOUT.as_millis() as i64);
        let ready = match select(nfds, &mut readfds, &mut writefds, None, &mut timeout) {
            Ok(n) => n as usize,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        server.stats.waited(nfds as usize, ready);
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
            if event.token == listener.as_raw_fd() {
                accept(&listener, &mut acceptor, &mut conns, server);
                continue;
            }
            let Some(conn) = conns.get_mut(&event.token) else {
                continue;
            };
            if event.readable {
                readable(conn, server);
            }
            if event.writable {
                writable(conn, server);
            }
            if conn.is_done() {
                close(&mut conns, event.token, &server.stats);
            }
        }
        // ANCHOR_END: dispatch
    }
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue; turn away what select cannot watch.
fn accept(
    listener: &TcpListener,
    acceptor: &mut Acceptor,
    conns: &mut HashMap<RawFd, Conn>,
    server: &Server,
) {
    for conn in acceptor.incoming(listener, server) {
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
            conn.refuse(&server.stats);
            continue;
        }
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
/// Nothing more will happen on this connection: drop it, which closes its descriptor.
fn close(conns: &mut HashMap<RawFd, Conn>, token: RawFd, stats: &Stats) {
    let conn = conns.remove(&token).expect("conn is present");
    conn.close(stats);
}
// ANCHOR_END: close
