//! The connection every model shares: a socket, its input and output buffers, and the
//! handler. A model decides *when* to call [`Conn::read`] and [`Conn::write`]; what a
//! read or a write does is the same for all of them.
//!
//! The same code serves blocking sockets (the `blocking` model) and non-blocking ones
//! (every other model): on a blocking socket `WouldBlock` simply never happens.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::RwLock;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::{accept4, recv, MsgFlags, SockFlag};

use crate::handler::{request_timeout, service_unavailable, Handler, Proto, Step, Work};
use crate::server::Server;
use crate::stats::Stats;
use crate::timers::{Evicted, Timeout};
use crate::trace::{self, What};

/// A connection holds at most this much unconsumed input. When it is full (the handler
/// stopped consuming because the client does not read its answers), the connection stops
/// reading: backpressure, not a growing buffer.
pub const INPUT_LIMIT: usize = 16 * 1024;
/// How much one read(2) asks for.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers bigger than this are given back once empty, so an idle connection is small.
const KEEP_CAPACITY: usize = 4 * 1024;

thread_local! {
    /// One read buffer per thread, not per connection: an idle connection holds none.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// What a read or a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// Bytes moved: try again.
    Progress,
    /// Bytes read, fewer than asked: a stream socket holds nothing more for now (a short
    /// read, epoll(7)); new data will be a new event.
    Drained,
    /// The socket has nothing (read) or no room (write): wait for readiness.
    WouldBlock,
    /// End of input or an error: see [`Conn::is_done`].
    Closed,
}

/// Blocking work the handler asked for, when the model runs it elsewhere
/// ([`Conn::offload`]): the answer is held back until it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    None,
    /// Asked for, not yet handed to the model.
    Due(Work),
    /// The model is running it (on an executor thread).
    Running,
}

/// What a connection wants its model to wait for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const READ_WRITE: Interest = Interest {
        read: true,
        write: true,
    };
}

pub struct Conn {
    pub stream: TcpStream,
    handler: Handler,
    /// Received and not yet consumed by the handler (a partial request, or input held
    /// back while the output is full).
    input: Vec<u8>,
    /// To send; `output[sent..]` is still pending.
    output: Vec<u8>,
    sent: usize,
    /// The peer sent EOF: nothing more will be read.
    eof: bool,
    /// The handler asked to close once the output is flushed.
    closing: bool,
    /// A read or write failed (reset, broken pipe): close now.
    failed: bool,
    /// What the waiting mechanism was last told to watch; epoll uses it to skip an
    /// epoll_ctl when nothing changed.
    pub registered: Interest,
    /// True: blocking work is handed back to the model ([`Conn::start_work`]) instead of
    /// running on the calling thread (the reactor's executor).
    pub offload: bool,
    /// The waiting mechanism said the peer shut down its side (EPOLLRDHUP): a short read
    /// no longer means the socket is empty, for the EOF waits behind the data.
    pub hangup: bool,
    work: Pending,
    /// Answers written in full: a new one starts a new clock ([`Conn::timeout`]).
    served: u64,
}

impl Conn {
    pub fn new(stream: TcpStream, proto: Proto) -> Conn {
        Conn {
            stream,
            handler: Handler::new(proto),
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            eof: false,
            closing: false,
            failed: false,
            registered: Interest::default(),
            offload: false,
            hangup: false,
            work: Pending::None,
            served: 0,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Reading is wanted until EOF or close, while there is room for the input, and not
    /// while blocking work is pending.
    pub fn wants_read(&self) -> bool {
        !(self.eof || self.closing || self.failed)
            && self.input.len() < INPUT_LIMIT
            && self.work == Pending::None
    }

    /// Writing is wanted while output is pending (and no blocking work holds it back).
    pub fn wants_write(&self) -> bool {
        !self.failed && self.sent < self.output.len() && self.work == Pending::None
    }

    pub fn interest(&self) -> Interest {
        Interest {
            read: self.wants_read(),
            write: self.wants_write(),
        }
    }

    /// Nothing more will happen on this connection: close it.
    pub fn is_done(&self) -> bool {
        self.failed
            || ((self.eof || self.closing) && !self.wants_write() && self.work == Pending::None)
    }

    /// Bytes received and not yet consumed: a partial request (or input held back).
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    // ANCHOR: timeout
    /// The clock this connection waits on ([`crate::timers`]): the header's while a
    /// request is incomplete (or nothing has come since the accept), the idle one between
    /// requests, none while it is answered (output pending, blocking work running) or
    /// closing.
    pub fn timeout(&self) -> Option<Timeout> {
        let answering = self.wants_write() || self.work != Pending::None;
        if self.failed || self.closing || self.eof || answering {
            None
        } else if self.input.is_empty() && self.served > 0 {
            Some(Timeout::Idle)
        } else {
            Some(Timeout::Header)
        }
    }

    /// Answers written in full so far.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// The server ends this connection: its clock ran out, or a newcomer needs its
    /// room. Counted by cause; a request cut short by the header timeout is answered 408
    /// first (one write: nothing else is pending). The model then closes it as any
    /// finished connection ([`Conn::is_done`]).
    pub fn evict(&mut self, why: Evicted, stats: &Stats) {
        let counter = match why {
            Evicted::HeaderTimeout => &stats.header_timeouts,
            Evicted::IdleTimeout => &stats.idle_timeouts,
            Evicted::Overload => &stats.overload_evictions,
        };
        Stats::add(counter, 1);
        stats.trace(|| What::Expired {
            fd: self.fd(),
            why: trace::why(why),
        });
        if why == Evicted::HeaderTimeout && !self.input.is_empty() {
            stats.write_call();
            let sent = (&self.stream).write(&request_timeout(self.handler.proto()));
            if let Ok(bytes) = sent {
                stats.trace(|| What::Write {
                    fd: self.fd(),
                    bytes,
                });
            }
        }
        self.closing = true;
    }
    // ANCHOR_END: timeout

    /// With [`Conn::offload`]: the blocking work the handler asked for, once. The
    /// connection waits (no reading, its answer held) until [`Conn::finish_work`].
    pub fn start_work(&mut self) -> Option<Work> {
        match self.work {
            Pending::Due(work) => {
                self.work = Pending::Running;
                Some(work)
            }
            _ => None,
        }
    }

    /// The work handed out by [`Conn::start_work`] is done: the answer may go, and the
    /// handler goes on with any input behind it.
    pub fn finish_work(&mut self, stats: &Stats) {
        if self.work == Pending::Running {
            self.work = Pending::None;
            self.process(stats);
        }
    }

    /// [`Conn::read`] that never waits, though the socket blocks (MSG_DONTWAIT): for
    /// `thread-pool --buffer-headers`, whose main thread reads what has come.
    pub fn read_nowait(&mut self, stats: &Stats) -> Io {
        self.recv(stats, MsgFlags::MSG_DONTWAIT)
    }

    // ANCHOR: read
    /// One read (recv(2), as `read` on a socket), then let the handler answer what
    /// arrived.
    pub fn read(&mut self, stats: &Stats) -> Io {
        self.recv(stats, MsgFlags::empty())
    }

    fn recv(&mut self, stats: &Stats, flags: MsgFlags) -> Io {
        let asked = (INPUT_LIMIT - self.input.len()).min(READ_CHUNK);
        let got = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let buf = &mut scratch[..asked];
            stats.read_call();
            let got = recv(self.fd(), buf, flags).map_err(io::Error::from);
            if let Ok(n) = got {
                self.input.extend_from_slice(&buf[..n]);
            }
            got
        });
        match got {
            Ok(0) => {
                stats.trace(|| What::Read {
                    fd: self.fd(),
                    bytes: 0,
                });
                self.eof = true;
                Io::Closed
            }
            Ok(n) => {
                stats.trace(|| What::Read {
                    fd: self.fd(),
                    bytes: n,
                });
                self.took_input(n, stats);
                if n < asked && !self.hangup {
                    Io::Drained
                } else {
                    Io::Progress
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // EAGAIN here is not an error: the socket is drained.
                Stats::add(&stats.empty_reads, 1);
                stats.trace(|| What::EmptyRead { fd: self.fd() });
                Io::WouldBlock
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Io::Progress,
            Err(_) => {
                self.failed = true;
                Io::Closed
            }
        }
    }
    // ANCHOR_END: read

    /// One write(2) of the pending output; once it is all sent, let the handler refill it.
    pub fn write(&mut self, stats: &Stats) -> Io {
        // SIGPIPE is ignored (Rust's runtime does so before main), so a write to a
        // closed peer is an EPIPE error here, not the death of the process.
        stats.write_call();
        match (&self.stream).write(&self.output[self.sent..]) {
            Ok(n) => {
                stats.trace(|| What::Write {
                    fd: self.fd(),
                    bytes: n,
                });
                self.took_output(n, stats);
                Io::Progress
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Io::Progress,
            Err(_) => {
                self.failed = true;
                Io::Closed
            }
        }
    }

    // For models where the kernel does the read or the write and reports it done
    // (io_uring): the same bookkeeping as `read` and `write`, without the syscall.

    /// Room for input: how much one receive may bring.
    pub fn room(&self) -> usize {
        INPUT_LIMIT - self.input.len()
    }

    /// `data` arrived (empty: the peer sent EOF); let the handler answer it.
    pub fn received(&mut self, data: &[u8], stats: &Stats) {
        let bytes = data.len();
        stats.trace(|| What::Read {
            fd: self.fd(),
            bytes,
        });
        if data.is_empty() {
            self.eof = true;
            return;
        }
        self.input.extend_from_slice(data);
        self.took_input(data.len(), stats);
    }

    /// The output not yet sent.
    pub fn unsent(&self) -> &[u8] {
        &self.output[self.sent..]
    }

    /// `n` bytes of [`Conn::unsent`] went out.
    pub fn sent(&mut self, n: usize, stats: &Stats) {
        stats.trace(|| What::Write {
            fd: self.fd(),
            bytes: n,
        });
        self.took_output(n, stats);
    }

    /// A receive or send failed (reset, broken pipe): close now.
    pub fn broke(&mut self) {
        self.failed = true;
    }

    fn took_input(&mut self, n: usize, stats: &Stats) {
        Stats::add(&stats.bytes_in, n as u64);
        self.process(stats);
    }

    fn took_output(&mut self, n: usize, stats: &Stats) {
        Stats::add(&stats.bytes_out, n as u64);
        self.sent += n;
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
            self.served += 1;
            self.process(stats);
        }
    }

    // ANCHOR: process
    /// Feed the input to the handler until it needs more input or more output room.
    fn process(&mut self, stats: &Stats) {
        loop {
            let progress = self.handler.handle(&self.input, &mut self.output);
            self.input.drain(..progress.consumed);
            Stats::add(&stats.requests, progress.requests);
            match progress.step {
                Step::Work(work) if self.offload => {
                    self.work = Pending::Due(work);
                    break;
                }
                Step::Work(work) => run_work(work),
                Step::Close => {
                    self.closing = true;
                    break;
                }
                Step::NeedInput | Step::OutputFull => break,
            }
        }
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
        if self.output.is_empty() && self.output.capacity() > KEEP_CAPACITY {
            self.output = Vec::new();
        }
    }
    // ANCHOR_END: process

    /// Close the connection (by dropping the socket), counting it.
    pub fn close(self, stats: &Stats) {
        if self.closing && !self.eof && !self.failed {
            // We close first, maybe with the client's bytes unread (after a 400, or a
            // pipelined request behind `Connection: close`). close(2) with unread input
            // sends RST, which can destroy our answer before the client reads it. So send
            // FIN first, and discard what is already queued.
            let _ = self.stream.shutdown(Shutdown::Write);
            stats.other_calls(1);
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                stats.read_call();
                match recv(self.fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) if n > 0 => continue,
                    _ => break,
                }
            }
        }
        // Dropping `self` closes the socket: close(2).
        stats.trace(|| What::Close { fd: self.fd() });
        stats.other_calls(1);
        Stats::add(&stats.closed, 1);
    }

    /// Turn a connection away (a model's limit): a 503 if it speaks HTTP, then close.
    pub fn refuse(mut self, stats: &Stats) {
        stats.write_call();
        let _ = (&self.stream).write(&service_unavailable(self.handler.proto()));
        Stats::add(&stats.refused, 1);
        self.closing = true;
        self.close(stats);
    }
}

/// Run the handler's blocking work on the calling thread: the whole point of `/sleep` is
/// that an event loop stalls here while a thread-per-connection server does not. A
/// `/wait` run here is a sleep too: only the reactor has a timer for it.
pub fn run_work(work: Work) {
    match work {
        Work::Sleep(d) | Work::Wait(d) => std::thread::sleep(d),
        Work::Spin(d) => {
            let start = Instant::now();
            while start.elapsed() < d {
                std::hint::spin_loop();
            }
        }
    }
}

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
