//! Stopping a run at any moment and leaving nothing behind.
//!
//! SIGINT (Ctrl-C), SIGTERM and SIGHUP (a closed terminal) ask the run to stop: the
//! point under way is dropped, run.json keeps every point finished before, and the rig
//! is taken down (servers, cgroups, namespaces) as the run returns. A second signal
//! ends the process at once. What a run killed outright (SIGKILL) left is found by the
//! next run as it starts, by the pid in its names, and removed ([`leftovers`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::network;

/// The exit status of a run stopped by a signal (128 + SIGINT, as shells count).
pub const STOPPED: u8 = 130;

/// Set by the first SIGINT, SIGTERM or SIGHUP.
#[derive(Clone)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Catch the three signals: the first sets the flag, the second exits at once.
    pub fn install() -> Result<Stop, String> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            // Registered first: when the flag is already set, exit now.
            signal_hook::flag::register_conditional_shutdown(signal, STOPPED as i32, flag.clone())
                .and_then(|_| signal_hook::flag::register(signal, flag.clone()))
                .map_err(|e| format!("cannot catch signal {signal}: {e}"))?;
        }
        Ok(Stop(flag))
    }

    /// A stop that is never asked for (tests, and callers that handle signals).
    pub fn never() -> Stop {
        Stop(Arc::new(AtomicBool::new(false)))
    }

    pub fn asked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The names this suite gives what it makes, with the pid of the run that made them:
/// cgroups `iomodels-bench-PID`, namespaces `iomodels-server-PID` and
/// `iomodels-client-PID`, links `iomPIDs` and `iomPIDc`.
fn pid_of(name: &str) -> Option<u32> {
    let digits = name
        .strip_prefix("iomodels-bench-")
        .or_else(|| name.strip_prefix("iomodels-server-"))
        .or_else(|| name.strip_prefix("iomodels-client-"))
        .or_else(|| {
            name.strip_prefix("iom")
                .and_then(|r| r.strip_suffix('s').or_else(|| r.strip_suffix('c')))
        })?;
    digits.parse().ok()
}

/// Whether the run `pid` is gone: no such process, or one that is not iomodels.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => !comm.trim().starts_with("iomodels"),
        Err(_) => true,
    }
}

/// Where the suite makes cgroups: cgroup v1's cpu and cpuacct hierarchies, v2's roots.
const CGROUP_ROOTS: &[&str] = &[
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/cpuacct",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
];

/// Remove what runs that are gone left behind (their servers, cgroups, namespaces and
/// links); returns a line for each thing removed.
pub fn leftovers() -> Vec<String> {
    let mut removed = Vec::new();
    for root in CGROUP_ROOTS {
        for dir in named_entries(Path::new(root)) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            // Its servers first: a cgroup with processes in it cannot be removed.
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                removed.push(format!("server process {pid} of an earlier run"));
            }
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() {
                    removed.push(format!("cgroup {}", dir.display()));
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    for ns in named_entries(Path::new("/run/netns")) {
        let name = ns.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        network::remove(&[name.to_string()]);
        if !ns.exists() {
            removed.push(format!("network namespace {name}"));
        }
    }
    // A veth pair made but not yet moved into its namespaces.
    let links = network::run("ip", &["-o", "link"]).unwrap_or_default();
    for line in links.lines() {
        let Some(name) = line
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or(""))
        else {
            continue;
        };
        if pid_of(name).is_some_and(gone) && network::run("ip", &["link", "del", name]).is_ok() {
            removed.push(format!("link {name}"));
        }
    }
    removed
}

/// The entries of `dir` named by a run that is gone.
fn named_entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(pid_of)
                .is_some_and(|pid| pid != std::process::id() && gone(pid))
        })
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_read_from_every_name_the_suite_gives() {
        assert_eq!(pid_of("iomodels-bench-1234"), Some(1234));
        assert_eq!(pid_of("iomodels-server-77"), Some(77));
        assert_eq!(pid_of("iomodels-client-77"), Some(77));
        assert_eq!(pid_of("iom4242s"), Some(4242));
        assert_eq!(pid_of("iom4242c"), Some(4242));
        assert_eq!(pid_of("eth0"), None);
        assert_eq!(pid_of("iomodels-bench-x"), None);
    }

    #[test]
    fn a_live_iomodels_is_not_gone_and_a_pid_nobody_has_is() {
        // This test binary is iomodels-HASH.
        assert!(!gone(std::process::id()));
        assert!(gone(u32::MAX / 2));
    }
}
