//! One request handler, one server per I/O model.
//!
//! # Layout
//!
//! In the order a connection meets them:
//!
//! - [`listen`]: the listening socket (in [`server`]).
//! - [`accept`]: accept4 with the EMFILE trap handled (a spare descriptor), and
//!   admission at the cap: the longest-idle keep-alive connection makes room, or a 503.
//! - [`conn`]: the connection every model shares: socket, bounded buffers, handler.
//! - [`handler`]: THE request handler, sans-IO: bytes in, bytes out (echo and HTTP/1.x).
//! - [`timers`]: the shared deadline structure, by token: header and idle timeouts,
//!   the nearest deadline, and which connection has been idle longest.
//! - [`stats`] and [`trace`]: the counters every model keeps the same way, and the
//!   recording of a loop for the book's timelines.
//! - [`server`]: what every model is handed: [`Config`], [`Server`], [`ServeFn`].
//! - [`executor`] and [`coroutine`]: the reactor's two executors, for blocking work
//!   (a pool of threads) and for `async fn`s (polled on the loop, no runtime crate).
//! - [`models`]: one file per I/O model, each showing its whole loop.
//! - [`MODELS`]: the table of models that the CLI, the tests and the suite iterate over.
//! - [`run`]: listen, install the signal handling, run a model, print its counters.
//!
//! Imports go one way, so that each file reads without those after it: `handler`,
//! `trace`, `stats`, `server`, `timers`, `conn`, `accept`, `executor`, `coroutine`;
//! then `models`, then this file (a test below holds them to it).

pub mod accept;
pub mod conn;
pub mod coroutine;
pub mod executor;
pub mod handler;
pub mod models;
pub mod server;
pub mod stats;
pub mod timers;
pub mod trace;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

pub use handler::Proto;
pub use server::{
    default_executor, default_max_connections, inherited_listener, listen, raise_fd_limit, Config,
    EtDrain, Listen, ServeFn, Server, UringMode, Waits,
};
pub use stats::{Snapshot, Stats};

/// One entry of the table of models.
pub struct Model {
    /// The one spelling a reader meets everywhere: the CLI value, `"model"` in JSON, the
    /// chapter (`book/src/models/NAME.md`), chart legends and the generated diffs. The
    /// source file is the same name with `_` for `-`, as Rust module names must be
    /// ([`Model::file`]).
    pub name: &'static str,
    pub serve: ServeFn,
    pub summary: &'static str,
    /// What stops it first, if anything but memory and RLIMIT_NOFILE.
    pub limit: &'static str,
    /// Its listening socket must allow others on the same port (SO_REUSEPORT).
    pub reuse_port: bool,
    /// Whether this kernel lets it run (io_uring may be disabled); Err says why.
    pub available: fn() -> Result<(), String>,
    /// The descriptors it can watch, if fewer than the process may hold (select:
    /// FD_SETSIZE): `--max-connections` defaults below it, so that a newcomer past it
    /// makes room rather than get a descriptor it cannot watch.
    pub max_fds: Option<u64>,
    /// It says itself when it listens ([`Server::announce`]), rather than as soon as it
    /// is started: prefork, whose workers listen, not the process that was started.
    pub announces: bool,
    /// It spreads its connections over worker processes of its own (`--workers`), each
    /// with its own descriptor table: one process's descriptor limit does not bound it.
    pub processes: bool,
    /// SIGQUIT stops it gracefully, as nginx: no new connection, and none lost (see
    /// `accept.rs`'s `Closing`). The others take SIGQUIT as SIGTERM: they stop at once.
    pub graceful: bool,
    /// The model it is read against (its header's "Against ..."): the book shows the
    /// diff between the two files. None for the first.
    pub neighbour: Option<&'static str>,
}

impl Model {
    /// Its source file under `servers/src/models/`: the name with `_` for `-`.
    pub fn file(&self) -> String {
        format!("{}.rs", self.name.replace('-', "_"))
    }
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
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: None,
    },
    Model {
        name: "busy-poll",
        serve: models::busy_poll::serve,
        summary: "non-blocking sockets, one thread asking each of them again and again",
        limit: "burns a whole CPU, even when idle",
        reuse_port: false,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("blocking"),
    },
    Model {
        name: "select",
        serve: models::select::serve,
        summary: "select(2): bit sets rebuilt every turn, scanned up to the highest fd",
        limit: "fd < FD_SETSIZE (1024); O(max fd) per call",
        reuse_port: false,
        available: always,
        max_fds: Some(nix::sys::select::FD_SETSIZE as u64),
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("busy-poll"),
    },
    Model {
        name: "poll",
        serve: models::poll::serve,
        summary: "poll(2): an array of every descriptor, scanned in full every turn",
        limit: "O(n) per call",
        reuse_port: false,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("select"),
    },
    Model {
        name: "epoll-lt",
        serve: models::epoll_lt::serve,
        summary: "epoll, level-triggered: the kernel keeps the ready list",
        limit: "none of its own",
        reuse_port: false,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("poll"),
    },
    Model {
        name: "epoll-et",
        serve: models::epoll_et::serve,
        summary: "epoll, edge-triggered: one event per change, drain until EAGAIN",
        limit: "none of its own",
        reuse_port: false,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: true,
        neighbour: Some("epoll-lt"),
    },
    Model {
        name: "thread-pool",
        serve: models::thread_pool::serve,
        summary: "a fixed pool of workers with blocking I/O, fed from a queue (gthread)",
        limit: "N requests at a time (--threads); the rest wait in the queue",
        reuse_port: false,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("blocking"),
    },
    Model {
        name: "reactor",
        serve: models::reactor::serve,
        summary: "Tornado's IOLoop: handlers, callbacks, timers, a waker, an executor",
        limit: "one thread runs every handler: blocking work needs the executor",
        reuse_port: false,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("epoll-lt"),
    },
    Model {
        name: "sigio",
        serve: models::sigio::serve,
        summary:
            "signal-driven I/O: O_ASYNC, a real-time signal per event, taken with sigtimedwait",
        limit: "the real-time signal queue; on overflow, a scan of every connection",
        reuse_port: false,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("epoll-et"),
    },
    Model {
        name: "io-uring",
        serve: models::io_uring::serve,
        summary: "asynchronous I/O: accept, receive and send submitted to io_uring",
        limit: "the kernel must allow io_uring; buffers belong to the kernel in flight",
        reuse_port: false,
        available: models::io_uring::available,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: false,
        neighbour: Some("epoll-et"),
    },
    Model {
        name: "epoll-mt",
        serve: models::epoll_mt::serve,
        summary: "an epoll-et loop per core, each with its own SO_REUSEPORT listener",
        limit: "the cores; a connection stays on the loop it landed on",
        reuse_port: true,
        available: always,
        max_fds: None,
        announces: false,
        processes: false,
        graceful: true,
        neighbour: Some("epoll-et"),
    },
    Model {
        name: "prefork",
        serve: models::prefork::serve,
        summary: "nginx's architecture: a master and N worker processes, each epoll-et's loop",
        limit: "none of its own: each worker has its own descriptor table",
        reuse_port: true,
        available: always,
        max_fds: None,
        announces: true,
        processes: true,
        graceful: true,
        neighbour: Some("epoll-mt"),
    },
];
// ANCHOR_END: models

pub fn model(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

/// Run `model` on `listener` until SIGINT or SIGTERM (or SIGQUIT, gracefully); print its counters as one JSON line
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
    // A parent may have started us with these blocked (a mask survives exec; prefork's
    // master blocks them, as every model thread does): the signal thread must take them.
    let mut handled = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
    ] {
        handled.add(signal);
    }
    handled.thread_unblock()?;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGUSR1])?;
    let watcher = Arc::clone(&server);
    let (name, graceful) = (model.name, model.graceful);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGUSR1 {
                    print_snapshot(&watcher.snapshot(name));
                } else if signal == SIGQUIT && graceful && !watcher.closing() {
                    watcher.close_gracefully();
                } else {
                    watcher.stop();
                }
            }
        })?;
    // Only the signals thread takes them: blocked here, and in every thread the model
    // starts (a mask is inherited), no wait of a model is ever interrupted by one.
    handled.thread_block()?;
    server.stats.thread_started();
    if model.announces {
        // It says when it listens (prefork: once its workers do): serve beside, and
        // tell the caller then, or when serving ends first.
        std::thread::scope(|scope| {
            let serving = std::thread::Builder::new()
                .name("master".into())
                .spawn_scoped(scope, || (model.serve)(listener, &server))?;
            while !server.wait_announced(std::time::Duration::from_millis(50)) {
                if serving.is_finished() {
                    break;
                }
            }
            ready();
            serving
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the model panicked")))
        })?;
    } else {
        ready();
        (model.serve)(listener, &server)?;
    }
    let snapshot = server.snapshot(model.name);
    print_snapshot(&snapshot);
    if let (Some(path), Some(tracer)) = (&server.config.trace, server.stats.tracer.get()) {
        let events = serde_json::to_string(&tracer.events()).expect("events serialize");
        std::fs::write(path, events + "\n")?;
    }
    Ok(snapshot)
}

fn print_snapshot(snapshot: &Snapshot) {
    use std::io::Write;
    let line = serde_json::to_string(snapshot).expect("counters serialize");
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    /// This crate's files, each after every file it uses (`models/*.rs` as one).
    const LAYERS: [&str; 11] = [
        "handler",
        "trace",
        "stats",
        "server",
        "timers",
        "conn",
        "accept",
        "executor",
        "coroutine",
        "models",
        "lib",
    ];

    /// The modules `text` names as `crate::NAME`, tests aside.
    fn uses(text: &str) -> Vec<&str> {
        let code = text.split("#[cfg(test)]").next().unwrap_or(text);
        code.match_indices("crate::")
            .map(|(at, found)| {
                let rest = &code[at + found.len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn no_file_uses_one_above_it() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for dir in [src.clone(), src.join("models")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let layer = |name: &str| LAYERS.iter().position(|&l| l == name);
        for path in &files {
            let name = if path.parent().unwrap().ends_with("models") {
                "models"
            } else {
                path.file_stem().unwrap().to_str().unwrap()
            };
            let own = layer(name).unwrap_or_else(|| panic!("{name}.rs is not in LAYERS"));
            let text = std::fs::read_to_string(path).unwrap();
            for used in uses(&text) {
                let Some(theirs) = layer(used) else {
                    continue; // an item of lib.rs: `crate::Stats`
                };
                assert!(
                    theirs < own || used == name,
                    "{} uses crate::{used}, which comes after it in LAYERS: an import circle \
                     in the making",
                    path.display()
                );
            }
        }
        assert!(
            files.len() > LAYERS.len(),
            "only {} files found",
            files.len()
        );
    }
}
