//! `bench --server-host`: the suite drives servers on another host over SSH. The other
//! host is a network namespace of this machine with an sshd of its own, started here
//! with keys made here (OpenSSH's server is installed with apt-get where it is
//! missing). Needs root, as `--netns` does.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use iomodels::experiments::Experiment;
use iomodels::results::Run;

/// The other host's address, inside its namespace; this host's end of the link.
const HOST: &str = "10.201.0.1";
const HERE: &str = "10.201.0.2/24";

/// One other host at a time: the tests of this file share its name and addresses.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// An sshd in a namespace of its own, joined to this one by a veth pair; killed and
/// removed when dropped.
struct OtherHost {
    namespace: String,
    /// This host's end of the veth pair.
    link: String,
    sshd: Child,
    dir: PathBuf,
}

impl OtherHost {
    fn start() -> OtherHost {
        let sshd = sshd();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ssh-host");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for key in ["host_key", "client_key"] {
            run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f"],
                &[&dir.join(key)],
            );
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress {HOST}\nPort 22\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();

        let id = std::process::id();
        let namespace = format!("iomodels-sshd-{id}");
        let (here, there) = (format!("ioms{id}a"), format!("ioms{id}b"));
        // What a run that was killed may have left.
        let _ = Command::new("ip").args(["link", "del", &here]).output();
        let _ = Command::new("ip")
            .args(["netns", "del", &namespace])
            .output();
        ip(&["netns", "add", &namespace]);
        // Dropped from here on, it removes the namespace (and with it the veth pair).
        let mut host = OtherHost {
            namespace: namespace.clone(),
            link: here.clone(),
            sshd: Command::new("true").spawn().unwrap(),
            dir: dir.clone(),
        };
        ip(&["link", "add", &here, "type", "veth", "peer", "name", &there]);
        ip(&["link", "set", &there, "netns", &namespace]);
        ip(&["addr", "add", HERE, "dev", &here]);
        ip(&["link", "set", &here, "up"]);
        let cidr = format!("{HOST}/24");
        ip(&["-n", &namespace, "addr", "add", &cidr, "dev", &there]);
        ip(&["-n", &namespace, "link", "set", &there, "up"]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);

        let config = dir.join("sshd_config");
        host.sshd = Command::new("ip")
            .args(["netns", "exec", &namespace])
            .arg(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("cannot start sshd");
        let addr: SocketAddr = format!("{HOST}:22").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline && host.sshd.try_wait().unwrap().is_none(),
                "sshd did not listen on {addr}: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        host
    }

    /// What `bench` needs to reach it: the key made here, and no host key to check.
    fn ssh_options(&self) -> Vec<String> {
        let key = self.dir.join("client_key");
        [
            format!("IdentityFile={}", key.display()),
            "IdentitiesOnly=yes".into(),
            "StrictHostKeyChecking=no".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "LogLevel=ERROR".into(),
        ]
        .into()
    }

    /// The processes left in the namespace: sshd, and nothing else once a run is over.
    fn processes(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.namespace])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok())
            .map(|cmd| cmd.replace('\0', " "))
            .collect()
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        // The link first: a namespace is taken down after `ip netns del` returns, and
        // its end of the pair (with this one) only then, too late for the next test.
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .output();
    }
}

/// sshd's path, installing OpenSSH's server where it is missing.
fn sshd() -> PathBuf {
    let path = PathBuf::from("/usr/sbin/sshd");
    if !path.exists() {
        eprintln!("sshd is missing: installing openssh-server with apt-get");
        let apt = |args: &[&str]| {
            let status = Command::new("timeout")
                .arg("300")
                .arg("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "`apt-get {}` failed: this test needs OpenSSH's server (as root: \
                 apt-get install openssh-server)",
                args.join(" ")
            );
        };
        apt(&["update", "-qq"]);
        apt(&["install", "-y", "-qq", "openssh-server"]);
    }
    assert!(path.exists(), "no sshd at {}", path.display());
    path
}

fn ip(args: &[&str]) {
    run("ip", args, &[]);
}

fn run(program: &str, args: &[&str], paths: &[&Path]) {
    let out = Command::new(program)
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `iomodels bench --server-host USER@HOST …` with `exe` there and `options` for ssh,
/// at most two minutes.
fn bench(exe: &str, options: &[String], extra: &[&str], out: &Path) -> Output {
    let user = Command::new("id").arg("-un").output().unwrap();
    let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", env!("CARGO_BIN_EXE_iomodels"), "bench"])
        .args(["--server-host", &format!("{user}@{HOST}")])
        .args(["--remote-exe", exe]);
    for option in options {
        cmd.args(["--ssh-option", option]);
    }
    cmd.args(["--experiments", "idle", "--idle-points", "0,200"])
        .args(["--warmup", "200ms", "--window", "500ms", "--repeats", "1"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn server_host_runs_the_servers_there_and_reads_them_there() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let host = OtherHost::start();
    let out = host.dir.join("run");
    let exe = env!("CARGO_BIN_EXE_iomodels");
    let ran = bench(
        exe,
        &host.ssh_options(),
        &["--models", "epoll-et,prefork"],
        &out,
    );
    let err = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "bench --server-host failed: {err}");

    let run = Run::load(&out).unwrap();
    let there = run
        .settings
        .server_host
        .as_ref()
        .expect("the host is recorded");
    assert!(there.destination.ends_with(&format!("@{HOST}")));
    assert_eq!(there.address, HOST);
    assert_eq!(there.client, "10.201.0.2");
    assert!(there.cores >= 1 && there.fd_limit > 0 && there.memory_kb > 0);
    assert!(there.version.starts_with("iomodels "), "{}", there.version);
    // Neither pinned nor throttled there; every CPU here the load generator's.
    assert_eq!(run.settings.server_cpu_quota, None);
    assert!(run.machine.pinning.server_cpus.is_empty());
    assert_eq!(run.settings.network.as_ref().unwrap().kind, "ssh");
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains("| server host | "), "{report}");

    let points: Vec<_> = run
        .points
        .iter()
        .filter(|p| p.experiment == Experiment::Idle)
        .collect();
    for model in ["epoll-et", "prefork"] {
        let of = |idle| {
            points
                .iter()
                .any(|p| p.model == model && p.idle == Some(idle))
        };
        assert!(of(0) && of(200), "{model} at both points");
    }
    for point in points {
        let what = format!("{} at {:?} idle", point.model, point.idle);
        assert_eq!(point.limit, None, "{what}");
        let load = point.load.as_ref().unwrap();
        // 10.201.0.1 exists only inside the namespace: a server that listened there
        // ran there, under the sshd.
        assert_eq!(load.config.target.ip().to_string(), HOST, "{what}");
        assert_eq!(load.idle.verified, point.idle.unwrap() as u64, "{what}");
        let server = point.server.as_ref().expect("read over SSH");
        assert!(
            server.cpu_user_s + server.cpu_sys_s > 0.0,
            "{what}: {server:?}"
        );
        assert!(server.rss_kb > 0, "{what}");
        let counters = server.counters.as_ref().expect("SIGUSR1 sent there");
        assert!(counters.requests > 0, "{what}");
    }
    // prefork's workers are found under its master in that host's /proc, and summed:
    // more threads than one epoll-et process has.
    let threads = |model: &str| {
        let point = run
            .points
            .iter()
            .find(|p| p.model == model && p.server_args.is_empty());
        let point = point.unwrap();
        point.server.as_ref().unwrap().threads
    };
    assert!(threads("prefork") > threads("epoll-et"));
    let left = host.processes();
    assert!(
        left.iter().all(|p| p.contains("sshd")),
        "left running on the other host: {left:?}"
    );
}

#[test]
fn server_host_says_why_it_cannot_start_there() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let host = OtherHost::start();
    let exe = env!("CARGO_BIN_EXE_iomodels");
    // No binary at that path there.
    let out = host.dir.join("no-binary");
    let ran = bench(
        "/nowhere/iomodels",
        &host.ssh_options(),
        &["--models", "poll"],
        &out,
    );
    let err = String::from_utf8_lossy(&ran.stderr);
    assert!(!ran.status.success());
    assert!(
        err.contains("cannot run /nowhere/iomodels") && err.contains("scp"),
        "{err}"
    );
    // No key it accepts: ssh's own words, not a hang at a password prompt.
    let out = host.dir.join("no-key");
    let mut options = host.ssh_options();
    options[0] = "IdentityFile=/dev/null/none".into();
    let ran = bench(exe, &options, &["--models", "poll"], &out);
    let err = String::from_utf8_lossy(&ran.stderr);
    assert!(!ran.status.success());
    assert!(
        err.contains("SSH session") && err.contains("Permission denied"),
        "{err}"
    );
}
