//! One run split over several processes: past what one process may hold.
//!
//! A process may hold as many descriptors as its RLIMIT_NOFILE allows (20,000 on many
//! hosts, and the hard limit needs CAP_SYS_RESOURCE to raise). To open 100,000
//! connections, the run is split: each worker process gets a share of the connections,
//! of the open-loop rate and of the source addresses, ramps up on its own, and says so;
//! the parent starts them all at once, tells its caller when the window opens and
//! closes (the suite samples the server then), and adds up what each worker counted.
//! The merge is exact: every histogram bucket crosses the pipe, so the parent's
//! percentiles are those of all the requests, and the books still balance (sent =
//! answered + failed + in flight).
//!
//! The conversation, one JSON line at a time: the parent writes the worker's
//! [`Config`] on its stdin; the worker writes [`Said`] lines on its stdout (the ramp's
//! progress, ready, its progress in the run, and last its tally); the parent answers
//! `go` or `abort` after the ramp, and `release` once the window's end is reported (until
//! then the workers keep their connections open, so that a sample of the server at the
//! window's end does not see the teardown). A worker whose parent goes away reads the
//! end of its stdin, and stops.

use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::limits;
use crate::progress::Progress;
use crate::report::Report;
use crate::tally::Tally;
use crate::threads;
use crate::window::Window;

/// How to start one worker process: `program args…`, which must call [`worker`] with its
/// stdin and stdout (`iomodels load-worker`), under any prefix that runs a command
/// elsewhere (`ip netns exec NAME`).
#[derive(Clone, Debug)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// What a worker says to its parent.
#[derive(Debug, Serialize, Deserialize)]
enum Said {
    Ramp {
        established: u64,
        failed: u64,
    },
    /// The ramp is over; true: every connection of its share is open.
    Ready(bool),
    Running {
        completed: u64,
        errors: u64,
    },
    /// Its whole count, with its peak memory and how many of its threads could run at once.
    Done {
        tally: Box<Tally>,
        rss_kb: u64,
        lanes: usize,
    },
    Failed(String),
}

/// Process `i`'s share of `config`: connections, idle ones and the open-loop rate split
/// as evenly as they go; every process connects from every source address, in turn, so
/// that each address carries the same share. (Dealt out, 8 addresses over 6 processes
/// gave four of them a single address for all their connections.)
pub fn split(config: &Config) -> Vec<Config> {
    let n = config.processes.max(1);
    let share = |total: usize, i: usize| total / n + usize::from(i < total % n);
    (0..n)
        .map(|i| {
            let connections = share(config.connections, i);
            Config {
                connections,
                idle: share(config.idle, i),
                rate: config
                    .rate
                    .map(|r| r * connections as f64 / config.connections as f64),
                connect_rate: config.connect_rate / n as f64,
                processes: 1,
                ..config.clone()
            }
        })
        .collect()
}

/// One worker, as the parent sees it.
struct Worker {
    child: Child,
    /// None once closed: a worker reads the end of its stdin as `abort`.
    stdin: Option<ChildStdin>,
}

impl Worker {
    fn start(
        i: usize,
        launcher: &Launcher,
        part: &Config,
        said: Sender<(usize, Said)>,
    ) -> Result<Worker, String> {
        let mut child = Command::new(&launcher.program)
            .args(&launcher.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start load process {i} ({:?}): {e}",
                    launcher.program
                )
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let line = serde_json::to_string(part).expect("a config serializes");
        writeln!(stdin, "{line}").map_err(|e| format!("load process {i}: {e}"))?;
        std::thread::Builder::new()
            .name(format!("load-process-{i}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let message = serde_json::from_str(&line).unwrap_or_else(|e| {
                        Said::Failed(format!("said what is not ours ({e}): {line:.200}"))
                    });
                    if said.send((i, message)).is_err() {
                        return;
                    }
                }
                let _ = said.send((i, Said::Failed("ended without its tally".into())));
            })
            .map_err(|e| e.to_string())?;
        Ok(Worker {
            child,
            stdin: Some(stdin),
        })
    }

    fn tell(&mut self, word: &str) {
        // A worker that is gone has said so on its stdout already.
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{word}").and_then(|()| stdin.flush());
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A worker still ramping or waiting for its word stops at the end of its stdin,
        // and one that runs stops at its window's end; a worker that does not is not
        // left behind.
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the parent knows of its workers so far.
struct Heard {
    ramp: Vec<(u64, u64)>,
    ready: Vec<Option<bool>>,
    running: Vec<(u64, u64)>,
    done: Vec<Option<(Tally, u64, usize)>>,
    /// It has sent its tally, or its reason for having none.
    ended: Vec<bool>,
    /// Each worker's failure, in its words.
    failures: Vec<Option<String>>,
}

impl Heard {
    fn new(n: usize) -> Heard {
        Heard {
            ramp: vec![(0, 0); n],
            ready: vec![None; n],
            running: vec![(0, 0); n],
            done: (0..n).map(|_| None).collect(),
            ended: vec![false; n],
            failures: vec![None; n],
        }
    }

    fn note(&mut self, i: usize, said: Said) {
        match said {
            Said::Ramp {
                established,
                failed,
            } => self.ramp[i] = (established, failed),
            Said::Ready(ready) => self.ready[i] = Some(ready),
            Said::Running { completed, errors } => self.running[i] = (completed, errors),
            Said::Done {
                tally,
                rss_kb,
                lanes,
            } => {
                self.done[i] = Some((*tally, rss_kb, lanes));
                self.ended[i] = true;
            }
            Said::Failed(why) => {
                // An end after the tally is no failure.
                if !self.ended[i] {
                    self.ended[i] = true;
                    self.failures[i] = Some(format!("load process {i}: {why}"));
                }
            }
        }
    }

    /// Take what has been said until `until`.
    fn listen(&mut self, said: &Receiver<(usize, Said)>, until: Instant) {
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            match said.recv_timeout(wait) {
                Ok((i, message)) => self.note(i, message),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                    return;
                }
            }
        }
    }

    fn sum(pairs: &[(u64, u64)]) -> (u64, u64) {
        pairs.iter().fold((0, 0), |(a, b), &(x, y)| (a + x, b + y))
    }

    fn finished(&self) -> bool {
        self.ended.iter().all(|&e| e)
    }

    /// Why the run failed: the first worker that failed before it was ready (the others
    /// were then told to stop, and say only that nothing was measured), else the first.
    fn failure(&self) -> Option<String> {
        let not_ready = (0..self.failures.len())
            .find(|&i| self.failures[i].is_some() && self.ready[i] != Some(true));
        match not_ready {
            Some(i) => self.failures[i].clone(),
            None => self.failures.iter().flatten().next().cloned(),
        }
    }
}

/// Run `config` over `config.processes` worker processes started by `launcher`, and
/// merge their counts into one report, as [`threads::run`] merges its threads'.
pub fn run(
    config: &Config,
    launcher: &Launcher,
    progress: &dyn Progress,
) -> Result<Report, String> {
    config.check()?;
    let total = config.connections + config.idle;
    limits::check_ports(total, config.source_addrs.len(), limits::ephemeral_ports())?;
    let parts = split(config);
    // Each worker's descriptors, checked here so that the error comes before any starts.
    let most = parts
        .iter()
        .map(|p| p.connections + p.idle)
        .max()
        .unwrap_or(0);
    limits::ensure_fds_of(most, total)?;
    let n = parts.len();
    let (tx, said) = mpsc::channel();
    let mut workers = Vec::with_capacity(n);
    for (i, part) in parts.iter().enumerate() {
        workers.push(Worker::start(i, launcher, part, tx.clone())?);
    }
    drop(tx);
    let mut heard = Heard::new(n);

    // The ramp: until every worker is ready, or one has failed.
    while heard
        .ready
        .iter()
        .zip(&heard.ended)
        .any(|(r, e)| r.is_none() && !e)
    {
        heard.listen(&said, Instant::now() + Duration::from_millis(50));
        let (established, failed) = Heard::sum(&heard.ramp);
        progress.ramp(established, failed, total as u64);
    }
    let go = heard.ready.iter().all(|r| *r == Some(true));
    let go = progress.gate(go);
    for worker in &mut workers {
        worker.tell(if go { "go" } else { "abort" });
    }
    // Each worker starts 10 ms after it reads `go`, as the threads of one process do.
    let start = Instant::now() + Duration::from_millis(10);
    if go {
        progress.started();
        let window = Window::after(start, config.warmup, config.duration);
        let mut opened = false;
        while heard.failure().is_none() {
            let now = Instant::now();
            if !opened && now >= window.from {
                progress.window_opened();
                opened = true;
            }
            if now >= window.end {
                break;
            }
            let (completed, errors) = Heard::sum(&heard.running);
            progress.running(start.elapsed(), completed, errors);
            let next = (now + Duration::from_millis(200)).min(if opened {
                window.end
            } else {
                window.from
            });
            heard.listen(&said, next);
        }
        if opened {
            progress.window_closed();
        }
    }
    for worker in &mut workers {
        worker.tell("release");
    }
    // Their tallies: each worker stops at its window's end, and its requests in
    // flight are unanswered after `timeout` at most.
    let deadline = Instant::now() + config.timeout + Duration::from_secs(10);
    while !heard.finished() && Instant::now() < deadline {
        heard.listen(
            &said,
            (Instant::now() + Duration::from_millis(50)).min(deadline),
        );
    }
    progress.done();
    if let Some(why) = heard.failure() {
        return Err(why);
    }
    if !go {
        return Err("the load processes were not all ready, and none said why".into());
    }
    if !heard.finished() {
        return Err(format!(
            "a load process sent no tally within {:?} of the window's end",
            deadline - start
        ));
    }
    let mut tally = Tally::default();
    let (mut rss_kb, mut lanes) = (0, 0);
    for (t, rss, l) in heard.done.into_iter().flatten() {
        tally.merge(&t);
        rss_kb += rss;
        lanes += l;
    }
    Ok(Report::new(
        config,
        &tally,
        config.duration,
        rss_kb,
        threads::lanes(lanes),
    ))
}

/// The worker's side: read its share from stdin, run it, say how it goes on stdout.
pub fn worker() -> Result<(), String> {
    let mut line = String::new();
    io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the run from stdin: {e}"))?;
    let config: Config = serde_json::from_str(&line).map_err(|e| {
        format!("stdin holds no run ({e}); this command is started by `load --processes`")
    })?;
    let parent = Parent {
        out: Mutex::new(io::stdout()),
    };
    match threads::run_tally(&config, &parent) {
        Ok((tally, _)) => parent.say(&Said::Done {
            tally: Box::new(tally),
            rss_kb: threads::peak_rss_kb(),
            lanes: threads::lanes(config.threads),
        }),
        Err(why) => parent.say(&Said::Failed(why)),
    }
    Ok(())
}

/// The worker's progress goes to its parent; at the gate and the window's end it
/// waits for the parent's word.
struct Parent {
    out: Mutex<io::Stdout>,
}

impl Parent {
    fn say(&self, said: &Said) {
        let line = serde_json::to_string(said).expect("what a worker says serializes");
        let mut out = self.out.lock().unwrap();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    /// The parent's next word ("" once it has gone).
    fn hear(&self) -> String {
        let mut line = String::new();
        let _ = io::stdin().read_line(&mut line);
        line.trim().to_string()
    }
}

impl Progress for Parent {
    fn ramp(&self, established: u64, failed: u64, _total: u64) {
        self.say(&Said::Ramp {
            established,
            failed,
        });
    }

    fn gate(&self, ready: bool) -> bool {
        self.say(&Said::Ready(ready));
        self.hear() == "go"
    }

    fn running(&self, _elapsed: Duration, completed: u64, errors: u64) {
        self.say(&Said::Running { completed, errors });
    }

    fn window_closed(&self) {
        // Keep the connections open until the parent has sampled the server.
        let _ = self.hear();
    }

    fn done(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_gives_out_everything_once() {
        let mut config = Config::new("127.0.0.1:1".parse().unwrap());
        config.connections = 10;
        config.idle = 100_003;
        config.rate = Some(1000.0);
        config.processes = 4;
        config.source_addrs = crate::parse_source_addrs("127.0.0.2-127.0.0.9").unwrap();
        let parts = split(&config);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.iter().map(|p| p.connections).sum::<usize>(), 10);
        assert_eq!(parts.iter().map(|p| p.idle).sum::<usize>(), 100_003);
        let rate: f64 = parts.iter().map(|p| p.rate.unwrap()).sum();
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
        assert!(
            parts.iter().all(|p| p.source_addrs == config.source_addrs),
            "every process connects from every address"
        );
        assert!(parts.iter().all(|p| p.processes == 1 && p.check().is_ok()));
    }

    #[test]
    fn a_tally_crosses_the_pipe_whole() {
        let mut tally = Tally {
            sent: 7,
            completed: 5,
            failed: 1,
            in_flight_at_end: 1,
            ..Tally::default()
        };
        for us in [1, 90, 1_000, 123_456] {
            tally.latency.record(us).unwrap();
        }
        tally.second(3).latency.record(77).unwrap();
        let line = serde_json::to_string(&Said::Done {
            tally: Box::new(tally.clone()),
            rss_kb: 1,
            lanes: 1,
        })
        .unwrap();
        let Said::Done { tally: back, .. } = serde_json::from_str(&line).unwrap() else {
            panic!("not a tally: {line}");
        };
        assert_eq!(back.latency, tally.latency);
        assert_eq!(back.seconds[3].latency, tally.seconds[3].latency);
        assert!(back.adds_up());
    }
}
