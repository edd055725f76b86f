// ANCHOR: header
//! `blocking`: a thread per connection, each blocking in read(2) and write(2).
//!
//! - What blocks: each thread, in its own read or write; the main thread in poll(2), on
//!   the listener and the stop waker. Each read gives up at its connection's deadline
//!   (a per-socket SO_RCVTIMEO): the kernel keeps the time.
//! - Cost per wake-up: the kernel wakes exactly the thread whose socket is ready, but
//!   every connection costs a thread: a stack (`--stack-size`), a kernel task, and a
//!   context switch each time it runs.
//! - Limit: threads. Memory for the stacks, the scheduler's work, and RLIMIT_NPROC; a
//!   failed spawn refuses that one connection and the server carries on.
//! - Against busy-poll: the same read and write calls on the same connection code, but
//!   on blocking sockets, so a thread sleeps in the kernel until its socket is ready.
// ANCHOR_END: header

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, RawFd};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{shutdown, Shutdown};

use crate::accept::Acceptor;
use crate::conn::{Conn, Io};
use crate::server::Server;
use crate::stats::Stats;
use crate::timers::{Timeout, Timers};

// ANCHOR: state
/// The connections waiting for their next request, in the order they fell idle: the
/// main thread closes the first when a newcomer needs room. Everything else about a
/// connection is owned by its own thread, on that thread's stack.
type Idle = Mutex<Timers>;
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    // poll says when a connection waits; accept takes them until EAGAIN. Accepted
    // sockets are blocking all the same (accept4 without SOCK_NONBLOCK).
    listener.set_nonblocking(true)?;
    let mut acceptor = Acceptor::new(false)?;
    let waker = server.waker()?;
    let idle: Arc<Idle> = Arc::new(Mutex::new(Timers::new(&server.config)));
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // The main thread's only wait: for a connection, or for the waker that a stop
        // request makes readable. No timeout: the connections keep their own time.
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(waker.as_fd(), PollFlags::POLLIN),
        ];
        server.stats.wait_begins("poll");
        let ready = match poll(&mut fds, PollTimeout::NONE) {
            Ok(n) => n as usize,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        server.stats.waited(fds.len(), ready);
        // ANCHOR_END: wait
        // ANCHOR: dispatch
        accept(&listener, &mut acceptor, &idle, server);
        // ANCHOR_END: dispatch
    }
    // The connection threads are still blocked in read; they end with the process.
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection, each to a thread of its own. Past the cap, the
/// longest-idle keep-alive connection makes room (as nginx reuses one): its thread is
/// asleep in read, so we shut its socket down and the thread closes it; with none
/// idle, a 503.
fn accept(listener: &TcpListener, acceptor: &mut Acceptor, idle: &Arc<Idle>, server: &Arc<Server>) {
    let stats = &server.stats;
    for newcomer in acceptor.incoming(listener, server) {
        let make_room = || {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            let Some(fd) = idle.longest_idle() else {
                return false;
            };
            // The descriptor is still open: its thread takes it off this list (under
            // this lock) before it closes it. The read it sleeps in returns EOF.
            stats.other_calls(1);
            let _ = shutdown(fd as RawFd, Shutdown::Both);
            Stats::add(&stats.overload_evictions, 1);
            true
        };
        if let Some(conn) = newcomer.admit(make_room, stats) {
            spawn(conn, server, idle);
        }
    }
}

// ANCHOR_END: accept

// ANCHOR: spawn
/// Start a thread for `conn`. The connection is handed over only once the thread exists,
/// so a failed spawn can still refuse it (with a 503) rather than drop it unseen.
fn spawn(conn: Conn, server: &Arc<Server>, idle: &Arc<Idle>) {
    let (handover, receive) = mpsc::sync_channel::<Conn>(1);
    let (shared, idle) = (Arc::clone(server), Arc::clone(idle));
    let spawned = thread::Builder::new()
        .name("conn".into())
        .stack_size(server.config.stack_size)
        .spawn(move || {
            if let Ok(conn) = receive.recv() {
                shared.stats.thread_started();
                serve_conn(conn, &shared, &idle);
                shared.stats.thread_ended();
            }
        });
    match spawned {
        Ok(_) => {
            let _ = handover.send(conn);
        }
        Err(e) => {
            eprintln!(
                "iomodels: cannot start a thread for fd {}: {e}; refusing it",
                conn.fd()
            );
            conn.refuse(&server.stats);
        }
    }
}
// ANCHOR_END: spawn

// ANCHOR: serve_conn
/// One connection's whole life, on its own thread: write what is pending, else read.
/// Its clock is kept as every model keeps it ([`Timers`]), and the kernel enforces it: a
/// per-socket timeout (SO_RCVTIMEO) makes the read give up at the deadline.
fn serve_conn(mut conn: Conn, server: &Server, idle: &Idle) {
    let stats = &server.stats;
    let mut clock = Timers::new(&server.config);
    let mut armed = None;
    while !conn.is_done() {
        if conn.wants_write() {
            writable(&mut conn, stats);
        } else if conn.wants_read() {
            let now = Instant::now();
            clock.watch(0, conn.clock(), now);
            let left = clock.timeout(now);
            if left.is_some_and(|left| left.is_zero()) {
                expire(&mut conn, &mut clock, stats);
                continue;
            }
            if left != armed {
                stats.other_calls(1);
                let _ = conn.stream.set_read_timeout(left);
                armed = left;
            }
            if readable_while_idle(&mut conn, idle, now, stats) == Io::WouldBlock {
                expire(&mut conn, &mut clock, stats); // SO_RCVTIMEO ran out
            }
        } else {
            break;
        }
    }
    close(conn, stats);
}

/// The read's timeout ran out: the deadline has passed (408 if a header was cut short).
fn expire(conn: &mut Conn, clock: &mut Timers, stats: &Stats) {
    if let Some((_, why)) = clock.expired(Instant::now()) {
        conn.evict(why, stats);
    }
}
// ANCHOR_END: serve_conn

// ANCHOR: readable
/// Every read is a wait on this one descriptor: the thread sleeps here until data comes
/// (or the timeout). Between requests it is on the idle list, where a newcomer may
/// claim it.
fn readable_while_idle(conn: &mut Conn, idle: &Idle, now: Instant, stats: &Stats) -> Io {
    let fd = conn.fd() as usize;
    let between = conn.timeout() == Some(Timeout::Idle);
    if between {
        idle.lock()
            .unwrap_or_else(|e| e.into_inner())
            .watch(fd, conn.clock(), now);
    }
    stats.wait_begins("read");
    stats.turned(1, 1);
    let read = conn.read(stats);
    if between {
        idle.lock().unwrap_or_else(|e| e.into_inner()).forget(fd);
    }
    read
}
// ANCHOR_END: readable

// ANCHOR: writable
/// Blocks until the kernel has taken some of the output.
fn writable(conn: &mut Conn, stats: &Stats) {
    conn.write(stats);
}
// ANCHOR_END: writable

// ANCHOR: close
/// The connection is done: close it, and the thread ends.
fn close(conn: Conn, stats: &Stats) {
    conn.close(stats);
}
// ANCHOR_END: close
