//! The machine's limits a run can hit before the server does: descriptors and ports,
//! each checked before the run starts, with the number that is short and how to raise it.

use std::net::{IpAddr, Ipv4Addr};

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::Config;

/// Descriptors a run needs beyond its sockets (epoll, timers, stdio, files).
const SPARE_FDS: u64 = 64;

/// Raise the soft descriptor limit (and, as root, the hard one) to fit `sockets`, or say
/// what to change.
pub fn ensure_fds(sockets: usize) -> Result<u64, String> {
    ensure_fds_of(sockets, sockets)
}

/// [`ensure_fds`] for one process's `sockets` of a run of `total`: the processes it
/// would take are counted over the whole run.
pub fn ensure_fds_of(sockets: usize, total: usize) -> Result<u64, String> {
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
    let per_process = hard.saturating_sub(SPARE_FDS).max(1);
    Err(format!(
        "{sockets} connections in one process need {need} file descriptors, but its hard \
         limit is {hard}: spread the run's {total} over {} processes (--processes), or \
         raise the limit (`ulimit -Hn {need}` as a privileged root: it needs \
         CAP_SYS_RESOURCE; LimitNOFILE or limits.conf)",
        (total as u64).div_ceil(per_process)
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

/// The ports one source address has for connections to one server address.
fn ports_of(range: (u16, u16)) -> usize {
    (range.1 as usize).saturating_sub(range.0 as usize) + 1
}

/// How much of a source address's ports a run takes before its connects slow: connect(2)
/// searches for a free port, and the more are taken (by our connections, and by the
/// TIME_WAITs of the runs before) the longer it looks. At 100,000 connections over 8
/// addresses (44% of each one's ports) the ramp spent most of its CPU there, and a
/// process given one address for 16,668 connections was not ready when the others were.
pub const PORT_SHARE: usize = 10;

/// How many source addresses `connections` to one server address should come from: enough
/// for each to hold a [`PORT_SHARE`]th of its ports at most.
pub fn sources_needed(connections: usize, range: (u16, u16)) -> usize {
    connections
        .div_ceil((ports_of(range) / PORT_SHARE).max(1))
        .max(1)
}

/// `n` loopback addresses from 127.0.0.2 on: all of 127.0.0.0/8 is this host's, so a
/// load to a loopback server can come from them with nothing set up.
pub fn loopback_sources(n: usize) -> Vec<IpAddr> {
    (0..n as u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i)))
        .collect()
}

/// Give a run enough source addresses before it starts. With none asked, a run to an
/// IPv4 loopback server that would take more than a [`PORT_SHARE`]th of one address's
/// ports comes from enough loopback addresses by itself; a run asked from too few is
/// warned. Returns the line that says which (None: nothing to say).
pub fn spread_sources(config: &mut Config, range: (u16, u16)) -> Option<String> {
    let total = config.connections + config.idle;
    let need = sources_needed(total, range);
    let have = config.source_addrs.len().max(1);
    if need <= have {
        return None;
    }
    let loopback = matches!(config.target.ip(), IpAddr::V4(ip) if ip.is_loopback());
    let suggested = loopback_sources(need);
    let last = suggested.last().expect("need >= 1");
    if config.source_addrs.is_empty() && loopback {
        config.source_addrs = suggested.clone();
        return Some(format!(
            "{total} connections from one address would take {}% of its {} ephemeral ports, \
             and connect(2) slows as they fill: they come from {need} loopback addresses, \
             127.0.0.2-{last} (--source-addrs to choose others)",
            100 * total / ports_of(range),
            ports_of(range)
        ));
    }
    let share = 100 * total.div_ceil(have) / ports_of(range);
    Some(format!(
        "warning: {total} connections over {have} source address{} take {share}% of each \
         one's {} ephemeral ports, and connect(2) slows as they fill: {need} addresses keep \
         each at a {PORT_SHARE}th{}",
        if have == 1 { "" } else { "es" },
        ports_of(range),
        if loopback {
            format!(" (--source-addrs 127.0.0.2-{last})")
        } else {
            String::new()
        }
    ))
}

/// Connections to one server address from `sources` source addresses (0: one, the
/// kernel's choice) must fit the ephemeral ports of each.
pub fn check_ports(connections: usize, sources: usize, range: (u16, u16)) -> Result<(), String> {
    let per_source = ports_of(range);
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
    fn a_big_loopback_run_spreads_itself_and_a_crowded_one_is_warned() {
        let range = (32768, 60999);
        let mut config = Config::new("127.0.0.1:80".parse().unwrap());
        config.connections = 10;
        config.idle = 100_000;
        let said = spread_sources(&mut config, range).expect("spread");
        assert_eq!(config.source_addrs.len(), 36, "{said}");
        assert_eq!(config.source_addrs[35].to_string(), "127.0.0.37");
        assert!(said.contains("36 loopback addresses"), "{said}");
        // Spread already: nothing more to say.
        assert_eq!(spread_sources(&mut config, range), None);
        // Asked from 8: kept, and warned with the number that would do.
        config.source_addrs = crate::parse_source_addrs("127.0.0.2-127.0.0.9").unwrap();
        let said = spread_sources(&mut config, range).expect("warned");
        assert_eq!(config.source_addrs.len(), 8);
        assert!(
            said.contains("44%") && said.contains("127.0.0.2-127.0.0.37"),
            "{said}"
        );
        // A small run, or one to another host with none given, is left alone or warned.
        config.idle = 1000;
        assert_eq!(spread_sources(&mut config, range), None);
        let mut far = Config::new("10.0.0.1:80".parse().unwrap());
        far.idle = 50_000;
        assert!(spread_sources(&mut far, range)
            .unwrap()
            .starts_with("warning"));
        assert!(far.source_addrs.is_empty());
        // Past 255: the next /24.
        assert_eq!(loopback_sources(300)[299].to_string(), "127.0.1.45");
    }

    #[test]
    fn enough_descriptors_are_granted() {
        assert!(ensure_fds(100).unwrap() >= 164);
    }

    #[test]
    fn too_many_descriptors_name_the_processes_that_would_do() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Past nr_open no one, root or not, may have them.
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .map_or(1 << 20, |s| s.trim().parse().unwrap());
        let sockets = nr_open.max(hard) as usize + 1;
        let err = ensure_fds_of(sockets, 3 * sockets).unwrap_err();
        assert!(
            err.contains("--processes") && err.contains("its hard limit is"),
            "{err}"
        );
    }
}
