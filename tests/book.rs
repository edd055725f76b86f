//! The book (book/): its generated pages are what `iomodels book` writes now, every
//! include and anchor resolves, listings come by named anchor and never by line number,
//! every model file is included, every internal link and image resolves, and the
//! charts the book is built around are embedded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn src() -> PathBuf {
    root().join("book/src")
}

/// Every Markdown file under book/src, by path.
fn pages() -> BTreeMap<PathBuf, String> {
    let mut pages = BTreeMap::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&path).unwrap();
                pages.insert(path, text);
            }
        }
    }
    pages
}

/// The chapters: pages outside book/src/generated.
fn chapters() -> BTreeMap<PathBuf, String> {
    let generated = root().join(iomodels::book::GENERATED);
    pages()
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&generated))
        .collect()
}

/// `{{#include PATH}}` or `{{#include PATH:ANCHOR}}` in a page: (path, anchor).
fn includes(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("{{#") {
        let tail = &rest[at + 3..];
        let end = tail.find("}}").expect("an include is closed with }}");
        let directive = tail[..end].trim();
        let (kind, arg) = directive.split_once(' ').unwrap_or((directive, ""));
        assert_eq!(
            kind, "include",
            "only plain includes are used: {{{{#{directive}}}}}"
        );
        let arg = arg.trim();
        let (path, anchor) = match arg.split_once(':') {
            Some((p, a)) => (p.to_string(), Some(a.to_string())),
            None => (arg.to_string(), None),
        };
        found.push((path, anchor));
        rest = &tail[end + 2..];
    }
    found
}

/// `path` relative to `dir`, with `..` resolved (the file need not exist).
fn resolve(dir: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dir.join(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A page with its Markdown includes expanded (one level is all the book uses).
fn expanded(path: &Path, text: &str) -> String {
    let dir = path.parent().unwrap();
    let mut out = text.to_string();
    for (file, anchor) in includes(text) {
        if anchor.is_none() && file.ends_with(".md") {
            let included = std::fs::read_to_string(resolve(dir, &file)).unwrap_or_default();
            out = out.replace(&format!("{{{{#include {file}}}}}"), &included);
        }
    }
    out
}

#[test]
fn generated_pages_are_up_to_date() {
    let stale = iomodels::book::stale(root()).unwrap();
    assert!(
        stale.is_empty(),
        "the book's generated pages are stale; run `cargo run -- book`:\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_include_and_anchor_resolves() {
    let mut checked = 0;
    for (page, text) in pages() {
        let dir = page.parent().unwrap();
        for (file, anchor) in includes(&text) {
            let target = resolve(dir, &file);
            let body = std::fs::read_to_string(&target).unwrap_or_else(|e| {
                panic!("{}: includes {file}: {e}", page.display());
            });
            if let Some(anchor) = anchor {
                assert!(
                    !anchor.chars().next().is_some_and(|c| c.is_ascii_digit()),
                    "{}: includes {file} by line number ({anchor}); use a named ANCHOR",
                    page.display()
                );
                let open = format!("ANCHOR: {anchor}");
                let close = format!("ANCHOR_END: {anchor}");
                let has = |marker: &str| {
                    body.lines().any(|l| {
                        l.trim_end().ends_with(marker) && (l.contains("//") || l.contains("# "))
                    })
                };
                assert!(
                    has(&open) && has(&close),
                    "{}: {file} has no anchor `{anchor}` (ANCHOR / ANCHOR_END)",
                    page.display()
                );
            } else {
                assert!(
                    !file.ends_with(".rs"),
                    "{}: includes the whole of {file}; include it by a named ANCHOR",
                    page.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} includes found");
}

#[test]
fn every_model_file_is_included_by_anchor() {
    let mut included: BTreeSet<PathBuf> = BTreeSet::new();
    for (page, text) in chapters() {
        for (file, anchor) in includes(&text) {
            if anchor.is_some() {
                included.insert(resolve(page.parent().unwrap(), &file));
            }
        }
    }
    let models = root().join("servers/src/models");
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "mod.rs" {
            continue;
        }
        assert!(
            included.contains(&path),
            "{} is not included by any chapter",
            path.display()
        );
    }
}

/// mdBook's id for a heading: lower case, spaces to dashes, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

fn heading_ids(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            ids.insert(slug(line.trim_start_matches('#').trim()));
        }
    }
    ids
}

/// `[text](target)` and `![alt](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            found.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    found
}

#[test]
fn every_internal_link_and_image_resolves() {
    let chapters = chapters();
    let mut checked = 0;
    for (page, text) in &chapters {
        let text = expanded(page, text);
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((f, frag)) => (f, Some(frag)),
                None => (link.as_str(), None),
            };
            let target = if file.is_empty() {
                page.clone()
            } else {
                resolve(page.parent().unwrap(), file)
            };
            assert!(
                target.starts_with(src()),
                "{}: {link} points outside book/src, which mdBook does not copy",
                page.display()
            );
            assert!(target.exists(), "{}: {link} does not exist", page.display());
            if let Some(fragment) = fragment {
                let body = chapters
                    .get(&target)
                    .unwrap_or_else(|| panic!("{}: {link}: not a chapter", page.display()));
                assert!(
                    heading_ids(&expanded(&target, body)).contains(fragment),
                    "{}: {link}: no heading with that id",
                    page.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found");
}

#[test]
fn summary_lists_every_chapter_and_only_chapters() {
    let summary = std::fs::read_to_string(src().join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<PathBuf> = links(&summary).iter().map(|l| resolve(&src(), l)).collect();
    for path in &listed {
        assert!(
            path.exists(),
            "SUMMARY.md lists {}, missing",
            path.display()
        );
    }
    for page in chapters().keys() {
        if page.file_name().unwrap() == "SUMMARY.md" {
            continue;
        }
        assert!(
            listed.contains(page),
            "{} is not in SUMMARY.md",
            page.display()
        );
    }
}

#[test]
fn the_charts_the_book_is_built_around_are_embedded() {
    let mut embedded = String::new();
    for (page, text) in chapters() {
        embedded.push_str(&expanded(&page, &text));
    }
    for chart in [
        "idle-throughput.svg",
        "idle-p99.svg",
        "wait-cost.svg",
        "blocking.svg",
    ] {
        assert!(
            embedded.contains(&format!("generated/charts/{chart})")),
            "no chapter shows {chart}"
        );
    }
}

/// The sections every model file has, in this order: a reader moves from one file to
/// the next and finds each step where it was in the last.
const SECTIONS: [&str; 9] = [
    "header", "state", "setup", "wait", "dispatch", "accept", "readable", "writable", "close",
];

#[test]
fn every_model_file_has_the_same_sections_in_the_same_order() {
    let models = root().join("servers/src/models");
    let mut checked = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "mod.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let opened: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("// ANCHOR: "))
            .map(str::trim)
            .collect();
        let closed = |name: &str| {
            text.lines()
                .any(|l| l.trim().strip_prefix("// ANCHOR_END: ") == Some(name))
        };
        let order: Vec<&str> = opened
            .iter()
            .copied()
            .filter(|a| SECTIONS.contains(a))
            .collect();
        assert_eq!(
            order,
            SECTIONS,
            "{}: the sections {SECTIONS:?} must each appear once, in this order (a model \
             without a step says so in one line under its anchor)",
            path.display()
        );
        for name in SECTIONS {
            assert!(closed(name), "{}: no ANCHOR_END: {name}", path.display());
        }
        checked += 1;
    }
    assert_eq!(
        checked,
        iomodels_servers::MODELS.len(),
        "one file per model"
    );
}

#[test]
fn every_model_has_a_chapter_under_its_own_name() {
    for model in iomodels_servers::MODELS {
        let chapter = src().join("models").join(format!("{}.md", model.name));
        assert!(
            chapter.exists(),
            "{} has no chapter {}",
            model.name,
            chapter.display()
        );
    }
}

/// Every model's timeline, and the edge- against level-triggered one, was recorded from
/// the source as it is now: a model changed since its trace is a stale picture.
#[test]
fn every_timeline_is_recorded_from_the_current_source() {
    let dir = root().join(iomodels::timeline::TRACES);
    let names = iomodels_servers::MODELS
        .iter()
        .map(|m| m.name)
        .chain([iomodels::timeline::EDGE_VS_LEVEL]);
    let mut stale = Vec::new();
    for name in names {
        let trace = iomodels::timeline::load(&dir, name).unwrap();
        assert_eq!(trace.name, name);
        assert!(
            trace
                .events
                .iter()
                .any(|e| !matches!(e.what, iomodels_servers::trace::What::Client { .. })),
            "{name}: a trace with nothing of the server's"
        );
        let now = iomodels::timeline::source_hash(root(), name).unwrap();
        if trace.source != now {
            stale.push(format!(
                "{name}: {} changed since its trace",
                iomodels::timeline::source_file(name)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "stale timelines; run `cargo run --release -- trace` then `cargo run -- book`:\n{}",
        stale.join("\n")
    );
}

/// Each model's chapter shows its timeline; the epoll chapters show edge against level.
#[test]
fn every_model_chapter_embeds_its_timeline() {
    for model in iomodels_servers::MODELS {
        let page = src().join("models").join(format!("{}.md", model.name));
        let text = std::fs::read_to_string(&page).unwrap();
        let image = format!("../generated/timelines/{}.svg", model.name);
        assert!(text.contains(&image), "{}: embed {image}", page.display());
    }
    for chapter in ["epoll-lt", "epoll-et"] {
        let text =
            std::fs::read_to_string(src().join("models").join(format!("{chapter}.md"))).unwrap();
        assert!(
            text.contains("../generated/timelines/edge-vs-level.svg"),
            "{chapter}: embed the edge-against-level timeline"
        );
    }
}

/// The `## Try it` section of a page, if it has one: up to the next `## ` heading.
fn try_it(text: &str) -> Option<&str> {
    let start = text.find("\n## Try it\n")?;
    let body = &text[start + "\n## Try it\n".len()..];
    Some(body.find("\n## ").map_or(body, |end| &body[..end]))
}

/// The `iomodels` commands in console lines (`$ …`): each one's arguments, cut at the
/// shell's separators and redirections.
fn iomodels_commands(section: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for line in section.lines().filter_map(|l| l.trim().strip_prefix("$ ")) {
        let pieces = line.split(['&', '|', ';', '(', ')']);
        for piece in pieces {
            let words: Vec<&str> = piece.split_whitespace().collect();
            if let Some(at) = words.iter().position(|w| *w == "iomodels") {
                let args = words[at + 1..]
                    .iter()
                    .take_while(|w| !w.starts_with(['>', '<']) && !w.starts_with("2>"))
                    .map(|w| w.to_string())
                    .collect();
                commands.push(args);
            }
        }
    }
    commands
}

/// Every model chapter ends with a "Try it" box that runs `iomodels`, and every
/// `iomodels` command in any box parses against the real command line (clap checks the
/// subcommand, every flag and every value before it reaches `--help`).
#[test]
fn every_try_it_command_parses_against_the_cli() {
    for model in iomodels_servers::MODELS {
        let page = src().join("models").join(format!("{}.md", model.name));
        let text = std::fs::read_to_string(&page).unwrap();
        let section = try_it(&text).unwrap_or_else(|| panic!("{}: no Try it", page.display()));
        assert!(
            !section.contains("\n# "),
            "{}: Try it must end the chapter",
            page.display()
        );
        assert!(
            text.rfind("\n## ") == text.find("\n## Try it\n"),
            "{}: Try it must be the last section",
            page.display()
        );
        assert!(
            !iomodels_commands(section).is_empty(),
            "{}: its Try it runs no iomodels command",
            page.display()
        );
    }
    let mut checked = 0;
    for (page, text) in chapters() {
        let Some(section) = try_it(&text) else {
            continue;
        };
        for args in iomodels_commands(section) {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_iomodels"))
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: `iomodels {}` does not parse:\n{}",
                page.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} commands checked");
}

/// A typo in a Try it command is caught: the check above can fail.
#[test]
fn a_misspelt_try_it_command_is_refused() {
    let section = "```console\n$ iomodels serve epoll-ett --port 8080 &\n```\n";
    let args = &iomodels_commands(section)[0];
    assert_eq!(args, &["serve", "epoll-ett", "--port", "8080"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iomodels"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(!out.status.success());
}
