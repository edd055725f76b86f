//! `iomodels`: serve with any I/O model, list the models, generate load, run the
//! benchmark suite and draw its charts.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};
use iomodels::bench::{self, log::Bar, peers, Profile};
use iomodels::experiments::Experiment;
use iomodels::roster;
use iomodels_loadgen as loadgen;
use iomodels_servers::{self as servers, Config, EtDrain, Listen, Proto, UringMode, Waits, MODELS};

#[derive(Parser)]
#[command(
    name = "iomodels",
    version,
    about = "How a Linux network server waits for I/O"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server with one I/O model until SIGINT or SIGTERM; its counters are printed
    /// as one JSON line on stdout then, and on every SIGUSR1.
    Serve(ServeArgs),
    /// The table of models, one line each.
    Models,
    /// Drive a server with load: active connections (closed or open loop) beside idle
    /// ones; prints a summary, and writes every number with --json.
    Load(LoadArgs),
    /// Run the benchmark suite: every server as a pinned child process under load;
    /// writes run.json, SVG charts and REPORT.md into a run folder.
    Bench(BenchArgs),
    /// Redraw the charts and REPORT.md of a run folder from its run.json.
    Plot {
        /// The run folder (it holds run.json).
        dir: PathBuf,
    },
    /// Regenerate the book's generated pages (book/src/generated): the diffs between
    /// neighbouring models, the results of results/reference, and the timelines drawn
    /// from its traces.
    Book,
    /// One process of `load --processes`: reads its share of the run on stdin, reports
    /// on stdout (started by `load` and `bench`, not by hand).
    #[command(hide = true)]
    LoadWorker,
    /// Record the book's timelines: a short scripted scenario (a few clients, one of
    /// them slow) against every model with `serve --trace`, and the edge- against
    /// level-triggered demonstration, into results/reference/traces.
    Trace,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// quick: a few minutes; full: C10K and past, with repeats.
    #[arg(long, value_enum, default_value_t = Profile::Quick)]
    profile: Profile,
    /// Experiments to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    experiments: Vec<Experiment>,
    /// Models to run, comma-separated [default: every model].
    #[arg(long, value_delimiter = ',',
          value_parser = PossibleValuesParser::new(MODELS.iter().map(|m| m.name)))]
    models: Vec<String>,
    /// Real servers to run beside ours, when installed: nginx, tornado.
    #[arg(long, value_delimiter = ',',
          value_parser = PossibleValuesParser::new(roster::peers().map(|p| p.name)))]
    peers: Vec<String>,
    /// Run each server and the load generator in two network namespaces joined by a
    /// veth pair (made and removed by the suite; needs root), as on two hosts, rather
    /// than over loopback.
    #[arg(long)]
    netns: bool,
    /// With --netns: a delay on each end of the link (the round trip is twice it), e.g.
    /// 0.5ms: netem's, or where the kernel has no netem, a delay line of ours (two TUN
    /// devices, forwarded on the load generator's CPU; run.json says which).
    #[arg(long, value_parser = humantime::parse_duration, requires = "netns")]
    link_delay: Option<Duration>,
    /// A server of your own beside the models and peers, in every experiment they join:
    /// NAME=COMMAND, where COMMAND listens on {port} (and {host}), e.g.
    /// 'mine=./target/release/mine --listen {host}:{port}'; repeatable.
    #[arg(long = "server", value_parser = roster::own_server)]
    servers: Vec<peers::Custom>,
    /// Run our servers on another machine, USER@HOST, over SSH (OpenSSH, with your keys
    /// and ~/.ssh/config as they are; it must not ask for a password), the load
    /// generator here. They listen on the address SSH reached it at, are neither pinned
    /// nor under a CPU quota there, and are read from its /proc.
    #[arg(long, value_name = "USER@HOST", conflicts_with_all = ["netns", "peers", "servers"])]
    server_host: Option<String>,
    /// With --server-host: the iomodels binary on that host, the same version as this
    /// one (e.g. ./iomodels after `scp target/release/iomodels USER@HOST:`).
    #[arg(long, default_value = "iomodels", requires = "server_host")]
    remote_exe: String,
    /// With --server-host: an ssh option as `ssh -o` takes it, KEY=VALUE, e.g.
    /// IdentityFile=~/.ssh/bench or Port=2222; repeatable.
    #[arg(
        long = "ssh-option",
        value_name = "KEY=VALUE",
        requires = "server_host"
    )]
    ssh_options: Vec<String>,
    /// The run folder [default: results/runs/<UTC time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead of the profile's: idle connections of the idle experiment, e.g. 0,20000.
    #[arg(long, value_delimiter = ',')]
    idle_points: Option<Vec<usize>>,
    /// Instead of the profile's: connections of the active experiment.
    #[arg(long, value_delimiter = ',')]
    active_points: Option<Vec<usize>>,
    /// Instead of the profile's: the measured window of every point, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// Instead of the profile's: the warm-up before every window.
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Instead of the profile's: how many times each point is measured.
    #[arg(long)]
    repeats: Option<u32>,
    /// The share of one CPU each server may use: 1, a whole CPU (its cgroup only counts
    /// its CPU time); below 1, a cgroup CPU quota in 10 ms periods, so that the server,
    /// not the load generator, is the limit, at the price of throttling in every figure
    /// (see the methodology chapter: 0.5 gave 5x the noise and 45% more CPU per request).
    #[arg(long, default_value_t = 1.0, value_parser = cpu_share)]
    server_cpu: f64,
}

/// A share of one CPU: above 0, at most 1.
fn cpu_share(s: &str) -> Result<f64, String> {
    let share: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if share > 0.0 && share <= 1.0 {
        Ok(share)
    } else {
        Err(format!(
            "{share} is not a share of one CPU (above 0, at most 1)"
        ))
    }
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The server, HOST:PORT.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, value_enum, default_value_t = ProtoArg::Http)]
    proto: ProtoArg,
    /// HTTP: the path every request asks for.
    #[arg(long, default_value = "/")]
    path: String,
    /// Echo: bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Active connections, each sending requests.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Idle connections held open beside them (each checked once with a request).
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// How long to measure, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Run this long before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Open loop: requests per second in total, latency from the intended send time.
    /// Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: requests in flight per active connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// A new connection per request (HTTP/1.0 without keep-alive): connection churn.
    #[arg(long)]
    close: bool,
    /// Threads of each process [default: the CPUs this process may use, shared out
    /// among the processes].
    #[arg(long)]
    threads: Option<usize>,
    /// Processes, each with its own descriptor limit and a share of the connections,
    /// the rate and the source addresses; their reports are merged exactly. One process
    /// holds at most its RLIMIT_NOFILE of connections.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 20_000.0)]
    connect_rate: f64,
    /// Source addresses, e.g. 127.0.0.2-127.0.0.9, for more connections than one
    /// address has ephemeral ports.
    #[arg(long, value_parser = source_addrs)]
    source_addrs: Option<SourceAddrs>,
    /// A connect or request unanswered this long fails.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--source-addrs`: one value that names many addresses (clap would take a bare
/// `Vec` for an option given many times).
#[derive(Clone, Debug)]
struct SourceAddrs(Vec<IpAddr>);

fn source_addrs(text: &str) -> Result<SourceAddrs, String> {
    loadgen::parse_source_addrs(text).map(SourceAddrs)
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The I/O model (see `iomodels models`).
    #[arg(value_parser = PossibleValuesParser::new(MODELS.iter().map(|m| m.name)))]
    model: String,
    /// TCP port; 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// What the handler speaks.
    #[arg(long, value_enum, default_value_t = ProtoArg::Http)]
    proto: ProtoArg,
    /// listen(2) backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = Config::default().backlog)]
    backlog: i32,
    /// `blocking` only: each connection thread's stack size in bytes (small, so that
    /// 10,000 threads fit).
    #[arg(long, default_value_t = Config::default().stack_size)]
    stack_size: usize,
    /// `reactor` only: executor threads for blocking work; 0 runs it on the loop
    /// [default: min(32, CPUs + 4), as Python's ThreadPoolExecutor].
    #[arg(long)]
    executor: Option<usize>,
    /// `reactor` only: how a `/wait/MS` waits: a coroutine awaiting a sleep, a timer's
    /// callback, or a thread of the executor (with `--executor 0`, the loop sleeps).
    #[arg(long, value_enum, default_value_t = WaitsArg::Coroutine)]
    waits: WaitsArg,
    /// `thread-pool`: workers [default: 16]; `epoll-mt`: loops [default: one per CPU].
    #[arg(long)]
    threads: Option<std::num::NonZeroUsize>,
    /// `prefork` only: worker processes [default: one per CPU it may use].
    #[arg(long)]
    workers: Option<std::num::NonZeroUsize>,
    /// `prefork` only: how the workers share the port: a socket each (SO_REUSEPORT), one
    /// socket they all wait on with EPOLLEXCLUSIVE (nginx's default), or one without it
    /// (every idle worker woken per connection: the thundering herd).
    #[arg(long, value_enum, default_value_t = ListenArg::Reuseport)]
    listen: ListenArg,
    /// Listen with SO_REUSEPORT, beside other servers on the same port.
    #[arg(long)]
    reuse_port: bool,
    /// Serve on this inherited listening socket instead of binding one (`prefork`
    /// starts its workers so); `--bind` and `--port` are then not used.
    #[arg(long)]
    listen_fd: Option<std::os::fd::RawFd>,
    /// `epoll-et` only: wait on the listener with EPOLLEXCLUSIVE, as one of several
    /// processes sharing it (prefork's workers with `--listen shared`).
    #[arg(long)]
    accept_exclusive: bool,
    /// `epoll-et` only: after an edge, stop reading at a short read (the socket is empty,
    /// epoll(7); as nginx reads) or only at EAGAIN (one more read per event, the naive
    /// drain).
    #[arg(long, value_enum, default_value_t = EtDrainArg::ShortRead)]
    et_drain: EtDrainArg,
    /// `io-uring` only: multishot accept and receive into provided buffers, or basic: a
    /// receive per submission into each connection's own buffer.
    #[arg(long, value_enum, default_value_t = UringModeArg::Multishot)]
    uring_mode: UringModeArg,
    /// A request whose header is not complete this long after it began (on a new
    /// connection: after the accept) is answered 408 and closed: a duration (10s,
    /// 500ms) or `off`.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    header_timeout: TimeoutArg,
    /// A keep-alive connection with no request in flight this long is closed: a
    /// duration or `off`.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: TimeoutArg,
    /// Open connections at most; a newcomer past it closes the longest-idle keep-alive
    /// connection, or gets a 503 [default: the descriptor limit, less a reserve].
    #[arg(long)]
    max_connections: Option<std::num::NonZeroUsize>,
    /// `thread-pool` only: read each request's header without blocking on the main
    /// thread, and hand a worker only a complete request (so slow clients hold no
    /// worker).
    #[arg(long)]
    buffer_headers: bool,
    /// Record every event of the loop (waits, accepts, reads, writes, timeouts,
    /// closes) and write them to this file as JSON at exit: for a few clients, as
    /// `iomodels trace` runs it, never for a measurement.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// `--header-timeout` and `--idle-timeout`: a duration, or `off`.
#[derive(Clone, Copy, Debug)]
struct TimeoutArg(Option<Duration>);

fn parse_timeout(text: &str) -> Result<TimeoutArg, String> {
    if text == "off" {
        return Ok(TimeoutArg(None));
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("a zero timeout would close every connection at once; \
             to have none, say `off`"
            .into()),
        Ok(d) => Ok(TimeoutArg(Some(d))),
        Err(e) => Err(format!(
            "{e}: give a duration such as 10s or 500ms, or `off`"
        )),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EtDrainArg {
    ShortRead,
    Eagain,
}

#[derive(Clone, Copy, ValueEnum)]
enum WaitsArg {
    Coroutine,
    Callback,
    Executor,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListenArg {
    Reuseport,
    Shared,
    Herd,
}

#[derive(Clone, Copy, ValueEnum)]
enum UringModeArg {
    Multishot,
    Basic,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    Http,
    Echo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Models => {
            print_models();
            Ok(())
        }
        Command::Load(args) => load(args),
        Command::Bench(args) => run_bench(args),
        Command::Plot { dir } => plot(&dir),
        Command::Book => book(),
        Command::Trace => trace(),
        Command::LoadWorker => loadgen::processes::worker(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iomodels: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let model = servers::model(&args.model).expect("clap checked the name");
    let config = Config {
        proto: match args.proto {
            ProtoArg::Http => Proto::Http,
            ProtoArg::Echo => Proto::Echo,
        },
        backlog: args.backlog,
        stack_size: args.stack_size,
        executor: args.executor.unwrap_or_else(servers::default_executor),
        waits: match args.waits {
            WaitsArg::Coroutine => Waits::Coroutine,
            WaitsArg::Callback => Waits::Callback,
            WaitsArg::Executor => Waits::Executor,
        },
        threads: args.threads.map(std::num::NonZeroUsize::get),
        workers: args.workers.map(std::num::NonZeroUsize::get),
        listen: match args.listen {
            ListenArg::Reuseport => Listen::Reuseport,
            ListenArg::Shared => Listen::Shared,
            ListenArg::Herd => Listen::Herd,
        },
        accept_exclusive: args.accept_exclusive,
        et_drain: match args.et_drain {
            EtDrainArg::ShortRead => EtDrain::ShortRead,
            EtDrainArg::Eagain => EtDrain::Eagain,
        },
        uring_mode: match args.uring_mode {
            UringModeArg::Multishot => UringMode::Multishot,
            UringModeArg::Basic => UringMode::Basic,
        },
        header_timeout: args.header_timeout.0,
        idle_timeout: args.idle_timeout.0,
        max_connections: usize::MAX,
        buffer_headers: args.buffer_headers,
        trace: args.trace,
    };
    (model.available)().map_err(|e| format!("{} cannot run here: {e}", model.name))?;
    let limit = servers::raise_fd_limit()
        .map_err(|e| format!("cannot read or raise the descriptor limit: {e}"))?;
    let mut config = config;
    let watchable = model.max_fds.unwrap_or(limit).min(limit);
    let ceiling = servers::default_max_connections(watchable);
    config.max_connections = match args.max_connections.map(std::num::NonZeroUsize::get) {
        Some(asked) if model.max_fds.is_none() || asked <= ceiling => asked,
        asked => {
            if model.max_fds.is_some_and(|fds| fds < limit) {
                eprintln!(
                    "iomodels: {} watches descriptors below {watchable} only ({}): at most \
                     {ceiling} connections{}",
                    model.name,
                    model.limit,
                    asked.map_or(String::new(), |a| format!(", not the {a} asked for"))
                );
            }
            ceiling
        }
    };
    let listener = match args.listen_fd {
        Some(fd) => servers::inherited_listener(fd)
            .map_err(|e| format!("--listen-fd {fd} is not a listening socket: {e}"))?,
        None => {
            let addr = SocketAddr::new(args.bind, args.port);
            servers::listen(addr, config.backlog, model.reuse_port || args.reuse_port)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?
        }
    };
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let (proto, max) = (config.proto.name(), config.max_connections);
    let listening = || {
        eprintln!(
            "iomodels: {} listening on {local} ({proto}, fd limit {limit}, at most {} \
             connections)",
            model.name, max
        );
    };
    servers::run(model, listener, config, listening)
        .map_err(|e| format!("{} failed: {e}", model.name))?;
    Ok(())
}

fn load(args: LoadArgs) -> Result<(), String> {
    let mut config = loadgen::Config::new(args.target);
    config.proto = match args.proto {
        ProtoArg::Http => loadgen::Proto::Http,
        ProtoArg::Echo => loadgen::Proto::Echo,
    };
    config.path = args.path;
    config.size = args.size;
    config.connections = args.connections;
    config.idle = args.idle;
    config.duration = args.duration;
    config.warmup = args.warmup;
    config.rate = args.rate;
    config.pipeline = args.pipeline;
    config.keep_alive = !args.close;
    config.processes = args.processes;
    config.threads = args
        .threads
        .unwrap_or_else(|| config.threads.div_ceil(args.processes.max(1)));
    config.connect_rate = args.connect_rate;
    config.source_addrs = args.source_addrs.map(|a| a.0).unwrap_or_default();
    config.timeout = args.timeout;
    let spread = loadgen::limits::spread_sources(&mut config, loadgen::limits::ephemeral_ports());
    let queue = loadgen::limits::somaxconn()
        .and_then(|m| loadgen::limits::check_backlog(config.connect_rate, m));
    for said in spread.into_iter().chain(queue) {
        eprintln!("iomodels: {said}");
    }

    let report = if config.processes > 1 {
        let launcher = loadgen::processes::Launcher {
            program: std::env::current_exe()
                .map_err(|e| format!("cannot find this binary: {e}"))?,
            args: vec!["load-worker".into()],
        };
        loadgen::processes::run(&config, &launcher, &Bar::spinner())?
    } else {
        loadgen::run(&config, &Bar::spinner())?
    };
    print!("{}", report.summary());
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(&path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    fn all<T>(given: Vec<T>, every: impl Iterator<Item = T>) -> Vec<T> {
        if given.is_empty() {
            every.collect()
        } else {
            given
        }
    }
    let options = bench::Options {
        exe,
        profile: args.profile,
        overrides: bench::Overrides {
            idle: args.idle_points,
            active: args.active_points,
            warmup: args.warmup,
            window: args.window,
            repeats: args.repeats,
        },
        experiments: all(args.experiments, Experiment::all()),
        models: all(args.models, MODELS.iter().map(|m| m.name.to_string())),
        peers: args.peers,
        servers: args.servers,
        server_host: args.server_host.map(|host| bench::remote::Destination {
            host,
            ssh_options: args.ssh_options,
            exe: args.remote_exe,
        }),
        netns: args.netns,
        link_delay: args.link_delay,
        out: args.out.unwrap_or_else(bench::default_out),
        server_cpu_share: Some(args.server_cpu),
    };
    let started = std::time::Instant::now();
    let measured = bench::run(&options)?;
    let (run, _) = iomodels::plot(&options.out)?;
    if let Some(why) = &measured.stopped {
        // Everything the run made is gone by now; what it measured is drawn.
        eprintln!(
            "iomodels: {why}; run.json, charts and REPORT.md are in {}",
            options.out.display()
        );
        std::process::exit(bench::stop::STOPPED.into());
    }
    print!("{}", iomodels::report::terminal(&run));
    println!(
        "{} points in {:.0?}; run.json, charts and REPORT.md are in {}",
        run.points.len(),
        started.elapsed(),
        options.out.display()
    );
    Ok(())
}

fn plot(dir: &std::path::Path) -> Result<(), String> {
    let (run, drawn) = iomodels::plot(dir)?;
    print!("{}", iomodels::report::terminal(&run));
    println!(
        "{} charts and REPORT.md written to {}",
        drawn.len(),
        dir.display()
    );
    Ok(())
}

fn book() -> Result<(), String> {
    // The repository this binary was built from: the book lives beside its sources.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let written = iomodels::book::write(root)?;
    println!(
        "{written} files written to {}",
        root.join(iomodels::book::GENERATED).display()
    );
    Ok(())
}

fn trace() -> Result<(), String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let out = root.join(iomodels::timeline::TRACES);
    let n = iomodels::timeline::record_all(&exe, root, &out)?;
    println!(
        "{n} traces written to {}; run `iomodels book` to draw them",
        out.display()
    );
    Ok(())
}

fn print_models() {
    let width = MODELS.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in MODELS {
        println!("{:width$}  {}  (limit: {})", m.name, m.summary, m.limit);
    }
}
