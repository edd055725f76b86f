// ANCHOR: header
//! `thread-pool`: a fixed pool of `--threads N` workers with blocking read(2) and
//! write(2), fed from a queue: how a thread-based WSGI server runs Django (gunicorn's
//! gthread worker; Apache's event MPM).
//!
//! - What blocks: a worker, in the read and write of the one connection it serves; the
//!   main thread, in epoll_wait over the idle keep-alive connections.
//! - Cost per wake-up: a connection with a request goes through the queue to a free
//!   worker (a hand-over and a context switch), is served with blocking calls until its
//!   input is used up, and goes back to the main thread's epoll.
//! - Limit: N requests at a time. When every worker is busy (a slow handler, a request
//!   that trickles in, a client slow to read), ready connections wait in the queue:
//!   the server says so once, and the counters `queued` and `queued_peak` show it.
//! - Against blocking: the same blocking calls on the same connection code, but N
//!   threads, not one per connection. A connection holds a worker only while it has a
//!   request: were idle keep-alive connections to keep theirs, N of them would take
//!   every worker and the rest would wait in the queue for good.
// ANCHOR_END: header

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::TcpListener;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::conn::{Acceptor, Conn, Interest, WAIT_TIMEOUT};
use crate::server::Server;
use crate::stats::Stats;

// ANCHOR: state
/// Workers when `--threads` is not given.
pub const DEFAULT_THREADS: usize = 16;

/// What the main thread and the workers share.
struct Pool {
    /// Connections with a request waiting, for the next free worker.
    queue: Mutex<VecDeque<Conn>>,
    ready: Condvar,
    /// Idle keep-alive connections, by descriptor, while epoll watches them.
    parked: Mutex<HashMap<RawFd, Conn>>,
    epoll: Epoll,
    /// Workers waiting on the queue now.
    idle_workers: AtomicUsize,
    workers: usize,
    warned: AtomicBool,
}
// ANCHOR_END: state

const LISTENER: u64 = u64::MAX;

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    listener.set_nonblocking(true)?;
    // Accepted sockets stay blocking: the workers block in read and write.
    let mut acceptor = Acceptor::new(false)?;
    let workers = server.config.threads.unwrap_or(DEFAULT_THREADS).max(1);
    let pool = Arc::new(Pool {
        queue: Mutex::new(VecDeque::new()),
        ready: Condvar::new(),
        parked: Mutex::new(HashMap::new()),
        epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        idle_workers: AtomicUsize::new(0),
        workers,
        warned: AtomicBool::new(false),
    });
    pool.epoll
        .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    for i in 0..workers {
        let (pool, server) = (Arc::clone(&pool), Arc::clone(server));
        thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker(&pool, &server))?;
    }
    let mut events = vec![EpollEvent::empty(); 1024];
    let timeout = EpollTimeout::try_from(WAIT_TIMEOUT).expect("timeout fits");
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // The main thread only waits: for new connections, and for a request on an
        // idle one. It never reads.
        let ready = match pool.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        server.stats.waited(ready, ready);
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        for event in &events[..ready] {
            if event.data() == LISTENER {
                accept(&listener, &mut acceptor, &pool, server);
                continue;
            }
            // A parked connection has a request (or closed): to the queue with it.
            let conn = pool.parked.lock().unwrap().remove(&(event.data() as RawFd));
            if let Some(conn) = conn {
                enqueue(&pool, conn, &server.stats);
            }
        }
        // ANCHOR_END: dispatch
    }
    pool.ready.notify_all();
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue. A new connection has sent
/// nothing yet: it is parked, and epoll waits for its first request.
fn accept(listener: &TcpListener, acceptor: &mut Acceptor, pool: &Pool, server: &Server) {
    for conn in acceptor.incoming(listener, server) {
        park(pool, conn, &server.stats);
    }
}
// ANCHOR_END: accept

// ANCHOR: enqueue
/// Hand a connection with a request to the next free worker.
fn enqueue(pool: &Pool, conn: Conn, stats: &Stats) {
    if pool.idle_workers.load(Relaxed) == 0 && !pool.warned.swap(true, Relaxed) {
        eprintln!(
            "iomodels: all {} workers are busy: connections with a request wait in the \
             queue (see the counters queued and queued_peak; --threads sets the pool)",
            pool.workers
        );
    }
    // Counted under the queue's lock: a worker may take the connection as soon as the
    // lock is free, and must never count it out before it was counted in.
    let mut queue = pool.queue.lock().unwrap();
    queue.push_back(conn);
    stats.queued_more();
    drop(queue);
    pool.ready.notify_one();
}
// ANCHOR_END: enqueue

// ANCHOR: park
/// Give an idle connection back to the main thread's epoll, to wait for its next request.
/// EPOLLONESHOT: one event, then the descriptor is disarmed until parked again, so no
/// two threads ever hold the same connection.
fn park(pool: &Pool, mut conn: Conn, stats: &Stats) {
    let fd = conn.fd();
    let mut event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, fd as u64);
    // Into the map first, armed after, under the lock: the event cannot come before the
    // main thread can find the connection.
    let mut parked = pool.parked.lock().unwrap();
    stats.ctl_calls(1);
    let armed = if conn.registered.read {
        pool.epoll.modify(&conn.stream, &mut event)
    } else {
        pool.epoll.add(&conn.stream, event)
    };
    if let Err(e) = armed {
        drop(parked);
        eprintln!("iomodels: epoll_ctl failed: {e}; closing the connection");
        conn.close(stats);
        return;
    }
    conn.registered = Interest::READ;
    parked.insert(fd, conn);
}
// ANCHOR_END: park

// ANCHOR: worker
/// A worker: take a connection off the queue, serve it, and again.
fn worker(pool: &Pool, server: &Server) {
    server.stats.thread_started();
    loop {
        let conn = {
            let mut queue = pool.queue.lock().unwrap();
            pool.idle_workers.fetch_add(1, Relaxed);
            let conn = loop {
                if let Some(conn) = queue.pop_front() {
                    break Some(conn);
                }
                if server.stopping() {
                    break None;
                }
                queue = pool.ready.wait_timeout(queue, WAIT_TIMEOUT).unwrap().0;
            };
            pool.idle_workers.fetch_sub(1, Relaxed);
            conn
        };
        let Some(conn) = conn else { break };
        server.stats.queued_less();
        serve_request(pool, conn, server);
    }
    server.stats.thread_ended();
}
// ANCHOR_END: worker

// ANCHOR: readable
/// Serve one request: read it (blocking until all of it has come), answer it, write the
/// answer (blocking until the kernel took it all); then park the connection, or close it.
fn serve_request(pool: &Pool, mut conn: Conn, server: &Server) {
    let stats = &server.stats;
    let mut has_read = false;
    loop {
        if conn.wants_write() {
            writable(&mut conn, stats);
        } else if conn.is_done() {
            break;
        } else if has_read && conn.buffered() == 0 {
            // Answered, and nothing more has come: the worker is free again.
            return park(pool, conn, stats);
        } else if conn.wants_read() {
            // Every read is a wait on this one descriptor: the worker sleeps here.
            stats.turned(1, 1);
            conn.read(stats);
            has_read = true;
        } else {
            break;
        }
    }
    close(conn, stats);
}
// ANCHOR_END: readable

// ANCHOR: writable
/// Blocks until the kernel has taken some of the output: a client slow to read holds
/// the worker here.
fn writable(conn: &mut Conn, stats: &Stats) {
    conn.write(stats);
}
// ANCHOR_END: writable

// ANCHOR: close
/// The connection is done: close it; the worker goes back to the queue.
fn close(conn: Conn, stats: &Stats) {
    conn.close(stats);
}
// ANCHOR_END: close
