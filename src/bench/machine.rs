//! What the machine is: recorded in run.json so a number can be read against its box.

use std::process::Command;

use iomodels_loadgen::limits;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::resource::{getrlimit, Resource};
use nix::unistd::Pid;

use crate::results::{Machine, Pinning};

/// The CPUs this process may run on (its affinity mask), in order.
pub fn usable_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Servers get the first usable CPU, the load generator the others; with one CPU
/// nothing is pinned and the note says they share it.
pub fn pinning(cpus: &[usize]) -> Pinning {
    match cpus {
        [] | [_] => Pinning {
            server_cpus: Vec::new(),
            load_cpus: Vec::new(),
            note: "one CPU: server and load generator share it, so every figure is \
                   a floor for both"
                .into(),
        },
        [server, load @ ..] => Pinning {
            server_cpus: vec![*server],
            load_cpus: load.to_vec(),
            note: format!(
                "server on CPU {server}, load generator (and wait-cost, and wrk) on CPU {}",
                load.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        },
    }
}

/// The servers on another host (`--server-host`): every CPU here is the load
/// generator's.
pub fn load_only(cpus: &[usize], server_host: &str) -> Pinning {
    let list = cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    Pinning {
        server_cpus: Vec::new(),
        load_cpus: cpus.to_vec(),
        note: format!(
            "servers on {server_host} (not pinned); load generator (and wait-cost, and \
             wrk) on CPU {} here",
            list.join(",")
        ),
    }
}

/// The machine, with `cores` counted before the suite pinned itself.
pub fn describe(cores: usize, pinning: Pinning) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
    let kernel = nix::sys::utsname::uname().map_or_else(
        |_| "unknown".to_string(),
        |u| {
            format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            )
        },
    );
    let memory_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Machine {
        cpu_model,
        cores,
        kernel,
        memory_kb,
        fd_limit: getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((0, 0)),
        ephemeral_ports: {
            let (low, high) = limits::ephemeral_ports();
            u64::from(high.saturating_sub(low)) + 1
        },
        somaxconn,
        pinning,
    }
}

/// The commit the binary is run from, `-dirty` when the work tree has changes; None
/// outside a git checkout.
pub fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    Some(if dirty { commit + "-dirty" } else { commit })
}
/// Pin this thread to `cpus` (none: leave it be). This thread first: every thread made
/// later (the load generator's) inherits it.
pub fn pin_this_thread(cpus: &[usize]) -> Result<(), String> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(|e| e.to_string())?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| e.to_string())
}
