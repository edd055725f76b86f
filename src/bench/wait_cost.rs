//! Kerrisk's experiment (The Linux Programming Interface, table 63-9): N descriptors
//! watched, one of them ready, the wait call made again and again. select and poll
//! hand the kernel the whole set on every call and the kernel looks at each
//! descriptor; epoll registered them once and returns the one on its ready list.
//!
//! The N descriptors are both ends of N/2 Unix socket pairs, all watched for input;
//! one byte sits unread in one of them, so exactly one is ready on every call.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::select::{select, FdSet, FD_SETSIZE};

/// A wait call compared (its name and colour are the roster's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Select,
    Poll,
    Epoll,
}

impl Call {
    pub const ALL: [Call; 3] = [Call::Select, Call::Poll, Call::Epoll];
}

/// What one cell of the table measured.
#[derive(Debug)]
pub struct Measured {
    pub ns_per_wait: f64,
    pub waits: u64,
}

/// Time `call` over `fds` descriptors for about `budget`. Err says why the call cannot
/// watch that many (select past FD_SETSIZE), or why the set could not be made.
pub fn measure(call: Call, fds: usize, budget: Duration) -> Result<Measured, String> {
    let pairs: Vec<(UnixStream, UnixStream)> = (0..fds.div_ceil(2))
        .map(|_| UnixStream::pair())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot make {fds} descriptors: {e}"))?;
    let watched: Vec<&UnixStream> = pairs.iter().flat_map(|(a, b)| [a, b]).take(fds).collect();
    (&pairs[0].1)
        .write_all(b"!")
        .map_err(|e| format!("cannot make one descriptor ready: {e}"))?;

    match call {
        Call::Select => {
            let highest = watched.iter().map(|s| raw(s)).max().unwrap_or(0);
            if highest as usize >= FD_SETSIZE {
                return Err(format!(
                    "fd {highest} >= FD_SETSIZE ({FD_SETSIZE}): select cannot watch {fds} \
                     descriptors"
                ));
            }
            let mut all = FdSet::new();
            for s in &watched {
                all.insert(s.as_fd());
            }
            time(budget, || {
                // select overwrites its set with the answer: copy it in every call.
                let mut ready = all;
                select(highest + 1, &mut ready, None, None, None).map(|n| n as usize)
            })
        }
        Call::Poll => {
            let mut set: Vec<PollFd> = watched
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            time(budget, || {
                poll(&mut set, PollTimeout::NONE).map(|n| n as usize)
            })
        }
        Call::Epoll => {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
            for (i, s) in watched.iter().enumerate() {
                epoll
                    .add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                    .map_err(|e| format!("epoll_ctl: {e}"))?;
            }
            let mut events = [EpollEvent::empty(); 64];
            time(budget, || epoll.wait(&mut events, EpollTimeout::NONE))
        }
    }
}

fn raw(s: &UnixStream) -> i32 {
    use std::os::fd::AsRawFd;
    s.as_raw_fd()
}

/// Call `wait` (which must find exactly one descriptor ready) for about `budget`,
/// in batches, after a short calibration.
fn time<E: std::fmt::Display>(
    budget: Duration,
    mut wait: impl FnMut() -> Result<usize, E>,
) -> Result<Measured, String> {
    let mut once = || match wait() {
        Ok(1) => Ok(()),
        Ok(n) => Err(format!("the wait found {n} ready descriptors, not 1")),
        Err(e) => Err(format!("the wait failed: {e}")),
    };
    let calibrate = Instant::now();
    for _ in 0..10 {
        once()?;
    }
    let per_call = calibrate.elapsed() / 10;
    let batch = (budget.as_nanos() / per_call.as_nanos().max(1)).clamp(50, 5_000_000) as u64;
    let start = Instant::now();
    for _ in 0..batch {
        once()?;
    }
    let elapsed = start.elapsed();
    Ok(Measured {
        ns_per_wait: elapsed.as_nanos() as f64 / batch as f64,
        waits: batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_measures_a_small_set() {
        for call in Call::ALL {
            let m = measure(call, 10, Duration::from_millis(5)).unwrap();
            assert!(m.ns_per_wait > 0.0 && m.waits >= 50, "{call:?}: {m:?}");
        }
    }

    #[test]
    fn select_refuses_a_set_past_its_limit_and_names_it() {
        let e = measure(Call::Select, 2000, Duration::from_millis(5)).unwrap_err();
        assert!(e.contains("FD_SETSIZE (1024)"), "{e}");
        assert!(measure(Call::Poll, 2000, Duration::from_millis(5)).is_ok());
    }
}
