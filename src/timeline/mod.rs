//! The book's pictures of how each model waits, drawn from runs: `iomodels trace` runs
//! one short scripted scenario against every model (`serve --trace`) and keeps what
//! each recorded in `results/reference/traces/`; `iomodels book` draws each as an SVG
//! timeline, one lane per thread under a lane of the clients. Nothing is hand-drawn.
//!
//! A trace names the source it was recorded from (a hash of the model's file), so the
//! book test can say when a model changed after its picture was taken.

use std::path::Path;

use serde::{Deserialize, Serialize};

use iomodels_servers::trace::Event;
use iomodels_servers::MODELS;

mod draw;
mod edge;
mod record;

pub use draw::svg;
pub use edge::edge_vs_level;
pub use record::record;

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
    match iomodels_servers::model(name) {
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
