//! One load-generating thread: an epoll loop over its share of the connections.
//!
//! A run has two phases. The ramp: connections are opened at the connect rate (idle ones
//! first, each checked with one real request), and the thread waits for the others.
//! The run: from the common start, active connections send requests (closed loop: keep
//! `pipeline` in flight; open loop: on a schedule) until the end; idle ones stay silent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::{clock_gettime, ClockId as Clock};
use socket2::{Domain, Socket, Type};

mod events;
mod failures;

use crate::config::{Config, Proto};
use crate::response::{echo_byte, Reader};
use crate::schedule::Schedule;
use crate::tally::{ErrorClass, Tally};
use crate::window::Window;

/// What the threads share: progress for the display, and the common start.
#[derive(Default)]
pub struct Shared {
    pub established: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Answers and errors so far, for the progress line.
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub ready: AtomicU64,
    /// Set by the main thread once every thread is ready.
    pub start: Mutex<Start>,
    pub go: Condvar,
    /// Set by the main thread once the window's end has been reported to the caller
    /// (who samples the server then): until then the threads keep their connections
    /// open, so that the sample does not see our own teardown.
    pub released: Mutex<bool>,
    pub release: Condvar,
}

/// What the threads wait for after the ramp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// Not every thread is ready yet.
    #[default]
    Waiting,
    /// Everyone starts at this instant.
    At(Instant),
    /// The ramp failed: nobody runs.
    Abort,
}

impl Shared {
    /// Keep the connections until the main thread has reported the window's end.
    fn hold_until_released(&self) {
        let released = self.released.lock().unwrap();
        let _ = self
            .release
            .wait_timeout_while(released, Duration::from_secs(10), |r| !*r)
            .unwrap();
    }

    /// Let the threads close their connections and return.
    pub fn release_threads(&self) {
        *self.released.lock().unwrap() = true;
        self.release.notify_all();
    }
}

/// One thread's share of the run.
pub struct Plan {
    pub idle: usize,
    pub active: usize,
    /// Global index of this thread's first active connection (open-loop staggering).
    pub first_active: usize,
    /// Global index of this thread's first connection (source address round robin).
    pub first_conn: usize,
    pub connect_rate: f64,
}

const TIMER: u64 = u64::MAX;
const READ_CHUNK: usize = 64 * 1024;
/// How often timeouts are looked for and progress published.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// During the ramp: how often every connection is looked at, and how many may be
/// unsettled (connecting, or awaiting their check) at once, per thread.
const RAMP_LOOK: Duration = Duration::from_millis(20);
const UNSETTLED: usize = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Idle,
    Active,
}

struct Req {
    /// Open loop: when the schedule said to send; closed loop: when it was sent.
    intended: Instant,
    sent: Instant,
    /// Sent inside the measured window: it counts.
    measured: bool,
}

/// What a slot keeps across reconnects.
struct Slot {
    role: Role,
    /// Bumped on every (re)connect, so an event for an old socket is not applied to the new.
    generation: u32,
}

struct Conn {
    stream: TcpStream,
    connecting: Option<Instant>,
    out: Vec<u8>,
    out_pos: usize,
    /// EPOLLOUT is armed.
    armed: bool,
    input: Vec<u8>,
    reader: Reader,
    in_flight: VecDeque<Req>,
    /// Echo: sequence number of the next message sent.
    echo_seq: u64,
    /// Idle: the check request was answered.
    checked: bool,
    /// The server will close after its last answer (`Connection: close`).
    closing: bool,
}

struct Worker<'a> {
    config: &'a Config,
    plan: &'a Plan,
    shared: &'a Shared,
    epoll: Epoll,
    timer: TimerFd,
    conns: Vec<Option<Conn>>,
    slots: Vec<Slot>,
    request: Vec<u8>,
    scratch: Vec<u8>,
    tally: Tally,
    /// Open loop: free connections by next due time.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    schedules: Vec<Schedule>,
    /// Reconnects waiting for their time.
    retry: Vec<(Instant, usize)>,
    /// None during the ramp; the measured window once the run has started.
    window: Option<Window>,
    published: (u64, u64),
    /// Connections established and not yet closed (kept as a count: scanning 10k
    /// connections per answer would make the generator the bottleneck).
    open_now: u64,
}

/// Run one thread's share; returns its tally, or why it could not run.
pub fn run(config: &Config, plan: &Plan, shared: &Shared) -> io::Result<Tally> {
    let mut w = Worker {
        config,
        plan,
        shared,
        epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        timer: TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?,
        conns: Vec::with_capacity(plan.idle + plan.active),
        slots: Vec::with_capacity(plan.idle + plan.active),
        request: match config.proto {
            Proto::Http => format!(
                "GET {} HTTP/1.{}\r\nHost: {}\r\n\r\n",
                config.path,
                u8::from(config.keep_alive),
                config.target
            )
            .into_bytes(),
            Proto::Echo => Vec::new(),
        },
        scratch: vec![0; READ_CHUNK],
        tally: Tally {
            idle_requested: plan.idle as u64,
            active_requested: plan.active as u64,
            ..Tally::default()
        },
        due: BinaryHeap::new(),
        schedules: Vec::new(),
        retry: Vec::new(),
        window: None,
        published: (0, 0),
        open_now: 0,
    };
    w.epoll
        .add(&w.timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
    w.ramp()?;
    let start = {
        w.shared.ready.fetch_add(1, Relaxed);
        let mut start = w.shared.start.lock().unwrap();
        while *start == Start::Waiting {
            start = w.shared.go.wait(start).unwrap();
        }
        *start
    };
    if let Start::At(start) = start {
        w.run(start)?;
        w.shared.hold_until_released();
    }
    Ok(w.tally)
}

impl Worker<'_> {
    // ---- the ramp --------------------------------------------------------------------

    fn ramp(&mut self) -> io::Result<()> {
        let total = self.plan.idle + self.plan.active;
        let begun = Instant::now();
        let mut opened = 0;
        // Connections not yet settled (connecting, or an idle one awaiting its check),
        // as of the last look, and how many were opened since.
        let (mut unsettled, mut opened_since) = (0, 0);
        let mut last_look = begun;
        let mut events = vec![EpollEvent::empty(); 1024];
        loop {
            // Open what the connect rate allows by now, but never more than
            // UNSETTLED at once: a ramp faster than the server (or this thread) can
            // complete would only time out.
            let allowed = (begun.elapsed().as_secs_f64() * self.plan.connect_rate) as usize + 1;
            let room = UNSETTLED.saturating_sub(unsettled + opened_since);
            while opened < total.min(allowed).min(opened + room) {
                let role = if opened < self.plan.idle {
                    Role::Idle
                } else {
                    Role::Active
                };
                self.open(role, self.plan.first_conn + opened, None)?;
                opened += 1;
                opened_since += 1;
            }
            let n = wait(&self.epoll, &mut events, Duration::from_millis(10))?;
            for event in &events[..n] {
                self.event(event, Instant::now());
            }
            // The look over every connection is O(n): a few times a second, not per event.
            let now = Instant::now();
            if now - last_look >= RAMP_LOOK {
                last_look = now;
                self.check_timeouts(now);
                self.publish();
                unsettled = self.unsettled();
                opened_since = 0;
                if opened == total && unsettled == 0 {
                    return Ok(());
                }
            }
        }
    }

    /// Connections still connecting, or idle ones whose check is not yet answered.
    fn unsettled(&self) -> usize {
        let conns = self.conns.iter().zip(&self.slots);
        conns
            .filter(|(c, slot)| {
                c.as_ref().is_some_and(|c| {
                    c.connecting.is_some() || (slot.role == Role::Idle && !c.checked)
                })
            })
            .count()
    }

    /// Open connection `index` (global, for the source address) in slot `slot`, or a new
    /// slot. Connecting is asynchronous: writability says it is done.
    fn open(&mut self, role: Role, index: usize, slot: Option<usize>) -> io::Result<()> {
        let target = self.config.target;
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        if !self.config.source_addrs.is_empty() {
            let source = self.config.source_addrs[index % self.config.source_addrs.len()];
            bind_source(&socket, source)?;
        }
        match socket.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {}
            Err(e) => return Err(e),
        }
        let stream: TcpStream = socket.into();
        let slot = slot.unwrap_or_else(|| {
            self.conns.push(None);
            self.slots.push(Slot {
                role,
                generation: 0,
            });
            self.conns.len() - 1
        });
        self.slots[slot].generation = self.slots[slot].generation.wrapping_add(1);
        let generation = self.slots[slot].generation;
        let token = token(slot, generation);
        self.epoll.add(
            &stream,
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, token),
        )?;
        self.conns[slot] = Some(Conn {
            stream,
            connecting: Some(Instant::now()),
            out: Vec::new(),
            out_pos: 0,
            armed: true,
            input: Vec::new(),
            reader: match self.config.proto {
                Proto::Http => Reader::http(),
                Proto::Echo => Reader::echo(self.config.size),
            },
            in_flight: VecDeque::new(),
            echo_seq: 0,
            checked: false,
            closing: false,
        });
        Ok(())
    }

    // ---- the run ---------------------------------------------------------------------

    fn run(&mut self, start: Instant) -> io::Result<()> {
        // Every thread starts at the same instant, set a little ahead by the main thread.
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
        let window = Window::after(start, self.config.warmup, self.config.duration);
        self.window = Some(window);
        // An active connection the server closed while we waited is replaced first.
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_none() && self.slots[slot].role == Role::Active {
                self.reconnect(slot, start);
            }
        }
        // Start every active connection.
        if let Some(rate) = self.config.rate {
            let per_conn = rate / self.config.connections as f64;
            for slot in 0..self.conns.len() {
                if self.slots[slot].role == Role::Active {
                    let n = self.schedules.len();
                    let global = self.plan.first_active + n;
                    let schedule = Schedule::new(start, per_conn, global, self.config.connections);
                    self.due.push(Reverse((schedule.next(), slot)));
                    self.schedules.push(schedule);
                }
            }
        } else {
            let now = Instant::now();
            for slot in 0..self.conns.len() {
                self.fill_pipeline(slot, now);
            }
        }
        let mut events = vec![EpollEvent::empty(); 1024];
        let mut cpu_from = None;
        let mut last_housekeeping = Instant::now();
        loop {
            let now = Instant::now();
            if cpu_from.is_none() && window.opened_by(now) {
                cpu_from = Some(thread_cpu());
            }
            if now >= window.end {
                break;
            }
            self.send_due(now);
            let mut wait_for = (window.end - now).min(HOUSEKEEPING);
            if let Some(Reverse((due, _))) = self.due.peek() {
                let until = due.saturating_duration_since(Instant::now());
                if until.is_zero() {
                    continue;
                }
                // epoll_wait counts in milliseconds; the timer fd wakes us to the ns.
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(until)),
                    TimerSetTimeFlags::empty(),
                )?;
                wait_for = wait_for.min(until + Duration::from_millis(1));
            }
            let n = wait(&self.epoll, &mut events, wait_for)?;
            for event in &events[..n] {
                self.event(event, Instant::now());
            }
            let now = Instant::now();
            if now - last_housekeeping >= HOUSEKEEPING {
                last_housekeeping = now;
                self.check_timeouts(now);
                self.retry_due(now);
                self.publish();
            }
        }
        self.tally.cpu = thread_cpu().saturating_sub(cpu_from.unwrap_or_else(thread_cpu));
        self.tally.in_flight_at_end = self
            .conns
            .iter()
            .flatten()
            .flat_map(|c| c.in_flight.iter())
            .filter(|r| r.measured)
            .count() as u64;
        self.publish();
        Ok(())
    }

    /// Open loop: send every request whose time has come, on its free connection.
    fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((due, slot))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            if conn.connecting.is_some() || !conn.in_flight.is_empty() {
                continue; // pushed again when it is free
            }
            let index = self.schedule_index(slot);
            self.schedules[index].advance();
            self.send(slot, due, now);
        }
    }

    /// Closed loop: top the connection up to `pipeline` requests in flight.
    fn fill_pipeline(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns[slot].as_ref() else {
            return;
        };
        if self.slots[slot].role != Role::Active || conn.connecting.is_some() || conn.closing {
            return;
        }
        for _ in conn.in_flight.len()..self.config.pipeline {
            self.send(slot, now, now);
        }
    }

    fn send(&mut self, slot: usize, intended: Instant, now: Instant) {
        let measured = self.window.is_some_and(|w| w.contains(intended));
        let conn = self.conns[slot].as_mut().expect("conn is present");
        match self.config.proto {
            Proto::Http => conn.out.extend_from_slice(&self.request),
            Proto::Echo => {
                let seq = conn.echo_seq;
                conn.out
                    .extend((0..self.config.size).map(|i| echo_byte(seq, i)));
                conn.echo_seq += 1;
            }
        }
        conn.in_flight.push_back(Req {
            intended,
            sent: now,
            measured,
        });
        if measured {
            self.tally.sent += 1;
        }
        self.flush(slot);
    }

    /// Write what is pending; arm EPOLLOUT only while some is left.
    fn flush(&mut self, slot: usize) {
        let conn = self.conns[slot].as_mut().expect("conn is present");
        while conn.out_pos < conn.out.len() {
            match (&conn.stream).write(&conn.out[conn.out_pos..]) {
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let class = classify(&e);
                    self.fail(slot, class);
                    return;
                }
            }
        }
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        }
        let want = conn.out_pos < conn.out.len();
        if want != conn.armed {
            let mut flags = EpollFlags::EPOLLIN;
            if want {
                flags |= EpollFlags::EPOLLOUT;
            }
            let mut event = EpollEvent::new(flags, token(slot, self.slots[slot].generation));
            if self.epoll.modify(&conn.stream, &mut event).is_ok() {
                conn.armed = want;
            }
        }
    }
}

fn token(slot: usize, generation: u32) -> u64 {
    ((generation as u64) << 32) | slot as u64
}

fn untoken(token: u64) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

fn wait(epoll: &Epoll, events: &mut [EpollEvent], timeout: Duration) -> io::Result<usize> {
    let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
    match epoll.wait(events, EpollTimeout::from(ms)) {
        Ok(n) => Ok(n),
        Err(Errno::EINTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn classify(e: &io::Error) -> ErrorClass {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ErrorClass::Reset,
        io::ErrorKind::ConnectionAborted => ErrorClass::ClosedByServer,
        _ => ErrorClass::Reset,
    }
}

/// Connect from `source`. IP_BIND_ADDRESS_NO_PORT: take the port only at connect time,
/// so that a port is shared between different targets and not wasted at bind.
fn bind_source(socket: &Socket, source: IpAddr) -> io::Result<()> {
    if source.is_ipv4() {
        setsockopt(&socket.as_fd(), sockopt::IpBindAddressNoPort, &true)?;
    }
    socket.bind(&SocketAddr::new(source, 0).into())
}

fn thread_cpu() -> Duration {
    clock_gettime(Clock::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, |t| {
        Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
    })
}
