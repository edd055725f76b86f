//! A trace drawn as an SVG timeline: time across, a lane per thread (the clients'
//! first), each lane's waits and spins as bands and every other event a tick with its
//! label, the labels stacked in rows so that none hides another.
//!
//! [`svg`] reads in steps: the time scale ([`Clock`]), the lanes ([`lanes`]), what
//! happens in each ([`fill`]), its labels stacked ([`stack`]); then it draws the
//! title and caption ([`header`]), the time axis ([`time_axis`]) and each lane
//! ([`draw_lane`]).

use std::collections::HashMap;
use std::fmt::Write as _;

use iomodels_servers::trace::{Event, What};

use crate::words::thousands;

use super::Trace;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 90.0;
/// The width of the plot, between the lane names and the right margin.
const PLOT: f64 = WIDTH - LEFT - RIGHT;
/// The height of a row of labels.
const ROW: f64 = 15.0;
/// The width of a character of a label, near enough.
const CHAR: f64 = 6.0;
/// A wait's band.
const WAIT_FILL: &str = "#d8d8d8";
/// A spin's band: work that found nothing.
const SPIN_FILL: &str = "#f4c7a1";
/// What a client did.
const CLIENT_COLOUR: &str = "#1f77b4";
/// What the server did.
const SERVER_COLOUR: &str = "#d62728";

/// The trace as an SVG timeline: time across, one lane per thread (the clients' first),
/// waits as grey bars, every other event a tick with its label.
pub fn svg(trace: &Trace) -> String {
    let events = &trace.events;
    let clock = Clock::of(events);
    let mut lanes = lanes(events);
    fill(&mut lanes, events, &clock);
    for lane in &mut lanes {
        stack(&mut lane.marks);
    }
    let caption = crate::charts::wrap(&trace.scenario, 150);
    let top = 60.0 + 14.0 * caption.len() as f64;
    let height = top + lanes.iter().map(Lane::height).sum::<f64>() + 40.0;

    let mut out = String::new();
    header(&mut out, &trace.name, &caption, height);
    time_axis(&mut out, &clock, top, height - 30.0);
    let mut y = top;
    for lane in &lanes {
        draw_lane(&mut out, lane, y);
        y += lane.height();
    }
    out.push_str("</svg>\n");
    out
}

// ---------------------------------------------------------------------------------------
// The layout

/// Time across: where each instant of the trace falls.
struct Clock {
    /// The instant at the plot's left edge, in µs.
    t0: u64,
    /// The last instant of the trace (later than `t0`), in µs.
    t1: u64,
    /// From `t0` to `t1`, in ms.
    span_ms: f64,
}

impl Clock {
    /// Time 0 is the first client's first step (the server's first wait began earlier);
    /// the end is the trace's last event.
    fn of(events: &[Event]) -> Clock {
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
        Clock { t0, t1, span_ms }
    }

    /// The x of the instant `us` (anything before `t0` at the left edge).
    fn x(&self, us: u64) -> f64 {
        LEFT + us.saturating_sub(self.t0) as f64 / 1000.0 / self.span_ms * PLOT
    }

    /// The x of `ms` after `t0`.
    fn x_ms(&self, ms: f64) -> f64 {
        LEFT + ms / self.span_ms * PLOT
    }
}

/// One thread's lane and what it shows.
struct Lane {
    /// The thread, as the trace names it.
    thread: String,
    /// Its name on the picture.
    name: String,
    waits: Vec<Wait>,
    spins: Vec<Spin>,
    marks: Vec<Mark>,
}

/// A wait in the kernel: from, to (x) and the call.
struct Wait {
    from: f64,
    to: f64,
    call: String,
}

/// Work that found nothing (a busy poll's empty reads): from, to (x) and how many.
struct Spin {
    from: f64,
    to: f64,
    empty_reads: u64,
}

/// Any other event: a tick at `at` with its label, in the row [`stack`] gives it.
struct Mark {
    at: f64,
    label: String,
    /// The clients' (drawn blue) rather than the server's (red).
    client: bool,
    row: usize,
}

impl Lane {
    /// Room for the lane's line and its rows of labels above it.
    fn height(&self) -> f64 {
        34.0 + ROW * self.marks.iter().map(|m| m.row + 1).max().unwrap_or(0) as f64
    }
}

/// The name of a thread without the kernel's id.
fn thread_name(thread: &str) -> &str {
    thread.split('/').next().unwrap_or(thread)
}

/// Lanes in order of first appearance, the clients first; the signals thread is the
/// harness's, not the model's. A lane is named by its thread's name (without the
/// kernel's id), numbered where several threads share one.
fn lanes(events: &[Event]) -> Vec<Lane> {
    let mut threads: Vec<&str> = Vec::new();
    if events.iter().any(|e| e.thread == "clients") {
        threads.push("clients");
    }
    for e in events {
        if thread_name(&e.thread) != "signals" && !threads.contains(&e.thread.as_str()) {
            threads.push(&e.thread);
        }
    }
    let numbered = |thread: &str| {
        let name = thread_name(thread);
        let same: Vec<&&str> = threads.iter().filter(|t| thread_name(t) == name).collect();
        match same.iter().position(|t| **t == thread) {
            Some(i) if same.len() > 1 => format!("{name} {}", i + 1),
            _ => name.to_string(),
        }
    };
    threads
        .iter()
        .map(|thread| Lane {
            thread: thread.to_string(),
            name: numbered(thread),
            waits: Vec::new(),
            spins: Vec::new(),
            marks: Vec::new(),
        })
        .collect()
}

/// Put each event in its thread's lane: a wait from its beginning to the lane's next
/// event (or the end), a spin as long as it says, anything else a mark.
fn fill(lanes: &mut [Lane], events: &[Event], clock: &Clock) {
    let mut connections = Connections::of(events);
    let mut open: Vec<Option<(f64, String)>> = vec![None; lanes.len()];
    for e in events {
        let Some(i) = lanes.iter().position(|l| l.thread == e.thread) else {
            continue;
        };
        let lane = &mut lanes[i];
        let at = clock.x(e.us);
        if let Some((from, call)) = open[i].take() {
            lane.waits.push(Wait { from, to: at, call });
        }
        match &e.what {
            What::WaitBegins { call } => open[i] = Some((at, call.clone())),
            What::Spun {
                empty_reads,
                until_us,
            } => lane.spins.push(Spin {
                from: at,
                to: clock.x(*until_us),
                empty_reads: *empty_reads,
            }),
            what => lane.marks.push(Mark {
                at,
                label: connections.label(&e.thread, what),
                client: matches!(what, What::Client { .. }),
                row: 0,
            }),
        }
    }
    for (lane, open) in lanes.iter_mut().zip(open) {
        if let Some((from, call)) = open {
            let to = clock.x(clock.t1);
            lane.waits.push(Wait { from, to, call });
        }
    }
}

/// Connections by the client they belong to: the n-th accept is the n-th client to
/// connect (the scenario connects them 40 ms apart).
/// Descriptors are a process's: keyed by the process (prefork's workers are named
/// `worker N`; every other model's threads share one table) and the number.
struct Connections {
    /// The clients in the order they connected, the next to be accepted first.
    connecting: std::vec::IntoIter<String>,
    names: HashMap<(String, i32), String>,
}

impl Connections {
    fn of(events: &[Event]) -> Connections {
        let connecting: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.what {
                What::Client { client, did } if did == "connects" => Some(client.clone()),
                _ => None,
            })
            .collect();
        Connections {
            connecting: connecting.into_iter(),
            names: HashMap::new(),
        }
    }

    /// The process whose descriptor table `thread`'s descriptors are in.
    fn process(thread: &str) -> String {
        let name = thread_name(thread);
        if name.starts_with("worker ") {
            name.to_string()
        } else {
            String::new()
        }
    }

    /// The client `thread`'s descriptor `fd` belongs to, or the descriptor.
    fn name(&self, thread: &str, fd: i32) -> String {
        self.names
            .get(&(Self::process(thread), fd))
            .cloned()
            .unwrap_or_else(|| format!("fd {fd}"))
    }

    /// A mark's label: what `thread` did, in words, naming the connection by its client.
    fn label(&mut self, thread: &str, what: &What) -> String {
        match what {
            What::WaitEnds { ready } => format!("{ready} ready"),
            What::Accept { fd } => {
                let name = self.connecting.next().unwrap_or_else(|| format!("fd {fd}"));
                self.names
                    .insert((Self::process(thread), *fd), name.clone());
                format!("accept {name}")
            }
            What::Read { fd, bytes: 0 } => format!("read {}: EOF", self.name(thread, *fd)),
            What::Read { fd, bytes } => format!("read {}: {bytes} B", self.name(thread, *fd)),
            What::EmptyRead { fd } => format!("read {}: EAGAIN", self.name(thread, *fd)),
            What::Write { fd, bytes } => {
                format!("write {}: {bytes} B", self.name(thread, *fd))
            }
            What::Expired { fd, why } => format!("{why}: {}", self.name(thread, *fd)),
            What::Close { fd } => {
                let label = format!("close {}", self.name(thread, *fd));
                self.names.remove(&(Self::process(thread), *fd));
                label
            }
            What::Client { client, did } => format!("{client} {did}"),
            What::WaitBegins { .. } | What::Spun { .. } => {
                unreachable!("a wait or a spin is a band, not a mark")
            }
        }
    }
}

/// Labels stacked in rows so that none overlaps the one before it in its row: each in
/// the first row free at its x.
fn stack(marks: &mut [Mark]) {
    let mut ends: Vec<f64> = Vec::new();
    for mark in marks {
        let width = mark.label.len() as f64 * CHAR + 6.0;
        let row = match ends.iter().position(|&end| end <= mark.at) {
            Some(r) => r,
            None => {
                ends.push(0.0);
                ends.len() - 1
            }
        };
        ends[row] = mark.at + width;
        mark.row = row;
    }
}

// ---------------------------------------------------------------------------------------
// The drawing

/// The picture's frame, its title and the scenario as its caption.
fn header(out: &mut String, name: &str, caption: &[String], height: f64) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="24" font-size="16">{} — recorded, not drawn by hand</text>"##,
        escape(name),
    );
    for (i, line) in caption.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" font-size="11" fill="#444">{}</text>"##,
            44 + 14 * i,
            escape(line.trim())
        );
    }
}

/// The time axis at `axis_y`: a tick every 50 ms (100 ms past 600 ms), each with a
/// grid line up to `top`.
fn time_axis(out: &mut String, clock: &Clock, top: f64, axis_y: f64) {
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#888"/>"##,
        WIDTH - RIGHT
    );
    let step = if clock.span_ms > 600.0 { 100.0 } else { 50.0 };
    let mut ms = 0.0;
    while ms <= clock.span_ms {
        let tx = clock.x_ms(ms);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{axis_y}" stroke="#eee"/><text x="{tx:.1}" y="{:.0}" font-size="10" text-anchor="middle" fill="#444">{ms:.0} ms</text>"##,
            axis_y + 14.0
        );
        ms += step;
    }
}

/// One lane, `y` from its top: its name and line, its waits and spins on the line, its
/// marks above it.
fn draw_lane(out: &mut String, lane: &Lane, y: f64) {
    let base = y + lane.height() - 12.0;
    let _ = writeln!(
        out,
        r##"<text x="8" y="{base:.1}" font-size="12" font-weight="bold">{}</text><line x1="{LEFT}" y1="{base:.1}" x2="{}" y2="{base:.1}" stroke="#ccc"/>"##,
        escape(&lane.name),
        WIDTH - RIGHT
    );
    for wait in &lane.waits {
        band(out, wait.from, wait.to, base, WAIT_FILL, &wait.call);
    }
    for spin in &lane.spins {
        let label = format!("{} reads found nothing", thousands(spin.empty_reads as f64));
        band(out, spin.from, spin.to, base, SPIN_FILL, &label);
    }
    for mark in &lane.marks {
        draw_mark(out, mark, base);
    }
}

/// A band on the lane's line at `base`, from `from` to `to` (at least 1 wide): its
/// label as its tooltip, and written in it where it fits.
fn band(out: &mut String, from: f64, to: f64, base: f64, fill: &str, label: &str) {
    let w = (to - from).max(1.0);
    let _ = writeln!(
        out,
        r##"<rect x="{from:.1}" y="{:.1}" width="{w:.1}" height="10" fill="{fill}"><title>{}</title></rect>"##,
        base - 5.0,
        escape(label)
    );
    if w > label.len() as f64 * CHAR + 4.0 {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#555">{}</text>"##,
            from + 2.0,
            base + 3.5,
            escape(label)
        );
    }
}

/// A mark: a tick from the lane's line at `base` up to its row, its label beside it.
fn draw_mark(out: &mut String, mark: &Mark, base: f64) {
    let colour = if mark.client {
        CLIENT_COLOUR
    } else {
        SERVER_COLOUR
    };
    let at = mark.at;
    let ly = base - 10.0 - ROW * mark.row as f64;
    let _ = writeln!(
        out,
        r##"<line x1="{at:.1}" y1="{:.1}" x2="{at:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{colour}">{}</text>"##,
        base + 5.0,
        at + 2.0,
        ly,
        escape(&mark.label)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
