//! A server under test, as a child process: started pinned, watched through /proc, its
//! counters read through SIGUSR1, stopped with SIGTERM. On another host
//! (`--server-host`) the child is the SSH session it runs in, and the signals and /proc
//! go through [`Remote`].

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iomodels_servers::Snapshot;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::network::Network;
use super::procfs::{proc_sample, ProcSample};
use super::quota::{self, CpuQuota};
use super::remote::{self, Remote};
use crate::results::Limit;

/// How long a server may take to start listening, or to stop.
const PATIENCE: Duration = Duration::from_secs(10);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Counter snapshots (JSON lines on the server's stdout).
    snapshots: Mutex<Receiver<Snapshot>>,
    /// The server's stderr, kept for the reason of a failure.
    stderr: Arc<Mutex<Vec<String>>>,
    name: String,
    /// Ours answers SIGUSR1 with its counters; to a peer it could be fatal (Python's
    /// default action is to exit), so peers are never sent it.
    counters: bool,
    /// On another host: the session that reaches it, and its pid there.
    remote: Option<(Arc<Remote>, i32)>,
}

impl Server {
    /// `iomodels serve MODEL` on a free port of the network's server address, pinned
    /// to `cpus`.
    pub fn ours(
        exe: &Path,
        model: &str,
        args: &[String],
        cpus: &[usize],
        quota: Option<&CpuQuota>,
        network: &Network,
    ) -> Result<Server, String> {
        let mut cmd = Command::new(exe);
        cmd.args(["serve", model, "--port", "0"])
            .args(["--bind", &network.server_ip.to_string()])
            .args(args);
        let mut server = Server::spawn(cmd, model, cpus, quota, network)?;
        server.counters = true;
        server.addr = server.heard("did not say where it listens", listening_on)?;
        Ok(server)
    }

    /// `iomodels serve MODEL` on the other host, on a free port of the address SSH
    /// reached it at; not pinned, no quota.
    pub fn remote(remote: &Arc<Remote>, model: &str, args: &[String]) -> Result<Server, String> {
        let cmd = remote.serve(model, args);
        let mut server = Server::spawn(cmd, model, &[], None, &Network::loopback())?;
        server.counters = true;
        let pid = server.heard("did not start (the SSH session said no pid)", |l| {
            l.strip_prefix(remote::PID_SAID)?.trim().parse::<i32>().ok()
        })?;
        server.remote = Some((Arc::clone(remote), pid));
        server.addr = server.heard("did not say where it listens", listening_on)?;
        Ok(server)
    }

    /// The first of the server's stderr lines that `find` takes, waited for.
    fn heard<T>(&mut self, or_else: &str, find: impl Fn(&str) -> Option<T>) -> Result<T, String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.stderr.lock().unwrap().iter().find_map(|l| find(l)) {
                return Ok(found);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(self.failed(or_else));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Any other server (a peer): `cmd` must listen on `addr`, which is polled (from
    /// where the load comes) until it accepts.
    pub fn peer(
        cmd: Command,
        name: &str,
        addr: SocketAddr,
        cpus: &[usize],
        quota: Option<&CpuQuota>,
        network: &Network,
    ) -> Result<Server, String> {
        let mut server = Server::spawn(cmd, name, cpus, quota, network)?;
        server.addr = addr;
        let deadline = Instant::now() + PATIENCE;
        let reaches = || {
            network
                .as_client(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
                .unwrap_or(false)
        };
        while !reaches() {
            server.check_alive()?;
            if Instant::now() > deadline {
                return Err(server.failed(&format!(
                    "did not listen on {addr} within {PATIENCE:?} of its start"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn spawn(
        mut cmd: Command,
        name: &str,
        cpus: &[usize],
        quota: Option<&CpuQuota>,
        network: &Network,
    ) -> Result<Server, String> {
        let mut set = CpuSet::new();
        for &cpu in cpus {
            set.set(cpu).map_err(|e| format!("cpu {cpu}: {e}"))?;
        }
        let pin = !cpus.is_empty();
        let cgroup = quota.map(CpuQuota::procs);
        let netns = network.server_ns().map(|fd| fd.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls are allowed;
        // sched_setaffinity, setns, open and write are plain system calls, and nothing
        // here allocates (the cgroup's path was made before the fork). The namespace's
        // descriptor is open in the parent until the child has been started.
        unsafe {
            cmd.pre_exec(move || {
                if pin {
                    sched_setaffinity(Pid::from_raw(0), &set)?;
                }
                if let Some(fd) = netns {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
                }
                for procs in cgroup.iter().flatten() {
                    quota::join(procs)?;
                }
                // A server dies with the run, even one killed outright.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                Ok(())
            });
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("stderr is piped");
        let lines = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut lines = lines.lock().unwrap();
                if lines.len() < 200 {
                    lines.push(line);
                }
            }
        });
        let out_pipe = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                if let Ok(snapshot) = serde_json::from_str::<Snapshot>(&line) {
                    if tx.send(snapshot).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            snapshots: Mutex::new(rx),
            stderr,
            name: name.to_string(),
            counters: false,
            remote: None,
        })
    }

    /// SIGKILL, there too: killing the SSH session alone would leave the server
    /// running on the other host.
    fn kill(&mut self) {
        if self.remote.is_some() {
            let _ = self.signal(Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send `signal` to the server, here or there.
    fn signal(&self, signal: Signal) -> Result<(), String> {
        match &self.remote {
            Some((remote, pid)) => remote.signal(*pid, signal),
            None => kill(Pid::from_raw(self.child.id() as i32), signal).map_err(|e| e.to_string()),
        }
    }

    /// Err with the server's last words if it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failed(&format!("exited ({status})"))),
            Err(e) => Err(self.failed(&format!("cannot be waited for: {e}"))),
        }
    }

    /// "NAME MESSAGE; it said: LAST STDERR LINES": a server that died says why last.
    pub fn failed(&self, what: &str) -> String {
        let said = self.said_last(3);
        if said.is_empty() {
            format!("{} {what}", self.name)
        } else {
            format!("{} {what}; it said: {said}", self.name)
        }
    }

    /// The server's first stderr lines beyond its "listening on" line (warnings,
    /// refusals), joined.
    pub fn said(&self) -> String {
        self.lines_said(|lines| lines.into_iter().take(3).collect())
    }

    /// Its last `n` lines, joined.
    fn said_last(&self, n: usize) -> String {
        self.lines_said(|lines| {
            let skip = lines.len().saturating_sub(n);
            lines.into_iter().skip(skip).collect()
        })
    }

    fn lines_said(&self, pick: impl FnOnce(Vec<&str>) -> Vec<&str>) -> String {
        let lines = self.stderr.lock().unwrap();
        let said: Vec<&str> = lines
            .iter()
            .filter(|l| !l.contains(" listening on ") && !l.starts_with(remote::PID_SAID))
            .map(|l| l.trim())
            .collect();
        pick(said).join(" | ")
    }

    /// A limit met by this server: `why`, with what the server said about it, if anything.
    pub fn limit(&self, why: impl Into<String>) -> Limit {
        let said = self.said();
        Limit {
            server_said: (!said.is_empty()).then_some(said),
            ..Limit::new(why)
        }
    }

    /// Ask for the counters now (SIGUSR1) and wait for the line they come on.
    pub fn snapshot(&self) -> Option<Snapshot> {
        if !self.counters {
            return None;
        }
        let rx = self.snapshots.lock().unwrap();
        while rx.try_recv().is_ok() {} // anything stale
        self.signal(Signal::SIGUSR1).ok()?;
        rx.recv_timeout(Duration::from_secs(2)).ok()
    }

    pub fn proc_sample(&self) -> Option<ProcSample> {
        match &self.remote {
            Some((remote, pid)) => remote.proc_sample(*pid),
            None => proc_sample(self.child.id() as i32),
        }
    }

    /// SIGTERM, then SIGKILL if it does not exit in time. Err if it did not exit cleanly.
    pub fn stop(mut self) -> Result<(), String> {
        let _ = self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    // A peer killed by our SIGTERM is a clean stop too.
                    use std::os::unix::process::ExitStatusExt;
                    if status.signal() == Some(Signal::SIGTERM as i32) {
                        return Ok(());
                    }
                    return Err(self.failed(&format!("exited badly on SIGTERM ({status})")));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    self.kill();
                    return Err(self.failed("did not stop within 10 s of SIGTERM; killed"));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// "… listening on ADDR (…)", the line every model of ours starts with.
fn listening_on(line: &str) -> Option<SocketAddr> {
    let rest = line.split(" listening on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}
