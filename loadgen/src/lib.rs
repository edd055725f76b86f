//! The iomodels load generator: never the bottleneck, never a liar.
//!
//! # Layout
//!
//! In the order a run's data flows through them:
//!
//! - [`config`]: every option of a run, checked before any socket is opened.
//! - [`limits`]: descriptors and ephemeral ports, raised or explained before the first
//!   connect.
//! - [`schedule`]: the open loop's clock (latency from the intended send time).
//! - [`engine`]: one epoll loop per thread over thousands of non-blocking connections;
//!   its `events` (connects completing, answers arriving and counted) and its `failures`
//!   (broken connections, failed connects, timeouts, reconnects).
//! - [`response`]: answers framed (HTTP, by Content-Length) or checked (echo), sans-IO.
//! - [`window`]: the measured window, the one place that says whether an instant counts.
//! - [`tally`]: what each thread counted, merged exactly (across processes too).
//! - [`report`]: the merged tally as the JSON report carries it.
//! - [`summary`]: the report as a person reads it.
//! - [`threads`]: the whole run of one process ([`run`]): limits, threads, ramp, common
//!   start, merge.
//! - [`processes`]: the same run split over several processes, each under its own
//!   descriptor limit, merged exactly.
//! - [`progress`]: what the caller hears while a run goes on, and its word at the gate.
//!
//! Imports point one way: a part uses only parts of a lower layer than its own, so no
//! circle can form. (1) `config`, `limits`, `schedule`, `response`, `window` and
//! `progress` use no other part; (2) `tally`; (3) `engine`, `report`; (4) `threads`,
//! `summary`; (5) `processes`.

pub mod config;
pub mod engine;
pub mod limits;
pub mod processes;
pub mod progress;
pub mod report;
pub mod response;
pub mod schedule;
pub mod summary;
pub mod tally;
pub mod threads;
pub mod window;

pub use config::{parse_source_addrs, Config, Proto};
pub use progress::{Progress, Quiet};
pub use report::Report;
pub use tally::{ErrorClass, Tally};
pub use threads::{lanes, peak_rss_kb, run, run_tally};
