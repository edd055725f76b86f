//! The shared request handler: sans-IO, bytes in -> bytes out.
//!
//! Every model calls [`Handler::handle`] the same way: with the bytes a connection has
//! received, and the buffer it will send from. The handler never touches a socket, a
//! clock or a thread; it answers with how many input bytes it consumed and what the
//! connection should do next ([`Step`]). "Need more input" is a normal answer, not an
//! error, exactly as `httparse::Status::Partial` is.
//!
//! Protocols: `echo` (bytes back as they came) and `http` (HTTP/1.0 and 1.1, keep-alive by
//! each version's rules, pipelining). Routes: `/` a small fixed body, `/bytes/N` an N-byte
//! body (streamed, so a large one exercises partial writes without a large buffer),
//! `/sleep/MS` blocking work, `/wait/MS` a wait that needs no thread, and `/spin/US` CPU
//! work (all handed back as [`Work`] for the connection to run, since running them needs
//! a clock).
//!
//! Memory is bounded: the handler stops producing once the output holds
//! [`OUTPUT_HIGH_WATER`] bytes and resumes when called again after a flush.

use std::time::Duration;

/// A header block larger than this is answered with 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// More headers than this is answered with 431 too.
pub const MAX_HEADERS: usize = 64;
/// The handler stops appending output once the output buffer holds this much.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// The largest `/bytes/N` (the body is generated as it is sent, never held whole).
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// The longest `/sleep/MS` and `/wait/MS`.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// The longest `/spin/US`.
pub const MAX_SPIN_US: u64 = 10_000_000;

/// The body of `/`.
pub const HELLO: &[u8] = b"Hello, world!\n";

/// Which protocol a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http,
    Echo,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Echo => "echo",
        }
    }
}

// ANCHOR: step
/// Work the connection must run (it needs a clock, so the handler cannot) before the
/// response the handler has just appended may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Block the calling thread: the lesson of never blocking an event loop.
    Sleep(Duration),
    /// Answer this much later, holding no thread: what a timer or a coroutine's
    /// `await sleep(…)` does on an event loop (the reactor). A model with no timer for
    /// its application's code runs it as a [`Work::Sleep`].
    Wait(Duration),
    /// Burn CPU for this long.
    Spin(Duration),
}

/// What the connection should do after a call to [`Handler::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Everything complete has been answered: read more input.
    NeedInput,
    /// The output buffer reached [`OUTPUT_HIGH_WATER`]: flush, then call again.
    OutputFull,
    /// Run this work, then call again (the response is already in the output).
    Work(Work),
    /// Send what is in the output, then close. Further input is ignored.
    Close,
}

/// The answer to one call of [`Handler::handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed; the caller drops them from its buffer.
    pub consumed: usize,
    /// Requests answered (echo: always 0; it has no requests, only bytes).
    pub requests: u64,
    pub step: Step,
}
// ANCHOR_END: step

/// One connection's protocol state.
#[derive(Debug)]
pub struct Handler {
    proto: Proto,
    /// Bytes of a `/bytes/N` body still to generate.
    body_left: u64,
    /// Offset of the next body byte, so the pattern is the same however it is split.
    body_at: u64,
    /// Bytes of a request body still to skip (a GET may carry one).
    discard_left: u64,
    /// Close once the current response is complete.
    close_after: bool,
    /// Closed: all further input is ignored.
    closed: bool,
    /// The server is stopping gracefully: the next answer is the last (HTTP says so
    /// with `Connection: close`).
    last: bool,
}

impl Handler {
    pub fn new(proto: Proto) -> Handler {
        Handler {
            proto,
            body_left: 0,
            body_at: 0,
            discard_left: 0,
            close_after: false,
            closed: false,
            last: false,
        }
    }

    /// The server is stopping: answer what comes, and close after the next answer.
    pub fn finish(&mut self) {
        self.last = true;
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    // ANCHOR: handle
    /// Consume complete requests from `input`, append their responses to `output`.
    ///
    /// Call again after every read, after every flush, and after running [`Work`].
    pub fn handle(&mut self, input: &[u8], output: &mut Vec<u8>) -> Progress {
        match self.proto {
            Proto::Echo => self.echo(input, output),
            Proto::Http => self.http(input, output),
        }
    }
    // ANCHOR_END: handle

    fn echo(&mut self, input: &[u8], output: &mut Vec<u8>) -> Progress {
        let room = OUTPUT_HIGH_WATER.saturating_sub(output.len());
        let n = input.len().min(room);
        output.extend_from_slice(&input[..n]);
        let step = if n < input.len() {
            Step::OutputFull
        } else {
            Step::NeedInput
        };
        Progress {
            consumed: n,
            requests: 0,
            step,
        }
    }

    fn http(&mut self, input: &[u8], output: &mut Vec<u8>) -> Progress {
        let mut consumed = 0;
        let mut requests = 0;
        let step = loop {
            if self.closed {
                // Whatever arrives after a close is dropped, not answered.
                consumed = input.len();
                break Step::Close;
            }
            // Finish the response in progress before reading the next request.
            if self.body_left > 0 {
                self.fill_body(output);
                if self.body_left > 0 {
                    break Step::OutputFull;
                }
            }
            if self.close_after {
                self.closed = true;
                continue;
            }
            if self.discard_left > 0 {
                let n = (input.len() - consumed).min(self.discard_left as usize);
                consumed += n;
                self.discard_left -= n as u64;
                if self.discard_left > 0 {
                    break Step::NeedInput;
                }
            }
            if output.len() >= OUTPUT_HIGH_WATER {
                break Step::OutputFull;
            }
            match self.request(&input[consumed..], output) {
                Parsed::Partial => break Step::NeedInput,
                Parsed::Answered { len, work } => {
                    consumed += len;
                    requests += 1;
                    if let Some(work) = work {
                        break Step::Work(work);
                    }
                }
            }
        };
        Progress {
            consumed,
            requests,
            step,
        }
    }

    /// Parse one request at the start of `input` and append its response.
    fn request(&mut self, input: &[u8], output: &mut Vec<u8>) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(input) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEADER_BYTES => len,
            Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                return self.refuse(input.len(), output, 431);
            }
            Ok(httparse::Status::Partial) if input.len() <= MAX_HEADER_BYTES => {
                return Parsed::Partial;
            }
            Ok(httparse::Status::Partial) => return self.refuse(input.len(), output, 431),
            Err(_) => return self.refuse(input.len(), output, 400),
        };
        let (method, path, version) = match (req.method, req.path, req.version) {
            (Some(m), Some(p), Some(v)) => (m, p, v),
            _ => return self.refuse(input.len(), output, 400),
        };

        let mut keep_alive = version == 1;
        let mut has_host = false;
        let mut body_len = 0u64;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                        keep_alive = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("host") {
                has_host = true;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    Some(n) => body_len = n,
                    None => return self.refuse(input.len(), output, 400),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // A chunked request body is not something our routes need.
                return self.refuse(input.len(), output, 501);
            }
        }
        if self.last {
            keep_alive = false;
        }
        if version == 1 && !has_host {
            // RFC 9112 3.2: a 1.1 request without Host is answered with 400.
            return self.refuse(input.len(), output, 400);
        }
        let head = match method {
            "GET" => false,
            "HEAD" => true,
            "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "TRACE" | "CONNECT" => {
                return self.refuse(input.len(), output, 405);
            }
            _ => return self.refuse(input.len(), output, 501),
        };

        self.discard_left = body_len;
        self.close_after = !keep_alive;
        let Some((body, work)) = route(path) else {
            respond(output, 404, b"not found\n", keep_alive, head);
            return Parsed::Answered { len, work: None };
        };
        match body {
            Body::Fixed(bytes) => respond(output, 200, bytes, keep_alive, head),
            Body::Pattern(n) => {
                write_head(output, 200, n, keep_alive);
                if !head {
                    self.body_left = n;
                    self.body_at = 0;
                    self.fill_body(output);
                }
            }
        }
        Parsed::Answered { len, work }
    }

    /// Answer bad input with `status` and close: the rest of the input cannot be framed.
    fn refuse(&mut self, len: usize, output: &mut Vec<u8>, status: u16) -> Parsed {
        write_error(output, status);
        self.close_after = true;
        Parsed::Answered { len, work: None }
    }

    /// Append the next slice of a `/bytes/N` body, up to the high-water mark.
    fn fill_body(&mut self, output: &mut Vec<u8>) {
        let room = OUTPUT_HIGH_WATER.saturating_sub(output.len()) as u64;
        let n = self.body_left.min(room);
        output.extend((self.body_at..self.body_at + n).map(pattern_byte));
        self.body_at += n;
        self.body_left -= n;
    }
}

enum Parsed {
    Partial,
    /// One request of `len` bytes was answered (or refused).
    Answered {
        len: usize,
        work: Option<Work>,
    },
}

enum Body {
    Fixed(&'static [u8]),
    /// N bytes of [`pattern_byte`].
    Pattern(u64),
}

/// Byte `i` of every `/bytes/N` body: `a`..`z` repeating, so a client can check any slice.
pub fn pattern_byte(i: u64) -> u8 {
    b'a' + (i % 26) as u8
}

/// The routes; `None` is 404. A number out of range is 404 too: no such resource.
fn route(path: &str) -> Option<(Body, Option<Work>)> {
    let path = path.split('?').next().unwrap_or(path);
    if path == "/" {
        return Some((Body::Fixed(HELLO), None));
    }
    let number = |prefix: &str, max: u64| {
        path.strip_prefix(prefix)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&n| n <= max)
    };
    if let Some(n) = number("/bytes/", MAX_BODY_BYTES) {
        return Some((Body::Pattern(n), None));
    }
    if let Some(ms) = number("/sleep/", MAX_SLEEP_MS) {
        let work = Work::Sleep(Duration::from_millis(ms));
        return Some((Body::Fixed(b"slept\n"), Some(work)));
    }
    if let Some(ms) = number("/wait/", MAX_SLEEP_MS) {
        let work = Work::Wait(Duration::from_millis(ms));
        return Some((Body::Fixed(b"waited\n"), Some(work)));
    }
    if let Some(us) = number("/spin/", MAX_SPIN_US) {
        let work = Work::Spin(Duration::from_micros(us));
        return Some((Body::Fixed(b"spun\n"), Some(work)));
    }
    None
}

/// A response with a small body.
fn respond(output: &mut Vec<u8>, status: u16, body: &[u8], keep_alive: bool, head: bool) {
    write_head(output, status, body.len() as u64, keep_alive);
    if !head {
        output.extend_from_slice(body);
    }
}

/// An error response: the reason phrase as its body, then close.
fn write_error(output: &mut Vec<u8>, status: u16) {
    let body = reason(status);
    write_head(output, status, body.len() as u64 + 1, false);
    output.extend_from_slice(body.as_bytes());
    output.push(b'\n');
}

fn write_head(output: &mut Vec<u8>, status: u16, content_length: u64, keep_alive: bool) {
    use std::io::Write;
    let connection = if keep_alive { "keep-alive" } else { "close" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        output,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {content_length}\r\nConnection: {connection}\r\n\r\n",
        reason(status)
    );
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The whole response a refused connection gets before it is closed (select past its
/// limit, a failed thread spawn): what a client sees instead of a silent reset.
pub fn service_unavailable(proto: Proto) -> Vec<u8> {
    let mut out = Vec::new();
    if proto == Proto::Http {
        write_error(&mut out, 503);
    }
    out
}

/// The whole response to a request whose header did not come in time (the header
/// timeout), before the connection is closed; echo has nothing to say.
pub fn request_timeout(proto: Proto) -> Vec<u8> {
    let mut out = Vec::new();
    if proto == Proto::Http {
        write_error(&mut out, 408);
    }
    out
}
