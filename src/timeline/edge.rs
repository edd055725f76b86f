//! The edge- against level-triggered demonstration, recorded in this process (no
//! server): its trace's source hash is this file's, so that only a change to the
//! demonstration, not to the drawing, makes its picture stale.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use iomodels_servers::trace::{Event, Tracer, What};

use super::{source_hash, Trace, EDGE_VS_LEVEL};

/// The edge- against level-triggered demonstration: one socket with 2,000 bytes
/// waiting, read 1,000 bytes per wake-up; after three waits, the peer sends 100 more.
/// Under
/// level-triggering every wait returns while bytes are left; under edge-triggering the
/// second 1,000 bytes wait for the peer's next send, however long that is.
pub fn edge_vs_level(root: &Path) -> Result<Trace, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut events = Vec::new();
    for (lane, flags) in [
        ("level-triggered", EpollFlags::EPOLLIN),
        ("edge-triggered", EpollFlags::EPOLLIN | EpollFlags::EPOLLET),
    ] {
        let (ours, mut peer) = UnixStream::pair().map_err(|e| err(&e))?;
        ours.set_nonblocking(true).map_err(|e| err(&e))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| err(&e))?;
        epoll
            .add(&ours, EpollEvent::new(flags, 1))
            .map_err(|e| err(&e))?;
        let fd = ours.as_raw_fd();
        let tracer = Tracer::new();
        let record = |what: What| tracer.record_as(lane, what);
        peer.write_all(&[b'x'; 2000]).map_err(|e| err(&e))?;
        record(What::Client {
            client: "peer".into(),
            did: "sends 2000 B".into(),
        });
        for turn in 0..6 {
            if turn == 3 {
                peer.write_all(&[b'y'; 100]).map_err(|e| err(&e))?;
                record(What::Client {
                    client: "peer".into(),
                    did: "sends 100 B".into(),
                });
            }
            record(What::WaitBegins {
                call: "epoll_wait".into(),
            });
            let mut events = [EpollEvent::empty(); 4];
            let ready = epoll
                .wait(&mut events, EpollTimeout::from(100u16))
                .map_err(|e| err(&e))?;
            record(What::WaitEnds { ready });
            if ready > 0 {
                let mut buf = [0u8; 1000];
                let n = (&ours).read(&mut buf).unwrap_or(0);
                record(What::Read { fd, bytes: n });
            }
        }
        // The two ran one after the other: each lane's clock starts at its own start.
        let lane_events = tracer.events();
        let start = lane_events.first().map_or(0, |e| e.us);
        events.extend(lane_events.into_iter().map(|e| Event {
            us: e.us - start,
            ..e
        }));
    }
    Ok(Trace {
        name: EDGE_VS_LEVEL.into(),
        args: Vec::new(),
        scenario: "One socket with 2,000 bytes waiting, read 1,000 bytes per wake-up, \
                   each wait at most 100 ms; after three waits, the peer sends 100 bytes \
                   more."
            .into(),
        source: source_hash(root, EDGE_VS_LEVEL)?,
        events,
    })
}
