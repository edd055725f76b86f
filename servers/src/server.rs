//! What every model is handed: its settings ([`Config`]), the state its threads share
//! ([`Server`]: counters and the stop flag), the signature it serves with ([`ServeFn`]),
//! and the listening socket ([`listen`]).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use socket2::{Domain, Socket, Type};

use crate::handler::Proto;
use crate::stats::Stats;

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
    /// `thread-pool`: workers; `epoll-mt`: loops. None: the model's default.
    pub threads: Option<usize>,
    /// `epoll-et`: when a drain stops reading.
    pub et_drain: EtDrain,
    /// `io-uring`: how it accepts and receives.
    pub uring_mode: UringMode,
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
            threads: None,
            et_drain: EtDrain::default(),
            uring_mode: UringMode::default(),
        }
    }
}

/// Python's ThreadPoolExecutor default, which Tornado's `run_in_executor` uses:
/// min(32, CPUs + 4).
pub fn default_executor() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

/// What every thread of a running model shares: its settings, counters and stop flag.
#[derive(Debug)]
pub struct Server {
    pub config: Config,
    pub stats: Stats,
    stop: AtomicBool,
}

impl Server {
    pub fn new(config: Config) -> Server {
        Server {
            config,
            stats: Stats::default(),
            stop: AtomicBool::new(false),
        }
    }

    /// True once SIGINT or SIGTERM arrived: the model returns from `serve`.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
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

/// Raise the soft descriptor limit to the hard one: C10K needs more than the usual 1024.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}
