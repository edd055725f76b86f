//! Where the server and the load generator meet: loopback on one host (the default),
//! or two network namespaces joined by a veth pair (`--netns`), as two hosts would be,
//! optionally with a delay on the link (`--link-delay`, netem).
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

/// The two namespaces, open (for setns), removed when dropped.
struct Namespaces {
    server: (String, OwnedFd),
    client: (String, OwnedFd),
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

    /// Two namespaces named after this process, a veth pair between them (10.200.0.1
    /// the server's end, 10.200.1.1 … the client's), and `delay` on each end's egress.
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
        ip(&[
            "link", "add", &veth_s, "type", "veth", "peer", "name", &veth_c,
        ])?;
        ip(&["link", "set", &veth_s, "netns", &server])?;
        ip(&["link", "set", &veth_c, "netns", &client])?;
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
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        if let Some(delay) = delay {
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
        let open = |name: &str| {
            std::fs::File::open(format!("/run/netns/{name}"))
                .map(OwnedFd::from)
                .map_err(|e| format!("cannot open the namespace {name}: {e}"))
        };
        let namespaces = Namespaces {
            server: (server.clone(), open(&server)?),
            client: (client.clone(), open(&client)?),
        };
        made.0.clear(); // the namespaces own the removal now
        Ok(Network {
            server_ip: IpAddr::V4(server_ip),
            client_ips: client_ips.into_iter().map(IpAddr::V4).collect(),
            namespaces: Some(namespaces),
            setting: NetworkSetting {
                kind: "netns".into(),
                link_delay_us: delay.map(|d| d.as_micros() as u64),
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
        let Some((name, fd)) = ns else {
            return Ok(f());
        };
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

impl Drop for Namespaces {
    fn drop(&mut self) {
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

fn remove(names: &[String]) {
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

fn run(program: &str, args: &[&str]) -> Result<String, String> {
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
