// ANCHOR: header
//! `reactor`: Tornado's IOLoop in miniature, over epoll, and a server built on it.
//!
//! - What blocks: epoll_wait(2) in `IoLoop::start`, until a descriptor is ready, a
//!   timer is due, or another thread wakes the loop.
//! - Cost per wake-up: O(ready), as epoll-lt. Then the loop calls the handler
//!   registered for each ready descriptor, the callbacks queued since the last turn, and
//!   the timers that are due.
//! - Limit: one thread runs every handler, so a handler that blocks stops them all.
//!   Blocking work goes to an executor (`--executor N` threads) and its answer comes
//!   back through the waker; `--executor 0` runs it on the loop, to show the stall.
//!   A handler that only waits (`/wait/MS`) needs no thread: a timer's callback, or a
//!   coroutine (an `async fn` this loop polls, with no runtime crate), answers it
//!   (`--waits coroutine|callback|executor`).
//! - Against epoll-lt: the same waiting, but the loop knows nothing of HTTP. It calls
//!   back whatever was registered: `add_handler`, `add_callback`, `call_later`, and a
//!   waker so that other threads may `add_callback` too (tornado/ioloop.py).
// ANCHOR_END: header

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::accept::Acceptor;
use crate::conn::{run_work, Conn, Interest};
use crate::coroutine::{Coroutines, Sleep};
use crate::executor::Executor;
use crate::handler::Work;
use crate::server::{Server, Waits};
use crate::stats::Stats;
use crate::timers::{Evicted, Timers};

// ANCHOR: ioloop
/// What a handler is called with: the loop, the application's state, the descriptor,
/// and what it is ready for. A plain function, so the loop can call it while the state
/// is borrowed.
pub type Handler<S> = fn(&mut IoLoop<S>, &mut S, RawFd, EpollFlags);
/// A callback run by the loop on its own thread.
pub type Callback<S> = Box<dyn FnOnce(&mut IoLoop<S>, &mut S)>;
/// A callback handed over by another thread.
pub type RemoteCallback<S> = Box<dyn FnOnce(&mut IoLoop<S>, &mut S) + Send>;

/// Tornado's IOLoop: handlers per descriptor, a callback queue, a timer heap, a waker.
pub struct IoLoop<S> {
    epoll: Epoll,
    handlers: HashMap<RawFd, Handler<S>>,
    callbacks: VecDeque<Callback<S>>,
    /// (when, sequence): the earliest first; the sequence keeps equal times in order.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_callbacks: HashMap<u64, Callback<S>>,
    next_timer: u64,
    /// The coroutines it drives, each ending in a callback for the loop.
    coroutines: Coroutines<Callback<S>>,
    waker: Arc<Waker<S>>,
    /// When this turn's wait returned: Tornado's `IOLoop.time()`, read once a turn.
    now: Instant,
    stopped: bool,
    /// epoll_ctl calls since the counters last heard of them.
    ctl_calls: u64,
}

/// How another thread reaches the loop: a queue, and an eventfd the loop watches.
struct Waker<S> {
    fd: EventFd,
    queue: Mutex<Vec<RemoteCallback<S>>>,
    /// Writes to the eventfd (from other threads) not yet counted.
    writes: AtomicU64,
}

/// A handle other threads may keep: `add_callback` is the one thread-safe call.
pub struct LoopHandle<S> {
    waker: Arc<Waker<S>>,
}
// ANCHOR_END: ioloop

const WAKER: u64 = u64::MAX;

// ANCHOR: state
/// The HTTP server on the loop: what its handlers share.
struct App {
    listener: TcpListener,
    acceptor: Acceptor,
    /// By descriptor: the connection and its serial number (a descriptor is reused
    /// after a close; an executor's answer must not reach the next connection).
    conns: HashMap<RawFd, (u64, Conn)>,
    next_serial: u64,
    executor: Option<Executor>,
    waits: Waits,
    /// The connections' clocks (header and idle timeouts), and the deadline a
    /// `call_at` is set for.
    timers: Timers,
    armed: Option<Instant>,
    server: Arc<Server>,
}
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    listener.set_nonblocking(true)?;
    let executor = match server.config.executor {
        0 => None,
        n => Some(Executor::new(n, server)?),
    };
    let mut ioloop: IoLoop<App> = IoLoop::new()?;
    ioloop.add_handler(&listener, on_accept, EpollFlags::EPOLLIN)?;
    // A stop request makes this waker readable, and its handler stops the loop (as
    // Tornado's signal handler does with `add_callback_from_signal(io_loop.stop)`).
    let stop = server.waker()?;
    ioloop.add_handler(&*stop, |ioloop, _, _, _| ioloop.stop(), EpollFlags::EPOLLIN)?;
    let mut app = App {
        listener,
        acceptor: Acceptor::new(true)?,
        conns: HashMap::new(),
        next_serial: 0,
        executor,
        waits: server.config.waits,
        timers: Timers::new(&server.config),
        armed: None,
        server: Arc::clone(server),
    };
    // ANCHOR_END: setup
    ioloop.start(&mut app, &server.stats)
}

impl<S: 'static> IoLoop<S> {
    pub fn new() -> io::Result<IoLoop<S>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, WAKER))?;
        let waker = Arc::new(Waker {
            fd,
            queue: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
        });
        // A coroutine woken on another thread wakes the loop as `add_callback` does.
        let eventfd = Arc::clone(&waker);
        let coroutines = Coroutines::new(move || {
            eventfd.writes.fetch_add(1, Relaxed);
            let _ = eventfd.fd.write(1);
        });
        Ok(IoLoop {
            epoll,
            handlers: HashMap::new(),
            callbacks: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_callbacks: HashMap::new(),
            next_timer: 0,
            coroutines,
            waker,
            now: Instant::now(),
            stopped: false,
            ctl_calls: 0,
        })
    }

    // ANCHOR: handlers
    /// Call `handler` whenever `fd` is ready for `events` (level-triggered).
    pub fn add_handler(
        &mut self,
        fd: &impl AsFd,
        handler: Handler<S>,
        events: EpollFlags,
    ) -> io::Result<()> {
        let raw = fd.as_fd().as_raw_fd();
        self.ctl_calls += 1;
        self.epoll.add(fd, EpollEvent::new(events, raw as u64))?;
        self.handlers.insert(raw, handler);
        Ok(())
    }

    /// Change what `fd`'s handler is called for.
    pub fn update_handler(&mut self, fd: &impl AsFd, events: EpollFlags) -> io::Result<()> {
        let raw = fd.as_fd().as_raw_fd();
        self.ctl_calls += 1;
        self.epoll
            .modify(fd, &mut EpollEvent::new(events, raw as u64))?;
        Ok(())
    }

    /// Stop calling `fd`'s handler (before the descriptor is closed).
    pub fn remove_handler(&mut self, fd: &impl AsFd) {
        self.ctl_calls += 1;
        let _ = self.epoll.delete(fd);
        self.handlers.remove(&fd.as_fd().as_raw_fd());
    }
    // ANCHOR_END: handlers

    // ANCHOR: callbacks
    /// Run `callback` on the loop's next turn (from the loop's own thread).
    pub fn add_callback(&mut self, callback: impl FnOnce(&mut IoLoop<S>, &mut S) + 'static) {
        self.callbacks.push_back(Box::new(callback));
    }

    /// Run `callback` once `delay` has passed.
    pub fn call_later(
        &mut self,
        delay: Duration,
        callback: impl FnOnce(&mut IoLoop<S>, &mut S) + 'static,
    ) {
        self.call_at(self.now + delay, callback);
    }

    /// Run `callback` at `when`: the timer heap, ordered by time.
    pub fn call_at(
        &mut self,
        when: Instant,
        callback: impl FnOnce(&mut IoLoop<S>, &mut S) + 'static,
    ) {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.push(Reverse((when, id)));
        self.timer_callbacks.insert(id, Box::new(callback));
    }

    /// When this turn began (its wait returned).
    pub fn time(&self) -> Instant {
        self.now
    }

    /// A handle for other threads, whose `add_callback` wakes the loop.
    pub fn handle(&self) -> LoopHandle<S> {
        LoopHandle {
            waker: Arc::clone(&self.waker),
        }
    }

    /// Return from `start` after the current turn.
    pub fn stop(&mut self) {
        self.stopped = true;
    }
    // ANCHOR_END: callbacks

    // ANCHOR: start
    /// Run until `stop`: wait, call the ready handlers, run the callbacks and the timers.
    pub fn start(&mut self, state: &mut S, stats: &Stats) -> io::Result<()> {
        let mut events = vec![EpollEvent::empty(); 1024];
        while !self.stopped {
            // Callbacks queued now run next turn: a callback that adds one cannot starve
            // the descriptors.
            for _ in 0..self.callbacks.len() {
                let callback = self.callbacks.pop_front().expect("counted");
                callback(self, state);
            }
            let now = Instant::now();
            self.now = now;
            while let Some(&Reverse((when, id))) = self.timers.peek() {
                if when > now {
                    break;
                }
                self.timers.pop();
                if let Some(callback) = self.timer_callbacks.remove(&id) {
                    callback(self, state);
                }
            }
            // Coroutines whose wakers were woken (by the timers just run, say) go on.
            self.step_tasks(state);
            // Sleep until the next timer (rounded up to a whole millisecond, or the
            // wait would return just before it and spin), not at all if callbacks or
            // coroutines are waiting, and with no timer, until a descriptor or the
            // waker is ready.
            let woken = self.coroutines.any_woken();
            let timeout = if !self.callbacks.is_empty() || woken || self.stopped {
                EpollTimeout::ZERO
            } else {
                self.timers
                    .peek()
                    .map_or(EpollTimeout::NONE, |Reverse((when, _))| {
                        let left = when.saturating_duration_since(Instant::now());
                        let ms = left.as_micros().div_ceil(1000);
                        EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
                    })
            };
            // ANCHOR: wait
            stats.wait_begins("epoll_wait");
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            stats.waited(ready, ready);
            self.now = Instant::now();
            stats.ctl_calls(std::mem::take(&mut self.ctl_calls));
            stats.other_calls(self.waker.writes.swap(0, Relaxed));
            // ANCHOR_END: wait
            // ANCHOR: dispatch
            for event in &events[..ready] {
                if event.data() == WAKER {
                    stats.other_calls(1);
                    let _ = self.waker.fd.read();
                    let handed: Vec<_> = std::mem::take(&mut *self.waker.queue.lock().unwrap());
                    for callback in handed {
                        self.callbacks.push_back(callback);
                    }
                    continue;
                }
                let fd = event.data() as RawFd;
                // A handler removed earlier in this turn is not called.
                if let Some(&handler) = self.handlers.get(&fd) {
                    handler(self, state, fd, event.events());
                }
            }
            // ANCHOR_END: dispatch
        }
        Ok(())
    }
    // ANCHOR_END: start

    // ANCHOR: coroutines
    /// Run `coroutine` on this loop, and `done` with its result when it finishes:
    /// Tornado's `IOLoop.add_future`, with the coroutine started as `spawn_callback`
    /// starts one. Nothing runs yet; its first step comes on the next turn.
    pub fn spawn<T: 'static>(
        &mut self,
        coroutine: impl Future<Output = T> + 'static,
        done: impl FnOnce(&mut IoLoop<S>, &mut S, T) + 'static,
    ) {
        self.coroutines.spawn(async move {
            let result = coroutine.await;
            Box::new(move |ioloop: &mut IoLoop<S>, state: &mut S| done(ioloop, state, result))
                as Callback<S>
        });
    }

    /// `asyncio.sleep(delay)`: a future ready `delay` after this turn began, which asks
    /// this loop for a timer when it is polled.
    pub fn sleep(&self, delay: Duration) -> Sleep {
        self.coroutines.sleep(self.now + delay)
    }

    /// Poll every woken coroutine once: each runs until an `.await` that is not ready
    /// (it returns `Pending`, having left its waker with whatever will be ready), or
    /// to its end (then the loop calls its `done`).
    fn step_tasks(&mut self, state: &mut S) {
        for id in self.coroutines.woken() {
            if let Some(done) = self.coroutines.poll(id) {
                done(self, state);
            }
        }
        // The sleeps just polled want timers; a timer wakes its task, and the next
        // turn polls it again.
        for (when, waker) in self.coroutines.sleeps() {
            self.call_at(when, move |_, _| waker.wake());
        }
    }
    // ANCHOR_END: coroutines
}

// ANCHOR: waker
impl<S> LoopHandle<S> {
    /// Queue `callback` for the loop and wake it: safe from any thread.
    pub fn add_callback(&self, callback: impl FnOnce(&mut IoLoop<S>, &mut S) + Send + 'static) {
        self.waker.queue.lock().unwrap().push(Box::new(callback));
        // The eventfd becomes readable: the loop's epoll_wait returns.
        self.waker.writes.fetch_add(1, Relaxed);
        let _ = self.waker.fd.write(1);
    }
}
// ANCHOR_END: waker

// ANCHOR: accept
/// The listener's handler: take every waiting connection, and give each a handler.
/// Past the cap, the longest-idle keep-alive connection makes room (as nginx reuses
/// one); with none idle, a 503.
fn on_accept(ioloop: &mut IoLoop<App>, app: &mut App, _fd: RawFd, _events: EpollFlags) {
    let App {
        listener,
        acceptor,
        conns,
        timers,
        server,
        ..
    } = app;
    let stats = &server.stats;
    let mut admitted = Vec::new();
    for newcomer in acceptor.incoming(listener, server) {
        let make_room = || match timers.longest_idle() {
            Some(fd) => {
                let (_, mut conn) = conns.remove(&(fd as RawFd)).expect("conn is present");
                ioloop.remove_handler(&conn.stream);
                conn.evict(Evicted::Overload, stats);
                conn.close(stats);
                true
            }
            None => false,
        };
        let Some(mut conn) = newcomer.admit(make_room, stats) else {
            continue;
        };
        // Work is handed back to us (`start_work`), not run inside the read.
        conn.offload = true;
        if let Err(e) = ioloop.add_handler(&conn.stream, on_conn, EpollFlags::EPOLLIN) {
            eprintln!("iomodels: epoll_ctl(ADD) failed: {e}; closing the connection");
            conn.refuse(stats);
            continue;
        }
        conn.registered = Interest::READ;
        app.next_serial += 1;
        admitted.push(conn.fd());
        conns.insert(conn.fd(), (app.next_serial, conn));
    }
    // A new connection's header clock starts now.
    for fd in admitted {
        settle(ioloop, app, fd);
    }
}
// ANCHOR_END: accept

// ANCHOR: readable
/// The connection's handler: read, answer, and start any work the answer waits for.
fn on_conn(ioloop: &mut IoLoop<App>, app: &mut App, fd: RawFd, events: EpollFlags) {
    let Some((_, conn)) = app.conns.get_mut(&fd) else {
        return;
    };
    let stats = &app.server.stats;
    let broken = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
    if events.intersects(EpollFlags::EPOLLIN | broken) && conn.wants_read() {
        conn.read(stats);
    } else if events.intersects(broken) {
        // Hung up while its work runs (no reading then): the answer has nowhere to go.
        conn.broke();
    }
    start_work(ioloop, app, fd);
    if let Some((_, conn)) = app.conns.get_mut(&fd) {
        writable(conn, &app.server.stats);
    }
    settle(ioloop, app, fd);
}
// ANCHOR_END: readable

// ANCHOR: writable
/// Send what is pending: at once after a read (the socket buffer is almost always
/// free), and whenever the loop reports the socket writable.
fn writable(conn: &mut Conn, stats: &Stats) {
    if conn.wants_write() {
        conn.write(stats);
    }
}
// ANCHOR_END: writable

// ANCHOR: start_work
/// Start the work the handler's answer waits for, one of three ways. Work run on the
/// loop itself (no executor) is done at once, and the handler goes on with the input
/// behind it.
fn start_work(ioloop: &mut IoLoop<App>, app: &mut App, fd: RawFd) {
    loop {
        let Some((serial, conn)) = app.conns.get_mut(&fd) else {
            return;
        };
        let serial = *serial;
        let Some(work) = conn.start_work() else {
            return;
        };
        match (work, app.waits, &app.executor) {
            // A callback: a timer on the loop sends the answer.
            (Work::Wait(delay), Waits::Callback, _) => {
                ioloop.call_later(delay, move |ioloop, app| {
                    work_done(ioloop, app, fd, serial);
                });
            }
            // A coroutine: it awaits a sleep; the loop polls it again when the sleep's
            // timer wakes it, and sends the answer when it is done.
            (Work::Wait(delay), Waits::Coroutine, _) => {
                let sleep = ioloop.sleep(delay);
                ioloop.spawn(answer_later(sleep), move |ioloop, app, ()| {
                    work_done(ioloop, app, fd, serial);
                });
            }
            // A thread: the executor's, blocked in the work while the loop goes on.
            (work, _, Some(executor)) => run_in_executor(ioloop, executor, fd, serial, work),
            // No executor: the loop itself blocks, and every connection waits with it.
            (work, _, None) => {
                run_work(work);
                conn.finish_work(&app.server.stats);
                continue;
            }
        }
        return;
    }
}

/// The coroutine of `--waits coroutine`: what Tornado writes as
/// `async def get(self): await gen.sleep(delay); self.write(...)`. The answer is
/// written already (the shared handler wrote it); the coroutine is the wait.
async fn answer_later(sleep: Sleep) {
    sleep.await;
}
// ANCHOR_END: start_work

// ANCHOR: run_in_executor
/// Tornado's `IOLoop.run_in_executor`: run `work` on a pool thread, then come back to
/// the loop (through the waker) to send the answer the work held back.
fn run_in_executor(
    ioloop: &mut IoLoop<App>,
    executor: &Executor,
    fd: RawFd,
    serial: u64,
    work: Work,
) {
    let handle = ioloop.handle();
    executor.submit(move || {
        run_work(work);
        handle.add_callback(move |ioloop, app| work_done(ioloop, app, fd, serial));
    });
}

/// Back on the loop: the answer may go.
fn work_done(ioloop: &mut IoLoop<App>, app: &mut App, fd: RawFd, serial: u64) {
    let Some((current, conn)) = app.conns.get_mut(&fd) else {
        return; // closed while the work ran
    };
    if *current != serial {
        return; // the descriptor now belongs to another connection
    }
    conn.finish_work(&app.server.stats);
    // A pipelined request behind it may ask for more.
    start_work(ioloop, app, fd);
    if let Some((_, conn)) = app.conns.get_mut(&fd) {
        writable(conn, &app.server.stats);
    }
    settle(ioloop, app, fd);
}
// ANCHOR_END: run_in_executor

// ANCHOR: close
/// Close a finished connection, or watch for what it wants now (writability only while
/// output is pending, as epoll-lt).
fn settle(ioloop: &mut IoLoop<App>, app: &mut App, fd: RawFd) {
    let Some((_, conn)) = app.conns.get_mut(&fd) else {
        return;
    };
    if conn.is_done() {
        app.timers.forget(fd as usize);
        let (_, conn) = app.conns.remove(&fd).expect("conn is present");
        ioloop.remove_handler(&conn.stream);
        conn.close(&app.server.stats);
        return;
    }
    app.timers.watch(fd as usize, conn.clock(), ioloop.time());
    let interest = conn.interest();
    if interest != conn.registered {
        let mut events = EpollFlags::empty();
        if interest.read {
            events |= EpollFlags::EPOLLIN;
        }
        if interest.write {
            events |= EpollFlags::EPOLLOUT;
        }
        if ioloop.update_handler(&conn.stream, events).is_ok() {
            conn.registered = interest;
        }
    }
    arm(ioloop, app);
}

/// Keep a timer on the loop's heap for the nearest connection deadline. (Tornado sets a
/// timeout per request with `gen.with_timeout`; one `call_at` for the nearest of the
/// shared clocks does the same work with one heap entry.)
fn arm(ioloop: &mut IoLoop<App>, app: &mut App) {
    let Some(nearest) = app.timers.nearest() else {
        return;
    };
    if app.armed.is_some_and(|armed| armed <= nearest) {
        return;
    }
    app.armed = Some(nearest);
    ioloop.call_at(nearest, move |ioloop, app| {
        if app.armed == Some(nearest) {
            app.armed = None;
        }
        // Close what ran out (a 408 where a header was cut short), then set the next.
        while let Some((fd, why)) = app.timers.expired(ioloop.time()) {
            if let Some((_, conn)) = app.conns.get_mut(&(fd as RawFd)) {
                conn.evict(why, &app.server.stats);
                settle(ioloop, app, fd as RawFd);
            }
        }
        arm(ioloop, app);
    });
}
// ANCHOR_END: close
