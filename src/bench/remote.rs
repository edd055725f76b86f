//! A server on another machine (`bench --server-host USER@HOST`): started, read and
//! stopped over SSH, while the load generator runs here.
//!
//! Each server is one SSH session, `ssh HOST 'exec iomodels serve …'`: its stdout and
//! stderr come back as a local child's would (its counters as JSON lines, its
//! "listening on" line), and the session ends when it does. Beside them one more
//! session keeps a shell open for the whole run. Through it the suite signals a server
//! (SIGUSR1 for its counters, SIGTERM to stop it) and reads its /proc: at each edge of
//! the measured window that costs one round trip, not a new SSH connection.
//!
//! The server there is neither pinned nor limited to a share of a CPU: the machine is
//! its own, as in production, and run.json says so (settings.server_host).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::procfs::ProcSample;
use crate::results::ServerHost;

/// How long the other host may take to answer.
const PATIENCE: Duration = Duration::from_secs(10);

/// Where the servers run, and how to reach it.
#[derive(Clone, Debug)]
pub struct Destination {
    /// `USER@HOST`, or anything `ssh` takes (a Host of ~/.ssh/config).
    pub host: String,
    /// `KEY=VALUE`, each given to ssh as `-o KEY=VALUE` (before ours, so they win).
    pub ssh_options: Vec<String>,
    /// The iomodels binary there.
    pub exe: String,
}

impl Destination {
    /// `ssh` to the host, never asking for a password (a prompt nobody sees would hang
    /// the run: a key is needed, as the user already has them).
    fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-T");
        for option in &self.ssh_options {
            cmd.arg("-o").arg(option);
        }
        cmd.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(["-o", "ServerAliveInterval=5"])
            .arg("--")
            .arg(&self.host);
        cmd
    }
}

/// The shell session to the host, and what the host said of itself.
pub struct Remote {
    pub destination: Destination,
    pub facts: ServerHost,
    /// CLK_TCK there: the unit of /proc/PID/stat's CPU times.
    clock_ticks: f64,
    shell: Mutex<Shell>,
}

struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// What ssh said on stderr (why it could not connect, mostly), and the thread
    /// that reads it.
    said: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Each question ends with a numbered mark, so a late answer is never taken for
    /// the next one's.
    asked: u64,
}

/// What the session defines once: the processes under a pid (prefork's workers), and
/// the /proc figures of each, after a `pid N` line.
const FUNCTIONS: &str = r#"iomodels_tree() { echo "$1"; for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do iomodels_tree "$c"; done; }
iomodels_sample() { for p in $(iomodels_tree "$1"); do echo "pid $p"; cat /proc/"$p"/stat /proc/"$p"/status 2>/dev/null; done; }"#;

/// What the host says of itself, a `key value` line each. SSH_CONNECTION is "client
/// port server port": the address this host reached it at is where its servers listen.
const FACTS: &str = r#"set -- $SSH_CONNECTION
echo "address $3"
echo "client $1"
echo "cores $(getconf _NPROCESSORS_ONLN)"
echo "kernel $(uname -sr)"
echo "ticks $(getconf CLK_TCK)"
echo "fds $(ulimit -Hn)"
echo "memory $(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"
echo "cpu $(sed -n 's/^model name[^:]*: *//p' /proc/cpuinfo | head -n 1)""#;

impl Remote {
    /// Open the session, and check that the host runs our binary.
    pub fn connect(destination: Destination) -> Result<Remote, String> {
        let host = destination.host.clone();
        let mut cmd = destination.ssh();
        cmd.arg("exec sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run ssh (OpenSSH's client) to reach {host}: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let said = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let into = Arc::clone(&said);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut said = into.lock().unwrap();
                if said.len() < 20 {
                    said.push(line);
                }
            }
        });
        let shell = Shell {
            stdin: child.stdin.take(),
            child,
            lines,
            said,
            reader: Some(reader),
            asked: 0,
        };
        let mut remote = Remote {
            destination,
            facts: ServerHost::default(),
            clock_ticks: 100.0,
            shell: Mutex::new(shell),
        };
        let exe = shlex::try_quote(&remote.destination.exe)
            .map_err(|_| "--remote-exe holds a NUL byte".to_string())?
            .into_owned();
        let script = format!("{FUNCTIONS}\n{FACTS}\necho \"version $({exe} --version 2>&1)\"");
        let answer = remote.ask(&script)?;
        let fact = |key: &str| {
            answer
                .iter()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                .map(str::trim)
                .unwrap_or("")
        };
        let ours = format!("iomodels {}", env!("CARGO_PKG_VERSION"));
        let version = fact("version");
        if !version.starts_with("iomodels ") {
            return Err(format!(
                "{host} cannot run {exe} ({version}): copy this binary there \
                 (`scp target/release/iomodels {host}:`) and give its path with \
                 --remote-exe (e.g. ./iomodels)"
            ));
        }
        let number = |key: &str| fact(key).parse::<u64>().ok();
        remote.clock_ticks = number("ticks").filter(|&t| t > 0).unwrap_or(100) as f64;
        remote.facts = ServerHost {
            destination: host.clone(),
            address: fact("address").to_string(),
            client: fact("client").to_string(),
            cpu_model: fact("cpu").to_string(),
            cores: number("cores").unwrap_or(1) as usize,
            kernel: fact("kernel").to_string(),
            memory_kb: number("memory").unwrap_or(0),
            // "unlimited" is bounded by fs.nr_open, a million by default.
            fd_limit: match fact("fds") {
                "unlimited" => 1 << 20,
                _ => number("fds").unwrap_or(1024),
            },
            version: version.to_string(),
            note: format!(
                "the servers ran on {host}, reached over SSH: neither pinned nor under a \
                 CPU quota (the machine was theirs), their CPU and memory read from its \
                 /proc, their counters asked for with SIGUSR1 there"
            ),
        };
        if remote.facts.address.is_empty() {
            return Err(format!(
                "{host} did not say which of its addresses it was reached at \
                 (SSH_CONNECTION is empty there)"
            ));
        }
        if version != ours {
            eprintln!("iomodels: {host} runs {version}, this is {ours}");
        }
        Ok(remote)
    }

    /// `iomodels serve MODEL` there, on a free port of the address it was reached at;
    /// the shell says its pid on stderr first (exec keeps it).
    pub fn serve(&self, model: &str, args: &[String]) -> Command {
        let mut words = vec![
            self.destination.exe.as_str(),
            "serve",
            model,
            "--port",
            "0",
            "--bind",
            &self.facts.address,
        ];
        words.extend(args.iter().map(String::as_str));
        let line = shlex::try_join(words).expect("no NUL in a server's arguments");
        let mut cmd = self.destination.ssh();
        cmd.arg(format!("echo \"{PID_SAID} $$\" >&2; exec {line}"));
        cmd
    }

    /// Send `signal` (SIGUSR1, SIGTERM, SIGKILL) to `pid` there.
    pub fn signal(&self, pid: i32, signal: nix::sys::signal::Signal) -> Result<(), String> {
        let name = signal.as_str().trim_start_matches("SIG");
        let answer = self.ask(&format!("kill -{name} {pid} && echo sent"))?;
        if answer.iter().any(|l| l == "sent") {
            Ok(())
        } else {
            Err(format!(
                "kill -{name} {pid} failed on {}",
                self.facts.destination
            ))
        }
    }

    /// CPU time, memory and threads of `pid` there and every process under it.
    pub fn proc_sample(&self, pid: i32) -> Option<ProcSample> {
        let answer = self.ask(&format!("iomodels_sample {pid}")).ok()?;
        let mut blocks = Vec::new();
        for line in answer {
            if line.starts_with("pid ") {
                blocks.push(Vec::new());
            } else if let Some(block) = blocks.last_mut() {
                block.push(line);
            }
        }
        let mut samples = blocks.iter().filter_map(|block| {
            let (stat, status) = block.split_first()?;
            ProcSample::parse(stat, &status.join("\n"), self.clock_ticks)
        });
        let first = samples.next()?;
        Some(samples.fold(first, |sum, one| sum + one))
    }

    /// Run `script` in the session; its stdout, a line each.
    fn ask(&self, script: &str) -> Result<Vec<String>, String> {
        let mut shell = self.shell.lock().unwrap();
        shell.asked += 1;
        let mark = format!("iomodels-answered {}", shell.asked);
        let sent = match shell.stdin.as_mut() {
            Some(stdin) => {
                writeln!(stdin, "{script}\necho \"{mark}\"").and_then(|()| stdin.flush())
            }
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        let deadline = Instant::now() + PATIENCE;
        let mut lines = Vec::new();
        while sent.is_ok() {
            let left = deadline.saturating_duration_since(Instant::now());
            match shell.lines.recv_timeout(left) {
                Ok(line) if line == mark => return Ok(lines),
                // The end of an earlier question that timed out: what came before it
                // was its answer.
                Ok(line) if line.starts_with("iomodels-answered ") => lines.clear(),
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} did not answer within {PATIENCE:?}",
                        self.destination.host
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // The session is gone: say what ssh said, all of it once it has exited.
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(shell.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let (Ok(Some(_)), Some(reader)) = (shell.child.try_wait(), shell.reader.take()) {
            let _ = reader.join();
        }
        let said = shell.said.lock().unwrap().join(" | ");
        Err(format!(
            "the SSH session to {} ended{}",
            self.destination.host,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ))
    }
}

/// The first line a server's session writes on stderr, before the server starts.
pub const PID_SAID: &str = "iomodels: remote pid";

impl Drop for Remote {
    fn drop(&mut self) {
        let shell = self.shell.get_mut().unwrap();
        shell.stdin = None; // the shell reads its end and exits
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(shell.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = shell.child.kill();
        let _ = shell.child.wait();
    }
}
