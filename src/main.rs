//! `iomodels`: serve with any I/O model, list the models.
//!
//! The load generator (`load`), the benchmark suite (`bench`) and the charts (`plot`)
//! arrive with their issues.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};
use iomodels_servers::{self as servers, Config, Proto, MODELS};

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
    };
    let limit = servers::raise_fd_limit()
        .map_err(|e| format!("cannot read or raise the descriptor limit: {e}"))?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = servers::listen(addr, config.backlog)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "iomodels: {} listening on {local} ({}, fd limit {limit})",
        model.name,
        config.proto.name()
    );
    servers::run(model, listener, config).map_err(|e| format!("{} failed: {e}", model.name))?;
    Ok(())
}

fn print_models() {
    let width = MODELS.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in MODELS {
        println!("{:width$}  {}  (limit: {})", m.name, m.summary, m.limit);
    }
}
