//! The handler with no sockets: bytes in, bytes out, split every way.

use std::time::Duration;

use iomodels_servers::handler::{
    pattern_byte, request_timeout, Handler, Proto, Step, Work, MAX_HEADER_BYTES, OUTPUT_HIGH_WATER,
};
use proptest::prelude::*;

/// What a connection would have sent after feeding `chunks` in order.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    sent: Vec<u8>,
    work: Vec<Work>,
    closed: bool,
}

/// Feed the chunks the way `Conn` does: append, call until it needs input, flushing the
/// output whenever it is full. Checks the bound on the output on every call.
fn feed(proto: Proto, chunks: &[&[u8]]) -> Outcome {
    let mut handler = Handler::new(proto);
    let mut input = Vec::new();
    let mut output = Vec::new();
    let mut outcome = Outcome::default();
    for chunk in chunks {
        input.extend_from_slice(chunk);
        loop {
            let progress = handler.handle(&input, &mut output);
            assert!(progress.consumed <= input.len());
            assert!(
                output.len() <= OUTPUT_HIGH_WATER + 256,
                "output {} over its bound",
                output.len()
            );
            input.drain(..progress.consumed);
            outcome.sent.append(&mut output);
            match progress.step {
                Step::NeedInput => break,
                Step::OutputFull => continue,
                Step::Work(work) => outcome.work.push(work),
                Step::Close => {
                    outcome.closed = true;
                    break;
                }
            }
        }
    }
    outcome
}

/// One parsed response: status, headers of interest, body.
#[derive(Debug)]
struct Response {
    status: u16,
    connection: String,
    body: Vec<u8>,
}

/// Split `bytes` into responses, framing each by Content-Length.
#[track_caller]
fn responses(mut bytes: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(bytes).expect("a valid response") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("truncated response: {bytes:?}"),
        };
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .unwrap_or_default()
        };
        let len: usize = header("content-length").parse().expect("Content-Length");
        let connection = header("connection");
        out.push(Response {
            status: resp.code.expect("status"),
            connection,
            body: bytes[head..head + len].to_vec(),
        });
        bytes = &bytes[head + len..];
    }
    out
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

fn pattern(n: u64) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// Requests that exercise every path a well-formed request can take.
fn good_requests() -> Vec<Vec<u8>> {
    vec![
        get("/"),
        get("/bytes/100"),
        b"HEAD /bytes/5 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /bytes/3 HTTP/1.0\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbodyGET /bytes/2 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        [get("/bytes/7"), get("/sleep/0"), get("/nowhere")].concat(),
    ]
}

#[test]
fn hello() {
    let out = feed(Proto::Http, &[&get("/")]);
    assert_eq!(
        out.sent,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\nHello, world!\n"
    );
    assert!(!out.closed);
}

#[test]
fn every_request_split_at_every_offset_gives_the_same_answer() {
    for request in good_requests() {
        let whole = feed(Proto::Http, &[&request]);
        assert!(!whole.sent.is_empty());
        for at in 0..=request.len() {
            let (a, b) = request.split_at(at);
            assert_eq!(
                feed(Proto::Http, &[a, b]),
                whole,
                "split at {at} of {request:?}"
            );
        }
    }
}

#[test]
fn one_byte_at_a_time_gives_the_same_answer() {
    for request in good_requests() {
        let whole = feed(Proto::Http, &[&request]);
        let bytes: Vec<&[u8]> = request.chunks(1).collect();
        assert_eq!(feed(Proto::Http, &bytes), whole, "{request:?}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let sizes: Vec<u64> = (0..50).map(|i| i * 37 % 500).collect();
    let batch: Vec<u8> = sizes
        .iter()
        .flat_map(|n| get(&format!("/bytes/{n}")))
        .collect();
    let out = feed(Proto::Http, &[&batch]);
    let answers = responses(&out.sent);
    assert_eq!(answers.len(), sizes.len());
    for (answer, &n) in answers.iter().zip(&sizes) {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, pattern(n));
    }
    assert!(!out.closed);
}

#[test]
fn a_large_body_streams_within_the_output_bound() {
    let n = 5 * OUTPUT_HIGH_WATER as u64 + 123;
    let out = feed(Proto::Http, &[&get(&format!("/bytes/{n}")), &get("/")]);
    let answers = responses(&out.sent);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].body, pattern(n));
    assert_eq!(answers[1].body, b"Hello, world!\n");
}

#[test]
fn keep_alive_follows_each_version() {
    let cases: &[(&[u8], &str, bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", "keep-alive", false),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "close",
            true,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, CLOSE\r\n\r\n",
            "close",
            true,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", "close", true),
        (
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            "keep-alive",
            false,
        ),
    ];
    for &(request, connection, closed) in cases {
        let out = feed(Proto::Http, &[request]);
        let answers = responses(&out.sent);
        assert_eq!(answers[0].connection, connection, "{request:?}");
        assert_eq!(out.closed, closed, "{request:?}");
    }
}

#[test]
fn requests_after_connection_close_are_not_answered() {
    let batch = [
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        get("/"),
    ]
    .concat();
    let out = feed(Proto::Http, &[&batch]);
    assert_eq!(responses(&out.sent).len(), 1);
    assert!(out.closed);
}

#[test]
fn bad_input_gets_its_status_then_close() {
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-A: b\r\n".repeat(100)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nHost t\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n".to_vec(),
            400,
        ),
        (long_header.into_bytes(), 431),
        (many_headers.into_bytes(), 431),
        (b"POST / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        (b"BREW / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 501),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            501,
        ),
    ];
    for (request, status) in cases {
        // Whatever follows the bad request is dropped, not answered.
        let out = feed(Proto::Http, &[&request, &get("/")]);
        let answers = responses(&out.sent);
        assert_eq!(answers.len(), 1, "{request:?}");
        assert_eq!(answers[0].status, status, "{request:?}");
        assert_eq!(answers[0].connection, "close");
        assert!(out.closed, "{request:?}");
    }
}

#[test]
fn headers_that_never_end_are_refused_at_the_bound() {
    let mut endless = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    while endless.len() <= MAX_HEADER_BYTES {
        endless.extend_from_slice(b"X-More: yes\r\n");
    }
    let out = feed(Proto::Http, &[&endless]);
    assert_eq!(responses(&out.sent)[0].status, 431);
    assert!(out.closed);
}

#[test]
fn a_header_timeout_is_a_408_that_closes() {
    let out = request_timeout(Proto::Http);
    let resp = responses(&out);
    assert_eq!(resp.len(), 1, "{}", String::from_utf8_lossy(&out));
    assert_eq!(resp[0].status, 408);
    assert_eq!(resp[0].connection, "close");
    assert_eq!(resp[0].body, b"Request Timeout\n");
    // Echo has no protocol to say it in: a close says all.
    assert!(request_timeout(Proto::Echo).is_empty());
}

#[test]
fn unknown_paths_and_out_of_range_numbers_are_404() {
    for path in [
        "/nope",
        "/bytes/",
        "/bytes/x",
        "/bytes/-1",
        "/sleep/99999999",
        "/wait/60001",
        "/bytes/99999999999",
    ] {
        let out = feed(Proto::Http, &[&get(path)]);
        assert_eq!(responses(&out.sent)[0].status, 404, "{path}");
        assert!(!out.closed, "{path}: a 404 keeps the connection");
    }
}

#[test]
fn sleep_wait_and_spin_hand_back_their_work() {
    let out = feed(
        Proto::Http,
        &[&get("/sleep/25"), &get("/wait/40"), &get("/spin/300")],
    );
    assert_eq!(
        out.work,
        vec![
            Work::Sleep(Duration::from_millis(25)),
            Work::Wait(Duration::from_millis(40)),
            Work::Spin(Duration::from_micros(300))
        ]
    );
    let answers = responses(&out.sent);
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(answers[1].body, b"waited\n");
}

#[test]
fn echo_returns_bytes_as_they_came() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let chunks: Vec<&[u8]> = data.chunks(1000).collect();
    let out = feed(Proto::Echo, &chunks);
    assert_eq!(out.sent, data);
    assert!(!out.closed);
}

#[test]
fn echo_stops_at_the_output_bound() {
    let mut handler = Handler::new(Proto::Echo);
    let mut output = Vec::new();
    let data = vec![7u8; OUTPUT_HIGH_WATER + 10];
    let progress = handler.handle(&data, &mut output);
    assert_eq!(progress.consumed, OUTPUT_HIGH_WATER);
    assert_eq!(progress.step, Step::OutputFull);
    assert_eq!(output.len(), OUTPUT_HIGH_WATER);
}

/// Bytes that look like HTTP often enough to reach the deeper paths.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"GET ".to_vec()),
        Just(b"HEAD ".to_vec()),
        Just(b"/bytes/".to_vec()),
        Just(b"/ HTTP/1.1\r\n".to_vec()),
        Just(b" HTTP/1.0\r\n".to_vec()),
        Just(b"Host: x\r\n".to_vec()),
        Just(b"Connection: close\r\n".to_vec()),
        Just(b"Content-Length: 3\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        "[0-9]{1,6}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_output_stays_bounded(
        data in prop::collection::vec(any::<u8>(), 0..4096),
        cut in 0usize..4096,
    ) {
        let cut = cut.min(data.len());
        let (a, b) = data.split_at(cut);
        feed(Proto::Http, &[a, b]);
        feed(Proto::Echo, &[a, b]);
    }

    #[test]
    fn http_ish_bytes_never_panic_and_split_the_same(data in http_ish(), cut in 0usize..512) {
        let cut = cut.min(data.len());
        let (a, b) = data.split_at(cut);
        prop_assert_eq!(feed(Proto::Http, &[a, b]), feed(Proto::Http, &[&data]));
    }
}

/// A graceful stop: after `finish`, the next answer says it is the last and the handler
/// closes; what came before it was keep-alive.
#[test]
fn after_finish_the_next_answer_is_the_last() {
    let mut handler = Handler::new(Proto::Http);
    let mut output = Vec::new();
    let request = get("/");
    let first = handler.handle(&request, &mut output);
    assert_eq!(
        (first.consumed, first.step),
        (request.len(), Step::NeedInput)
    );
    assert!(String::from_utf8_lossy(&output).contains("Connection: keep-alive"));
    output.clear();
    handler.finish();
    let last = handler.handle(&request, &mut output);
    assert_eq!(last.step, Step::Close);
    assert!(String::from_utf8_lossy(&output).contains("Connection: close"));
}
