//! The scripted scenario the models' timelines are recorded from: four clients, each
//! with its own script of connects, sends and reads against a model started for it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use iomodels_servers::trace::{now_us, Event, What};

use crate::bench::child::Server;
use crate::bench::network::Network;
use crate::roster;

use super::{source_hash, Trace};

const SCENARIO: &str = "A asks / and gets its answer. B sends half a header, and the \
     rest 80 ms later. C asks /wait/100. D sends a few bytes of a header and nothing \
     more: the header timeout (300 ms) answers it 408. A asks again, then closes.";

/// The server arguments of the scenario: a short header timeout, so that D's 408 comes
/// inside the picture, and two threads where a model has several.
fn scenario_args(model: &str) -> Vec<String> {
    let mut args: Vec<String> = ["--header-timeout", "300ms", "--idle-timeout", "off"]
        .map(String::from)
        .to_vec();
    args.extend(roster::find(model).parallel.args(2));
    args
}

/// One client's part: (ms after the start, what it does).
enum Step {
    Connect,
    Send(&'static [u8]),
    /// Read one answer (framed by Content-Length), or the close after it.
    Answer,
    Close,
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

fn script() -> Vec<(&'static str, Vec<(u64, Step)>)> {
    use Step::*;
    vec![
        (
            "A",
            vec![
                (0, Connect),
                (0, Send(GET)),
                (0, Answer),
                (420, Send(GET)),
                (420, Answer),
                (440, Close),
            ],
        ),
        (
            "B",
            vec![
                (40, Connect),
                (40, Send(b"GET / HTTP/1.1\r\nHo")),
                (120, Send(b"st: t\r\n\r\n")),
                (120, Answer),
            ],
        ),
        (
            "C",
            vec![
                (80, Connect),
                (80, Send(b"GET /wait/100 HTTP/1.1\r\nHost: t\r\n\r\n")),
                (80, Answer),
            ],
        ),
        (
            "D",
            vec![(160, Connect), (160, Send(b"GET / HT")), (160, Answer)],
        ),
    ]
}

/// Run the scenario against `model` (started from `exe`), and return what it recorded.
pub fn record(exe: &Path, root: &Path, model: &str, scratch: &Path) -> Result<Trace, String> {
    let file = scratch.join(format!("{model}.trace.json"));
    let mut args = scenario_args(model);
    args.extend(["--trace".to_string(), file.display().to_string()]);
    let server = Server::ours(exe, model, &args, &[], None, &Network::loopback())?;
    let addr = server.addr;
    let start = now_us() + 50_000;
    let client_events = std::sync::Mutex::new(Vec::new());
    thread::scope(|s| {
        for (name, steps) in script() {
            let events = &client_events;
            s.spawn(move || run_client(addr, name, steps, start, events));
        }
    });
    // Let the last close reach the server before it stops.
    thread::sleep(Duration::from_millis(100));
    server.stop()?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("{model} wrote no trace to {}: {e}", file.display()))?;
    let mut events: Vec<Event> =
        serde_json::from_str(&text).map_err(|e| format!("{model}'s trace: {e}"))?;
    events.extend(client_events.into_inner().unwrap());
    events.sort_by_key(|e| e.us);
    Ok(Trace {
        name: model.to_string(),
        args: scenario_args(model),
        scenario: SCENARIO.into(),
        source: source_hash(root, model)?,
        events,
    })
}

fn run_client(
    addr: SocketAddr,
    name: &str,
    steps: Vec<(u64, Step)>,
    start: u64,
    events: &std::sync::Mutex<Vec<Event>>,
) {
    let said = |did: String| {
        let event = Event {
            us: now_us(),
            thread: "clients".into(),
            what: What::Client {
                client: name.into(),
                did,
            },
        };
        events.lock().unwrap().push(event);
    };
    let mut stream: Option<TcpStream> = None;
    for (at_ms, step) in steps {
        let at = start + at_ms * 1000;
        let now = now_us();
        if at > now {
            thread::sleep(Duration::from_micros(at - now));
        }
        match step {
            Step::Connect => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    said("connects".into());
                    stream = Some(s);
                }
                Err(e) => return said(format!("cannot connect: {e}")),
            },
            Step::Send(bytes) => {
                if let Some(s) = stream.as_mut() {
                    let _ = s.write_all(bytes);
                    said(format!("sends {} B", bytes.len()));
                }
            }
            Step::Answer => {
                if let Some(s) = stream.as_mut() {
                    said(answer(s));
                }
            }
            Step::Close => {
                if let Some(s) = stream.take() {
                    let _ = s.shutdown(Shutdown::Write);
                    let mut rest = Vec::new();
                    let _ = (&s).read_to_end(&mut rest);
                    said("closes".into());
                }
            }
        }
    }
}

/// Read one HTTP answer: "gets 200" (or the status it was), or how it ended.
fn answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = resp.parse(&got) {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= head + len {
                return format!("gets {}", resp.code.unwrap_or(0));
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return "sees the close".into(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return format!("read failed: {e}"),
        }
    }
}
