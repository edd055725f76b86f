//! A trace drawn as an SVG timeline.

use std::collections::HashMap;
use std::fmt::Write as _;

use iomodels_servers::trace::What;

use crate::report::thousands;

use super::Trace;

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
