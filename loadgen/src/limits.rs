//! The machine's limits a run can hit before the server does: descriptors and ports,
//! each checked before the run starts, with the number that is short and how to raise it;
//! and the listen queues, whose overflow is seen as it happens ([`Overflows`]).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

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

/// `net.core.somaxconn`: the kernel caps every listen backlog at it.
pub fn somaxconn() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How long a server may leave its queue unattended before a ramp at the connect rate
/// overflows it: a loop busy with one request, a scheduler's time slice.
const QUEUE_SLACK: Duration = Duration::from_millis(50);

/// A warning when `net.core.somaxconn` (`somaxconn`) cannot queue [`QUEUE_SLACK`] of
/// connections at `connect_rate` a second: a server busy that long drops SYNs, and each
/// dropped one waits a second to be sent again. None when it can.
pub fn check_backlog(connect_rate: f64, somaxconn: u64) -> Option<String> {
    let arrive = (connect_rate * QUEUE_SLACK.as_secs_f64()).ceil() as u64;
    (somaxconn < arrive).then(|| {
        format!(
            "warning: net.core.somaxconn is {somaxconn}, and --connect-rate {connect_rate} \
             brings {arrive} connections in {} ms: a server that takes longer to accept \
             overflows its queue, and each overflowed connection waits a second; raise it \
             (`sysctl -w net.core.somaxconn={}`, and the server's backlog) or lower \
             --connect-rate",
            QUEUE_SLACK.as_millis(),
            arrive.next_power_of_two().max(4096)
        )
    })
}

/// The kernel's count of connections a full listen queue turned away (TcpExt
/// `ListenOverflows` in /proc/net/netstat), from a start: every listener of this network
/// namespace counts, so a run to a loopback server sees its own server's.
pub struct Overflows {
    at_start: Option<u64>,
}

impl Overflows {
    pub fn start() -> Overflows {
        Overflows {
            at_start: listen_overflows(),
        }
    }

    /// Overflows since the start (None: /proc/net/netstat unreadable).
    pub fn since(&self) -> Option<u64> {
        Some(listen_overflows()?.saturating_sub(self.at_start?))
    }

    /// What to say of `n` overflows while `established` of `total` connections were up.
    pub fn explain(n: u64, established: u64, total: u64) -> String {
        let max = somaxconn().map_or("unknown".into(), |m| m.to_string());
        format!(
            "the server's listen queue overflowed {n} times while {established} of {total} \
             connections were up (ListenOverflows, /proc/net/netstat): each turned-away SYN \
             is sent again a second later. Its queue holds min(its backlog, \
             net.core.somaxconn = {max}); raise both, or lower --connect-rate"
        )
    }
}

/// TcpExt `ListenOverflows`: the second of /proc/net/netstat's two `TcpExt:` lines holds
/// the values of the names on the first.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
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
    fn a_shallow_somaxconn_is_warned_with_the_number_that_would_do() {
        assert_eq!(check_backlog(20_000.0, 4096), None);
        let said = check_backlog(20_000.0, 128).expect("warned");
        assert!(
            said.contains("somaxconn is 128") && said.contains("1000 connections in 50 ms"),
            "{said}"
        );
        assert!(said.contains("somaxconn=4096"), "{said}");
    }

    /// A listener with a queue of one, never accepted from: the second connect's
    /// handshake overflows it, and the count says so.
    #[test]
    fn an_overflowing_queue_is_counted() {
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let overflows = Overflows::start();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                c.set_nonblocking(true).unwrap();
                let _ = c.connect(&addr.into());
                c
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while overflows.since().unwrap() == 0 {
            assert!(std::time::Instant::now() < deadline, "no overflow counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(clients);
        let said = Overflows::explain(3, 1, 4);
        assert!(said.contains("overflowed 3 times while 1 of 4"), "{said}");
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
