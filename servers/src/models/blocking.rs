// ANCHOR: header
//! `blocking`: a thread per connection, each blocking in read(2) and write(2).
//!
//! - What blocks: each thread, in its own read or write; the main thread in accept(2).
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
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use socket2::SockRef;

use crate::conn::{Acceptor, Conn, WAIT_TIMEOUT};
use crate::server::Server;
use crate::stats::Stats;

// ANCHOR: state
// No shared state: each connection is owned by its own thread, on that thread's stack.
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    // accept(2) honours SO_RCVTIMEO: it gives up every WAIT_TIMEOUT so the loop can see
    // the stop flag.
    SockRef::from(&listener).set_read_timeout(Some(WAIT_TIMEOUT))?;
    let mut acceptor = Acceptor::new(false)?;
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // The only wait of the main thread: a blocking accept(2).
        server.stats.turned(1, 0);
        let Some(conn) = acceptor.incoming(&listener, server).next() else {
            continue;
        };
        // ANCHOR_END: wait
        // ANCHOR: dispatch
        spawn(conn, server);
        // ANCHOR_END: dispatch
    }
    // The connection threads are still blocked in read; they end with the process.
    Ok(())
}

// ANCHOR: spawn
/// Start a thread for `conn`. The connection is handed over only once the thread exists,
/// so a failed spawn can still refuse it (with a 503) rather than drop it unseen.
fn spawn(conn: Conn, server: &Arc<Server>) {
    let (handover, receive) = mpsc::sync_channel::<Conn>(1);
    let shared = Arc::clone(server);
    let spawned = thread::Builder::new()
        .name("conn".into())
        .stack_size(server.config.stack_size)
        .spawn(move || {
            if let Ok(conn) = receive.recv() {
                shared.stats.thread_started();
                serve_conn(conn, &shared.stats);
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
fn serve_conn(mut conn: Conn, stats: &Stats) {
    // An accepted socket inherits the listener's SO_RCVTIMEO: clear it, so this thread
    // sleeps in read until data comes instead of waking every WAIT_TIMEOUT.
    let _ = conn.stream.set_read_timeout(None);
    while !conn.is_done() {
        if conn.wants_write() {
            writable(&mut conn, stats);
        } else if conn.wants_read() {
            readable(&mut conn, stats);
        } else {
            break;
        }
    }
    close(conn, stats);
}
// ANCHOR_END: serve_conn

// ANCHOR: accept
// No accept step of its own: the blocking accept(2) is the main thread's wait (above).
// ANCHOR_END: accept

// ANCHOR: readable
/// Every read is a wait on this one descriptor: the thread sleeps here until data comes.
fn readable(conn: &mut Conn, stats: &Stats) {
    stats.turned(1, 1);
    conn.read(stats);
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
