//! The connection every model shares: a socket, its input and output buffers, and the
//! handler. A model decides *when* to call [`Conn::read`] and [`Conn::write`]; what a
//! read or a write does is the same for all of them.
//!
//! The same code serves blocking sockets (the `blocking` model) and non-blocking ones
//! (every other model): on a blocking socket `WouldBlock` simply never happens.
//!
//! The timers say which connections ran out of time, by token; for the models that keep
//! their connections by descriptor, [`close_expired`] closes them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::socket::{recv, MsgFlags};

use crate::handler::{request_timeout, service_unavailable, Handler, Proto, Step, Work};
use crate::stats::Stats;
use crate::timers::{Clock, Evicted, Timeout, Timers};
use crate::trace::What;

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

    /// A graceful stop: the next answer is the last one.
    pub fn finish(&mut self) {
        self.handler.finish();
    }

    /// No request begun and nothing owed: a graceful stop may close it, cleanly.
    pub fn at_rest(&self) -> bool {
        self.input.is_empty() && !self.wants_write() && self.work == Pending::None
    }

    /// Close once what is owed is sent (a graceful stop, past its window).
    pub fn end(&mut self) {
        self.closing = true;
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

    /// What [`Timers::watch`] needs to know: the clock, and the answers so far.
    pub fn clock(&self) -> Clock {
        Clock {
            on: self.timeout(),
            served: self.served,
        }
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
            why: why.name().into(),
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

/// For the models that keep their connections by descriptor: close every connection
/// whose time ran out by `now` (a 408 first where a header was cut short).
pub fn close_expired(
    conns: &mut HashMap<RawFd, Conn>,
    timers: &mut Timers,
    now: Instant,
    stats: &Stats,
) {
    while let Some((token, why)) = timers.expired(now) {
        close_evicted(conns, token, why, stats);
    }
}

/// For the models that keep their connections by descriptor: end the connection of
/// `token`, if it is still open ([`Conn::evict`]), and close it.
pub fn close_evicted(conns: &mut HashMap<RawFd, Conn>, token: usize, why: Evicted, stats: &Stats) {
    if let Some(mut conn) = conns.remove(&(token as RawFd)) {
        conn.evict(why, stats);
        conn.close(stats);
    }
}
