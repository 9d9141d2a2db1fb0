//! Command-line front end: one file per subcommand, each turning arguments
//! into a validated config before any socket opens. Only this layer uses
//! clap, anyhow and indicatif.

mod bench;
mod connect;
mod demo;
mod docs;
mod exit;
mod listen;
mod out;
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
    init_logging(globals);
    let result = match cli.command {
        Command::Demo(args) => demo::run(args, globals),
        Command::Serve(args) => serve::run(*args, globals),
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

/// `RUST_LOG` wins; otherwise -q/-v pick the level. Logs go to stderr.
///
/// rustls' own log lines (through the `log` bridge) are about what a peer
/// sent (`Illegal SNI extension`, `Sending warning alert`), once per
/// connection and without the peer's endpoint: a hostile client could fill
/// the log with them. They are kept to errors up to `-v`, to warnings at
/// `-vv` (where every connection gets a line anyway); the server logs each
/// failed handshake itself, with the peer, once per address.
fn init_logging(globals: Globals) {
    use tracing_subscriber::EnvFilter;
    let default = match (globals.quiet, globals.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,rustls=error,tokio_rustls=error",
        (false, 1) => "info,rustls=error,tokio_rustls=error",
        (false, 2) => "debug,rustls=warn,tokio_rustls=warn",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
