// ANCHOR: header
//! `io-uring`: asynchronous I/O. The loop does not wait for readiness and then read:
//! it asks the kernel to accept, receive and send, and learns when each is done.
//!
//! - What blocks: io_uring_enter(2), until some operation has completed.
//! - Cost per wake-up: O(completed). Submissions and completions pass through two
//!   rings shared with the kernel, many per system call; the kernel does the copying
//!   itself, into buffers we handed it.
//! - Limit: the buffers. A receive's buffer belongs to the kernel until its completion
//!   comes back, so each pending operation owns its buffer here (`Op`), never the
//!   connection: a connection can close while the kernel still holds one.
//! - Against epoll-et: the other half of the two phases. epoll says "you can read now"
//!   and we read; io_uring says "I have read, here are the bytes". The same connection
//!   code takes the bytes ([`Conn::received`]) and gives them ([`Conn::unsent`]).
// ANCHOR_END: header

use std::collections::HashMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};

use crate::conn::{Acceptor, Conn, WAIT_TIMEOUT};
use crate::server::Server;
use crate::stats::Stats;

// ANCHOR: state
/// Entries in the submission ring.
const RING: u32 = 1024;
/// How much one receive asks for.
const RECV_CHUNK: usize = 16 * 1024;

/// An operation the kernel holds, with whatever memory it was given.
enum Op {
    Accept,
    Recv {
        conn: u64,
        buf: Box<[u8]>,
    },
    /// `_buf` is never read here: the kernel reads it, and it must live until then.
    Send {
        conn: u64,
        _buf: Box<[u8]>,
    },
    Cancel,
}

/// A connection and the operations it has in flight.
struct Slot {
    conn: Conn,
    recv: Option<u64>,
    send: Option<u64>,
    /// The pending receive has been called back (closing).
    cancelled: bool,
}

/// The ring, the operations in flight by key, and the connections by serial number.
struct Uring {
    ring: IoUring,
    ops: HashMap<u64, Op>,
    next_op: u64,
    slots: HashMap<u64, Slot>,
    next_conn: u64,
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
    let ring = IoUring::new(RING)?;
    // Non-blocking, for the synchronous accept that sheds load on EMFILE.
    listener.set_nonblocking(true)?;
    let mut acceptor = Acceptor::new(true)?;
    let mut u = Uring {
        ring,
        ops: HashMap::new(),
        next_op: 0,
        slots: HashMap::new(),
        next_conn: 0,
    };
    u.submit_accept(&listener)?;
    let tick = types::Timespec::from(WAIT_TIMEOUT);
    let args = types::SubmitArgs::new().timespec(&tick);
    // ANCHOR_END: setup

    while !server.stopping() {
        // ANCHOR: wait
        // Hand the kernel what was queued, and sleep until at least one completes.
        match u.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        let done: Vec<(u64, i32)> = u
            .ring
            .completion()
            .map(|cqe| (cqe.user_data(), cqe.result()))
            .collect();
        server.stats.waited(done.len(), done.len());
        // ANCHOR_END: wait

        // ANCHOR: dispatch
        for (key, result) in done {
            let Some(op) = u.ops.remove(&key) else {
                continue;
            };
            match op {
                Op::Accept => {
                    u.accepted(result, &listener, &mut acceptor, server)?;
                    u.submit_accept(&listener)?;
                }
                Op::Recv { conn, buf } => u.received(conn, key, result, &buf, &server.stats),
                Op::Send { conn, .. } => u.sent(conn, key, result, &server.stats),
                Op::Cancel => {}
            }
        }
        // ANCHOR_END: dispatch
    }
    Ok(())
}

impl Uring {
    /// Queue an operation; its memory (`op`) is kept until the completion comes.
    fn push(&mut self, entry: squeue::Entry, op: Op) -> io::Result<u64> {
        let key = self.next_op;
        self.next_op += 1;
        let entry = entry.user_data(key);
        // SAFETY: every pointer in `entry` points into `op`'s boxed buffer (or is null),
        // and `op` is stored in `self.ops` until the completion for `key` is taken: the
        // memory stays put and alive for as long as the kernel may use it.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The ring is full: hand the kernel what is queued, then push again.
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("the submission ring stays full"))?;
        }
        self.ops.insert(key, op);
        Ok(key)
    }

    // ANCHOR: accept
    fn submit_accept(&mut self, listener: &TcpListener) -> io::Result<()> {
        let accept = opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        self.push(accept, Op::Accept)?;
        Ok(())
    }

    /// An accept completed: a new connection (`result` is its descriptor), or an error.
    fn accepted(
        &mut self,
        result: i32,
        listener: &TcpListener,
        acceptor: &mut Acceptor,
        server: &Server,
    ) -> io::Result<()> {
        if result == -libc::EMFILE || result == -libc::ENFILE {
            // Out of descriptors: shed what waits, with the same spare-descriptor trick
            // as every other model, rather than resubmit into the same failure.
            for conn in acceptor.incoming(listener, server) {
                self.adopt(conn, &server.stats);
            }
            return Ok(());
        }
        if result < 0 {
            return Ok(()); // the client gave up while queued: accept the next
        }
        // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
        let stream = unsafe { TcpStream::from_raw_fd(result) };
        let _ = stream.set_nodelay(true);
        Stats::add(&server.stats.accepted, 1);
        self.adopt(Conn::new(stream, server.config.proto), &server.stats);
        Ok(())
    }

    /// A new connection: keep it, and ask for its first receive.
    fn adopt(&mut self, conn: Conn, stats: &Stats) {
        let id = self.next_conn;
        self.next_conn += 1;
        let slot = Slot {
            conn,
            recv: None,
            send: None,
            cancelled: false,
        };
        self.slots.insert(id, slot);
        self.pump(id, stats);
    }
    // ANCHOR_END: accept

    // ANCHOR: readable
    /// A receive completed: `result` bytes are in `buf` (0: EOF; negative: an error).
    fn received(&mut self, id: u64, key: u64, result: i32, buf: &[u8], stats: &Stats) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.recv = slot.recv.filter(|&k| k != key);
        match result {
            n if n > 0 => slot.conn.received(&buf[..n as usize], stats),
            0 => slot.conn.received(&[], stats),
            e if e == -libc::ECANCELED => {}
            _ => slot.conn.broke(),
        }
        self.pump(id, stats);
    }

    // ANCHOR_END: readable

    // ANCHOR: writable
    /// A send completed: `result` bytes went out.
    fn sent(&mut self, id: u64, key: u64, result: i32, stats: &Stats) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.send = slot.send.filter(|&k| k != key);
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
    fn pump(&mut self, id: u64, stats: &Stats) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.conn.is_done() {
            return self.close(id, stats);
        }
        let fd = types::Fd(slot.conn.fd());
        if slot.conn.wants_write() && slot.send.is_none() {
            // The kernel gets its own copy: the connection may append while it sends.
            let buf: Box<[u8]> = slot.conn.unsent().into();
            let send = opcode::Send::new(fd, buf.as_ptr(), buf.len() as u32).build();
            let key = self.push(
                send,
                Op::Send {
                    conn: id,
                    _buf: buf,
                },
            );
            self.slots.get_mut(&id).expect("slot is present").send = key.ok();
        }
        let slot = self.slots.get_mut(&id).expect("slot is present");
        if slot.conn.wants_read() && slot.recv.is_none() {
            let mut buf: Box<[u8]> = vec![0; slot.conn.room().min(RECV_CHUNK)].into();
            let recv = opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build();
            let key = self.push(recv, Op::Recv { conn: id, buf });
            self.slots.get_mut(&id).expect("slot is present").recv = key.ok();
        }
    }
    // ANCHOR_END: pump

    // ANCHOR: close
    /// A finished connection: close it once nothing of it is in flight (the kernel may
    /// still write into a pending receive's buffer).
    fn close(&mut self, id: u64, stats: &Stats) {
        let slot = self.slots.get_mut(&id).expect("slot is present");
        if let Some(recv) = slot.recv {
            // A receive waits for data that will never be read: call it back, and
            // close when its completion (cancelled) comes.
            if !slot.cancelled {
                slot.cancelled = true;
                let cancel = opcode::AsyncCancel::new(recv).build();
                let _ = self.push(cancel, Op::Cancel);
            }
            return;
        }
        if slot.send.is_none() {
            let slot = self.slots.remove(&id).expect("slot is present");
            slot.conn.close(stats);
        }
    }
    // ANCHOR_END: close
}
