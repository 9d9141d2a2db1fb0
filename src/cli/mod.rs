//! Command-line front end: one file per subcommand, each turning arguments
//! into a validated config before any socket opens. Only this layer uses
//! clap, anyhow and indicatif.

mod bench;
mod bench_chat;
mod connect;
mod demo;
mod docs;
mod exit;
mod listen;
mod log;
mod out;
mod relay;
mod relay_edges;
mod serve;
mod serve_access;
mod serve_proxy;
#[cfg(target_os = "linux")]
mod serve_restart;
#[cfg(feature = "tls")]
mod serve_tls;
#[cfg(feature = "tls")]
mod tls_client;
mod values;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// TCP client/server toolkit in Boost.Asio's model: endpoints, sockets,
/// acceptors; echo/discard/chat servers, a netcat-class client and listener,
/// and a verifying load generator.
#[derive(Debug, Parser)]
#[command(name = "tcpkit", version, propagate_version = true, after_help = exit::all_codes_help())]
struct Cli {
    /// More output on stderr (repeat for more: -v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Walk through the seed tutorial end to end on loopback: endpoint,
    /// acceptor, bind, listen(30), connect, accept, write/read, close.
    Demo(demo::Args),
    /// Run a server: echo (default), discard or chat.
    // Boxed: its flags (TLS, PROXY, access lists, restarts) make it the
    // largest variant by far (clippy's `large_enum_variant`).
    Serve(Box<serve::Args>),
    /// Forward every client to an upstream HOST:PORT (a TCP relay), or
    /// one of several (balanced, health-checked), with serve's limits,
    /// TLS, PROXY, access lists and metrics.
    Relay(Box<relay::Args>),
    /// Connect to HOST:PORT and copy stdin to it and it to stdout (like nc).
    Connect(connect::Args),
    /// Accept one client on ADDR and copy it to stdin/stdout (like nc -l).
    Listen(listen::Args),
    /// Load-test an echo server, verifying every byte, with latency histograms.
    Bench(bench::Args),
    /// Print a shell completion script (bash, zsh, fish, ...) to stdout.
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff) to stdout: `tcpkit man | man -l -`.
    Man(docs::ManArgs),
}

/// Flags every subcommand sees.
#[derive(Debug, Clone, Copy)]
pub struct Globals {
    /// `-v` count.
    pub verbose: u8,
    /// `-q`.
    pub quiet: bool,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return exit::usage(err),
    };
    let globals = Globals {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Relay(args) => args.serve.log_format,
        _ => log::LogFormat::Text,
    };
    log::init(globals, log_format);
    let result = match cli.command {
        Command::Demo(args) => demo::run(args, globals),
        Command::Serve(args) => serve::run(*args, globals),
        Command::Relay(args) => relay::run(*args, globals),
        Command::Connect(args) => connect::run(args, globals),
        Command::Listen(args) => listen::run(args, globals),
        Command::Bench(args) => bench::run(args, globals),
        Command::Completions(args) => {
            docs::completions(&args, <Cli as clap::CommandFactory>::command())
        }
        Command::Man(_) => docs::man(<Cli as clap::CommandFactory>::command()),
    };
    match result {
        Ok(code) => code,
        Err(err) => exit::report(&err),
    }
}
