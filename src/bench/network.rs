//! Where the server and the load generator meet: loopback on one host (the default),
//! or two network namespaces joined by a veth pair (`--netns`), as two hosts would be,
//! optionally with a delay on the link (`--link-delay`: netem, or where the kernel has
//! none, a delay line of our own, [`DelayLine`]).
//!
//! Over loopback a packet never leaves the kernel's loopback device: no queue, no
//! round trip to speak of, and the sender's CPU does the receiver's protocol work. A
//! veth pair is a wire between two network stacks: each namespace has its own
//! addresses, routes, port space and listen queues, and a netem delay makes the round
//! trip that a real network has.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use super::delay_line::{self, DelayLine};
use crate::results::NetworkSetting;

/// Addresses a client may connect from, at most (each has its own ephemeral ports).
const CLIENT_ADDRS: u8 = 250;

/// Where the servers listen and where the load comes from.
pub struct Network {
    /// The address every server binds.
    pub server_ip: IpAddr,
    /// Addresses the load generator may bind, beyond the first (the one the kernel
    /// picks when none is bound).
    pub client_ips: Vec<IpAddr>,
    /// The namespaces, when the two sides are apart; None: loopback.
    namespaces: Option<Namespaces>,
    pub setting: NetworkSetting,
}

/// The two namespaces, open (for setns), removed when dropped; and the delay line
/// between them, if the link is one.
struct Namespaces {
    server: (String, OwnedFd),
    client: (String, OwnedFd),
    delay_line: Option<DelayLine>,
}

impl Network {
    /// Both sides on this host's loopback: the server on 127.0.0.1, the load from
    /// 127.0.0.2 and on.
    pub fn loopback() -> Network {
        Network {
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_ips: (2..2 + CLIENT_ADDRS)
                .map(|i| IpAddr::from([127, 0, 0, i]))
                .collect(),
            namespaces: None,
            setting: NetworkSetting::loopback(),
        }
    }

    /// The servers on another host (`--server-host`), at `server` there; the load from
    /// this host's own address (`client`, as that host saw it), the kernel's choice.
    pub fn remote(server: IpAddr, client: &str) -> Network {
        Network {
            server_ip: server,
            client_ips: Vec::new(),
            namespaces: None,
            setting: NetworkSetting {
                kind: "ssh".into(),
                link_delay_us: None,
                link_delay_by: None,
                server: server.to_string(),
                client: client.into(),
            },
        }
    }

    /// Two namespaces named after this process, a veth pair between them (10.200.0.1
    /// the server's end, 10.200.1.1 … the client's), and `delay` on each end's egress:
    /// netem's, or where the kernel has no netem, a [`DelayLine`]'s between two TUN
    /// devices in place of the veth pair.
    pub fn netns(delay: Option<Duration>) -> Result<Network, String> {
        let id = std::process::id();
        let (server, client) = (
            format!("iomodels-server-{id}"),
            format!("iomodels-client-{id}"),
        );
        let (veth_s, veth_c) = (format!("iom{id}s"), format!("iom{id}c"));
        // Whatever fails half-way is removed by the drop of what was made.
        let mut made = Made(vec![server.clone(), client.clone()]);
        ip(&["netns", "add", &server])?;
        ip(&["netns", "add", &client])?;
        let open = |name: &str| {
            std::fs::File::open(format!("/run/netns/{name}"))
                .map(OwnedFd::from)
                .map_err(|e| format!("cannot open the namespace {name}: {e}"))
        };
        let (server_fd, client_fd) = (open(&server)?, open(&client)?);
        // The TUN devices of a delay line, made here, forwarded between once they are up.
        let tuns = match delay {
            Some(_) if !has_netem(&server) => {
                let tun = |(name, fd): (&String, &OwnedFd), dev: &str| {
                    in_namespace(name, fd, || delay_line::tun(dev)).and_then(|made| made)
                };
                let s = tun((&server, &server_fd), &veth_s)?;
                let c = tun((&client, &client_fd), &veth_c)?;
                eprintln!(
                    "iomodels: this kernel has no netem: the link's delay is a delay line \
                     of ours (two TUN devices, forwarded on the load generator's CPU)"
                );
                Some((s, c))
            }
            _ => {
                ip(&[
                    "link", "add", &veth_s, "type", "veth", "peer", "name", &veth_c,
                ])?;
                ip(&["link", "set", &veth_s, "netns", &server])?;
                ip(&["link", "set", &veth_c, "netns", &client])?;
                None
            }
        };
        let server_ip = Ipv4Addr::new(10, 200, 0, 1);
        ip(&[
            "-n",
            &server,
            "addr",
            "add",
            "10.200.0.1/16",
            "dev",
            &veth_s,
        ])?;
        let client_ips: Vec<Ipv4Addr> = (1..=CLIENT_ADDRS)
            .map(|i| Ipv4Addr::new(10, 200, 1, i))
            .collect();
        let batch: String = client_ips
            .iter()
            .map(|a| format!("addr add {a}/16 dev {veth_c}\n"))
            .collect();
        ip_batch(&client, &batch)?;
        for (ns, dev) in [(&server, &veth_s), (&client, &veth_c)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // A TUN device queues 500 packets for its reader by default, and drops
            // past that: a burst of connects would be lost to our thread's lateness.
            ip(&["-n", ns, "link", "set", dev, "txqueuelen", "10000", "up"])?;
        }
        let delay_by = match (delay, &tuns) {
            (None, _) => None,
            (Some(_), Some(_)) => Some(DELAY_LINE.to_string()),
            (Some(_), None) => Some("netem".to_string()),
        };
        let delay_line = match (delay, tuns) {
            (Some(delay), Some((s, c))) => Some(DelayLine::start(s, c, delay)),
            _ => None,
        };
        if let (Some(delay), None) = (delay, &delay_line) {
            let us = format!("{}us", delay.as_micros());
            for (ns, dev) in [(&server, &veth_s), (&client, &veth_c)] {
                tc(
                    ns,
                    &["qdisc", "add", "dev", dev, "root", "netem", "delay", &us],
                )
                .map_err(|e| {
                    format!("--link-delay needs netem (the kernel's sch_netem, and tc): {e}")
                })?;
            }
        }
        let namespaces = Namespaces {
            server: (server.clone(), server_fd),
            client: (client.clone(), client_fd),
            delay_line,
        };
        made.0.clear(); // the namespaces own the removal now
        Ok(Network {
            server_ip: IpAddr::V4(server_ip),
            client_ips: client_ips.into_iter().map(IpAddr::V4).collect(),
            namespaces: Some(namespaces),
            setting: NetworkSetting {
                kind: "netns".into(),
                link_delay_us: delay.map(|d| d.as_micros() as u64),
                link_delay_by: delay_by,
                server: server_ip.to_string(),
                client: "10.200.1.1".into(),
            },
        })
    }

    /// The server's namespace, for a child to join between fork and exec.
    pub fn server_ns(&self) -> Option<BorrowedFd<'_>> {
        self.namespaces.as_ref().map(|n| n.server.1.as_fd())
    }

    /// Run `f` on a thread inside the client's namespace (threads and processes it
    /// starts are there too); on this thread where there is none.
    pub fn as_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        self.within(self.namespaces.as_ref().map(|n| &n.client), f)
    }

    /// Run `f` inside the server's namespace (to find a free port there).
    pub fn as_server<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        self.within(self.namespaces.as_ref().map(|n| &n.server), f)
    }

    fn within<T: Send>(
        &self,
        ns: Option<&(String, OwnedFd)>,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, String> {
        match ns {
            Some((name, fd)) => in_namespace(name, fd, f),
            None => Ok(f()),
        }
    }

    /// A port free on the server's address, for a peer to listen on.
    pub fn free_port(&self) -> Result<SocketAddr, String> {
        let ip = self.server_ip;
        self.as_server(move || {
            let probe = std::net::TcpListener::bind((ip, 0))
                .map_err(|e| format!("no free port on {ip}: {e}"))?;
            probe.local_addr().map_err(|e| e.to_string())
        })?
    }
}

/// Run `f` on a thread inside the namespace `name` (open as `fd`).
fn in_namespace<T: Send>(
    name: &str,
    fd: &OwnedFd,
    f: impl FnOnce() -> T + Send,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // setns(2) moves this thread only: the caller stays where it is.
                setns(fd, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot enter the namespace {name}: {e}"))?;
                Ok(f())
            })
            .join()
            .map_err(|_| format!("a thread in the namespace {name} panicked"))?
    })
}

/// How run.json names a delay made by [`DelayLine`].
pub const DELAY_LINE: &str = "delay line: TUN devices, forwarded by iomodels";

/// Whether netem can be put on a device in namespace `ns` (tried on its loopback).
fn has_netem(ns: &str) -> bool {
    let add = ["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1us"];
    let ok = tc(ns, &add).is_ok();
    if ok {
        let _ = tc(ns, &["qdisc", "del", "dev", "lo", "root"]);
    }
    ok
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // The delay line's threads first, while their devices are still there.
        self.delay_line.take();
        // Removing a namespace removes its end of the veth pair, and with it the other.
        remove(&[self.server.0.clone(), self.client.0.clone()]);
    }
}

/// Namespaces made so far, removed if setting up the rest fails.
struct Made(Vec<String>);

impl Drop for Made {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// Remove the namespaces `names` (whatever fails is left as it is).
pub(super) fn remove(names: &[String]) {
    for name in names {
        let _ = run("ip", &["netns", "del", name]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
        .map(|_| ())
        .map_err(|e| format!("{e} (making namespaces needs root, or CAP_NET_ADMIN)"))
}

fn tc(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "tc"];
    all.extend_from_slice(args);
    run("ip", &all).map(|_| ())
}

/// `ip -n NS -batch -` with `commands` on its stdin.
fn ip_batch(ns: &str, commands: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(commands.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip -n {ns} -batch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `program args`, its output, or why it failed.
pub(super) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program} (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
