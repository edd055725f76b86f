//! The book's generated pages (book/src/generated): the diff between each model and its
//! neighbour, and everything measured, from results/reference. The chapters include
//! them; nothing in them is typed by hand. `iomodels book` writes them, and
//! tests/book.rs fails when one on disk is no longer what this would write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use similar::TextDiff;

use iomodels_servers::{self as servers, MODELS};

use crate::charts::ChartSpec;
use crate::experiments::Experiment;
use crate::myths::MYTHS;
use crate::results::Run;
use crate::{charts, experiments, report, roster, timeline};

/// Where the generated pages go, under the repository root.
pub const GENERATED: &str = "book/src/generated";
/// The run the book shows, under the repository root.
pub const REFERENCE: &str = "results/reference";

/// The runs behind the book's comparison of networks: a folder `NETWORK-PASS` each,
/// several passes over the networks in turn, so that the machine's drift hit each alike.
pub const NETWORKS: &str = "results/networks";

/// The networks of that comparison: its folders' prefix, and the column's heading.
const NETWORK_COLUMNS: &[(&str, &str)] = &[
    ("loopback", "loopback"),
    ("veth", "veth (`--netns`)"),
    ("delay", "veth + 0.5 ms each way"),
];

/// One connection alone over two of them: what the link itself adds to a round trip.
const ONE_CONNECTION: &[(&str, &str)] = &[
    ("one-connection-veth", "across the veth pair"),
    (
        "one-connection-delay",
        "across the delay line (0.5 ms each way)",
    ),
];

/// Every run of [`NETWORKS`] in a folder `PREFIX` or `PREFIX-PASS`, as one run.
fn merged_runs(root: &Path, prefix: &str) -> Result<Run, String> {
    let dir = root.join(NETWORKS);
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let pass = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-'));
            name == prefix || pass.is_some_and(|p| p.parse::<u32>().is_ok())
        })
        .collect();
    folders.sort();
    let mut merged: Option<Run> = None;
    for folder in folders {
        let run = Run::load(&folder)?;
        match &mut merged {
            Some(all) => all.points.extend(run.points),
            None => merged = Some(run),
        }
    }
    merged.ok_or_else(|| format!("no run for {prefix} in {}", dir.display()))
}

/// The generated files, by path under the repository root.
type Files = BTreeMap<PathBuf, Vec<u8>>;

/// Every generated file: its path under the repository root, and its bytes.
pub fn generate(root: &Path) -> Result<Files, String> {
    let out = Path::new(GENERATED);
    let mut files = BTreeMap::new();
    diffs(root, out, &mut files)?;
    files.insert(out.join("models-table.md"), models_table().into_bytes());
    let run = Run::load(&root.join(REFERENCE))?;
    let drawn = charts_and_sentences(root, out, &run, &mut files)?;
    pages(out, &run, &drawn, &mut files);
    networks(root, out, &mut files)?;
    timelines(root, out, &mut files)?;
    Ok(files)
}

/// Each model against its neighbour: `NEIGHBOUR--MODEL.diff`, in the models' own
/// spelling.
fn diffs(root: &Path, out: &Path, files: &mut Files) -> Result<(), String> {
    let read = |path: &Path| {
        std::fs::read_to_string(root.join(path))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let models = Path::new("servers/src/models");
    for model in MODELS {
        let Some(neighbour) = model.neighbour.and_then(servers::model) else {
            continue;
        };
        let old = models.join(neighbour.file());
        let new = models.join(model.file());
        let diff = TextDiff::from_lines(&read(&old)?, &read(&new)?)
            .unified_diff()
            .context_radius(3)
            .header(&old.display().to_string(), &new.display().to_string())
            .to_string();
        files.insert(
            out.join("diffs")
                .join(format!("{}--{}.diff", neighbour.name, model.name)),
            diff.into_bytes(),
        );
    }
    Ok(())
}

/// The reference run's charts, and the sentence under each, alone; returns which
/// charts there are.
fn charts_and_sentences(
    root: &Path,
    out: &Path,
    run: &Run,
    files: &mut Files,
) -> Result<Vec<&'static ChartSpec>, String> {
    let reference = root.join(REFERENCE);
    // The charts are the committed ones, byte for byte; drawing them again (into a
    // scratch folder) only says which there are and what they are called.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "iomodels-book-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Relaxed)
    ));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let drawn = charts::draw_all(run, &scratch, experiments::charts());
    let _ = std::fs::remove_dir_all(&scratch);
    let drawn = drawn?;
    for chart in &drawn {
        let path = reference.join(chart.file);
        let svg = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (run `cargo run -- plot {REFERENCE}`)",
                path.display()
            )
        })?;
        files.insert(out.join("charts").join(chart.file), svg);
        // What the chart shows, alone, for the chapters that show it.
        let sentence = (chart.sentence)(run) + "\n";
        let name = chart.file.trim_end_matches(".svg");
        files.insert(
            out.join("sentences").join(format!("{name}.md")),
            sentence.into_bytes(),
        );
    }
    Ok(drawn)
}

/// Pages included by chapters in book/src (so the charts are one folder down): the
/// machine, each experiment's section and table, the myths' figures, each model
/// chapter's results.
fn pages(out: &Path, run: &Run, drawn: &[&ChartSpec], files: &mut Files) {
    files.insert(out.join("machine.md"), report::machine_md(run).into_bytes());
    files.insert(out.join("noise.md"), report::noise_body(run).into_bytes());
    for experiment in Experiment::all() {
        let md = report::section(run, drawn, experiment, "generated/charts/");
        files.insert(
            out.join("experiments").join(format!("{experiment}.md")),
            md.into_bytes(),
        );
        files.insert(
            out.join("tables").join(format!("{experiment}.md")),
            report::table(run, experiment).into_bytes(),
        );
    }
    // The figures the myths page answers each claim with.
    for myth in MYTHS {
        let sentence = (myth.figures)(run) + "\n";
        files.insert(
            out.join("myths").join(format!("{}.md", myth.key)),
            sentence.into_bytes(),
        );
    }
    for chapter in roster::chapters() {
        files.insert(
            out.join("models").join(format!("{}.md", chapter.name)),
            report::model_md(run, chapter.chapter).into_bytes(),
        );
    }
}

/// The comparison of networks: the runs of each merged into one.
fn networks(root: &Path, out: &Path, files: &mut Files) -> Result<(), String> {
    let merged = |columns: &[(&'static str, &'static str)]| {
        columns
            .iter()
            .map(|(prefix, label)| Ok((*label, merged_runs(root, prefix)?)))
            .collect::<Result<Vec<_>, String>>()
    };
    files.insert(
        out.join("networks.md"),
        report::networks_md(&merged(NETWORK_COLUMNS)?).into_bytes(),
    );
    files.insert(
        out.join("one-connection.md"),
        report::one_connection_md(&merged(ONE_CONNECTION)?).into_bytes(),
    );
    Ok(())
}

/// The timelines, drawn from the recorded traces.
fn timelines(root: &Path, out: &Path, files: &mut Files) -> Result<(), String> {
    let traces = root.join(timeline::TRACES);
    let names = MODELS
        .iter()
        .map(|m| m.name)
        .chain([timeline::EDGE_VS_LEVEL]);
    for name in names {
        let trace = timeline::load(&traces, name)?;
        files.insert(
            out.join("timelines").join(format!("{name}.svg")),
            timeline::svg(&trace).into_bytes(),
        );
    }
    Ok(())
}

/// The table of model chapters: each model, its file, and the neighbour it is diffed
/// with, from the models table.
fn models_table() -> String {
    let mut md = String::from("| chapter | what it is | file | diffed with |\n|---|---|---|---|\n");
    for m in MODELS {
        let against = m
            .neighbour
            .and_then(servers::model)
            .map_or("— (the first)".to_string(), |n| {
                format!("[{}](models/{}.md), `{}`", n.name, n.name, n.file())
            });
        md.push_str(&format!(
            "| [{0}](models/{0}.md) | {1} | `{2}` | {against} |\n",
            m.name,
            m.summary,
            m.file()
        ));
    }
    md
}

/// Write every generated file, and remove any other file under [`GENERATED`].
/// Returns how many files were written.
pub fn write(root: &Path) -> Result<usize, String> {
    let files = generate(root)?;
    for path in existing(root)? {
        if !files.contains_key(&path) {
            std::fs::remove_file(root.join(&path))
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
    }
    for (path, bytes) in &files {
        let full = root.join(path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(&full, bytes)
            .map_err(|e| format!("cannot write {}: {e}", full.display()))?;
    }
    Ok(files.len())
}

/// The generated files that are missing, different from what [`generate`] makes, or
/// no longer made; empty when the book is up to date.
pub fn stale(root: &Path) -> Result<Vec<String>, String> {
    let files = generate(root)?;
    let mut stale = Vec::new();
    for (path, bytes) in &files {
        match std::fs::read(root.join(path)) {
            Ok(on_disk) if on_disk == *bytes => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(_) => stale.push(format!("{} is missing", path.display())),
        }
    }
    for path in existing(root)? {
        if !files.contains_key(&path) {
            stale.push(format!("{} is no longer generated", path.display()));
        }
    }
    Ok(stale)
}

/// The files under [`GENERATED`] now, relative to the root.
fn existing(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.join(GENERATED)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(root).map_err(|e| e.to_string())?;
                found.push(relative.to_path_buf());
            }
        }
    }
    Ok(found)
}
