//! The machine, the settings, the notes and the wrk cross-check of a run.

use std::fmt::Write as _;

use crate::results::Run;

/// The machine, the settings, the notes and the wrk cross-check, as a table and a list.
pub fn machine_md(run: &Run) -> String {
    let mut md = String::new();
    let m = &run.machine;
    let _ = writeln!(md, "| | |\n|---|---|");
    let mut rows = vec![
        ("CPU", format!("{} ({} usable)", m.cpu_model, m.cores)),
        ("kernel", m.kernel.clone()),
        (
            "memory",
            format!("{:.1} GiB", m.memory_kb as f64 / 1024.0 / 1024.0),
        ),
        (
            "descriptors",
            format!("RLIMIT_NOFILE {} soft, {} hard", m.fd_limit.0, m.fd_limit.1),
        ),
        (
            "ports",
            format!(
                "{} ephemeral ports per source address; somaxconn {}",
                m.ephemeral_ports,
                m.somaxconn.map_or("unknown".into(), |s| s.to_string())
            ),
        ),
        ("pinning", m.pinning.note.clone()),
        (
            "server CPU",
            match run
                .settings
                .server_cpu_quota
                .as_ref()
                .filter(|q| q.limits())
            {
                Some(q) => format!(
                    "each server limited to {:.0}% of one CPU ({}), so that the server and not \
                     the load generator is the limit; latency includes throttling pauses of up \
                     to {:.0} ms",
                    q.share * 100.0,
                    q.how,
                    q.longest_pause_ms()
                ),
                None => "whole CPUs, no quota: where the load generator was saturated (`*`), \
                         throughput is a floor"
                    .into(),
            },
        ),
        (
            "server timeouts",
            match &run.settings.server_timeouts {
                Some(t) => format!(
                    "header {}, idle {} (no idle connection is closed during a run)",
                    t.header, t.idle
                ),
                None => "none: the servers had no timeouts then".into(),
            },
        ),
        (
            "windows",
            format!(
                "{} s warm-up, {} s measured, {} repeat(s){} (medians shown); {} load thread(s)",
                run.settings.warmup_s,
                run.settings.window_s,
                run.settings.repeats,
                run.settings
                    .idle_repeats
                    .map_or(String::new(), |n| format!(", {n} in the idle experiment")),
                run.settings.load_threads
            ),
        ),
        (
            "commit",
            run.git_commit.clone().unwrap_or_else(|| "unknown".into()),
        ),
    ];
    if let Some(n) = &run.settings.network {
        let delay = match (n.link_delay_us, &n.link_delay_by) {
            (Some(us), by) => format!(
                ", {us} µs of delay each way ({})",
                by.as_deref().unwrap_or("netem")
            ),
            (None, _) => String::new(),
        };
        let row = format!(
            "{}: servers at {}, load from {}{delay}",
            n.kind, n.server, n.client
        );
        rows.push(("network", row));
    }
    if let Some(h) = &run.settings.server_host {
        let host = format!(
            "{} ({} usable), {}, {:.1} GiB, RLIMIT_NOFILE {} hard, {}: {}",
            h.cpu_model,
            h.cores,
            h.kernel,
            h.memory_kb as f64 / 1024.0 / 1024.0,
            h.fd_limit,
            h.version,
            h.note
        );
        rows.push(("server host", host));
    }
    for (k, v) in rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md.push('\n');
    for note in &run.notes {
        let _ = writeln!(md, "- {note}");
    }
    if let Some(c) = &run.crosscheck {
        let _ = writeln!(
            md,
            "- Cross-check on {} with {} connections: our load generator measured {:.0} req/s, \
             wrk {:.0} req/s (ratio {:.2}).",
            c.model, c.connections, c.ours_rps, c.wrk_rps, c.ratio
        );
    }
    md.push('\n');
    md
}
