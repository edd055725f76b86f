// ANCHOR: header
//! `epoll-mt`: one epoll-et loop per core, each with its own listening socket on the
//! same port (SO_REUSEPORT): how nginx's worker processes share the machine.
//!
//! - What blocks: each loop, in its own epoll_wait(2).
//! - Cost per wake-up: as epoll-et, per loop. The kernel spreads new connections over
//!   the listeners by a hash of the addresses, so each loop owns its connections for
//!   their whole life: no lock, no hand-over between threads.
//! - Limit: the cores. A connection stays on the loop it landed on, so a few busy
//!   connections can all land on one loop while another idles.
//! - Against epoll-et: the same loop, `--threads` times (default: one per CPU).
// ANCHOR_END: header

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

use crate::models::epoll::{EventLoop, Trigger};
use crate::Server;

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
        listeners.push(crate::listen(addr, server.config.backlog, true)?);
    }
    // Every loop's epoll instance and spare descriptor exist before any loop accepts: a
    // loop made later could find the table already full of the others' connections.
    let loops = listeners
        .into_iter()
        .map(|listener| EventLoop::new(listener, Trigger::Edge))
        .collect::<io::Result<Vec<_>>>()?;
    // ANCHOR_END: setup

    // ANCHOR: spawn
    thread::scope(|scope| {
        let running: Vec<_> = loops
            .into_iter()
            .enumerate()
            .map(|(i, event_loop)| {
                thread::Builder::new()
                    .name(format!("loop-{i}"))
                    .spawn_scoped(scope, move || {
                        if i > 0 {
                            server.stats.thread_started();
                        }
                        let served = event_loop.run(server);
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
