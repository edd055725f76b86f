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
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::accept::{close_longest_idle, Acceptor};
use crate::conn::{close_expired, run_work, Conn, Interest, Io};
use crate::server::{Server, Waker};
use crate::stats::Stats;
use crate::timers::{Timeout, Timers};

// ANCHOR: state
/// Workers when `--threads` is not given.
pub const DEFAULT_THREADS: usize = 16;

/// What the main thread and the workers share.
struct Pool {
    /// Connections with a request waiting, for the next free worker.
    queue: Mutex<VecDeque<Conn>>,
    ready: Condvar,
    /// Connections waiting for a request, while epoll watches them.
    parked: Mutex<Parked>,
    epoll: Epoll,
    /// Wakes the main thread: to stop, or because a parked connection's deadline is
    /// nearer than the one it sleeps until.
    waker: Arc<Waker>,
    /// Workers waiting on the queue now.
    idle_workers: AtomicUsize,
    workers: usize,
    warned: AtomicBool,
}

/// The parked connections by descriptor, and their clocks.
struct Parked {
    conns: HashMap<RawFd, Conn>,
    timers: Timers,
}
// ANCHOR_END: state

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    listener.set_nonblocking(true)?;
    // Accepted sockets stay blocking: the workers block in read and write.
    let mut acceptor = Acceptor::new(false)?;
    let workers = server.config.threads.unwrap_or(DEFAULT_THREADS).max(1);
    let pool = Arc::new(Pool {
        queue: Mutex::new(VecDeque::new()),
        ready: Condvar::new(),
        parked: Mutex::new(Parked {
            conns: HashMap::new(),
            timers: Timers::new(&server.config),
        }),
        epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        waker: server.waker()?,
        idle_workers: AtomicUsize::new(0),
        workers,
        warned: AtomicBool::new(false),
    });
    pool.epoll
        .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    pool.epoll
        .add(&*pool.waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKER))?;
    for i in 0..workers {
        let (pool, server) = (Arc::clone(&pool), Arc::clone(server));
        thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker(&pool, &server))?;
    }
    let mut events = vec![EpollEvent::empty(); 1024];
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // The main thread only waits: for new connections, for a request on a parked
        // one, or for the nearest deadline of a parked one. It reads only with
        // --buffer-headers.
        let timeout = pool
            .parked
            .lock()
            .unwrap()
            .timers
            .poll_timeout(Instant::now());
        server.stats.wait_begins("epoll_wait");
        let ready = match pool.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        server.stats.waited(ready, ready);
        let now = Instant::now();
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        for event in &events[..ready] {
            match event.data() {
                LISTENER => accept(&listener, &mut acceptor, &pool, server),
                WAKER => pool.waker.drain(),
                fd => {
                    // A parked connection has a request (or closed): to the queue with it.
                    let mut parked = pool.parked.lock().unwrap();
                    parked.timers.forget(fd as usize);
                    let conn = parked.conns.remove(&(fd as RawFd));
                    drop(parked);
                    if let Some(conn) = conn {
                        request(&pool, conn, server);
                    }
                }
            }
        }
        // Then the deadlines of the parked connections.
        let Parked { conns, timers } = &mut *pool.parked.lock().unwrap();
        close_expired(conns, timers, now, &server.stats);
        // ANCHOR_END: dispatch
    }
    // Under the queue's lock, which a worker holds from its look at the stop flag until
    // it sleeps: no worker misses this.
    let _queue = pool.queue.lock().unwrap();
    pool.ready.notify_all();
    Ok(())
}

// ANCHOR: accept
/// Take every waiting connection off the listen queue. A new connection has sent
/// nothing yet: it is parked, and epoll waits for its first request. Past the cap, the
/// longest-idle parked connection makes room (as nginx reuses one); with none idle, a
/// 503.
fn accept(listener: &TcpListener, acceptor: &mut Acceptor, pool: &Pool, server: &Server) {
    let stats = &server.stats;
    for newcomer in acceptor.incoming(listener, server) {
        let make_room = || {
            let Parked { conns, timers } = &mut *pool.parked.lock().unwrap();
            close_longest_idle(conns, timers, stats)
        };
        if let Some(mut conn) = newcomer.admit(make_room, stats) {
            // Blocking work runs on a worker, not on this thread, which reads headers.
            conn.offload = server.config.buffer_headers;
            park(pool, conn, stats);
        }
    }
}
// ANCHOR_END: accept

// ANCHOR: request
/// A parked connection is readable. Classic: a worker takes it now, and blocks in read
/// until the whole request has come. `--buffer-headers`: this thread reads what has
/// come without blocking, and a worker gets the connection only once a request is
/// complete; a partial one is parked again (its header clock still running).
fn request(pool: &Pool, mut conn: Conn, server: &Server) {
    let stats = &server.stats;
    if server.config.buffer_headers {
        conn.read_nowait(stats);
        if conn.is_done() {
            return close(conn, stats);
        }
        if conn.timeout() == Some(Timeout::Header) {
            return park(pool, conn, stats);
        }
    }
    enqueue(pool, conn, stats);
}
// ANCHOR_END: request

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
/// Give a connection back to the main thread's epoll, to wait for its next request, on
/// its clock. EPOLLONESHOT: one event, then the descriptor is disarmed until parked
/// again, so no two threads ever hold the same connection.
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
    let (before, now) = (parked.timers.nearest(), Instant::now());
    parked.timers.watch(fd as usize, conn.clock(), now);
    parked.conns.insert(fd, conn);
    // The main thread sleeps until the nearest deadline it knew of: wake it if this
    // one comes sooner.
    if before.is_none_or(|before| parked.timers.nearest() < Some(before)) {
        stats.other_calls(1);
        pool.waker.wake();
    }
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
                queue = pool.ready.wait(queue).unwrap();
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
/// Serve one request: read it (blocking until all of it has come, or its header's
/// deadline: a per-socket SO_RCVTIMEO), run its blocking work, write the answer
/// (blocking until the kernel took it all); then park the connection, or close it.
/// With --buffer-headers the request is already whole: no read here.
fn serve_request(pool: &Pool, mut conn: Conn, server: &Server) {
    let (stats, buffered) = (&server.stats, server.config.buffer_headers);
    let mut clock = Timers::new(&server.config);
    let mut has_read = false;
    loop {
        if let Some(work) = conn.start_work() {
            run_work(work);
            conn.finish_work(stats);
        } else if conn.wants_write() {
            writable(&mut conn, stats);
        } else if conn.is_done() {
            break;
        } else if buffered || (has_read && conn.buffered() == 0) {
            // Answered, and no more of a request here (or the main thread reads the
            // rest): the worker is free again.
            return park(pool, conn, stats);
        } else if conn.wants_read() {
            // Every read is a wait on this one descriptor: the worker sleeps here. The
            // first finds data (epoll said so); a later one waits for the rest of the
            // request, no longer than what is left of its header's time.
            let now = Instant::now();
            clock.watch(0, conn.clock(), now);
            if has_read {
                match clock.timeout(now) {
                    Some(left) if left.is_zero() => {
                        expire(&mut conn, &mut clock, stats);
                        continue;
                    }
                    left => {
                        stats.other_calls(1);
                        let _ = conn.stream.set_read_timeout(left);
                    }
                }
            }
            stats.wait_begins("read");
            stats.turned(1, 1);
            if conn.read(stats) == Io::WouldBlock {
                expire(&mut conn, &mut clock, stats); // SO_RCVTIMEO ran out
            }
            has_read = true;
        } else {
            break;
        }
    }
    close(conn, stats);
}

/// The read's timeout ran out: the deadline has passed (408: a header was cut short).
fn expire(conn: &mut Conn, clock: &mut Timers, stats: &Stats) {
    if let Some((_, why)) = clock.expired(Instant::now()) {
        conn.evict(why, stats);
    }
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
