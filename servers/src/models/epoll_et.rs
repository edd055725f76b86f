// ANCHOR: header
//! `epoll-et`: one thread, one epoll instance that keeps the interest list in the kernel
//! and hands back only the descriptors that are ready; edge-triggered.
//!
//! - What blocks: epoll_wait(2), until some descriptor is ready or the nearest deadline.
//! - Cost per wake-up: O(ready). Descriptors are registered once (epoll_ctl); the kernel
//!   puts a socket on the ready list when data arrives, so idle ones cost nothing.
//! - Limit: none of its own.
//! - Against epoll-lt: EPOLLET. A socket is reported when it changes, not for as long as
//!   it is ready, so each event is the only news: read and write until drained. In
//!   return EPOLLOUT stays armed for good: no epoll_ctl per response.
// ANCHOR_END: header

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::accept::{close_longest_idle, Acceptor, Closing};
use crate::conn::{close_expired, Conn, Interest, Io};
use crate::server::{EtDrain, Server};
use crate::stats::Stats;
use crate::timers::Timers;

// ANCHOR: state
/// How many ready descriptors one epoll_wait may return.
const MAX_EVENTS: usize = 1024;

/// What the loop owns besides its connections, made apart from the loop: `epoll-mt`
/// makes every loop's (of epoll_et.rs) before any loop fills the process's descriptor
/// table with connections.
pub struct Loop {
    pub listener: TcpListener,
    pub acceptor: Acceptor,
    pub epoll: Epoll,
}
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    run(setup(listener, server)?, server)
}

// ANCHOR: setup
pub fn setup(listener: TcpListener, server: &Server) -> io::Result<Loop> {
    listener.set_nonblocking(true)?;
    let acceptor = Acceptor::new(true)?;
    // The interest list lives in the kernel from now on: register once, not every turn.
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    // A listener shared with other processes (prefork's workers, `--listen shared`) wakes
    // one of their waits per connection with EPOLLEXCLUSIVE, not every one of them.
    let wake = match server.config.accept_exclusive {
        true => EpollFlags::EPOLLIN | EpollFlags::EPOLLET | EpollFlags::EPOLLEXCLUSIVE,
        false => flags(Interest::READ),
    };
    epoll.add(
        &listener,
        EpollEvent::new(wake, listener.as_raw_fd() as u64),
    )?;
    // A stop request makes the waker readable: the wait needs no timeout to notice it.
    let waker = server.waker()?;
    let event = EpollEvent::new(flags(Interest::READ), waker.fd() as u64);
    epoll.add(&*waker, event)?;
    Ok(Loop {
        listener,
        acceptor,
        epoll,
    })
}

pub fn run(setup: Loop, server: &Arc<Server>) -> io::Result<()> {
    let Loop {
        listener,
        mut acceptor,
        epoll,
    } = setup;
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut timers = Timers::new(&server.config);
    let mut events = vec![EpollEvent::empty(); MAX_EVENTS];
    let mut now = Instant::now();
    let mut closing: Option<Closing> = None;
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // A graceful stop (SIGQUIT) begins: no new connection, the open ones answered.
        if closing.is_none() && server.closing() {
            closing = Some(Closing::begin(&listener, conns.values_mut())?);
        }
        let timeout = match &closing {
            Some(closing) => closing.poll_timeout(&timers, now),
            None => timers.poll_timeout(now),
        };
        // The kernel keeps the interest list between calls and fills a ready list as
        // packets arrive: only the ready descriptors come back, nothing to scan. Sleep
        // until one is ready or the nearest deadline: nothing else wakes us.
        server.stats.wait_begins("epoll_wait");
        let ready = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        server.stats.waited(ready, ready);
        // One clock reading per turn, for every deadline the turn checks or starts.
        now = Instant::now();
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        for event in &events[..ready] {
            let token = event.data() as RawFd;
            if token == listener.as_raw_fd() {
                let (conns, timers) = (&mut conns, &mut timers);
                accept(&listener, &mut acceptor, conns, timers, &epoll, server);
                continue;
            }
            let Some(conn) = conns.get_mut(&token) else {
                continue; // the waker: the loop's condition sees the stop
            };
            // EPOLLHUP and EPOLLERR wake both sides; the read or write finds out what.
            let broken = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
            // The peer shut down its side: read on to the EOF, which no new edge will tell of.
            conn.hangup |= event.events().contains(EpollFlags::EPOLLRDHUP);
            if event.events().intersects(EpollFlags::EPOLLIN | broken) {
                readable(conn, server);
            }
            if event.events().intersects(EpollFlags::EPOLLOUT | broken) {
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
        if closing
            .as_ref()
            .is_some_and(|c| c.over(&mut conns, now, &server.stats))
        {
            break;
        }
        // ANCHOR_END: dispatch
    }
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue. Past the cap, the longest-idle
/// keep-alive connection makes room (as nginx reuses one); with none idle, a 503.
/// Taken until EAGAIN, as the edge asks; each registered for reading and writing, once
/// and for good.
fn accept(
    listener: &TcpListener,
    acceptor: &mut Acceptor,
    conns: &mut HashMap<RawFd, Conn>,
    timers: &mut Timers,
    epoll: &Epoll,
    server: &Server,
) {
    let (now, stats) = (Instant::now(), &server.stats);
    for newcomer in acceptor.incoming(listener, server) {
        let make_room = || close_longest_idle(conns, timers, stats);
        let Some(mut conn) = newcomer.admit(make_room, stats) else {
            continue;
        };
        let event = EpollEvent::new(flags(Interest::READ_WRITE), conn.fd() as u64);
        server.stats.ctl_calls(1);
        if let Err(e) = epoll.add(&conn.stream, event) {
            eprintln!("iomodels: epoll_ctl(ADD) failed: {e}; closing the connection");
            conn.refuse(&server.stats);
            continue;
        }
        conn.registered = Interest::READ_WRITE;
        if server.closing() {
            conn.finish(); // queued before the stop: answered, once
        }
        timers.watch(conn.fd() as usize, conn.clock(), now);
        conns.insert(conn.fd(), conn);
    }
}
// ANCHOR_END: accept

// ANCHOR: readable
/// This event is the only news of what arrived: read until the socket is empty (a short
/// read, or EAGAIN with `--et-drain eagain`), answering as we go.
fn readable(conn: &mut Conn, server: &Server) {
    drain(conn, true, server);
}
// ANCHOR_END: readable

// ANCHOR: writable
/// Room in the socket buffer again: write until it would block or nothing is pending.
fn writable(conn: &mut Conn, server: &Server) {
    drain(conn, false, server);
}
// ANCHOR_END: writable

// ANCHOR: drain
/// Repeat each operation until the socket is drained: after an edge, no further event is
/// guaranteed for this socket until its state changes again.
fn drain(conn: &mut Conn, readable: bool, server: &Server) {
    let (stats, until) = (&server.stats, server.config.et_drain);
    let (mut can_read, mut can_write) = (readable, true);
    loop {
        let mut moved = false;
        if can_read && conn.wants_read() {
            // A short read empties a stream socket: "it is sufficient to detect that the
            // read data is less than the requested size" (epoll(7)); nginx stops there.
            let read = conn.read(stats);
            can_read = read == Io::Progress || (read == Io::Drained && until == EtDrain::Eagain);
            moved |= can_read;
        }
        if can_write && conn.wants_write() {
            let was_full = !conn.wants_read();
            can_write = conn.write(stats) == Io::Progress;
            moved |= can_write;
            // Input held back while the output was full may have more behind it in the
            // socket, and no new edge will say so: read again now there is room.
            can_read |= was_full && conn.wants_read();
        }
        if !moved {
            break;
        }
    }
}
// ANCHOR_END: drain

// ANCHOR: close
/// Nothing more will happen on this connection: off its clock, and drop it, which
/// closes its descriptor.
/// Closing the socket takes it out of the interest list: no EPOLL_CTL_DEL.
fn close(conns: &mut HashMap<RawFd, Conn>, timers: &mut Timers, token: RawFd, stats: &Stats) {
    timers.forget(token as usize);
    let conn = conns.remove(&token).expect("conn is present");
    conn.close(stats);
}
// ANCHOR_END: close

// ANCHOR: flags
/// What to ask epoll to watch for, edge-triggered.
fn flags(interest: Interest) -> EpollFlags {
    // EPOLLET: an event is reported when the socket's state changes, once. The contract
    // that comes with it: after an event, repeat the operation until it would block
    // (EAGAIN), or no further event is guaranteed for this socket (epoll(7)).
    let mut flags = EpollFlags::EPOLLET | EpollFlags::EPOLLRDHUP;
    if interest.read {
        flags |= EpollFlags::EPOLLIN;
    }
    if interest.write {
        flags |= EpollFlags::EPOLLOUT;
    }
    flags
}
// ANCHOR_END: flags
