// ANCHOR: header
//! `io-uring`: asynchronous I/O. The loop does not wait for readiness and then read:
//! it asks the kernel to accept, receive and send, and learns when each is done.
//!
//! - What blocks: io_uring_enter(2), until some operation has completed. One call per
//!   turn hands the kernel every submission queued since the last, and takes back every
//!   completion: many operations per system call.
//! - Cost per wake-up: O(completed). The kernel does the reading itself, into buffers
//!   we handed it, and posts the results on a ring we share with it.
//! - As its practitioners write it (the io_uring maintainers' "io_uring and networking
//!   in 2023"): one multishot accept for the listener and one multishot receive per
//!   connection, each armed once and posting a completion per event; receives land in a
//!   ring of buffers provided to the kernel and shared by every connection, so an idle
//!   connection holds no buffer; one thread owns the ring (single issuer), and the
//!   kernel runs its deferred work only when we enter (deferred task running).
//! - `--uring-mode basic`: one receive per submission, into a buffer the connection owns
//!   for as long as it waits. The naive form, kept to measure what the 2023 form saves.
//! - Limit: the kernel must allow io_uring. A buffer in the kernel's hands belongs to
//!   the kernel until its completion comes back.
//! - Against epoll-et: the other half of the two phases. epoll says "you can read now"
//!   and we read; io_uring says "I have read, here are the bytes". The same connection
//!   code takes the bytes ([`Conn::received`]) and gives them ([`Conn::unsent`]).
// ANCHOR_END: header

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::accept::Acceptor;
use crate::conn::Conn;
use crate::server::{Server, UringMode};
use crate::stats::Stats;
use crate::timers::{Evicted, Timers};
use crate::trace::What;

// ANCHOR: state
/// Entries in the submission ring.
const RING: u32 = 4096;
/// The provided buffers: `BUFFERS` of `BUFFER_SIZE` bytes, shared by every connection
/// (4 MiB, however many connections there are).
const BUFFERS: u16 = 1024;
const BUFFER_SIZE: usize = 4096;
/// Their group id, as the receives name it.
const GROUP: u16 = 0;
/// `basic`: how much one receive asks for, into the connection's own buffer.
const RECV_CHUNK: usize = 16 * 1024;

/// What a completion is for: the low byte of its user data (the rest is the slot).
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const CANCEL: u64 = 4;
/// The nearest deadline's timeout operation (the rest of its user data: a sequence).
const TIMER: u64 = 5;
/// The stop waker became readable.
const WAKE: u64 = 6;

/// A connection and the operations it has in the kernel's hands.
struct Slot {
    conn: Conn,
    /// A receive is armed (multishot: until a completion without IORING_CQE_F_MORE).
    receiving: bool,
    /// `basic`: the buffer the armed receive fills; the kernel's until it completes.
    own_buffer: Option<Box<[u8]>>,
    /// The bytes of the send in flight: the kernel reads them until it completes.
    /// Kept between sends, so a send allocates nothing.
    sending: Option<Vec<u8>>,
    spare: Vec<u8>,
    /// Its receive has been called back (closing, or input full).
    cancelled: bool,
}

/// The ring, the connections by slot, and the provided buffers.
struct Uring {
    ring: IoUring,
    mode: UringMode,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    buffers: Option<BufferRing>,
    /// The slots' clocks; the time this turn began.
    timers: Timers,
    now: Instant,
    /// The deadline a timeout operation is armed for, and its sequence number; the
    /// time it waits, which the kernel reads when the operation is submitted.
    armed: Option<(Instant, u64)>,
    sequence: u64,
    wait: types::Timespec,
}
// ANCHOR_END: state

/// Whether this kernel gives us a ring: io_uring can be disabled
/// (kernel.io_uring_disabled) or filtered out (seccomp, containers).
pub fn available() -> Result<(), String> {
    IoUring::new(2).map(drop).map_err(|e| {
        format!(
            "io_uring is not available here: {e} (is kernel.io_uring_disabled set, or a \
             seccomp filter in the way?)"
        )
    })
}

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    let mode = server.config.uring_mode;
    let ring = new_ring(&server.stats)?;
    // Non-blocking, for the synchronous accept that sheds load on EMFILE.
    listener.set_nonblocking(true)?;
    let mut acceptor = Acceptor::new(true)?;
    let buffers = match mode {
        UringMode::Multishot => Some(BufferRing::new(&ring).map_err(|e| {
            io::Error::other(format!(
                "cannot register a provided buffer ring ({e}); it needs Linux 5.19 or later \
                 (use --uring-mode basic)"
            ))
        })?),
        UringMode::Basic => None,
    };
    let mut u = Uring {
        ring,
        mode,
        slots: Vec::new(),
        free: Vec::new(),
        buffers,
        timers: Timers::new(&server.config),
        now: Instant::now(),
        armed: None,
        sequence: 0,
        wait: types::Timespec::new(),
    };
    u.submit_accept(&listener, &server.stats)?;
    // A stop request makes the waker readable: a poll operation on it completes.
    let waker = server.waker()?;
    let poll = opcode::PollAdd::new(types::Fd(waker.fd()), libc::POLLIN as u32).build();
    push(&mut u.ring, poll.user_data(WAKE), &server.stats)?;
    let mut done: Vec<(u64, i32, u32)> = Vec::new();
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // One system call: hand the kernel everything queued since the last turn, and
        // sleep until at least one operation completes: a receive, a send, an accept,
        // the waker's poll, or the timeout set for the nearest deadline.
        server.stats.wait_begins("io_uring_enter");
        match u.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(
            u.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        server.stats.waited(done.len(), done.len());
        // One clock reading per turn, for every deadline the turn checks or starts.
        u.now = Instant::now();
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        for &(data, result, flags) in &done {
            let slot = (data >> 8) as usize;
            match data & 0xff {
                ACCEPT => u.accepted(result, flags, &listener, &mut acceptor, server)?,
                RECV => u.received(slot, result, flags, &server.stats),
                SEND => u.sent(slot, result, &server.stats),
                TIMER if u.armed.is_some_and(|(_, seq)| seq == slot as u64) => u.armed = None,
                // A cancel's own completion (the receive it cancelled reports), an
                // earlier timeout, or the waker (the loop's condition sees the stop).
                _ => {}
            }
        }
        // Then the deadlines: close what ran out, and time the next.
        u.expire(&server.stats);
        u.arm_timer(&server.stats)?;
        // ANCHOR_END: dispatch
    }
    Ok(())
}

/// A ring with what this kernel offers for a single-threaded loop, recorded in the
/// counters: single issuer (no locking on submission), deferred task running (the
/// kernel's completion work runs when we enter, not by interrupting us), else
/// cooperative task running; a plain ring where neither is known.
fn new_ring(stats: &Stats) -> io::Result<IoUring> {
    if let Ok(ring) = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING)
    {
        stats.feature("single-issuer");
        stats.feature("defer-taskrun");
        return Ok(ring);
    }
    if let Ok(ring) = IoUring::builder().setup_coop_taskrun().build(RING) {
        stats.feature("coop-taskrun");
        return Ok(ring);
    }
    IoUring::new(RING)
}

impl Uring {
    // ANCHOR: accept
    /// Ask for connections: one multishot accept posts a completion per connection until
    /// it ends; `basic` asks again after each.
    fn submit_accept(&mut self, listener: &TcpListener, stats: &Stats) -> io::Result<()> {
        let fd = types::Fd(listener.as_raw_fd());
        let (none, nowhere) = (std::ptr::null_mut(), std::ptr::null_mut());
        let accept = match self.mode {
            UringMode::Multishot => opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC)
                .build(),
            UringMode::Basic => opcode::Accept::new(fd, none, nowhere)
                .flags(libc::SOCK_CLOEXEC)
                .build(),
        };
        push(&mut self.ring, accept.user_data(ACCEPT), stats)
    }

    /// An accept completed: a new connection (`result` is its descriptor), or an error.
    fn accepted(
        &mut self,
        result: i32,
        flags: u32,
        listener: &TcpListener,
        acceptor: &mut Acceptor,
        server: &Server,
    ) -> io::Result<()> {
        let stats = &server.stats;
        if result == -libc::EMFILE || result == -libc::ENFILE {
            // Out of descriptors: turn away what waits, with the same spare-descriptor
            // trick as every other model. (No idle connection is closed for it: its
            // descriptor would be free only once its receive is called back, too late
            // for this accept. The cap, below the descriptor limit, makes room first.)
            for newcomer in acceptor.incoming(listener, server) {
                if let Some(conn) = newcomer.admit(|| false, stats) {
                    self.adopt(conn, stats);
                }
            }
        } else if result >= 0 {
            // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
            let stream = unsafe { TcpStream::from_raw_fd(result) };
            let _ = stream.set_nodelay(true);
            stats.other_calls(1);
            Stats::add(&stats.accepted, 1);
            stats.trace(|| What::Accept { fd: result });
            let conn = Conn::new(stream, server.config.proto);
            // Past the cap, the longest-idle keep-alive connection makes room (as nginx
            // reuses one); with none idle, a 503.
            let (cap, crowded) = (server.config.max_connections, stats.open());
            let crowded = crowded > cap as u64;
            if crowded {
                acceptor.at_cap(cap);
            }
            if crowded && !self.evict_idle(stats) {
                conn.refuse(stats);
            } else {
                self.adopt(conn, stats);
            }
        }
        // (Otherwise the client gave up while queued: nothing to adopt.)
        if !cqueue::more(flags) {
            self.submit_accept(listener, stats)?;
        }
        Ok(())
    }

    /// A new connection: a slot for it, and its first receive.
    fn adopt(&mut self, conn: Conn, stats: &Stats) {
        let slot = Slot {
            conn,
            receiving: false,
            own_buffer: None,
            sending: None,
            spare: Vec::new(),
            cancelled: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.pump(id, stats);
    }

    /// Close the longest-idle keep-alive connection for a newcomer; false if none is.
    fn evict_idle(&mut self, stats: &Stats) -> bool {
        let Some(id) = self.timers.longest_idle() else {
            return false;
        };
        if let Some(slot) = self.slots[id].as_mut() {
            slot.conn.evict(Evicted::Overload, stats);
            self.pump(id, stats);
        }
        true
    }
    // ANCHOR_END: accept

    // ANCHOR: readable
    /// A receive completed: `result` bytes (0: EOF; negative: an error), in a provided
    /// buffer named by the completion's flags, or in the slot's own buffer (`basic`).
    fn received(&mut self, id: usize, result: i32, flags: u32, stats: &Stats) {
        let Some(slot) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        // A multishot receive stays armed while its completions say MORE.
        if !cqueue::more(flags) {
            slot.receiving = false;
            slot.cancelled = false;
        }
        if let Some(bid) = cqueue::buffer_select(flags) {
            let buffers = self.buffers.as_mut().expect("multishot has its buffers");
            if result > 0 {
                slot.conn.received(buffers.get(bid, result as usize), stats);
            }
            // Copied out: the buffer goes straight back to the kernel.
            buffers.give_back(bid);
        } else if result > 0 {
            let buffer = slot
                .own_buffer
                .as_ref()
                .expect("basic receives into its own");
            slot.conn.received(&buffer[..result as usize], stats);
        }
        match result {
            0 => slot.conn.received(&[], stats),
            // Out of provided buffers, or called back: `pump` asks again if still wanted.
            e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {}
            e if e < 0 => slot.conn.broke(),
            _ => {}
        }
        self.pump(id, stats);
    }
    // ANCHOR_END: readable

    // ANCHOR: writable
    /// A send completed: `result` bytes went out.
    fn sent(&mut self, id: usize, result: i32, stats: &Stats) {
        let Some(slot) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let mut buffer = slot.sending.take().expect("a send was in flight");
        buffer.clear();
        slot.spare = buffer;
        if result >= 0 {
            slot.conn.sent(result as usize, stats);
        } else {
            slot.conn.broke();
        }
        self.pump(id, stats);
    }
    // ANCHOR_END: writable

    // ANCHOR: pump
    /// Give the kernel the next operations this connection wants, or close it.
    fn pump(&mut self, id: usize, stats: &Stats) {
        let Uring {
            ring,
            mode,
            slots,
            timers,
            now,
            ..
        } = self;
        let slot = slots[id].as_mut().expect("slot is present");
        if slot.conn.is_done() {
            return self.close(id, stats);
        }
        let fd = types::Fd(slot.conn.fd());
        let mut pushed = Ok(());
        if slot.conn.wants_write() && slot.sending.is_none() {
            // The kernel reads the bytes while the connection may take more input and
            // append to its output: it gets a copy, in a buffer kept for the next send.
            let mut buffer = std::mem::take(&mut slot.spare);
            buffer.extend_from_slice(slot.conn.unsent());
            let send = opcode::Send::new(fd, buffer.as_ptr(), buffer.len() as u32).build();
            slot.sending = Some(buffer);
            pushed = pushed.and(push(ring, send.user_data(data(id, SEND)), stats));
        }
        if slot.conn.wants_read() && !slot.receiving {
            slot.receiving = true;
            let recv = match mode {
                UringMode::Multishot => opcode::RecvMulti::new(fd, GROUP).build(),
                UringMode::Basic => {
                    let buffer = slot
                        .own_buffer
                        .get_or_insert_with(|| vec![0; RECV_CHUNK].into_boxed_slice());
                    let len = slot.conn.room().min(buffer.len()) as u32;
                    opcode::Recv::new(fd, buffer.as_mut_ptr(), len).build()
                }
            };
            pushed = pushed.and(push(ring, recv.user_data(data(id, RECV)), stats));
        } else if !slot.conn.wants_read() && slot.receiving && !slot.cancelled {
            // Input full (its answers wait for a slow reader): stop the multishot
            // receive, or it would go on filling the input. What is already in flight
            // still arrives, so the input overshoots its bound by at most that.
            slot.cancelled = true;
            let cancel = opcode::AsyncCancel::new(data(id, RECV)).build();
            pushed = pushed.and(push(ring, cancel.user_data(data(id, CANCEL)), stats));
        }
        if pushed.is_err() {
            slot.conn.broke();
        }
        timers.watch(id, slot.conn.clock(), *now);
    }

    /// Close every connection whose time ran out (a 408 where a header was cut short).
    fn expire(&mut self, stats: &Stats) {
        while let Some((id, why)) = self.timers.expired(self.now) {
            if let Some(slot) = self.slots[id].as_mut() {
                slot.conn.evict(why, stats);
                self.pump(id, stats);
            }
        }
    }

    /// Keep a timeout operation in the kernel for the nearest deadline: it completes
    /// then, and the wait returns. Set anew only when a deadline comes before it (an
    /// earlier one left in flight just wakes the loop once, for nothing).
    fn arm_timer(&mut self, stats: &Stats) -> io::Result<()> {
        let Some(nearest) = self.timers.nearest() else {
            return Ok(());
        };
        if self.armed.is_some_and(|(armed, _)| armed <= nearest) {
            return Ok(());
        }
        self.sequence += 1;
        self.armed = Some((nearest, self.sequence));
        self.wait = types::Timespec::from(nearest.saturating_duration_since(self.now));
        let timeout = opcode::Timeout::new(&self.wait).build();
        push(
            &mut self.ring,
            timeout.user_data(data(self.sequence as usize, TIMER)),
            stats,
        )
    }
    // ANCHOR_END: pump

    // ANCHOR: close
    /// A finished connection: close it once nothing of it is in flight (the kernel may
    /// still write into a pending receive's buffer, or read a send's).
    fn close(&mut self, id: usize, stats: &Stats) {
        self.timers.forget(id);
        let slot = self.slots[id].as_mut().expect("slot is present");
        if slot.receiving {
            // A receive waits for data that will never be read: call it back, and close
            // when its last completion comes.
            if !slot.cancelled {
                slot.cancelled = true;
                let cancel = opcode::AsyncCancel::new(data(id, RECV)).build();
                let _ = push(&mut self.ring, cancel.user_data(data(id, CANCEL)), stats);
            }
            return;
        }
        if slot.sending.is_none() {
            let slot = self.slots[id].take().expect("slot is present");
            self.free.push(id);
            slot.conn.close(stats);
        }
    }
    // ANCHOR_END: close
}

/// Queue an operation for the next io_uring_enter: no system call here, unless the
/// submission ring is full.
fn push(ring: &mut IoUring, entry: squeue::Entry, stats: &Stats) -> io::Result<()> {
    // SAFETY: every pointer in an entry points into memory that stays put and alive
    // until the entry's completion: a slot's buffers (kept in the slot, which is freed
    // only once nothing of it is in flight) or the provided buffer ring.
    if unsafe { ring.submission().push(&entry) }.is_err() {
        // Full: hand the kernel what is queued, then push again.
        ring.submit()?;
        stats.other_calls(1);
        // SAFETY: as above.
        unsafe { ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("the submission ring stays full"))?;
    }
    Ok(())
}

/// The user data of an operation: its slot, and what it is.
fn data(slot: usize, kind: u64) -> u64 {
    (slot as u64) << 8 | kind
}

// ANCHOR: buffers
/// Buffers provided to the kernel: a ring of (address, length, id) entries we fill and
/// the kernel consumes, one buffer per receive completion. We give a buffer back by
/// writing its entry at the tail and publishing the tail.
struct BufferRing {
    entries: *mut BufRingEntry,
    layout: Layout,
    memory: Box<[u8]>,
    tail: u16,
}

impl BufferRing {
    fn new(ring: &IoUring) -> io::Result<BufferRing> {
        // The entries must be page-aligned.
        let layout = Layout::from_size_align(BUFFERS as usize * size_of::<BufRingEntry>(), 4096)
            .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc_zeroed(layout) } as *mut BufRingEntry;
        if entries.is_null() {
            return Err(io::Error::other("cannot allocate the buffer ring"));
        }
        // Zeroed, not touched: only the pages the kernel receives into become resident.
        let mut buffers = BufferRing {
            entries,
            layout,
            memory: vec![0; BUFFERS as usize * BUFFER_SIZE].into_boxed_slice(),
            tail: 0,
        };
        for bid in 0..BUFFERS {
            buffers.give_back(bid);
        }
        // SAFETY: `entries` is page-aligned, BUFFERS long, and lives (in `buffers`) as
        // long as the ring: the ring is dropped first (it is declared first in `Uring`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFFERS, GROUP, 0)?;
        }
        Ok(buffers)
    }

    /// The first `len` bytes of buffer `bid`, as the kernel filled them.
    fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * BUFFER_SIZE;
        &self.memory[start..start + len.min(BUFFER_SIZE)]
    }

    /// Hand buffer `bid` to the kernel again.
    fn give_back(&mut self, bid: u16) {
        let index = (self.tail & (BUFFERS - 1)) as usize;
        let addr = self.memory[bid as usize * BUFFER_SIZE..].as_ptr() as u64;
        // SAFETY: `index` < BUFFERS, inside the allocation; the kernel reads this entry
        // only once the tail below says it is there.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside the first entry, which the kernel reads
        // atomically; a release store publishes the entry written above.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is gone.
        unsafe { dealloc(self.entries as *mut u8, self.layout) };
    }
}
// ANCHOR_END: buffers
