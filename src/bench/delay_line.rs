//! A link with a delay, made in user space, for kernels without netem (this machine's
//! has neither `sch_netem` nor `fq`, so no qdisc can hold a packet back).
//!
//! Each namespace gets a TUN device where the veth's end would be. Whatever its network
//! stack sends there, this process reads as a whole IP packet; a thread per direction
//! holds each packet for the delay and writes it into the other namespace's device,
//! whose stack receives it as if from a wire. TCP runs end to end through it: the
//! server sees the clients' own connections, handshakes and acknowledgements, each a
//! round trip of twice the delay later, which is what netem would give.
//!
//! What it costs is not free: every packet is a read and a write here, on the load
//! generator's CPU, so run.json names the link as this one (`delay_by`).

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;

/// How long a forwarding thread sleeps at most, so that it notices the stop.
const LOOK: Duration = Duration::from_millis(50);

/// The two threads, stopped and joined when dropped.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Packets that could not be written on (counted, as a wire would lose them).
    pub dropped: Arc<AtomicU64>,
}

impl DelayLine {
    /// Forward between the TUN devices `a` and `b` (see [`tun`]), each packet `delay`
    /// late, in both directions.
    pub fn start(a: OwnedFd, b: OwnedFd, delay: Duration) -> DelayLine {
        let (a, b) = (Arc::new(a), Arc::new(b));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let threads = [(&a, &b), (&b, &a)]
            .into_iter()
            .map(|(from, to)| {
                let (from, to) = (Arc::clone(from), Arc::clone(to));
                let (stop, dropped) = (Arc::clone(&stop), Arc::clone(&dropped));
                std::thread::spawn(move || forward(&from, &to, delay, &stop, &dropped))
            })
            .collect();
        DelayLine {
            stop,
            threads,
            dropped,
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One direction: read every packet `from` as it comes, write it `to` once it is
/// `delay` old. The packets keep their order (one delay for all, so a queue).
fn forward(from: &OwnedFd, to: &OwnedFd, delay: Duration, stop: &AtomicBool, dropped: &AtomicU64) {
    // The kernel may make a sleep up to the timer slack (50 µs by default) late; at a
    // delay of half a millisecond that would be a tenth more.
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, packet) = held.pop_front().expect("looked at");
            // A TUN write hands the packet to the stack whole, or fails (no memory):
            // then it is lost, as on a wire, and TCP sends it again.
            if nix::unistd::write(to.as_fd(), &packet).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wait = held.front().map_or(LOOK, |(due, _)| {
            due.saturating_duration_since(now).min(LOOK)
        });
        let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
        match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return stopped("ppoll", e, stop),
        }
        loop {
            match nix::unistd::read(from.as_fd(), &mut buf) {
                Ok(n) => held.push_back((Instant::now() + delay, buf[..n].to_vec())),
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => break,
                Err(e) => return stopped("read", e, stop),
            }
        }
    }
}

/// Say why the link went dead, unless it was told to stop (then its devices may be
/// gone first).
fn stopped(call: &str, e: Errno, stop: &AtomicBool) {
    if !stop.load(Ordering::Relaxed) {
        eprintln!("iomodels: the delay line stopped forwarding: {call}: {e}");
    }
}

/// A TUN device named `name` in this thread's network namespace (call it from a
/// thread inside the one it belongs in), non-blocking: each read gives one IP packet,
/// each write takes one.
pub fn tun(name: &str) -> Result<OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun (the kernel's tun module): {e}"))?;
    let fd = OwnedFd::from(file);
    // SAFETY: ifreq is plain old data (an array and a union of integers), valid zeroed.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(format!("the device name {name:?} is too long"));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *to = from as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq it is given, which lives across the
    // call; the descriptor is open.
    let done = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF,
            &mut request as *mut libc::ifreq,
        )
    };
    Errno::result(done).map_err(|e| format!("cannot make the TUN device {name}: {e}"))?;
    Ok(fd)
}
