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

use crate::conn::{Accepted, Acceptor, Conn, Io};
use crate::Server;

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    listener.set_nonblocking(true)?;
    let mut acceptor = Acceptor::new(true)?;
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut done: Vec<RawFd> = Vec::new();
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // There is no wait: every turn asks the listener and every socket, ready or not.
        accept(&listener, &mut acceptor, &mut conns, server);
        let mut found = 0;
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        for (&token, conn) in conns.iter_mut() {
            // ANCHOR: readable
            if conn.wants_read() && conn.read(&server.stats) != Io::WouldBlock {
                found += 1;
            }
            // ANCHOR_END: readable
            // ANCHOR: writable
            if conn.wants_write() {
                conn.write(&server.stats);
            }
            // ANCHOR_END: writable
            if conn.is_done() {
                done.push(token);
            }
        }
        server.stats.waited(conns.len() + 1, found);
        // ANCHOR: close
        for token in done.drain(..) {
            let conn = conns.remove(&token).expect("conn is present");
            conn.close(&server.stats);
        }
        // ANCHOR_END: close
        // ANCHOR_END: dispatch
    }
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue.
fn accept(
    listener: &TcpListener,
    acceptor: &mut Acceptor,
    conns: &mut HashMap<RawFd, Conn>,
    server: &Server,
) {
    loop {
        match acceptor.accept(listener, server.config.proto, &server.stats) {
            Accepted::Conn(conn) => {
                conns.insert(conn.fd(), conn);
            }
            Accepted::Refused => continue,
            Accepted::WouldBlock => break,
        }
    }
}
// ANCHOR_END: accept
