//! The slowloris experiment: many connections that each send part of a header and then
//! a byte now and then, beside a few fresh clients asking for `/`. A server that keeps
//! time evicts the slow ones at its header timeout and serves the fresh ones; one that
//! does not holds the slow ones for ever, and a pool of workers is taken by them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::results::Slowloris;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The header timeout the servers are started with in this experiment.
pub const HEADER_TIMEOUT: &str = "2s";
/// How long after the slow headers began the evictions are counted.
pub const WINDOW: Duration = Duration::from_secs(4);
/// A slow connection sends one more byte this often (never within the window: the
/// timeout must not depend on it).
const TRICKLE: Duration = Duration::from_secs(5);
/// Fresh clients asking beside the slow ones, one every `FRESH_EVERY`.
const FRESH: usize = 10;
const FRESH_EVERY: Duration = Duration::from_millis(350);
/// How long a fresh client keeps trying (a 503 or a close is tried again).
const FRESH_PATIENCE: Duration = Duration::from_secs(2);

/// Open `slow` slow connections to `addr`, and count for [`WINDOW`] what the server does
/// with them and with [`FRESH`] fresh clients.
pub fn probe(addr: SocketAddr, slow: usize) -> Result<Slowloris, String> {
    let mut found = Slowloris {
        header_timeout: HEADER_TIMEOUT.into(),
        slow,
        fresh: FRESH,
        ..Slowloris::default()
    };
    let mut conns = Vec::with_capacity(slow);
    for _ in 0..slow {
        // A server past its cap may accept and close at once: still a connection opened.
        if let Ok(conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            conns.push(conn);
        }
    }
    if conns.is_empty() {
        return Err(format!("no connection to {addr} opened"));
    }
    found.opened = conns.len();
    let began = Instant::now();
    for conn in &mut conns {
        let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: slowloris\r\n");
        conn.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let stop = AtomicBool::new(false);
    let (served, worst) = thread::scope(|scope| {
        let fresh = scope.spawn(|| fresh_clients(addr, &stop));
        watch(&mut conns, began, &mut found);
        stop.store(true, Ordering::Relaxed);
        fresh.join().unwrap_or_default()
    });
    found.fresh_served = served;
    found.fresh_worst_ms = worst;
    Ok(found)
}

/// Until the window closes: note every slow connection the server closes, and trickle a
/// byte on the others every [`TRICKLE`].
fn watch(conns: &mut [TcpStream], began: Instant, found: &mut Slowloris) {
    let mut open = vec![true; conns.len()];
    let mut next_trickle = began + TRICKLE;
    let mut sink = [0u8; 512];
    while began.elapsed() < WINDOW {
        let mut fds: Vec<PollFd> = Vec::new();
        let mut which: Vec<usize> = Vec::new();
        for (i, conn) in conns.iter().enumerate().filter(|(i, _)| open[*i]) {
            fds.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN));
            which.push(i);
        }
        if fds.is_empty() {
            break;
        }
        let left = WINDOW
            .saturating_sub(began.elapsed())
            .min(Duration::from_millis(50));
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&which)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, &i)| i)
            .collect();
        drop(fds);
        for i in ready {
            // What the server said (a 408, a 503), then its close; either way it is
            // done with this connection.
            if let Ok(n) = conns[i].read(&mut sink) {
                found.answered_408 += usize::from(sink[..n].starts_with(b"HTTP/1.1 408"));
                found.answered_503 += usize::from(sink[..n].starts_with(b"HTTP/1.1 503"));
            }
            open[i] = false;
            found.evicted += 1;
        }
        if Instant::now() >= next_trickle {
            next_trickle += TRICKLE;
            for (conn, _) in conns.iter_mut().zip(&open).filter(|(_, &o)| o) {
                let _ = conn.write(b"X");
            }
        }
    }
    // Turned away at once (503) is not evicted by a timeout: count it apart.
    found.evicted -= found.answered_503;
}

/// Fresh clients, one every [`FRESH_EVERY`]: each asks for `/` until it is answered 200
/// or its patience runs out. Returns how many were served, and the slowest of them.
fn fresh_clients(addr: SocketAddr, stop: &AtomicBool) -> (usize, Option<f64>) {
    let (mut served, mut worst) = (0, None::<f64>);
    for _ in 0..FRESH {
        thread::sleep(FRESH_EVERY);
        let asked = Instant::now();
        while asked.elapsed() < FRESH_PATIENCE {
            if ask(addr) {
                served += 1;
                let ms = asked.elapsed().as_secs_f64() * 1e3;
                worst = Some(worst.map_or(ms, |w| w.max(ms)));
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if stop.load(Ordering::Relaxed) && asked.elapsed() >= FRESH_PATIENCE {
            break;
        }
    }
    (served, worst)
}

/// One GET on a new connection: true if answered 200.
fn ask(addr: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, FRESH_PATIENCE) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(FRESH_PATIENCE));
    let mut head = [0u8; 12];
    conn.write_all(b"GET / HTTP/1.1\r\nHost: fresh\r\nConnection: close\r\n\r\n")
        .and_then(|()| conn.read_exact(&mut head))
        .is_ok_and(|()| &head == b"HTTP/1.1 200")
}
