//! The load generator against servers over loopback: a real model from iomodels-servers,
//! and small misbehaving ones that reset, close, lie or stall on purpose.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use iomodels_loadgen::{self as loadgen, Config, Proto, Quiet, Report};
use iomodels_servers::{self as servers, models, Server};

/// A real server (epoll-et) in this process; it runs until the test process ends.
fn epoll_server(proto: servers::Proto) -> SocketAddr {
    epoll_server_with_counters(proto).0
}

fn epoll_server_with_counters(proto: servers::Proto) -> (SocketAddr, Arc<Server>) {
    let listener = servers::listen("127.0.0.1:0".parse().unwrap(), 1024, false).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server::new(servers::Config {
        proto,
        ..servers::Config::default()
    }));
    let serving = Arc::clone(&server);
    thread::spawn(move || models::epoll_et::serve(listener, &serving));
    (addr, server)
}

/// A thread-per-connection server whose connections do what `behave` says; `behave`
/// gets the stream and the connection's accept index.
fn misbehaving(behave: fn(TcpStream, usize)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || behave(stream, index));
        }
    });
    addr
}

/// Read until one whole HTTP request head has arrived; false at EOF.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            return true;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn ok(stream: &mut TcpStream) -> bool {
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .is_ok()
}

fn config(target: SocketAddr) -> Config {
    let mut c = Config::new(target);
    c.connections = 2;
    c.threads = 1;
    c.duration = Duration::from_millis(800);
    c.warmup = Duration::ZERO;
    c.timeout = Duration::from_secs(5);
    c
}

#[track_caller]
fn run(config: &Config) -> Report {
    loadgen::run(config, &Quiet).unwrap_or_else(|e| panic!("the run failed: {e}"))
}

/// Every request sent in the window ended one way, and only one.
#[track_caller]
fn assert_adds_up(r: &Report) {
    let non_2xx: u64 = r.non_2xx.values().sum();
    assert_eq!(
        r.sent,
        r.completed + non_2xx + r.failed + r.in_flight_at_end,
        "{r:#?}"
    );
}

fn error(r: &Report, class: &str) -> u64 {
    r.errors[class]
}

#[test]
fn a_healthy_server_is_answered_with_no_errors_and_everything_adds_up() {
    let mut c = config(epoll_server(servers::Proto::Http));
    c.connections = 8;
    c.pipeline = 3;
    c.threads = 2;
    c.warmup = Duration::from_millis(200);
    let r = run(&c);
    assert!(r.completed > 1000, "{r:#?}");
    assert!(r.errors.values().all(|&n| n == 0), "{:?}", r.errors);
    assert!(r.non_2xx.is_empty());
    assert_eq!((r.active.requested, r.active.established), (8, 8));
    assert!(r.in_flight_at_end <= 8 * 3);
    assert!(!r.per_second.is_empty() && r.per_second[0].requests > 0);
    assert!(r.latency_us.p50 > 0 && r.latency_us.p50 <= r.latency_us.max);
    assert!(!r.latency_histogram.is_empty());
    assert_adds_up(&r);
}

/// The server's own count agrees: with no warm-up, it answered every request we sent,
/// plus at most the few sent after the window closed (regression: threads began ~10 ms
/// before the common start, sending requests that no count included).
#[test]
fn the_server_counts_what_we_sent() {
    let (target, server) = epoll_server_with_counters(servers::Proto::Http);
    let mut c = config(target);
    c.connections = 4;
    c.pipeline = 2;
    let r = run(&c);
    thread::sleep(Duration::from_millis(100));
    let served = server.stats.snapshot("epoll-et").requests;
    assert!(served >= r.completed, "server {served}, we {}", r.completed);
    assert!(
        served - r.sent <= 4 * 2,
        "server {served}, we sent {}: unaccounted requests",
        r.sent
    );
}

#[test]
fn echo_answers_are_checked_byte_for_byte() {
    let mut c = config(epoll_server(servers::Proto::Echo));
    c.proto = Proto::Echo;
    c.size = 1000;
    let r = run(&c);
    assert!(r.completed > 100, "{r:#?}");
    assert_eq!(error(&r, "bad_response"), 0);
    assert_adds_up(&r);
}

#[test]
fn an_echo_that_changes_a_byte_is_a_bad_response_not_a_success() {
    let target = misbehaving(|mut stream, _| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                return;
            }
            buf[n / 2] ^= 0x20;
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let mut c = config(target);
    c.proto = Proto::Echo;
    c.size = 100;
    let r = run(&c);
    assert_eq!(r.completed, 0, "{r:#?}");
    assert!(error(&r, "bad_response") > 0);
    assert_adds_up(&r);
}

#[test]
fn idle_connections_are_verified_and_their_closing_is_counted() {
    // The first 10 connections (the idle ones, opened first): odd ones get a 503, and
    // every one is closed 300 ms after its answer. The 11th (active) is served.
    let target = misbehaving(|mut stream, index| {
        let mut buf = Vec::new();
        if index < 10 {
            if read_request(&mut stream, &mut buf) {
                let answer: &[u8] = if index % 2 == 1 {
                    b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                let _ = stream.write_all(answer);
                thread::sleep(Duration::from_millis(300));
            }
            return;
        }
        while read_request(&mut stream, &mut buf) && ok(&mut stream) {}
    });
    let mut c = config(target);
    c.connections = 1;
    c.idle = 10;
    c.connect_rate = 1000.0;
    let r = run(&c);
    assert_eq!(r.idle.requested, 10);
    assert_eq!(r.idle.established, 10);
    assert_eq!(r.idle.verified, 5, "{r:#?}");
    assert_eq!(r.idle.closed_by_server, 10);
    assert!(r.completed > 0);
    assert!(r.errors.values().all(|&n| n == 0), "{:?}", r.errors);
    assert_adds_up(&r);
}

#[test]
fn a_reset_is_classed_as_reset_and_the_connection_replaced() {
    let target = misbehaving(|mut stream, _| {
        let mut buf = Vec::new();
        if read_request(&mut stream, &mut buf) {
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    });
    let r = run(&config(target));
    assert!(error(&r, "reset") > 0, "{r:#?}");
    assert!(r.reconnects > 0);
    assert_eq!(r.completed, 0);
    assert_adds_up(&r);
}

#[test]
fn a_close_mid_request_is_closed_by_server() {
    let target = misbehaving(|mut stream, _| {
        let mut buf = Vec::new();
        read_request(&mut stream, &mut buf);
    });
    let r = run(&config(target));
    assert!(error(&r, "closed_by_server") > 0, "{r:#?}");
    assert_eq!(r.completed, 0);
    assert_adds_up(&r);
}

#[test]
fn garbage_is_a_bad_response() {
    let target = misbehaving(|mut stream, _| {
        let mut buf = Vec::new();
        if read_request(&mut stream, &mut buf) {
            let _ = stream.write_all(b"220 smtp.example.com ESMTP\r\n\r\n");
            thread::sleep(Duration::from_secs(1));
        }
    });
    let r = run(&config(target));
    assert!(error(&r, "bad_response") > 0, "{r:#?}");
    assert_adds_up(&r);
}

#[test]
fn an_unanswered_request_times_out() {
    let target = misbehaving(|mut stream, _| {
        let mut buf = Vec::new();
        read_request(&mut stream, &mut buf);
        thread::sleep(Duration::from_secs(3));
    });
    let mut c = config(target);
    c.timeout = Duration::from_millis(200);
    let r = run(&c);
    assert!(error(&r, "timeout") > 0, "{r:#?}");
    assert_eq!(r.completed, 0);
    assert_adds_up(&r);
}

#[test]
fn source_addresses_are_used_in_turn() {
    static SEEN: std::sync::Mutex<Vec<std::net::IpAddr>> = std::sync::Mutex::new(Vec::new());
    let target = misbehaving(|mut stream, _| {
        SEEN.lock().unwrap().push(stream.peer_addr().unwrap().ip());
        let mut buf = Vec::new();
        while read_request(&mut stream, &mut buf) && ok(&mut stream) {}
    });
    let mut c = config(target);
    c.connections = 4;
    c.source_addrs = loadgen::parse_source_addrs("127.0.0.2-127.0.0.3").unwrap();
    let r = run(&c);
    assert!(r.completed > 0);
    let mut seen = SEEN.lock().unwrap().clone();
    seen.sort();
    let want: Vec<std::net::IpAddr> = ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn no_server_fails_loudly_instead_of_measuring_nothing() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // bound, then closed: nobody listens there now
    let c = config(SocketAddr::from(([127, 0, 0, 1], port)));
    let err = loadgen::run(&c, &Quiet).unwrap_err();
    assert!(err.contains("established 0 of 2"), "{err}");
    assert!(err.contains("connect_refused 2"), "{err}");
}

#[test]
fn non_2xx_answers_are_counted_by_class_not_as_throughput() {
    let target = misbehaving(|mut stream, _| {
        let mut buf = Vec::new();
        while read_request(&mut stream, &mut buf)
            && stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .is_ok()
        {}
    });
    let r = run(&config(target));
    assert_eq!(r.completed, 0);
    assert_eq!(r.throughput_rps, 0.0);
    assert!(r.non_2xx["4xx"] > 10, "{r:#?}");
    assert_adds_up(&r);
}

/// The server stalls every connection for 300 ms in the middle of the window. In the
/// open loop, every request scheduled during the stall is charged for its wait (latency
/// from the intended send time); the service time sees only the few that were sent.
#[test]
fn open_loop_latency_includes_a_stall() {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let target = misbehaving(|mut stream, _| {
        let mut buf = Vec::new();
        let origin = Instant::now();
        STARTED.fetch_add(1, Ordering::Relaxed);
        let (from, to) = (Duration::from_millis(600), Duration::from_millis(900));
        while read_request(&mut stream, &mut buf) {
            let at = origin.elapsed();
            if at >= from && at < to {
                thread::sleep(to - at);
            }
            if !ok(&mut stream) {
                return;
            }
        }
    });
    let mut c = config(target);
    c.rate = Some(400.0);
    c.duration = Duration::from_millis(1500);
    let r = run(&c);
    assert_eq!(STARTED.load(Ordering::Relaxed), 2);
    let achieved = r.achieved_rate_rps.unwrap();
    assert!((achieved - 400.0).abs() < 40.0, "achieved {achieved}");
    // About 120 of 600 requests were scheduled inside the stall.
    assert!(r.latency_us.p90 >= 50_000, "corrected: {:?}", r.latency_us);
    assert!(r.latency_us.max >= 250_000, "corrected: {:?}", r.latency_us);
    assert!(
        r.service_latency_us.p90 < 50_000,
        "service: {:?}",
        r.service_latency_us
    );
    assert_eq!(r.errors.values().sum::<u64>(), 0);
    assert_adds_up(&r);
}

/// Without keep-alive every answer ends its connection and a new one takes its place:
/// the churn experiment. The server's accept count agrees with ours.
#[test]
fn without_keep_alive_every_request_gets_a_new_connection() {
    let (target, server) = epoll_server_with_counters(servers::Proto::Http);
    let mut c = config(target);
    c.keep_alive = false;
    let r = run(&c);
    assert!(r.completed > 100, "{r:#?}");
    assert!(r.errors.values().all(|&n| n == 0), "{:?}", r.errors);
    assert_adds_up(&r);
    // One reconnect per answer, give or take the connections open at the edges.
    assert!(
        r.reconnects + 2 >= r.completed && r.reconnects <= r.completed + 2,
        "{r:#?}"
    );
    let accepted = server.stats.accepted.load(Ordering::Relaxed);
    assert!(
        accepted >= r.completed,
        "accepted {accepted}, answered {}",
        r.completed
    );
}

/// The report reads back from its own JSON unchanged (the suite stores it in run.json).
#[test]
fn the_report_round_trips_through_json() {
    let r = run(&config(epoll_server(servers::Proto::Http)));
    let json = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn keep_alive_off_is_refused_where_it_cannot_work() {
    let mut c = Config::new("127.0.0.1:9".parse().unwrap());
    c.keep_alive = false;
    c.idle = 10;
    assert!(c.check().unwrap_err().contains("idle"));
    c.idle = 0;
    c.proto = Proto::Echo;
    assert!(c.check().unwrap_err().contains("HTTP"));
}

/// Throughput counts every answer that arrives in the window, also those whose request
/// left during warm-up (a slow handler's answers take longer than the warm-up): wrk
/// counts the same way. The accounting of requests sent in the window still adds up.
#[test]
fn answers_to_requests_sent_in_warm_up_count_as_throughput() {
    let mut c = config(epoll_server(servers::Proto::Http));
    c.path = "/sleep/50".into();
    c.connections = 10;
    c.warmup = Duration::from_millis(400);
    c.duration = Duration::from_secs(1);
    let r = run(&c);
    assert_adds_up(&r);
    // One loop sleeping 50 ms per request: about 20 answers in the second.
    assert!(r.answered_in_window >= 15, "{r:#?}");
    assert!(r.answered_in_window >= r.completed + 5, "{r:#?}");
    assert_eq!(
        r.throughput_rps,
        r.answered_in_window as f64 / r.measured_seconds
    );
    assert_eq!(r.latency_us.count, r.answered_in_window);
}

/// Tornado answers an HTTP/1.0 request with an HTTP/1.1 head and no `Connection: close`,
/// then closes. We asked for the close ourselves, so that is no error (regression: every
/// other request failed as reset or closed by server).
#[test]
fn without_keep_alive_a_close_after_an_http11_answer_is_expected() {
    let target = misbehaving(|mut stream, _| {
        let mut buf = Vec::new();
        if read_request(&mut stream, &mut buf) {
            ok(&mut stream); // HTTP/1.1, no Connection header
        }
    });
    let mut c = config(target);
    c.keep_alive = false;
    c.connections = 1;
    c.duration = Duration::from_millis(500);
    let r = run(&c);
    assert!(r.completed > 20, "{r:#?}");
    assert!(r.errors.values().all(|&n| n == 0), "{:?}", r.errors);
    assert_adds_up(&r);
}
