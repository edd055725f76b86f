// ANCHOR: header
//! `busy-poll`: non-blocking sockets and one thread that asks each of them, again and
//! again, whether anything has arrived. It never waits and never sleeps.
//!
//! - What blocks: nothing. Every read(2) returns at once, with data or with EAGAIN.
//! - Cost per turn: O(n) read calls, one per connection, ready or not; a whole CPU even
//!   with nothing to do. `empty_reads` counts the reads that found nothing: its waste.
//! - Limit: the CPU; every idle connection slows every turn.
//! - Against poll: the same scan over every connection, done in user space with one
//!   syscall per socket instead of in the kernel with one syscall per turn.
// ANCHOR_END: header

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use crate::accept::{close_longest_idle, Acceptor};
use crate::conn::{close_expired, Conn, Io};
use crate::server::Server;
use crate::stats::Stats;
use crate::timers::Timers;

// ANCHOR: state
// No state but the connections: there is no wait, so no events to keep between turns.
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    listener.set_nonblocking(true)?;
    let mut acceptor = Acceptor::new(true)?;
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut timers = Timers::new(&server.config);
    let mut done: Vec<RawFd> = Vec::new();
    // ANCHOR_END: setup

    // No waker either: the loop never sleeps, so it sees the stop flag within a turn.
    while !server.stopping() {
        // ANCHOR: wait
        // There is no wait: every turn asks the listener and every socket, ready or not,
        // and reads the clock for the deadlines.
        let now = Instant::now();
        accept(&listener, &mut acceptor, &mut conns, &mut timers, server);
        let mut found = 0;
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        for (&token, conn) in conns.iter_mut() {
            if readable(conn, server) {
                found += 1;
            }
            writable(conn, server);
            if conn.is_done() {
                done.push(token);
            } else {
                timers.watch(token as usize, conn.clock(), now);
            }
        }
        server.stats.turned(conns.len() + 1, found);
        for token in done.drain(..) {
            close(&mut conns, &mut timers, token, &server.stats);
        }
        // Then the deadlines: close every connection whose time ran out.
        close_expired(&mut conns, &mut timers, now, &server.stats);
        // ANCHOR_END: dispatch
    }
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue (usually none: the listener is
/// asked every turn). Past the cap, the longest-idle keep-alive connection makes room
/// (as nginx reuses one); with none idle, a 503.
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
/// Ask the socket whether anything came: one read, which usually finds nothing (EAGAIN,
/// counted in `empty_reads`). True when it found something.
fn readable(conn: &mut Conn, server: &Server) -> bool {
    conn.wants_read() && conn.read(&server.stats) != Io::WouldBlock
}
// ANCHOR_END: readable

// ANCHOR: writable
/// Send what is pending; a full socket buffer just means: again next turn.
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
