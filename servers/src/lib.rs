//! One request handler, one server per I/O model.
//!
//! # Layout
//!
//! - [`handler`]: THE request handler, sans-IO: bytes in, bytes out (echo and HTTP/1.x).
//! - [`conn`]: the connection every model shares: socket, bounded buffers, handler;
//!   and accept with the EMFILE trap handled.
//! - [`stats`]: the counters every model keeps the same way.
//! - [`models`]: one file per I/O model, each showing its whole loop.
//! - [`MODELS`]: the table of models that the CLI, the tests and the suite iterate over.
//! - [`run`]: listen, install the signal handling, run a model, print its counters.

pub mod conn;
pub mod handler;
pub mod models;
pub mod stats;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use socket2::{Domain, Socket, Type};

pub use handler::Proto;
pub use stats::{Snapshot, Stats};

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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            proto: Proto::Http,
            backlog: 4096,
            stack_size: 64 * 1024,
            executor: default_executor(),
            threads: None,
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

/// One entry of the table of models.
pub struct Model {
    /// The one spelling used everywhere: CLI, file, JSON, chapter, chart legend.
    pub name: &'static str,
    pub serve: ServeFn,
    pub summary: &'static str,
    /// What stops it first, if anything but memory and RLIMIT_NOFILE.
    pub limit: &'static str,
    /// Its listening socket must allow others on the same port (SO_REUSEPORT).
    pub reuse_port: bool,
    /// Whether this kernel lets it run (io_uring may be disabled); Err says why.
    pub available: fn() -> Result<(), String>,
}

/// Every model but io-uring runs wherever Linux does.
fn always() -> Result<(), String> {
    Ok(())
}

// ANCHOR: models
/// The models, in the order the book teaches them.
pub const MODELS: &[Model] = &[
    Model {
        name: "blocking",
        serve: models::blocking::serve,
        summary: "a thread per connection, blocking read and write",
        limit: "threads: stack memory and context switches",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "busy-poll",
        serve: models::busy_poll::serve,
        summary: "non-blocking sockets, one thread asking each of them again and again",
        limit: "burns a whole CPU, even when idle",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "select",
        serve: models::select::serve,
        summary: "select(2): bit sets rebuilt every turn, scanned up to the highest fd",
        limit: "fd < FD_SETSIZE (1024); O(max fd) per call",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "poll",
        serve: models::poll::serve,
        summary: "poll(2): an array of every descriptor, scanned in full every turn",
        limit: "O(n) per call",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "epoll-lt",
        serve: models::epoll::serve_lt,
        summary: "epoll, level-triggered: the kernel keeps the ready list",
        limit: "none of its own",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "epoll-et",
        serve: models::epoll::serve_et,
        summary: "epoll, edge-triggered: one event per change, drain until EAGAIN",
        limit: "none of its own",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "thread-pool",
        serve: models::thread_pool::serve,
        summary: "a fixed pool of workers with blocking I/O, fed from a queue (gthread)",
        limit: "N requests at a time (--threads); the rest wait in the queue",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "reactor",
        serve: models::reactor::serve,
        summary: "Tornado's IOLoop: handlers, callbacks, timers, a waker, an executor",
        limit: "one thread runs every handler: blocking work needs the executor",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "sigio",
        serve: models::sigio::serve,
        summary:
            "signal-driven I/O: O_ASYNC, a real-time signal per event, taken with sigtimedwait",
        limit: "the real-time signal queue; on overflow, a scan of every connection",
        reuse_port: false,
        available: always,
    },
    Model {
        name: "io-uring",
        serve: models::io_uring::serve,
        summary: "asynchronous I/O: accept, receive and send submitted to io_uring",
        limit: "the kernel must allow io_uring; buffers belong to the kernel in flight",
        reuse_port: false,
        available: models::io_uring::available,
    },
    Model {
        name: "epoll-mt",
        serve: models::epoll_mt::serve,
        summary: "an epoll-et loop per core, each with its own SO_REUSEPORT listener",
        limit: "the cores; a connection stays on the loop it landed on",
        reuse_port: true,
        available: always,
    },
];
// ANCHOR_END: models

pub fn model(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

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

/// Run `model` on `listener` until SIGINT or SIGTERM; print its counters as one JSON line
/// on stdout then (and on every SIGUSR1), and return them. `ready` is called once the
/// signals are handled: only then may the caller say that it listens (a SIGUSR1 sent
/// earlier would still have its default action, and end the process).
pub fn run(
    model: &Model,
    listener: TcpListener,
    config: Config,
    ready: impl FnOnce(),
) -> io::Result<Snapshot> {
    let server = Arc::new(Server::new(config));
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
    let watcher = Arc::clone(&server);
    let name = model.name;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGUSR1 {
                    print_snapshot(&watcher.stats.snapshot(name));
                } else {
                    watcher.stop();
                }
            }
        })?;
    ready();
    server.stats.thread_started();
    (model.serve)(listener, &server)?;
    let snapshot = server.stats.snapshot(model.name);
    print_snapshot(&snapshot);
    Ok(snapshot)
}

fn print_snapshot(snapshot: &Snapshot) {
    use std::io::Write;
    let line = serde_json::to_string(snapshot).expect("counters serialize");
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
