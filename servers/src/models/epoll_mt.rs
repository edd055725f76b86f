// ANCHOR: header
//! `epoll-mt`: one epoll-et loop per core, each with its own listening socket on the
//! same port (SO_REUSEPORT): how nginx's worker processes share the machine with
//! `listen … reuseport` (by default they share one inherited socket: see prefork).
//!
//! - What blocks: each loop, in its own epoll_wait(2).
//! - Cost per wake-up: as epoll-et, per loop. The kernel spreads new connections over
//!   the listeners by a hash of the addresses, so each loop owns its connections for
//!   their whole life: no lock, no hand-over between threads.
//! - Limit: the cores. A connection stays on the loop it landed on, so a few busy
//!   connections can all land on one loop while another idles.
//! - Timeouts and overload: each loop keeps its own connections' clocks. The cap
//!   (`--max-connections`) counts the whole process, but a loop closes only its own
//!   idle connections to make room, as each nginx worker reuses only its own: a loop
//!   with none idle turns a newcomer away though another has some.
//! - Against epoll-et: the same loop, `--threads` times (default: one per CPU).
// ANCHOR_END: header

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use crate::models::epoll_et;
use crate::server::Server;

// ANCHOR: state
// No state of its own: each loop owns an `epoll_et::Loop` and its connections.
// ANCHOR_END: state

pub fn serve(listener: TcpListener, server: &Arc<Server>) -> io::Result<()> {
    // ANCHOR: setup
    let threads = server
        .config
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // The first listener came with SO_REUSEPORT set (see `Model::reuse_port`); the others
    // bind the same address beside it, and the kernel balances between them.
    let addr = listener.local_addr()?;
    let mut listeners = vec![listener];
    for _ in 1..threads {
        listeners.push(crate::server::listen(addr, server.config.backlog, true)?);
    }
    // Every loop's epoll instance and spare descriptor exist before any loop accepts: a
    // loop made later could find the table already full of the others' connections.
    let loops = listeners
        .into_iter()
        .map(|listener| epoll_et::setup(listener, server))
        .collect::<io::Result<Vec<_>>>()?;
    // ANCHOR_END: setup

    // ANCHOR: spawn
    thread::scope(|scope| {
        let running: Vec<_> = loops
            .into_iter()
            .enumerate()
            .map(|(i, setup)| {
                thread::Builder::new()
                    .name(format!("loop-{i}"))
                    .spawn_scoped(scope, move || {
                        if i > 0 {
                            server.stats.thread_started();
                        }
                        let served = epoll_et::run(setup, server);
                        if i > 0 {
                            server.stats.thread_ended();
                        }
                        served
                    })
            })
            .collect::<io::Result<_>>()?;
        // Every loop returns when the server stops; the first error is the answer.
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a loop panicked")))
            })
            .collect::<io::Result<Vec<()>>>()
            .map(|_| ())
    })
    // ANCHOR_END: spawn
}

// ANCHOR: wait
// Each loop waits in its own epoll_wait(2), on its own epoll instance (epoll_et.rs).
// ANCHOR_END: wait

// ANCHOR: dispatch
// Each loop dispatches its own events, as epoll_et.rs does: no event crosses threads.
// ANCHOR_END: dispatch

// ANCHOR: accept
// Each loop accepts from its own listener; the kernel picks which listener a new
// connection joins by a hash of its addresses (SO_REUSEPORT).
// ANCHOR_END: accept

// ANCHOR: readable
// As epoll_et.rs: read until the socket would block.
// ANCHOR_END: readable

// ANCHOR: writable
// As epoll_et.rs: EPOLLOUT stays armed; write until the socket would block.
// ANCHOR_END: writable

// ANCHOR: close
// As epoll_et.rs, on the loop that owns the connection.
// ANCHOR_END: close
