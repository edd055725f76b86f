// ANCHOR: header
//! `sigio`: signal-driven I/O. The kernel queues a real-time signal for a descriptor
//! when it becomes ready; the loop takes the signals one by one with sigtimedwait(2),
//! and each one names its descriptor.
//!
//! - What blocks: sigtimedwait(2), until a signal is queued for this thread.
//! - Cost per wake-up: one signal per readiness change, no scan: O(ready), as epoll.
//!   But a signal is queued per event, not per descriptor: a busy socket can queue many.
//! - Limit: the queue of real-time signals (RLIMIT_SIGPENDING). When it overflows the
//!   kernel sends a plain SIGIO instead, with no descriptor: the loop must then look at
//!   every connection, as the C10K page tells (a poll-like scan), and go on.
//! - Against epoll-et: the same edge-triggered rule (repeat until EAGAIN), but the
//!   kernel pushes readiness as signals (O_ASYNC, F_SETSIG, F_SETOWN) instead of
//!   keeping a ready list for epoll_wait.
// ANCHOR_END: header

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::time::TimeSpec;
use nix::unistd::{gettid, Pid};

use crate::accept::{close_longest_idle, Acceptor};
use crate::conn::{close_expired, Conn, Io};
use crate::server::Server;
use crate::stats::Stats;
use crate::timers::Timers;

// ANCHOR: state
/// <asm-generic/fcntl.h>: the libc crate does not name these for glibc.
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// struct f_owner_ex: whom F_SETOWN_EX sends the signals to.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// The real-time signal readiness comes on (glibc keeps the first few for itself).
fn ready_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// The start of a siginfo_t for SIGPOLL (<bits/types/siginfo_t.h>): the libc crate
/// names no accessor for si_fd, the field this whole model rests on.
#[repr(C)]
struct PollInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    band: libc::c_long,
    fd: libc::c_int,
}
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    // Block the signals in this thread, so that they wait in its queue until
    // sigtimedwait takes them: readiness, and the overflow SIGIO.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGIO);
    let mut raw = *mask.as_ref();
    // SAFETY: sigaddset only writes into the sigset_t we own; the signal number is valid.
    unsafe { libc::sigaddset(&mut raw, ready_signal()) };
    // SAFETY: `raw` was built from a valid SigSet by sigaddset.
    let mask = unsafe { SigSet::from_sigset_t_unchecked(raw) };
    mask.thread_block()?;
    let me = gettid();
    let mut acceptor = Acceptor::new(true)?;
    let mut conns: HashMap<RawFd, Conn> = HashMap::new();
    let mut timers = Timers::new(&server.config);
    let mut now = Instant::now();
    // A stop request makes the waker's pipe readable, which raises our signal too.
    let waker = server.waker()?;
    signal_me(&*waker, me)?;
    signal_me(&listener, me)?;
    // Connections queued before the listener was armed sent no signal: take them now.
    accept(
        &listener,
        &mut acceptor,
        &mut conns,
        &mut timers,
        me,
        server,
    );
    let mut warned = false;
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // One signal per call: the descriptor that became ready, or an overflow; or
        // none by the nearest deadline. Nothing else wakes us.
        let timeout = timers.timeout(now).map(TimeSpec::from);
        server.stats.wait_begins("sigtimedwait");
        let info = wait_signal(&mask, timeout.as_ref())?;
        server.stats.waited(1, info.is_some() as usize);
        // One clock reading per turn, for every deadline the turn checks or starts.
        now = Instant::now();
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        let signo = info.as_ref().map_or(0, |info| info.signo);
        if let Some(info) = info.filter(|_| signo == ready_signal()) {
            let fd = info.fd;
            if fd == listener.as_raw_fd() {
                accept(
                    &listener,
                    &mut acceptor,
                    &mut conns,
                    &mut timers,
                    me,
                    server,
                );
            } else if let Some(conn) = conns.get_mut(&fd) {
                readable(conn, server);
                if conn.is_done() {
                    close(&mut conns, &mut timers, fd, &server.stats);
                } else {
                    timers.watch(fd as usize, conn.clock(), now);
                }
            }
            // (The waker's signal: the loop's condition sees the stop. A signal for a
            // descriptor closed since is stale: nothing to do.)
        } else if signo == Signal::SIGIO as libc::c_int {
            // ANCHOR: overflow
            // The real-time queue overflowed and events were lost: look at everything.
            if !warned {
                eprintln!(
                    "iomodels: the real-time signal queue overflowed (SIGIO): scanning \
                     every connection, then back to signals"
                );
                warned = true;
            }
            accept(
                &listener,
                &mut acceptor,
                &mut conns,
                &mut timers,
                me,
                server,
            );
            Stats::add(&server.stats.fds_scanned, conns.len() as u64);
            let mut done = Vec::new();
            for (&fd, conn) in conns.iter_mut() {
                readable(conn, server);
                if conn.is_done() {
                    done.push(fd);
                } else {
                    timers.watch(fd as usize, conn.clock(), now);
                }
            }
            for fd in done {
                close(&mut conns, &mut timers, fd, &server.stats);
            }
            // ANCHOR_END: overflow
        }
        // Then the deadlines: close every connection whose time ran out.
        close_expired(&mut conns, &mut timers, now, &server.stats);
        // ANCHOR_END: dispatch
    }
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection, arm it, and read what it may have sent before it was
/// armed (that arrival raised no signal). Past the cap, the longest-idle keep-alive
/// connection makes room (as nginx reuses one); with none idle, a 503.
fn accept(
    listener: &TcpListener,
    acceptor: &mut Acceptor,
    conns: &mut HashMap<RawFd, Conn>,
    timers: &mut Timers,
    me: Pid,
    server: &Server,
) {
    let (now, stats) = (Instant::now(), &server.stats);
    for newcomer in acceptor.incoming(listener, server) {
        let make_room = || close_longest_idle(conns, timers, stats);
        let Some(mut conn) = newcomer.admit(make_room, stats) else {
            continue;
        };
        // F_SETOWN_EX, F_SETSIG, F_GETFL, F_SETFL: four calls to arm one socket.
        server.stats.ctl_calls(4);
        if let Err(e) = signal_me(&conn.stream, me) {
            eprintln!("iomodels: cannot arm O_ASYNC: {e}; closing the connection");
            conn.refuse(&server.stats);
            continue;
        }
        readable(&mut conn, server);
        if conn.is_done() {
            conn.close(stats);
        } else {
            timers.watch(conn.fd() as usize, conn.clock(), now);
            conns.insert(conn.fd(), conn);
        }
    }
}
// ANCHOR_END: accept

// ANCHOR: arm
/// Ask the kernel to queue `ready_signal()` to thread `me` whenever `fd` becomes ready.
fn signal_me(socket: &impl AsFd, me: Pid) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    let owner = OwnerEx {
        kind: F_OWNER_TID,
        pid: me.as_raw(),
    };
    // SAFETY: fcntl with F_SETOWN_EX reads one f_owner_ex, which `owner` is, for the
    // duration of the call; F_SETSIG takes a signal number. Both only act on `fd`.
    let set = unsafe {
        libc::fcntl(fd, F_SETOWN_EX, &owner as *const OwnerEx) == 0
            && libc::fcntl(fd, F_SETSIG, ready_signal()) == 0
    };
    if !set {
        return Err(io::Error::last_os_error());
    }
    let flags = OFlag::from_bits_truncate(fcntl(socket, FcntlArg::F_GETFL)?);
    fcntl(
        socket,
        FcntlArg::F_SETFL(flags | OFlag::O_ASYNC | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}
// ANCHOR_END: arm

// ANCHOR: readable
/// A signal reports a change once (an edge): read and write until they would block,
/// as epoll-et drains.
fn readable(conn: &mut Conn, server: &Server) {
    let stats = &server.stats;
    loop {
        let mut moved = false;
        if conn.wants_read() {
            moved |= matches!(conn.read(stats), Io::Progress | Io::Drained);
        }
        if conn.wants_write() {
            moved |= conn.write(stats) == Io::Progress;
        }
        if !moved || conn.is_done() {
            break;
        }
    }
}
// ANCHOR_END: readable

// ANCHOR: writable
// No writable step of its own: readiness signals are not told apart, and `readable`
// drains both ways until each would block.
// ANCHOR_END: writable

// ANCHOR: close
/// Nothing more will happen on this connection: off its clock, and drop it, which
/// closes its descriptor (and with it the signals it would raise).
fn close(conns: &mut HashMap<RawFd, Conn>, timers: &mut Timers, fd: RawFd, stats: &Stats) {
    timers.forget(fd as usize);
    let conn = conns.remove(&fd).expect("conn is present");
    conn.close(stats);
}
// ANCHOR_END: close

/// Take one of the signals in `mask` queued for this thread, waiting at most `timeout`
/// (None: until one comes); None when none came (or the wait was interrupted).
fn wait_signal(mask: &SigSet, timeout: Option<&TimeSpec>) -> io::Result<Option<PollInfo>> {
    let timeout = timeout.map_or(std::ptr::null(), |t| t.as_ref() as *const libc::timespec);
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointers are to live values of the types sigtimedwait expects (the
    // timeout may be null: wait for ever); it writes only into `info`.
    let signo = unsafe { libc::sigtimedwait(mask.as_ref(), &mut info, timeout) };
    if signo < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: siginfo_t is larger than PollInfo and laid out as it at its start (the
    // SIGPOLL member of its union); for the plain SIGIO the fd read is simply unused.
    let poll = unsafe { std::ptr::read(&info as *const libc::siginfo_t as *const PollInfo) };
    Ok(Some(poll))
}
