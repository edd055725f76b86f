// ANCHOR: header
//! `prefork`: nginx's architecture. A master process starts N worker processes
//! (`--workers N`, default: one per CPU it may use); each runs epoll-et's loop, with a
//! descriptor table of its own, on a listening socket the master made and handed down.
//!
//! - How they share the port (`--listen`): a socket per worker on the same port
//!   (SO_REUSEPORT, the default: the kernel hashes each connection to one worker's
//!   queue), or nginx's default, one socket every worker inherits and waits on with
//!   EPOLLEXCLUSIVE (`shared`: one idle worker woken per connection), or without it
//!   (`herd`: every idle worker woken, all but one for nothing). The master keeps every
//!   socket open, so a connection queued on one is never reset: not while the workers
//!   start, not while a dead one is replaced (its successor inherits the socket).
//!
//! - What blocks: each worker, in its own epoll_wait(2). The master serves nothing: it
//!   waits in poll(2) for a stop request or a worker's death (SIGCHLD).
//! - Cost per wake-up: as epoll-et, per worker.
//! - Limit: none of its own. Each worker may hold as many descriptors as one process
//!   may, so N workers hold N times that: how nginx keeps 100,000 connections on a host
//!   whose per-process limit is 20,000.
//! - Against epoll-mt: processes, not threads. Nothing is shared, so nothing is
//!   contended, and a worker that dies takes only its own connections with it: the
//!   master starts another. The price: the counters live in N processes (the master
//!   gathers them), and no worker can take over another's connections.
//! - Stopping, as nginx's master: SIGTERM stops every worker at once, SIGQUIT
//!   gracefully (passed on; see `accept.rs`'s `Closing`: no new connection, none lost).
//! - The workers are this binary's `serve epoll-et`, started with fork and exec. nginx
//!   forks without exec; a process that has started threads (ours has its signal
//!   thread) may only call async-signal-safe functions between fork and exec.
// ANCHOR_END: header

use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::server::{Config, Listen, Server};
use crate::stats::{Snapshot, Stats};
use crate::trace::Event;

// ANCHOR: state
/// One worker process, and the pipe its counters come on (one JSON line per SIGUSR1,
/// and one as it exits).
struct Worker {
    child: Child,
    counters: BufReader<ChildStdout>,
}

/// The workers, shared by the master's loop (which replaces a dead one) and whoever
/// asks for the counters (the signal thread, on SIGUSR1).
struct Workers {
    running: Vec<Worker>,
    /// Once the workers are stopped: the sum of their last counters.
    last: Option<Snapshot>,
}
// ANCHOR_END: state

/// How long a worker may take to say it listens.
const PATIENCE: Duration = Duration::from_secs(10);

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    let n = server
        .config
        .workers
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // Every socket exists, and queues connections, before the first worker starts; the
    // master holds them until it stops. A socket dropped while the port is in use would
    // take the connections queued on it with it, each reset.
    let addr = listener.local_addr()?;
    let mut listeners = vec![listener];
    if server.config.listen == Listen::Reuseport {
        for _ in 1..n {
            listeners.push(crate::server::listen(addr, server.config.backlog, true)?);
        }
    }
    let listener_of = |i: usize| &listeners[i % listeners.len()];
    let running = (0..n)
        .map(|i| Worker::start(i, listener_of(i), &server.config))
        .collect::<io::Result<Vec<_>>>()?;
    server.announce();
    let workers = Arc::new(Mutex::new(Workers {
        running,
        last: None,
    }));
    let gather = Arc::clone(&workers);
    server.gather_counters(move |model| gather.lock().unwrap().counters(model));
    // A worker's death is a signal to the master: its handler writes to this pipe.
    let (dead, dead_tx) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, dead_tx)?;
    dead.set_nonblocking(true)?;
    let stop = server.waker()?;
    // ANCHOR_END: setup

    while !(server.stopping() || server.closing()) {
        // ANCHOR: wait
        // The master's only wait: for the stop waker, or for SIGCHLD.
        let mut fds = [
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(dead.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        server.stats.waited(2, 1);
        let _ = io::copy(&mut &dead, &mut io::sink());
        // ANCHOR_END: wait
        // ANCHOR: dispatch
        // Replace every worker that died, unless we are stopping anyway.
        let mut workers = workers.lock().unwrap();
        for (i, worker) in workers.running.iter_mut().enumerate() {
            let Ok(Some(status)) = worker.child.try_wait() else {
                continue;
            };
            if server.stopping() || server.closing() {
                break;
            }
            eprintln!(
                "iomodels: prefork worker {i} (pid {}) ended ({status}); starting another",
                worker.child.id()
            );
            Stats::add(&server.stats.worker_restarts, 1);
            *worker = Worker::start(i, listener_of(i), &server.config)?;
        }
        // ANCHOR_END: dispatch
    }
    // ANCHOR: accept
    // Each worker accepts from the socket it inherited. With `--listen reuseport` the
    // kernel picks which worker's socket a new connection joins by a hash of its
    // addresses, as for epoll-mt's loops; with `shared` every worker's epoll waits on
    // the one socket, and the kernel wakes one of those waiting (EPOLLEXCLUSIVE).
    // ANCHOR_END: accept

    // ANCHOR: readable
    // As epoll_et.rs, in each worker.
    // ANCHOR_END: readable

    // ANCHOR: writable
    // As epoll_et.rs, in each worker.
    // ANCHOR_END: writable

    // ANCHOR: close
    // Stop every worker as nginx's master does: pass the signal on (SIGQUIT: each takes
    // no new connection and answers the open ones), wait for each, and keep the counters
    // each prints as it exits. Only then are the listeners closed, their queues empty.
    let signal = match server.closing() {
        true => Signal::SIGQUIT,
        false => Signal::SIGTERM,
    };
    workers.lock().unwrap().stop(signal, &server.stats);
    drop(listeners);
    gather_traces(&server.config, &server.stats);
    Ok(())
    // ANCHOR_END: close
}

// ANCHOR: worker
impl Worker {
    /// Start worker `i`: this binary's `serve epoll-et` on `listener`, which it inherits,
    /// with the master's settings; return once it says it listens.
    fn start(i: usize, listener: &TcpListener, config: &Config) -> io::Result<Worker> {
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["serve", "epoll-et", "--listen-fd", &fd.to_string()])
            .args(["--proto", config.proto.name()])
            .args(["--backlog", &config.backlog.to_string()])
            .args(["--header-timeout", &timeout(config.header_timeout)])
            .args(["--idle-timeout", &timeout(config.idle_timeout)])
            // Each worker's own cap: it has a descriptor table of its own.
            .args(["--max-connections", &config.max_connections.to_string()])
            .args(trace_args(config, i))
            .args(match config.listen {
                Listen::Shared => &["--accept-exclusive"][..],
                Listen::Reuseport | Listen::Herd => &[],
            })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // nginx's workers outlive a master killed with SIGKILL, and go on serving the
        // port; ours are sent SIGTERM when it dies, so that whoever killed it (a test,
        // the suite out of patience) leaves nothing behind.
        let master = nix::unistd::getpid();
        // SAFETY: between fork and exec only async-signal-safe calls are allowed; prctl,
        // fcntl and getppid are plain system calls, and nothing here allocates. The
        // descriptor is the master's listener, open for as long as the master runs.
        unsafe {
            cmd.pre_exec(move || {
                // The one descriptor the worker keeps across exec: its listener (every
                // other one the master holds is close-on-exec).
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
                // A master that died before that line sends nothing: look.
                if nix::unistd::getppid() != master {
                    return Err(io::Error::other("the master is gone"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let counters = BufReader::new(child.stdout.take().expect("piped"));
        // The worker says where it listens on stderr; everything it says after that is
        // passed on, so that its messages (out of descriptors, …) reach our reader.
        let (said, listening) = std::sync::mpsc::channel();
        thread::Builder::new()
            .name(format!("worker-{i}-stderr"))
            .spawn(move || {
                let mut told = false;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if !told && line.contains(" listening on ") {
                        told = true;
                        let _ = said.send(());
                    } else {
                        eprintln!("{line} (worker {i})");
                    }
                }
            })?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if listening.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(Worker { child, counters });
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "prefork worker {i} exited before it listened ({status})"
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(io::Error::other(format!(
                    "prefork worker {i} did not listen within {PATIENCE:?}"
                )));
            }
        }
    }

    /// The next JSON line of counters the worker prints.
    fn read_counters(&mut self) -> Option<Snapshot> {
        let mut line = String::new();
        self.counters.read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    }
}

/// A worker left behind by a failure (another worker that would not start) is not
/// left running: no process outlives its master.
impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Workers {
    /// Every worker's counters, summed as one model's: asked of each with SIGUSR1 while
    /// they run, the last ones once they have stopped.
    fn counters(&mut self, model: &str) -> Snapshot {
        if let Some(last) = &self.last {
            return Snapshot {
                model: model.into(),
                ..last.clone()
            };
        }
        let mut sum = Snapshot::empty(model);
        for worker in &mut self.running {
            let _ = kill(Pid::from_raw(worker.child.id() as i32), Signal::SIGUSR1);
            if let Some(counters) = worker.read_counters() {
                sum.add(&counters);
            }
        }
        sum
    }

    /// `signal` to every worker, then wait for each and keep the sum of its last counters.
    fn stop(&mut self, signal: Signal, master: &Stats) {
        for worker in &self.running {
            let _ = kill(Pid::from_raw(worker.child.id() as i32), signal);
        }
        let mut sum = master.snapshot("prefork");
        for worker in &mut self.running {
            // Its last line comes as it exits; any line before it was a SIGUSR1's.
            let mut last = None;
            while let Some(counters) = worker.read_counters() {
                last = Some(counters);
            }
            let _ = worker.child.wait();
            if let Some(counters) = last {
                sum.add(&counters);
            }
        }
        self.last = Some(sum);
    }
}
// ANCHOR_END: worker

/// `--trace` for worker `i`: a file of its own beside ours, which the master gathers.
fn trace_args(config: &Config, i: usize) -> Vec<String> {
    match &config.trace {
        Some(path) => vec!["--trace".into(), format!("{}.worker-{i}", path.display())],
        None => Vec::new(),
    }
}

/// The workers' traces, into ours, each worker's threads named after it.
fn gather_traces(config: &Config, stats: &Stats) {
    let (Some(path), Some(tracer)) = (&config.trace, stats.tracer.get()) else {
        return;
    };
    for i in 0.. {
        let file = format!("{}.worker-{i}", path.display());
        let Ok(text) = std::fs::read_to_string(&file) else {
            break;
        };
        let _ = std::fs::remove_file(&file);
        let events: Vec<Event> = serde_json::from_str(&text).unwrap_or_default();
        tracer.extend(events.into_iter().map(|e| Event {
            thread: e.thread.replacen("main", &format!("worker {i}"), 1),
            ..e
        }));
    }
}

/// A timeout as `serve` takes it.
fn timeout(t: Option<Duration>) -> String {
    t.map_or("off".into(), |d| format!("{}ms", d.as_millis().max(1)))
}
