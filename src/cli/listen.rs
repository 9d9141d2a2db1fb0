//! `tcpkit listen [ADDR]`: a netcat-class listener. Binds, listens with the
//! seed's backlog of 30, accepts one client and copies it to stdout and stdin
//! to it; `-k` accepts the next client when one leaves.
//!
//! `listening on <ENDPOINT>` goes to stderr with `-v`, and always when port 0
//! was asked for: the kernel picked the port, and a script (or a test) has no
//! other way to learn it.

use std::process::ExitCode;

use tcpkit::client::{PipeEnd, pipe};
use tcpkit::endpoint::Host;
use tcpkit::{Acceptor, DEFAULT_BACKLOG, DEFAULT_PORT, Endpoint};

use super::Globals;
use super::connect::{SessionArgs, idle_error, print_stats, runtime};
use super::exit::{Exit, codes_help};
use super::values;

/// Arguments of `tcpkit listen`.
#[derive(Debug, clap::Args)]
#[command(after_help = codes_help(&[
    Exit::Ok, Exit::Failure, Exit::Usage, Exit::Resolve, Exit::Timeout, Exit::Io, Exit::Bind,
]))]
pub struct Args {
    /// Where to listen: `IP:PORT`, `[v6]:PORT`, `HOST:PORT` (its first
    /// address), or a `PORT` alone (every interface, dual-stack). Default:
    /// `[::]:3333`. Port 0 lets the kernel
    /// pick one (printed as `listening on ...` on stderr).
    #[arg(value_name = "ADDR")]
    addr: Option<String>,
    /// After a client leaves, accept the next one instead of exiting.
    #[arg(short = 'k', long)]
    keep_open: bool,
    #[command(flatten)]
    session: SessionArgs,
}

/// What `ADDR` asked for.
enum Where {
    Any(u16),
    At(Endpoint),
}

/// `ADDR` through the one endpoint parser; a name is resolved (within
/// `RESOLVE_TIMEOUT`) and its first address used.
fn parse_addr(text: Option<&str>) -> anyhow::Result<Where> {
    let Some(text) = text else {
        return Ok(Where::Any(DEFAULT_PORT));
    };
    let place = values::host_port("ADDR", text)?;
    if let Some(ep) = place.endpoint() {
        return Ok(Where::At(ep));
    }
    if *place.host() == Host::Unspecified {
        return Ok(Where::Any(place.port()));
    }
    values::first_address("ADDR", &place).map(Where::At)
}

pub fn run(args: Args, globals: Globals) -> anyhow::Result<ExitCode> {
    let place = parse_addr(args.addr.as_deref())?;
    let dump = args.session.open_dump()?;
    let pipe_options = args.session.pipe_options(None);
    let verbose = globals.verbose > 0 && !globals.quiet;

    let (acceptor, port_requested) = match place {
        Where::Any(port) => (Acceptor::bind_listen_any(port, DEFAULT_BACKLOG)?, port),
        Where::At(ep) => (Acceptor::bind_listen(&ep, DEFAULT_BACKLOG)?, ep.port()),
    };
    let local = acceptor.local_endpoint()?;
    if verbose || port_requested == 0 {
        eprintln!("listening on {local}");
    }

    let rt = runtime()?;
    let result = rt.block_on(async {
        let listener = acceptor.into_tokio()?;
        let mut stdin = tokio::io::stdin();
        let mut stdout = tokio::io::stdout();
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                // The client gave up while queued: wait for the next one.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    return Err(tcpkit::Error::io(e, format_args!("accept on {local}")).into());
                }
            };
            let peer = Endpoint::from(addr);
            if verbose {
                eprintln!("connection from {peer}");
            }
            let outcome = pipe(
                stream,
                &mut stdin,
                &mut stdout,
                &pipe_options,
                dump.as_ref(),
            )
            .await;
            let err = match outcome {
                Ok(stats) => {
                    if verbose {
                        print_stats(&stats);
                    }
                    match stats.end {
                        PipeEnd::OutputClosed => return anyhow::Ok(ExitCode::SUCCESS),
                        PipeEnd::IdleTimeout => idle_error(peer, pipe_options.idle_timeout),
                        _ if args.keep_open => continue,
                        _ => return Ok(ExitCode::SUCCESS),
                    }
                }
                Err(e) => anyhow::Error::from(e),
            };
            if !args.keep_open {
                return Err(err);
            }
            // One client's failure does not stop a keep-open listener.
            if !globals.quiet {
                eprintln!("tcpkit: client {peer}: {err:#}");
            }
        }
    });
    rt.shutdown_background();
    result
}
