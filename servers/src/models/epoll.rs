// ANCHOR: header
//! `epoll-lt` and `epoll-et`: one thread, one epoll instance that keeps the interest list
//! in the kernel and hands back only the descriptors that are ready.
//!
//! - What blocks: epoll_wait(2), until some descriptor is ready or the timeout passes.
//! - Cost per wake-up: O(ready). Descriptors are registered once (epoll_ctl); the kernel
//!   puts a socket on the ready list when data arrives, so idle ones cost nothing.
//! - Limit: none of its own.
//! - Against poll: no array handed over, no scan. Level- against edge-triggered, the
//!   one difference in this file: LT reports a socket for as long as it is ready, so it
//!   reads once per event and arms EPOLLOUT only while output is pending; ET reports a
//!   change once, so it must repeat reads and writes until EAGAIN, and keeps EPOLLOUT armed.
// ANCHOR_END: header

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::conn::{Accepted, Acceptor, Conn, Interest, Io, WAIT_TIMEOUT};
use crate::stats::Stats;
use crate::Server;

// ANCHOR: state
/// How many ready descriptors one epoll_wait may return.
const MAX_EVENTS: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Level,
    Edge,
}
// ANCHOR_END: state

pub fn serve_lt(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    EventLoop::new(listener, Trigger::Level)?.run(server)
}

pub fn serve_et(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    EventLoop::new(listener, Trigger::Edge)?.run(server)
}

/// The descriptors one loop owns besides its connections. Made before the loop runs, so
/// that `epoll-mt` can make every loop's before any loop starts filling the process's
/// descriptor table with connections.
pub struct EventLoop {
    listener: TcpListener,
    acceptor: Acceptor,
    epoll: Epoll,
    trigger: Trigger,
}

impl EventLoop {
    pub fn new(listener: TcpListener, trigger: Trigger) -> io::Result<EventLoop> {
        // ANCHOR: setup
        listener.set_nonblocking(true)?;
        let acceptor = Acceptor::new(true)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let token = listener.as_raw_fd() as u64;
        epoll.add(&listener, EpollEvent::new(flags(trigger, READ), token))?;
        // ANCHOR_END: setup
        Ok(EventLoop {
            listener,
            acceptor,
            epoll,
            trigger,
        })
    }

    pub fn run(self, server: &Arc<Server>) -> io::Result<()> {
        let EventLoop {
            listener,
            mut acceptor,
            epoll,
            trigger,
        } = self;
        let mut conns: HashMap<RawFd, Conn> = HashMap::new();
        let mut events = vec![EpollEvent::empty(); MAX_EVENTS];
        let timeout = EpollTimeout::try_from(WAIT_TIMEOUT).expect("timeout fits");
        while !server.stopping() {
            // ANCHOR: wait
            // The kernel keeps the interest list between calls and fills a ready list as
            // packets arrive: only the ready descriptors come back, nothing to scan.
            let ready = match epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            server.stats.waited(ready, ready);
            // ANCHOR_END: wait

            // ANCHOR: dispatch
            for event in &events[..ready] {
                let token = event.data() as RawFd;
                if token == listener.as_raw_fd() {
                    accept(
                        &listener,
                        &mut acceptor,
                        &mut conns,
                        &epoll,
                        trigger,
                        server,
                    );
                    continue;
                }
                let Some(conn) = conns.get_mut(&token) else {
                    continue;
                };
                // EPOLLHUP and EPOLLERR wake both sides; the read or write finds out what.
                let broken = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
                let readable = event.events().intersects(EpollFlags::EPOLLIN | broken);
                let writable = event.events().intersects(EpollFlags::EPOLLOUT | broken);
                match trigger {
                    // ANCHOR: readable
                    Trigger::Level => {
                        if readable && conn.wants_read() {
                            conn.read(&server.stats);
                            // Answer at once: the socket buffer is almost always free, so
                            // the response need not wait a turn to hear that it is writable.
                            if conn.wants_write() {
                                conn.write(&server.stats);
                            }
                        }
                        if writable && conn.wants_write() {
                            conn.write(&server.stats);
                        }
                    }
                    Trigger::Edge => drain(conn, readable, &server.stats),
                    // ANCHOR_END: readable
                }
                // ANCHOR: close
                if conn.is_done() {
                    // Closing the socket takes it out of the interest list: no EPOLL_CTL_DEL.
                    let conn = conns.remove(&token).expect("conn is present");
                    conn.close(&server.stats);
                } else if trigger == Trigger::Level {
                    rearm(&epoll, conn)?;
                }
                // ANCHOR_END: close
            }
            // ANCHOR_END: dispatch
        }
        Ok(())
    }
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue (ET: until EAGAIN, or the next
/// connection brings no new event) and register it.
fn accept(
    listener: &TcpListener,
    acceptor: &mut Acceptor,
    conns: &mut HashMap<RawFd, Conn>,
    epoll: &Epoll,
    trigger: Trigger,
    server: &Server,
) {
    loop {
        match acceptor.accept(listener, server.config.proto, &server.stats) {
            Accepted::Conn(mut conn) => {
                // ET registers reading and writing once, for good; LT starts with reading.
                let interest = match trigger {
                    Trigger::Level => READ,
                    Trigger::Edge => READ_WRITE,
                };
                let event = EpollEvent::new(flags(trigger, interest), conn.fd() as u64);
                if let Err(e) = epoll.add(&conn.stream, event) {
                    eprintln!("iomodels: epoll_ctl(ADD) failed: {e}; closing the connection");
                    conn.refuse(&server.stats);
                    continue;
                }
                conn.registered = interest;
                conns.insert(conn.fd(), conn);
            }
            Accepted::Refused => continue,
            Accepted::WouldBlock => break,
        }
    }
}
// ANCHOR_END: accept

// ANCHOR: drain
/// Edge-triggered: an event reports a change once. Repeat each operation until it would
/// block, or no further event is guaranteed for this socket.
fn drain(conn: &mut Conn, readable: bool, stats: &Stats) {
    let mut can_read = readable;
    let mut can_write = true;
    loop {
        let mut moved = false;
        if can_read && conn.wants_read() {
            can_read = conn.read(stats) == Io::Progress;
            moved |= can_read;
        }
        if can_write && conn.wants_write() {
            let was_full = !conn.wants_read();
            can_write = conn.write(stats) == Io::Progress;
            moved |= can_write;
            // Input held back while the output was full may have more behind it in the
            // socket, and no new edge will say so: read again now there is room.
            if was_full && conn.wants_read() {
                can_read = true;
            }
        }
        if !moved {
            break;
        }
    }
}
// ANCHOR_END: drain

// ANCHOR: rearm
/// Level-triggered: watch for writability only while output is pending, or every turn
/// would report the (almost always) writable socket again.
fn rearm(epoll: &Epoll, conn: &mut Conn) -> io::Result<()> {
    let interest = conn.interest();
    if interest != conn.registered {
        let mut event = EpollEvent::new(flags(Trigger::Level, interest), conn.fd() as u64);
        epoll.modify(&conn.stream, &mut event)?;
        conn.registered = interest;
    }
    Ok(())
}
// ANCHOR_END: rearm

const READ: Interest = Interest {
    read: true,
    write: false,
};
const READ_WRITE: Interest = Interest {
    read: true,
    write: true,
};

/// What to ask epoll to watch for.
fn flags(trigger: Trigger, interest: Interest) -> EpollFlags {
    let mut flags = EpollFlags::empty();
    if interest.read {
        flags |= EpollFlags::EPOLLIN;
    }
    if interest.write {
        flags |= EpollFlags::EPOLLOUT;
    }
    if trigger == Trigger::Edge {
        flags |= EpollFlags::EPOLLET;
    }
    flags
}
