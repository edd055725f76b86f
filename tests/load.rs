//! `iomodels load --processes N`: the run split over worker processes of this binary,
//! merged exactly; and a failure in one of them said, not hidden.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use iomodels_loadgen::Report;

/// `iomodels serve MODEL` on a free port, and where it listens.
fn serve(model: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["serve", model, "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines().map_while(Result::ok);
    let addr = lines
        .find_map(|l| {
            l.split(" listening on ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the server says where it listens");
    // Keep draining its stderr, so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn load(addr: SocketAddr, json: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(["load", "--target", &addr.to_string(), "--json"])
        .arg(json)
        .args(["--duration", "1s", "--warmup", "200ms", "--timeout", "3s"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn processes_split_the_run_and_their_reports_merge_exactly() {
    let (mut server, addr) = serve("epoll-et");
    let json = Path::new(env!("CARGO_TARGET_TMPDIR")).join("load-processes.json");
    let out = load(
        addr,
        &json,
        &["--processes", "3", "--connections", "7", "--idle", "301"],
    );
    let _ = server.kill();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report.config.processes, 3);
    assert_eq!((report.active.requested, report.active.established), (7, 7));
    assert_eq!(report.idle.requested, 301);
    assert_eq!(report.idle.verified, 301, "every idle connection checked");
    assert!(report.completed > 0);
    // The books balance across the processes ...
    let other: u64 = report.non_2xx.values().sum();
    assert_eq!(
        report.sent,
        report.completed + other + report.failed + report.in_flight_at_end,
        "{report:#?}"
    );
    // ... and the merged histogram holds every answer each process recorded.
    assert_eq!(report.latency_us.count, report.answered_in_window);
    let per_second: u64 = report.per_second.iter().map(|s| s.requests).sum();
    assert_eq!(per_second, report.answered_in_window);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("3 processes"), "{summary}");
}

#[test]
fn a_process_that_cannot_connect_says_so() {
    // A port nobody listens on: bound, then dropped.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let json = Path::new(env!("CARGO_TARGET_TMPDIR")).join("load-refused.json");
    let out = load(addr, &json, &["--processes", "2", "--connections", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("load process") && err.contains("connect_refused"),
        "{err}"
    );
}

#[test]
fn more_processes_than_connections_is_refused() {
    let json = Path::new(env!("CARGO_TARGET_TMPDIR")).join("load-too-many.json");
    let addr = "127.0.0.1:9".parse().unwrap();
    let out = load(addr, &json, &["--processes", "4", "--connections", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--processes 4"), "{err}");
}
