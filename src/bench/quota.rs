//! A CPU quota for the servers under test, so that the server, not the load generator,
//! is the limit: on two cores the load generator has one CPU, and an event loop with a
//! whole CPU of its own answers faster than one CPU can ask.
//!
//! The servers run in a cgroup of their own with the CFS bandwidth controller: `share`
//! of one CPU in every `period` (cgroup v1 `cpu.cfs_quota_us` of `cpu.cfs_period_us`,
//! or v2 `cpu.max`). Each server joins it between fork and exec, so that every process
//! it starts (nginx's workers) is in it too. The quota holds from the end of the ramp
//! (warm-up and window) and is lifted after: opening ten thousand connections to an O(n)
//! model is no part of the measurement, and at half speed it took most of the run.
//! Throughput and CPU per request come out as the server's; latency does not: a
//! throttled server sleeps out the rest of each period, and that pause shows in the tail.
//!
//! The same cgroup counts the servers' CPU time in nanoseconds ([`CpuQuota::usage`]):
//! v1's cpuacct controller, a hierarchy of its own here, gets a cgroup of the same name
//! that each server joins too; v2's `cpu.stat` counts in microseconds. /proc/PID/stat
//! counts in clock ticks (10 ms), about 75 of them in a 1.5 s window at half a CPU.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::results::QuotaSetting;

/// The cgroup the servers run in; removed when dropped (once its servers are gone).
pub struct CpuQuota {
    dir: PathBuf,
    /// The file that limits, and what it holds when limiting and when not.
    limit_file: PathBuf,
    limited: String,
    unlimited: String,
    /// `cgroup.procs` of `dir` (and of the cpuacct cgroup), ready for the child to write
    /// itself into (no allocation may happen between fork and exec).
    procs: Vec<CString>,
    /// Where the servers' CPU time is counted, if anywhere.
    account: Option<Account>,
    pub setting: QuotaSetting,
}

/// Where a cgroup counts its CPU time.
enum Account {
    /// v1 cpuacct: `cpuacct.usage_user` and `cpuacct.usage_sys`, nanoseconds, in a
    /// cgroup of its own (removed with the quota's).
    V1(PathBuf),
    /// v2: `cpu.stat`'s `user_usec` and `system_usec`, in the quota's own cgroup.
    V2(PathBuf),
}

/// The servers' CPU time so far, user and kernel, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub user_s: f64,
    pub sys_s: f64,
}

/// Where the cpuacct controller is mounted in cgroup v1.
const V1_CPUACCT: &str = "/sys/fs/cgroup/cpuacct";

/// Where the cpu controller is mounted: cgroup v1's own hierarchy, or v2's unified one.
const V1: &str = "/sys/fs/cgroup/cpu";
const V2: &[&str] = &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

impl CpuQuota {
    pub fn new(share: f64, period: Duration) -> Result<CpuQuota, String> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!(
                "a CPU share must be above 0 and at most 1, not {share}"
            ));
        }
        // A whole CPU: the cgroup only counts (a pinned server cannot use more).
        let counts_only = share >= 1.0;
        let period_us = period.as_micros() as u64;
        let quota_us = ((period_us as f64) * share).round() as u64;
        let name = format!("iomodels-bench-{}", std::process::id());
        let v1 = Path::new(V1);
        let (dir, how, limit_file, limited, unlimited) = if v1.join("cpu.cfs_quota_us").exists() {
            let dir = v1.join(&name);
            make(&dir)?;
            if let Err(e) = write(&dir.join("cpu.cfs_period_us"), &period_us.to_string()) {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
            let how =
                format!("cgroup v1 cpu.cfs_quota_us {quota_us} / cpu.cfs_period_us {period_us}");
            let file = dir.join("cpu.cfs_quota_us");
            let on = if counts_only {
                "-1".into()
            } else {
                quota_us.to_string()
            };
            (dir, how, file, on, "-1".to_string())
        } else {
            let root = V2
                .iter()
                .map(Path::new)
                .find(|r| {
                    std::fs::read_to_string(r.join("cgroup.controllers"))
                        .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
                })
                .ok_or("no cgroup cpu controller found (v1 cpu.cfs_quota_us or v2 cpu.max)")?;
            // v2: the controller must be enabled for the children of the root.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
            let dir = root.join(&name);
            make(&dir)?;
            let how = format!("cgroup v2 cpu.max \"{quota_us} {period_us}\"");
            let file = dir.join("cpu.max");
            let off = format!("max {period_us}");
            let on = if counts_only {
                off.clone()
            } else {
                format!("{quota_us} {period_us}")
            };
            (dir, how, file, on, off)
        };
        let how = if counts_only {
            format!(
                "no limit: {} counts the servers' CPU time only",
                dir.display()
            )
        } else {
            how
        };
        // Limiting works now, or the run hears why before it starts (and the cgroup goes).
        let works = write(&limit_file, &limited).and_then(|()| write(&limit_file, &unlimited));
        if let Err(e) = works {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        let mut procs = vec![procs_of(&dir)?];
        let account = if dir.starts_with(V1) {
            // cpuacct is a hierarchy apart from cpu here; where the two are mounted
            // together, the quota's cgroup counts already.
            let together = dir.join("cpuacct.usage_user");
            let apart = Path::new(V1_CPUACCT).join(&name);
            if together.exists() {
                Some(Account::V1(dir.clone()))
            } else if Path::new(V1_CPUACCT).join("cpuacct.usage_user").exists()
                && make(&apart).is_ok()
            {
                match procs_of(&apart) {
                    Ok(p) => {
                        procs.push(p);
                        Some(Account::V1(apart))
                    }
                    Err(_) => {
                        let _ = std::fs::remove_dir(&apart);
                        None
                    }
                }
            } else {
                None
            }
        } else {
            Some(Account::V2(dir.clone())).filter(|_| dir.join("cpu.stat").exists())
        };
        Ok(CpuQuota {
            dir,
            limit_file,
            limited,
            unlimited,
            procs,
            account,
            setting: QuotaSetting {
                share,
                period_us,
                how,
            },
        })
    }

    /// Hold the servers in the cgroup to their share, from now on.
    pub fn limit(&self) -> Result<(), String> {
        write(&self.limit_file, &self.limited)
    }

    /// Give them whole CPUs again.
    pub fn lift(&self) -> Result<(), String> {
        write(&self.limit_file, &self.unlimited)
    }

    /// The `cgroup.procs` files a child writes itself into ([`join`]).
    pub fn procs(&self) -> Vec<CString> {
        self.procs.clone()
    }

    /// The CPU time of every process that has been in the cgroup, exited threads and
    /// workers included; None where it cannot be counted.
    pub fn usage(&self) -> Option<Usage> {
        let read = |path: PathBuf| std::fs::read_to_string(path).ok();
        match self.account.as_ref()? {
            Account::V1(dir) => {
                let ns = |file: &str| read(dir.join(file))?.trim().parse::<f64>().ok();
                Some(Usage {
                    user_s: ns("cpuacct.usage_user")? / 1e9,
                    sys_s: ns("cpuacct.usage_sys")? / 1e9,
                })
            }
            Account::V2(dir) => {
                let stat = read(dir.join("cpu.stat"))?;
                let us = |key: &str| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix(key)?.trim().parse::<f64>().ok())
                };
                Some(Usage {
                    user_s: us("user_usec ")? / 1e6,
                    sys_s: us("system_usec ")? / 1e6,
                })
            }
        }
    }

    /// How [`usage`](Self::usage) counts, as run.json says it.
    pub fn counts_by(&self) -> Option<&'static str> {
        match self.account.as_ref()? {
            Account::V1(_) => Some("cpuacct"),
            Account::V2(_) => Some("cpu.stat"),
        }
    }
}

/// Move the calling process into the cgroup whose `cgroup.procs` is `procs`. Called
/// between fork and exec: only plain system calls, nothing allocated.
pub fn join(procs: &CStr) -> std::io::Result<()> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let fd = open(procs, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    // "0": the writing process itself.
    nix::unistd::write(&fd, b"0")?;
    Ok(())
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // A cgroup is removed with rmdir, once no process is left in it.
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(Account::V1(dir)) = &self.account {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn procs_of(dir: &Path) -> Result<CString, String> {
    CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(|e| e.to_string())
}

fn make(dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
