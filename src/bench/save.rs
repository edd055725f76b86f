//! The run folder: claimed before anything runs, then run.json, whose header says what
//! ran where; the points follow, saved one by one (an interrupted run keeps what it
//! measured).

use std::path::{Path, PathBuf};

use super::machine;
use super::options::Options;
use super::rig::Rig;
use crate::results::{Run, ServerTimeouts, Settings, SCHEMA_VERSION};

/// Make `out`, unless it already holds a run.
pub(super) fn claim(out: &Path) -> Result<(), String> {
    if out.join("run.json").exists() {
        return Err(format!(
            "{} already holds a run; choose another --out (or `iomodels plot` it)",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))
}

/// The run before its first point: the machine, the settings, and the notes.
pub(super) fn header(options: &Options, rig: &Rig, notes: Vec<String>) -> Run {
    let plan = &rig.plan;
    let remote = rig.remote.as_ref();
    Run {
        schema_version: SCHEMA_VERSION,
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        git_commit: machine::git_commit(),
        profile: options.profile.name().into(),
        machine: machine::describe(rig.cpus, rig.pinning.clone()),
        settings: Settings {
            warmup_s: plan.warmup.as_secs_f64(),
            window_s: plan.window.as_secs_f64(),
            repeats: plan.repeats,
            idle_repeats: (plan.idle_repeats != plan.repeats).then_some(plan.idle_repeats),
            busy_connections: plan.busy,
            load_threads: rig.load_threads,
            server_cpu_quota: rig.quota.as_ref().map(|q| q.setting.clone()),
            server_timeouts: Some(ServerTimeouts::suite()),
            connections_per_process: Some(rig.per_process),
            network: (options.netns || remote.is_some()).then(|| rig.network.setting.clone()),
            servers: options
                .servers
                .iter()
                .map(|s| (s.name.clone(), s.command.clone()))
                .collect(),
            server_host: remote.map(|r| r.facts.clone()),
        },
        notes,
        crosscheck: None,
        stopped: None,
        points: Vec::new(),
    }
}

/// Default run folder: results/runs/<UTC time>.
pub fn default_out() -> PathBuf {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Path::new("results/runs").join(now.replace(':', "-"))
}
