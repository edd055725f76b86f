//! The book's pictures of how each model waits, drawn from runs: `iomodels trace` runs
//! one short scripted scenario against every model (`serve --trace`) and keeps what
//! each recorded in `results/reference/traces/`; `iomodels book` draws each as an SVG
//! timeline, one lane per thread under a lane of the clients. Nothing is hand-drawn.
//!
//! A trace names the source it was recorded from (a hash of the model's file), so the
//! book test can say when a model changed after its picture was taken.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::bench::network::Network;
use serde::{Deserialize, Serialize};

use iomodels_servers::trace::{now_us, Event, What};
use iomodels_servers::MODELS;

use crate::bench::child::Server;
use crate::report::thousands;

mod edge;

pub use edge::edge_vs_level;

/// Where the traces are kept, under the repository root.
pub const TRACES: &str = "results/reference/traces";
/// The edge- against level-triggered demonstration's trace (and picture) name.
pub const EDGE_VS_LEVEL: &str = "edge-vs-level";

/// One recorded scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trace {
    /// The model (or [`EDGE_VS_LEVEL`]).
    pub name: String,
    /// The `serve` arguments it ran with.
    pub args: Vec<String>,
    /// What the clients did, in words: the picture's caption.
    pub scenario: String,
    /// FNV-1a of the source file it was recorded from, in hex.
    pub source: String,
    pub events: Vec<Event>,
}

/// The file a trace's source hash is taken from.
pub fn source_file(name: &str) -> String {
    match MODELS.iter().find(|m| m.name == name) {
        Some(model) => format!("servers/src/models/{}", model.file()),
        None => "src/timeline/edge.rs".into(),
    }
}

/// FNV-1a, 64 bits: enough to notice a changed file, and stable everywhere.
pub fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The hash of `name`'s source as it is now.
pub fn source_hash(root: &Path, name: &str) -> Result<String, String> {
    let path = root.join(source_file(name));
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(fnv(&bytes))
}

const SCENARIO: &str = "A asks / and gets its answer. B sends half a header, and the \
     rest 80 ms later. C asks /wait/100. D sends a few bytes of a header and nothing \
     more: the header timeout (300 ms) answers it 408. A asks again, then closes.";

/// The server arguments of the scenario: a short header timeout, so that D's 408 comes
/// inside the picture, and two threads where a model has several.
fn scenario_args(model: &str) -> Vec<String> {
    let mut args: Vec<String> = ["--header-timeout", "300ms", "--idle-timeout", "off"]
        .map(String::from)
        .to_vec();
    if model == "thread-pool" || model == "epoll-mt" {
        args.extend(["--threads".to_string(), "2".to_string()]);
    }
    if model == "prefork" {
        args.extend(["--workers".to_string(), "2".to_string()]);
    }
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

/// Record every model's trace and the edge-against-level one into `out`.
pub fn record_all(exe: &Path, root: &Path, out: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let scratch = std::env::temp_dir().join(format!("iomodels-trace-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let mut traces = Vec::new();
    for model in MODELS {
        if (model.available)().is_err() {
            eprintln!(
                "iomodels: {} cannot run here; its trace is kept",
                model.name
            );
            continue;
        }
        traces.push(record(exe, root, model.name, &scratch)?);
    }
    traces.push(edge_vs_level(root)?);
    let _ = std::fs::remove_dir_all(&scratch);
    for trace in &traces {
        let path = out.join(format!("{}.json", trace.name));
        let text = serde_json::to_string_pretty(trace).expect("a trace serializes") + "\n";
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(traces.len())
}

/// Read the trace called `name` from `dir`.
pub fn load(dir: &Path, name: &str) -> Result<Trace, String> {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `cargo run --release -- trace`)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Drawing

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 90.0;
const ROW: f64 = 15.0;
const CHAR: f64 = 6.0;

/// The trace as an SVG timeline: time across, one lane per thread (the clients' first),
/// waits as grey bars, every other event a tick with its label.
pub fn svg(trace: &Trace) -> String {
    let events = &trace.events;
    // Time 0 is the first client's first step (the server's first wait began earlier).
    let first_client = events
        .iter()
        .find(|e| matches!(e.what, What::Client { .. }));
    let t0 = first_client.map_or(0, |e| e.us);
    let t0 = t0.max(events.iter().map(|e| e.us).min().unwrap_or(0));
    let t1 = events
        .iter()
        .map(|e| e.us)
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let span_ms = (t1 - t0) as f64 / 1000.0;
    let plot = WIDTH - LEFT - RIGHT;
    let x = |us: u64| LEFT + us.saturating_sub(t0) as f64 / 1000.0 / span_ms * plot;

    // Lanes in order of first appearance, the clients first; the signals thread is the
    // harness's, not the model's. A lane is named by its thread's name (without the
    // kernel's id), numbered where several threads share one.
    let mut lanes: Vec<String> = Vec::new();
    if events.iter().any(|e| e.thread == "clients") {
        lanes.push("clients".into());
    }
    let name_of = |thread: &str| thread.split('/').next().unwrap_or(thread).to_string();
    for e in events {
        if name_of(&e.thread) != "signals" && !lanes.contains(&e.thread) {
            lanes.push(e.thread.clone());
        }
    }
    let lane_names: Vec<String> = lanes
        .iter()
        .map(|lane| {
            let name = name_of(lane);
            let same: Vec<&String> = lanes.iter().filter(|l| name_of(l) == name).collect();
            match same.iter().position(|l| *l == lane) {
                Some(i) if same.len() > 1 => format!("{name} {}", i + 1),
                _ => name,
            }
        })
        .collect();

    // Connections by the client they belong to: the n-th accept is the n-th client to
    // connect (the scenario connects them 40 ms apart).
    // Descriptors are a process's: keyed by the process (prefork's workers are named
    // `worker N`; every other model's threads share one table) and the number.
    let mut names: HashMap<(String, i32), String> = HashMap::new();
    let mut connecting = events.iter().filter_map(|e| match &e.what {
        What::Client { client, did } if did == "connects" => Some(client.clone()),
        _ => None,
    });
    let process = |thread: &str| {
        let name = name_of(thread);
        if name.starts_with("worker ") {
            name
        } else {
            String::new()
        }
    };
    let conn = |names: &HashMap<(String, i32), String>, key: (String, i32)| {
        let fd = key.1;
        names
            .get(&key)
            .cloned()
            .unwrap_or_else(|| format!("fd {fd}"))
    };

    // Each lane: its marks (x, label) and its waits (from, to, call).
    let mut marks: Vec<Vec<(f64, String, bool)>> = vec![Vec::new(); lanes.len()];
    let mut waits: Vec<Vec<(f64, f64, String)>> = vec![Vec::new(); lanes.len()];
    let mut open_wait: HashMap<usize, (f64, String)> = HashMap::new();
    let mut spins: Vec<Vec<(f64, f64, u64)>> = vec![Vec::new(); lanes.len()];
    for e in events {
        let Some(lane) = lanes.iter().position(|l| *l == e.thread) else {
            continue;
        };
        let at = x(e.us);
        let key = |fd: &i32| (process(&e.thread), *fd);
        if let Some((from, call)) = open_wait.remove(&lane) {
            waits[lane].push((from, at, call));
        }
        let label = match &e.what {
            What::WaitBegins { call } => {
                open_wait.insert(lane, (at, call.clone()));
                continue;
            }
            What::WaitEnds { ready } => format!("{ready} ready"),
            What::Accept { fd } => {
                let name = connecting.next().unwrap_or_else(|| format!("fd {fd}"));
                names.insert(key(fd), name.clone());
                format!("accept {name}")
            }
            What::Read { fd, bytes: 0 } => format!("read {}: EOF", conn(&names, key(fd))),
            What::Read { fd, bytes } => format!("read {}: {bytes} B", conn(&names, key(fd))),
            What::EmptyRead { fd } => format!("read {}: EAGAIN", conn(&names, key(fd))),
            What::Spun {
                empty_reads,
                until_us,
            } => {
                // A band, like a wait's, but of work that found nothing.
                spins[lane].push((at, x(*until_us), *empty_reads));
                continue;
            }
            What::Write { fd, bytes } => format!("write {}: {bytes} B", conn(&names, key(fd))),
            What::Expired { fd, why } => format!("{why}: {}", conn(&names, key(fd))),
            What::Close { fd } => {
                let label = format!("close {}", conn(&names, key(fd)));
                names.remove(&key(fd));
                label
            }
            What::Client { client, did } => format!("{client} {did}"),
        };
        let client = matches!(e.what, What::Client { .. });
        marks[lane].push((at, label, client));
    }
    for (lane, (from, call)) in open_wait {
        waits[lane].push((from, x(t1), call));
    }

    // Labels stacked in rows so that none overlaps the one before it in its row.
    let mut rows_of: Vec<Vec<(f64, String, usize, bool)>> = Vec::new();
    for lane_marks in &marks {
        let mut ends: Vec<f64> = Vec::new();
        let mut placed = Vec::new();
        for (at, label, client) in lane_marks {
            let width = label.len() as f64 * CHAR + 6.0;
            let row = match ends.iter().position(|&end| end <= *at) {
                Some(r) => r,
                None => {
                    ends.push(0.0);
                    ends.len() - 1
                }
            };
            ends[row] = at + width;
            placed.push((*at, label.clone(), row, *client));
        }
        rows_of.push(placed);
    }
    let lane_height = |placed: &Vec<(f64, String, usize, bool)>| {
        34.0 + ROW * placed.iter().map(|p| p.2 + 1).max().unwrap_or(0) as f64
    };
    let caption = crate::charts::wrap(&trace.scenario, 150);
    let top = 60.0 + 14.0 * caption.len() as f64;
    let height = top + rows_of.iter().map(lane_height).sum::<f64>() + 40.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="24" font-size="16">{} — recorded, not drawn by hand</text>"##,
        escape(&trace.name),
    );
    for (i, line) in caption.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" font-size="11" fill="#444">{}</text>"##,
            44 + 14 * i,
            escape(line.trim())
        );
    }
    // The time axis: a tick every 50 ms.
    let axis_y = height - 30.0;
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#888"/>"##,
        WIDTH - RIGHT
    );
    let step = if span_ms > 600.0 { 100.0 } else { 50.0 };
    let mut ms = 0.0;
    while ms <= span_ms {
        let tx = LEFT + ms / span_ms * plot;
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{axis_y}" stroke="#eee"/><text x="{tx:.1}" y="{:.0}" font-size="10" text-anchor="middle" fill="#444">{ms:.0} ms</text>"##,
            axis_y + 14.0
        );
        ms += step;
    }
    let mut y = top;
    for (lane, name) in lane_names.iter().enumerate() {
        let h = lane_height(&rows_of[lane]);
        let base = y + h - 12.0;
        let _ = writeln!(
            out,
            r##"<text x="8" y="{base:.1}" font-size="12" font-weight="bold">{}</text><line x1="{LEFT}" y1="{base:.1}" x2="{}" y2="{base:.1}" stroke="#ccc"/>"##,
            escape(name),
            WIDTH - RIGHT
        );
        for (from, to, call) in &waits[lane] {
            let w = (to - from).max(1.0);
            let _ = writeln!(
                out,
                r##"<rect x="{from:.1}" y="{:.1}" width="{w:.1}" height="10" fill="#d8d8d8"><title>{}</title></rect>"##,
                base - 5.0,
                escape(call)
            );
            if w > call.len() as f64 * CHAR + 4.0 {
                let _ = writeln!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#555">{}</text>"##,
                    from + 2.0,
                    base + 3.5,
                    escape(call)
                );
            }
        }
        for (from, to, reads) in &spins[lane] {
            let w = (to - from).max(1.0);
            let label = format!("{} reads found nothing", thousands(*reads as f64));
            let _ = writeln!(
                out,
                r##"<rect x="{from:.1}" y="{:.1}" width="{w:.1}" height="10" fill="#f4c7a1"><title>{label}</title></rect>"##,
                base - 5.0
            );
            if w > label.len() as f64 * CHAR + 4.0 {
                let _ = writeln!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#555">{label}</text>"##,
                    from + 2.0,
                    base + 3.5
                );
            }
        }
        for (at, label, row, client) in &rows_of[lane] {
            // What a client did in blue, what the server did in red.
            let colour = if *client { "#1f77b4" } else { "#d62728" };
            let ly = base - 10.0 - ROW * *row as f64;
            let _ = writeln!(
                out,
                r##"<line x1="{at:.1}" y1="{:.1}" x2="{at:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{colour}">{}</text>"##,
                base + 5.0,
                at + 2.0,
                ly,
                escape(label)
            );
        }
        y += h;
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
