//! What a run is asked to do, checked before any socket is opened.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Http,
    Echo,
}

/// Every option of a run, as used (the JSON report carries it whole).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub target: SocketAddr,
    pub proto: Proto,
    /// HTTP: the path every request asks for.
    pub path: String,
    /// Echo: bytes per message.
    pub size: usize,
    /// Active connections, each sending requests.
    pub connections: usize,
    /// Idle connections held open beside them: checked once, then silent.
    pub idle: usize,
    #[serde(serialize_with = "seconds", deserialize_with = "from_seconds")]
    pub duration: Duration,
    /// Run, but do not measure, this long first.
    #[serde(serialize_with = "seconds", deserialize_with = "from_seconds")]
    pub warmup: Duration,
    /// Open loop: requests per second in total. None: closed loop.
    pub rate: Option<f64>,
    /// Closed loop: requests in flight per active connection.
    pub pipeline: usize,
    /// False: HTTP/1.0 without keep-alive, so every request opens a new connection
    /// (connection churn).
    #[serde(default = "yes")]
    pub keep_alive: bool,
    /// Threads of each process.
    pub threads: usize,
    /// Processes, each with its own descriptor limit and its share of the connections
    /// and of the rate, split by the `processes` part; 1: this process alone.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub processes: usize,
    /// New connections per second while ramping up.
    pub connect_rate: f64,
    /// Local addresses to connect from, round robin (empty: the kernel's choice).
    pub source_addrs: Vec<IpAddr>,
    /// A connect or a request unanswered this long fails with `connect_timeout` or
    /// `timeout`.
    #[serde(serialize_with = "seconds", deserialize_with = "from_seconds")]
    pub timeout: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn from_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Config {
    /// A closed-loop HTTP run against `target` with the defaults of the CLI.
    pub fn new(target: SocketAddr) -> Config {
        Config {
            target,
            proto: Proto::Http,
            path: "/".into(),
            size: 64,
            connections: 50,
            idle: 0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            rate: None,
            pipeline: 1,
            keep_alive: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            processes: 1,
            connect_rate: 20_000.0,
            source_addrs: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Reject what cannot be run, saying why.
    pub fn check(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if self.processes == 0 {
            return Err("--processes must be at least 1".into());
        }
        if self.connections < self.processes {
            return Err(format!(
                "--processes {} needs at least as many active connections, not {}",
                self.processes, self.connections
            ));
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        if let Some(rate) = self.rate {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(format!("--rate must be a positive number, not {rate}"));
            }
            if self.pipeline > 1 {
                return Err("--pipeline is for the closed loop; leave it out with --rate".into());
            }
        }
        if !(self.connect_rate > 0.0 && self.connect_rate.is_finite()) {
            return Err("--connect-rate must be a positive number".into());
        }
        if !self.keep_alive {
            if self.proto != Proto::Http {
                return Err("a connection per request (--close) is for HTTP".into());
            }
            if self.idle > 0 {
                return Err("idle connections need keep-alive; leave out --close".into());
            }
            if self.pipeline > 1 {
                return Err("--pipeline needs keep-alive; leave out --close".into());
            }
        }
        if self.proto == Proto::Echo && self.size == 0 {
            return Err("--size must be at least 1 byte for echo".into());
        }
        if self.proto == Proto::Http && !self.path.starts_with('/') {
            return Err(format!("--path must start with '/', not {:?}", self.path));
        }
        Ok(())
    }
}

/// Parse `127.0.0.2-127.0.0.9` (a range of IPv4 addresses) or `a,b,c` (a list).
pub fn parse_source_addrs(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut addrs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((from, to)) = part.split_once('-') {
            let bad = |what: &str| format!("bad address {what:?} in --source-addrs {text:?}");
            let from: Ipv4Addr = from.trim().parse().map_err(|_| bad(from))?;
            let to: Ipv4Addr = to.trim().parse().map_err(|_| bad(to))?;
            let (a, b) = (u32::from(from), u32::from(to));
            if a > b || b - a >= 65_536 {
                return Err(format!(
                    "--source-addrs range {part:?} is empty or too large"
                ));
            }
            addrs.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
        } else {
            let addr = part
                .parse()
                .map_err(|_| format!("bad address {part:?} in --source-addrs"))?;
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err("--source-addrs names no address".into());
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_address_ranges_and_lists() {
        let got = parse_source_addrs("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        assert_eq!(parse_source_addrs("127.0.0.2, ::1").unwrap().len(), 2);
        assert!(parse_source_addrs("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_source_addrs("localhost").is_err());
        assert!(parse_source_addrs("").is_err());
    }

    #[test]
    fn bad_combinations_are_refused_with_the_option_named() {
        let target = "127.0.0.1:1".parse().unwrap();
        let mut c = Config::new(target);
        assert!(c.check().is_ok());
        c.rate = Some(100.0);
        c.pipeline = 4;
        assert!(c.check().unwrap_err().contains("--pipeline"));
        let mut c = Config::new(target);
        c.connections = 0;
        assert!(c.check().unwrap_err().contains("--connections"));
    }
}
