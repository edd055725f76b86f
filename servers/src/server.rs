//! What every model is handed: its settings ([`Config`]), the state its threads share
//! ([`Server`]: counters, the stop flag and the wakers that carry it), the signature it
//! serves with ([`ServeFn`]), and the listening socket ([`listen`]).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{pipe2, read, write};
use socket2::{Domain, Socket, Type};

use crate::handler::Proto;
use crate::stats::{Snapshot, Stats};
use crate::trace::Tracer;

/// Settings a model is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub proto: Proto,
    /// listen(2) backlog (the kernel caps it at net.core.somaxconn).
    pub backlog: i32,
    /// `blocking`: each connection thread's stack, in bytes.
    pub stack_size: usize,
    /// `reactor`: threads running blocking work off the loop (0: on the loop).
    pub executor: usize,
    /// `reactor`: how a `/wait` waits on the loop.
    pub waits: Waits,
    /// `thread-pool`: workers; `epoll-mt`: loops. None: the model's default.
    pub threads: Option<usize>,
    /// `prefork`: worker processes. None: one per CPU it may use.
    pub workers: Option<usize>,
    /// `prefork`: how its workers share the port.
    pub listen: Listen,
    /// `epoll-et`: wait on the listener with EPOLLEXCLUSIVE, as one of several processes
    /// that share it (prefork's workers with `--listen shared`).
    pub accept_exclusive: bool,
    /// `epoll-et`: when a drain stops reading.
    pub et_drain: EtDrain,
    /// `io-uring`: how it accepts and receives.
    pub uring_mode: UringMode,
    /// A request whose header is not complete this long after it began (or, on a new
    /// connection, after the accept) is answered 408 and closed. None: never.
    pub header_timeout: Option<Duration>,
    /// A keep-alive connection with no request in flight for this long is closed,
    /// silently. None: never.
    pub idle_timeout: Option<Duration>,
    /// Open connections at most. A newcomer past it makes the longest-idle keep-alive
    /// connection close (nginx's reuse of connections), or is answered 503.
    pub max_connections: usize,
    /// `thread-pool`: the main thread reads each request's header without blocking and
    /// hands a worker only a connection whose request is complete (Puma's reactor).
    pub buffer_headers: bool,
    /// Record every event of the loop, and write them here as JSON when the server
    /// stops (for the book's timelines; never for a measured run).
    pub trace: Option<std::path::PathBuf>,
}

/// `epoll-et`: when the reads after an edge may stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EtDrain {
    /// At a short read: fewer bytes than asked say the stream socket is empty now
    /// (epoll(7)), as nginx reads; no read that returns EAGAIN.
    #[default]
    ShortRead,
    /// At EAGAIN: one more read per event, which finds nothing. The naive rule, kept
    /// to measure what it costs.
    Eagain,
}

/// `prefork`: how the workers share the port. Either way the master makes every
/// listening socket before a worker starts and keeps it open until it stops, so a
/// connection queued on one is never reset: not while the workers start, not while a
/// dead one is replaced (its successor inherits the same socket and its queue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Listen {
    /// A socket per worker, all bound to the port with SO_REUSEPORT: the kernel hashes
    /// each new connection to one of them, so each worker has its own accept queue and
    /// about its share of the connections.
    #[default]
    Reuseport,
    /// One socket, inherited by every worker (nginx's default), each waiting on it with
    /// EPOLLEXCLUSIVE: one idle worker is woken per connection, and which one is not
    /// balanced (the first idle one in the socket's wait queue takes the most).
    Shared,
    /// One inherited socket without EPOLLEXCLUSIVE: every idle worker wakes for every
    /// connection and all but one find nothing to accept (the thundering herd).
    Herd,
}

/// `reactor`: how a handler that must wait (`/wait/MS`) is written. The same answer, the
/// same moment; what differs is who holds the wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Waits {
    /// An `async fn` that awaits a sleep, driven by the loop's own executor: Tornado's
    /// `await gen.sleep(…)` (or asyncio's).
    #[default]
    Coroutine,
    /// A timer whose callback sends the answer: Tornado's `IOLoop.call_later`, as
    /// handlers were written before coroutines.
    Callback,
    /// A thread of the executor, blocked in a sleep: `run_on_executor`. With no
    /// executor (`--executor 0`), the loop itself sleeps.
    Executor,
}

/// `io-uring`: how it asks for connections and data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UringMode {
    /// Multishot accept, multishot receive into a ring of provided buffers shared by
    /// every connection (the io_uring maintainers' 2023 practice).
    #[default]
    Multishot,
    /// One receive per submission, into a buffer each connection owns while it waits.
    Basic,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            proto: Proto::Http,
            backlog: 4096,
            stack_size: 64 * 1024,
            executor: default_executor(),
            waits: Waits::default(),
            threads: None,
            workers: None,
            listen: Listen::default(),
            accept_exclusive: false,
            et_drain: EtDrain::default(),
            uring_mode: UringMode::default(),
            header_timeout: Some(DEFAULT_HEADER_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: usize::MAX,
            buffer_headers: false,
            trace: None,
        }
    }
}

/// nginx's client_header_timeout is 60 s; Apache's mod_reqtimeout gives a header 20 s
/// (at 500 bytes/s, up to 40). Ours is shorter: a header takes microseconds here.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx's keepalive_timeout is 75 s; Tornado's idle_connection_timeout 3600 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Descriptors kept back from `--max-connections`' default for the server's own (the
/// listener, epoll instances, wakers, the spare for EMFILE, stdio): at most 64, and an
/// eighth of the limit where the limit is small.
pub fn default_max_connections(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 8).clamp(8, 64);
    fd_limit.saturating_sub(reserve).max(1) as usize
}

/// Python's ThreadPoolExecutor default, which Tornado's `run_in_executor` uses:
/// min(32, CPUs + 4).
pub fn default_executor() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

/// What every thread of a running model shares: its settings, counters, stop flag, and
/// the wakers of its loops.
#[derive(Debug)]
pub struct Server {
    pub config: Config,
    pub stats: Stats,
    stop: AtomicBool,
    /// A graceful stop was asked (SIGQUIT): no new connection, the open ones answered.
    closing: AtomicBool,
    wakers: Mutex<Vec<Arc<Waker>>>,
    /// Where the counters come from when they are not all in `stats`: `prefork`'s
    /// workers, each a process of its own.
    gather: Mutex<Option<Gather>>,
    /// Set once a model that announces itself listens ([`Server::announce`]).
    announced: (Mutex<bool>, std::sync::Condvar),
}

/// A model's own way to read its counters (see [`Server::gather_counters`]).
struct Gather(Box<dyn FnMut(&str) -> Snapshot + Send>);

impl std::fmt::Debug for Gather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gather")
    }
}

impl Server {
    pub fn new(config: Config) -> Server {
        let stats = Stats::default();
        if config.trace.is_some() {
            let _ = stats.tracer.set(Tracer::new());
        }
        Server {
            config,
            stats,
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            gather: Mutex::new(None),
            announced: (Mutex::new(false), std::sync::Condvar::new()),
        }
    }

    /// A model whose listening is done elsewhere (prefork's workers) says it listens now.
    pub fn announce(&self) {
        let (done, ready) = &self.announced;
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        ready.notify_all();
    }

    /// Whether the model has announced itself, waiting at most `timeout`.
    pub fn wait_announced(&self, timeout: Duration) -> bool {
        let (done, ready) = &self.announced;
        let guard = done.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = ready
            .wait_timeout_while(guard, timeout, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// The counters of `model`, as printed on SIGUSR1 and at exit: `stats`, or what
    /// the model's gatherer returns if it set one.
    pub fn snapshot(&self, model: &str) -> Snapshot {
        let mut gather = self.gather.lock().unwrap_or_else(|e| e.into_inner());
        match gather.as_mut() {
            Some(Gather(gather)) => gather(model),
            None => self.stats.snapshot(model),
        }
    }

    /// Read the counters with `gather` from now on (a model whose work is done in other
    /// processes).
    pub fn gather_counters(&self, gather: impl FnMut(&str) -> Snapshot + Send + 'static) {
        *self.gather.lock().unwrap_or_else(|e| e.into_inner()) = Some(Gather(Box::new(gather)));
    }

    /// True once SIGINT or SIGTERM arrived: the model returns from `serve`.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Ask every loop to stop: set the flag, then wake each loop's waker, so that a loop
    /// asleep in its wait (with no timeout) returns and sees the flag.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for waker in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            waker.wake();
        }
    }

    /// True once SIGQUIT arrived, for a model that stops gracefully ([`crate::Model`]'s
    /// `graceful`): it takes no new connection, answers the open ones, then returns.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Ask every loop to stop gracefully: set the flag, then wake each loop.
    pub fn close_gracefully(&self) {
        self.closing.store(true, Ordering::Relaxed);
        for waker in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            waker.wake();
        }
    }

    /// A waker for one loop to watch beside its sockets: readable once a stop is asked.
    pub fn waker(&self) -> io::Result<Arc<Waker>> {
        let waker = Arc::new(Waker::new()?);
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.push(Arc::clone(&waker));
        // Under the lock `stop` takes after setting the flag: a stop asked before this
        // waker existed is not missed.
        if self.stopping() || self.closing() {
            waker.wake();
        }
        Ok(waker)
    }

    /// At the cap: as many connections open as `--max-connections` allows.
    pub fn full(&self) -> bool {
        self.stats.open() >= self.config.max_connections as u64
    }
}

// ANCHOR: waker
/// The self-pipe trick (D. J. Bernstein): a pipe whose read end a loop watches with its
/// sockets, and whose write end any thread may write one byte into, so that the loop's
/// wait returns without a timeout to poll a flag with. Tornado's IOLoop wakes itself the
/// same way. A pipe, not an eventfd, because a pipe can also raise a signal (O_ASYNC),
/// which is how `sigio` waits.
#[derive(Debug)]
pub struct Waker {
    read: OwnedFd,
    write: OwnedFd,
}

impl Waker {
    fn new() -> io::Result<Waker> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Waker { read, write })
    }

    /// Make the read end readable. A full pipe is already readable: nothing lost.
    pub fn wake(&self) {
        let _ = write(&self.write, &[1]);
    }

    /// Empty the pipe, so that a level-triggered wait stops reporting it.
    pub fn drain(&self) {
        let mut sink = [0u8; 64];
        while matches!(read(&self.read, &mut sink), Ok(n) if n > 0) {}
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}
// ANCHOR_END: waker

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// Every model serves with this signature: it owns the listener and returns when
/// `server.stopping()`.
pub type ServeFn = fn(TcpListener, &Arc<Server>) -> io::Result<()>;

/// A listening socket: SO_REUSEADDR so a restarted server can bind at once;
/// SO_REUSEPORT with `reuse_port`, so that several sockets share the port.
pub fn listen(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// The listening socket a parent left open for us at `fd` (prefork's master for its
/// workers), checked to be one.
pub fn inherited_listener(fd: RawFd) -> io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl only asks whether the number names an open descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (above) and outlives this borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if !socket2::SockRef::from(&borrowed).is_listener()? {
        return Err(io::Error::other("it does not listen"));
    }
    // SAFETY: an open listening socket that nothing else in this process owns: it came
    // across exec, and from here on the listener closes it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// Raise the soft descriptor limit to the hard one: C10K needs more than the usual 1024.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}
