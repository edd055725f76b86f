//! What /proc says of a server: CPU time, memory and threads, read here from /proc or
//! on the other host from the same text over SSH (`remote.rs`).

/// What /proc says of a process at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub user_s: f64,
    pub sys_s: f64,
    pub rss_kb: u64,
    pub rss_peak_kb: u64,
    pub threads: u64,
}

/// CPU time, memory and threads of process `pid` and every process under it (prefork's
/// workers, a server's own children), summed: from /proc/PID/stat and status. A child
/// that ends between the edges of a window takes its CPU time with it: a restarted
/// worker's work before the restart is not counted.
pub fn proc_sample(pid: i32) -> Option<ProcSample> {
    let one = one_process(pid)?;
    let children = children(pid).into_iter().filter_map(proc_sample);
    Some(children.fold(one, |sum, child| sum + child))
}

/// The children of `pid`, from /proc/PID/task/*/children.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// One process's figures.
fn one_process(pid: i32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    ProcSample::parse(&stat, &status, clock_ticks())
}

impl ProcSample {
    /// From the text of /proc/PID/stat and /proc/PID/status, with `ticks` (CLK_TCK) the
    /// unit of stat's CPU times.
    pub fn parse(stat: &str, status: &str, ticks: f64) -> Option<ProcSample> {
        // Fields after the command name (which may hold spaces, so split after its ')').
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
        let user_s = fields.get(11)?.parse::<f64>().ok()? / ticks;
        let sys_s = fields.get(12)?.parse::<f64>().ok()? / ticks;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(ProcSample {
            user_s,
            sys_s,
            rss_kb: field("VmRSS:")?,
            rss_peak_kb: field("VmHWM:")?,
            threads: field("Threads:")?,
        })
    }
}

/// Two processes' figures summed (a server and its workers).
impl std::ops::Add for ProcSample {
    type Output = ProcSample;

    fn add(self, other: ProcSample) -> ProcSample {
        ProcSample {
            user_s: self.user_s + other.user_s,
            sys_s: self.sys_s + other.sys_s,
            rss_kb: self.rss_kb + other.rss_kb,
            rss_peak_kb: self.rss_peak_kb + other.rss_peak_kb,
            threads: self.threads + other.threads,
        }
    }
}

pub fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As another host's /proc comes, over SSH: a name with spaces and a ')' in it,
    /// CPU times in that host's clock ticks.
    #[test]
    fn proc_text_is_read_as_any_hosts() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    250 125 0 0 20 0 3 0 100 1000000 500 18446744073709551615";
        let status = "Name:\tserver\nVmHWM:\t  9000 kB\nVmRSS:\t  8000 kB\nThreads:\t3\n";
        let s = ProcSample::parse(stat, status, 250.0).unwrap();
        assert_eq!((s.user_s, s.sys_s), (1.0, 0.5));
        assert_eq!((s.rss_kb, s.rss_peak_kb, s.threads), (8000, 9000, 3));
        let both = s + s;
        assert_eq!((both.user_s, both.threads), (2.0, 6));
        assert!(ProcSample::parse("4242 (cut", status, 100.0).is_none());
    }

    #[test]
    fn this_process_reads_from_proc() {
        let s = proc_sample(std::process::id() as i32).unwrap();
        assert!(s.rss_kb > 0 && s.rss_peak_kb >= s.rss_kb);
        assert!(s.threads >= 1);
    }
}
