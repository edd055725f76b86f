//! Taking connections off the listen queue, the same way in every model: accept4(2)
//! with the trap of EMFILE handled (a spare descriptor, [`Acceptor`]), and admission at
//! the connection cap (`--max-connections`): the longest-idle keep-alive connection makes
//! room for a newcomer, or the newcomer is answered 503 ([`Newcomer::admit`]). And the
//! end of accepting: a graceful stop that loses no connection ([`Closing`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::socket::{accept4, SockFlag};
use socket2::{SockFilter, SockRef};

use crate::conn::{close_evicted, Conn};
use crate::handler::Proto;
use crate::server::Server;
use crate::stats::Stats;
use crate::timers::{Evicted, Timers};
use crate::trace::What;

/// What [`Acceptor::accept`] found.
enum Accepted {
    Conn(Conn),
    /// accept failed with EMFILE or ENFILE: the connection is still queued.
    OutOfDescriptors,
    /// A connection was taken off the queue and closed at once (out of descriptors).
    Refused,
    /// No connection is waiting.
    WouldBlock,
}

/// A connection off the listen queue, as [`Acceptor::incoming`] gives it.
pub enum Newcomer {
    /// There is room for it.
    Room(Conn),
    /// Past `--max-connections` (the connection, accepted), or out of descriptors
    /// (None: still queued). Room is made by closing the longest-idle keep-alive
    /// connection; see [`Newcomer::admit`].
    Crowded(Option<Conn>),
}

impl Newcomer {
    /// The connection to serve. A crowded one first asks `make_room` to close the
    /// longest-idle connection (it returns false when none is idle): with room made, the
    /// accepted newcomer is served (a queued one is accepted on the next call into its
    /// descriptor); with none, an accepted newcomer is answered 503 and closed, and a
    /// queued one is turned away by the next call ([`Acceptor`]'s spare descriptor).
    pub fn admit(self, make_room: impl FnOnce() -> bool, stats: &Stats) -> Option<Conn> {
        match self {
            Newcomer::Room(conn) => Some(conn),
            Newcomer::Crowded(newcomer) => {
                let room = make_room();
                match newcomer {
                    Some(conn) if room => Some(conn),
                    Some(conn) => {
                        conn.refuse(stats);
                        None
                    }
                    None => None,
                }
            }
        }
    }
}

/// For the models that keep their connections by descriptor: close the longest-idle
/// keep-alive connection, so that a newcomer may come in; false if none is idle.
pub fn close_longest_idle(
    conns: &mut HashMap<RawFd, Conn>,
    timers: &mut Timers,
    stats: &Stats,
) -> bool {
    let Some(token) = timers.longest_idle() else {
        return false;
    };
    close_evicted(conns, token, Evicted::Overload, stats);
    true
}

/// accept4(2) with the trap of EMFILE handled.
///
/// When the process is out of descriptors, accept fails with EMFILE but the connection
/// stays queued, so the listener stays readable and a level-triggered loop spins. The
/// cure (from libev and nginx): keep one spare descriptor open; on EMFILE close it, accept
/// the connection, close that at once, and open the spare again.
///
/// Descriptors belong to the process, not the thread: where several loops accept
/// (`epoll-mt`), another loop's accept could take the slot the spare just freed and
/// leave this one without a spare for good. So a shed runs alone ([`SHEDDING`]).
pub struct Acceptor {
    flags: SockFlag,
    spare: Option<File>,
    warned: bool,
    warned_cap: bool,
}

/// Accepts share it (read), a shed takes it whole (write): while a spare is closed, no
/// other accept in the process can take its slot.
static SHEDDING: RwLock<()> = RwLock::new(());

impl Acceptor {
    pub fn new(nonblocking: bool) -> io::Result<Acceptor> {
        let mut flags = SockFlag::SOCK_CLOEXEC;
        if nonblocking {
            flags |= SockFlag::SOCK_NONBLOCK;
        }
        Ok(Acceptor {
            flags,
            spare: Some(File::open("/dev/null")?),
            warned: false,
            warned_cap: false,
        })
    }

    /// Say once that the cap is reached.
    pub fn at_cap(&mut self, cap: usize) {
        if !self.warned_cap {
            eprintln!(
                "iomodels: {cap} connections open, the cap (--max-connections): each \
                 newcomer closes the longest-idle connection, or gets a 503 if none is idle"
            );
            self.warned_cap = true;
        }
    }

    fn accept(&mut self, listener: &TcpListener, proto: Proto, stats: &Stats) -> Accepted {
        loop {
            let accepted = {
                let _shared = SHEDDING.read().unwrap_or_else(|e| e.into_inner());
                accept4(listener.as_raw_fd(), self.flags)
            };
            stats.other_calls(1);
            match accepted {
                Ok(fd) => {
                    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                    let stream = unsafe { TcpStream::from_raw_fd(fd) };
                    let _ = stream.set_nodelay(true);
                    stats.other_calls(1);
                    Stats::add(&stats.accepted, 1);
                    stats.trace(|| What::Accept { fd });
                    return Accepted::Conn(Conn::new(stream, proto));
                }
                Err(Errno::EAGAIN) => return Accepted::WouldBlock,
                // The client gave up while queued, or a signal came: try the next one.
                Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO) => continue,
                Err(Errno::EMFILE | Errno::ENFILE) => return Accepted::OutOfDescriptors,
                Err(e) => {
                    eprintln!("iomodels: accept failed: {e}; retrying on the next wake-up");
                    return Accepted::WouldBlock;
                }
            }
        }
    }

    /// Every connection waiting on the listen queue, until accept would block: the loop
    /// a model runs when its listener is readable. Out of descriptors, it says so once
    /// ([`Newcomer::Crowded`]`(None)`); if accept fails again, the newcomer is turned away
    /// with the spare descriptor, counted, and skipped.
    pub fn incoming<'a>(
        &'a mut self,
        listener: &'a TcpListener,
        server: &'a Server,
    ) -> Incoming<'a> {
        Incoming {
            acceptor: self,
            listener,
            server,
            starved: false,
        }
    }

    fn shed(&mut self, listener: &TcpListener, stats: &Stats) -> Accepted {
        if !self.warned {
            eprintln!(
                "iomodels: out of file descriptors (EMFILE): refusing new connections \
                 until some close; raise `ulimit -n` to serve more"
            );
            self.warned = true;
        }
        let _alone = SHEDDING.write().unwrap_or_else(|e| e.into_inner());
        // Close the spare, accept, close that, open the spare again.
        stats.other_calls(4);
        self.spare = None;
        let refused = match accept4(listener.as_raw_fd(), self.flags) {
            Ok(fd) => {
                // SAFETY: accept4 just returned this descriptor; dropping closes it.
                drop(unsafe { TcpStream::from_raw_fd(fd) });
                Stats::add(&stats.accepted, 1);
                Stats::add(&stats.refused, 1);
                Stats::add(&stats.closed, 1);
                Accepted::Refused
            }
            // Nothing queued any more (or the spare was already gone).
            Err(_) => Accepted::WouldBlock,
        };
        // Only now, with the refused connection closed, is there a slot for the spare.
        self.spare = File::open("/dev/null").ok();
        refused
    }
}

/// The connections waiting on a listener: see [`Acceptor::incoming`].
pub struct Incoming<'a> {
    acceptor: &'a mut Acceptor,
    listener: &'a TcpListener,
    server: &'a Server,
    /// EMFILE was reported and room was to be made: a second EMFILE sheds.
    starved: bool,
}

impl Iterator for Incoming<'_> {
    type Item = Newcomer;

    fn next(&mut self) -> Option<Newcomer> {
        let Server { config, stats, .. } = self.server;
        loop {
            match self.acceptor.accept(self.listener, config.proto, stats) {
                Accepted::Conn(conn) => {
                    self.starved = false;
                    // Counted as accepted already: past the cap when open exceeds it.
                    if stats.open() > config.max_connections as u64 {
                        self.acceptor.at_cap(config.max_connections);
                        return Some(Newcomer::Crowded(Some(conn)));
                    }
                    return Some(Newcomer::Room(conn));
                }
                Accepted::OutOfDescriptors if !self.starved => {
                    self.starved = true;
                    return Some(Newcomer::Crowded(None));
                }
                Accepted::OutOfDescriptors => {
                    self.starved = false;
                    match self.acceptor.shed(self.listener, stats) {
                        Accepted::WouldBlock => return None,
                        _ => continue,
                    }
                }
                Accepted::Refused => continue,
                Accepted::WouldBlock => return None,
            }
        }
    }
}

// ANCHOR: closing
/// A graceful stop (SIGQUIT, as nginx's), in a loop that accepts: no connection the
/// kernel has completed is lost, every request that arrives is answered.
///
/// Closing a listener resets every connection still in its queue, and a connection is
/// queued (the client's connect has returned) before any accept. So the listener is
/// first told to drop new SYNs (a socket filter: the client's kernel retries, and once
/// the port is closed is refused, never reset), the queue is emptied as before, and it
/// is closed last. Open connections are answered for [`Closing::WINDOW`], each answer
/// saying it is the last (`Connection: close`); after that those at rest are closed,
/// and the loop ends once none is left, or at [`Closing::PATIENCE`].
pub struct Closing {
    since: Instant,
}

impl Closing {
    /// How long open connections are still answered: a request sent as the stop began
    /// gets its answer, and the client learns the connection is ending.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// The end, whatever is still running (a `/sleep` of a minute).
    pub const PATIENCE: Duration = Duration::from_secs(10);

    /// Begin: no new connection on `listener` (the ones queued are still accepted), and
    /// every open one's next answer its last.
    pub fn begin<'a>(
        listener: &TcpListener,
        conns: impl Iterator<Item = &'a mut Conn>,
    ) -> io::Result<Closing> {
        refuse_syns(listener)?;
        conns.for_each(Conn::finish);
        Ok(Closing {
            since: Instant::now(),
        })
    }

    /// The wait's timeout: the timers', but never past the next step of the stop.
    pub fn poll_timeout(&self, timers: &Timers, now: Instant) -> PollTimeout {
        let tick = Duration::from_millis(100);
        let left = timers.timeout(now).map_or(tick, |t| t.min(tick));
        PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
    }

    /// After the window, end every connection at rest; true when the loop may return.
    pub fn over(&self, conns: &mut HashMap<RawFd, Conn>, now: Instant, stats: &Stats) -> bool {
        let waited = now.duration_since(self.since);
        if waited < Self::WINDOW {
            return false;
        }
        let resting: Vec<RawFd> = conns
            .iter()
            .filter(|(_, c)| c.at_rest())
            .map(|(&fd, _)| fd)
            .collect();
        for fd in resting {
            if let Some(mut conn) = conns.remove(&fd) {
                conn.end();
                conn.close(stats);
            }
        }
        conns.is_empty() || waited >= Self::PATIENCE
    }
}

/// A classic BPF socket filter on the listener that drops every segment with SYN set:
/// no handshake begins, while those already begun (their last ACK) still complete.
/// The filter reads the TCP header: byte 13 holds the flags, SYN is 0x02.
pub fn refuse_syns(listener: &TcpListener) -> io::Result<()> {
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let program = [
        SockFilter::new(LD_B_ABS, 0, 0, 13),
        SockFilter::new(JSET_K, 0, 1, 0x02),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ];
    SockRef::from(listener).attach_filter(&program)
}
// ANCHOR_END: closing
