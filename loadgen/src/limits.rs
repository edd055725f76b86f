//! The machine's limits a run can hit before the server does: descriptors and ports.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors a run needs beyond its sockets (epoll, timers, stdio, files).
const SPARE_FDS: u64 = 64;

/// Raise the soft descriptor limit (and, as root, the hard one) to fit `sockets`, or say
/// what to change.
pub fn ensure_fds(sockets: usize) -> Result<u64, String> {
    let need = sockets as u64 + SPARE_FDS;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft >= need {
        return Ok(soft);
    }
    if hard >= need {
        setrlimit(Resource::RLIMIT_NOFILE, need, hard).map_err(|e| e.to_string())?;
        return Ok(need);
    }
    // Raising the hard limit (up to fs.nr_open) needs CAP_SYS_RESOURCE; try, then explain.
    if setrlimit(Resource::RLIMIT_NOFILE, need, need).is_ok() {
        return Ok(need);
    }
    Err(format!(
        "{sockets} connections need {need} file descriptors, but the hard limit is {hard}: \
         raising it needs CAP_SYS_RESOURCE (`ulimit -Hn {need}` as a privileged root, \
         LimitNOFILE or limits.conf), or ask for fewer"
    ))
}

/// The ephemeral port range, from /proc (the kernel's default if unreadable).
pub fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Connections to one server address from `sources` source addresses (0: one, the
/// kernel's choice) must fit the ephemeral ports of each.
pub fn check_ports(connections: usize, sources: usize, range: (u16, u16)) -> Result<(), String> {
    let per_source = (range.1 as usize).saturating_sub(range.0 as usize) + 1;
    let have = per_source * sources.max(1);
    if connections <= have {
        return Ok(());
    }
    let need = connections.div_ceil(per_source);
    Err(format!(
        "{connections} connections to one address need {need} source addresses: one has \
         {per_source} ephemeral ports ({}-{}); pass e.g. --source-addrs 127.0.0.2-127.0.0.{}",
        range.0,
        range.1,
        need + 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_run_out_past_one_address_and_the_fix_is_named() {
        let range = (32768, 60999);
        assert!(check_ports(28_232, 0, range).is_ok());
        let err = check_ports(30_000, 0, range).unwrap_err();
        assert!(err.contains("--source-addrs 127.0.0.2-127.0.0.3"), "{err}");
        assert!(check_ports(50_000, 2, range).is_ok());
    }

    #[test]
    fn enough_descriptors_are_granted() {
        assert!(ensure_fds(100).unwrap() >= 164);
    }
}
