//! `tcpkit relay`: `serve`'s server running the relay instead of a mode.
//!
//! Flags: `--to HOST:PORT` and `--connect-timeout`, plus every `serve` flag
//! that applies to a relay (listen address, limits, idle timeout, shutdown
//! grace, workers, TLS termination, PROXY from a balancer, access lists,
//! metrics, restarts). The `listening on` line and the exit summary are
//! `serve`'s, with `relay` as the mode.

use std::process::ExitCode;
use std::time::Duration;

use tcpkit::relay::{Fixed, Relay};

use super::Globals;
use super::exit::{Exit, codes_help};
use super::values;

/// Longest `--connect-timeout`: beyond it the kernel gives up on the SYN
/// anyway (about two minutes on Linux).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Arguments of `tcpkit relay`.
#[derive(Debug, clap::Args)]
#[group(id = "RelayArgs")]
#[command(
    // `serve`'s flags that mean nothing to a relay (they are one struct):
    // kept out of the help, and refused if given (a usage error naming the
    // flag, not silently ignored): `--to` is required, so a conflict with
    // it is a conflict always.
    mut_arg("mode", |a| a.hide(true).conflicts_with("to")),
    mut_arg("max_line", |a| a.hide(true).conflicts_with("to")),
    mut_arg("history", |a| a.hide(true).conflicts_with("to")),
    mut_arg("no_defer_accept", |a| a.hide(true).conflicts_with("to")),
    mut_arg("bus", |a| a.hide(true).conflicts_with("to")),
    mut_arg("bus_ttl", |a| a.hide(true)),
    after_help = codes_help(&[Exit::Ok, Exit::Failure, Exit::Usage, Exit::Resolve, Exit::Io, Exit::Bind]),
    after_long_help = EXAMPLES,
)]
pub struct Args {
    /// Upstream every client is connected to: HOST:PORT, [V6]:PORT, or a
    /// PORT alone (this host). A name is resolved again at each client's
    /// connect, so a changed address is followed.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// Deadline of each upstream connect, resolution included; a client
    /// whose upstream does not answer in time is closed (and counted).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = values::duration)]
    connect_timeout: Duration,
    #[command(flatten)]
    pub serve: super::serve::Args,
}

const EXAMPLES: &str = "\
How it works: every accepted client gets its own connection to --to; bytes
flow both ways until both sides are done. A client's FIN reaches the upstream
as a FIN while the reply keeps flowing (and the other way round); a reset on
one side resets the other. Each pair holds at most 16 KiB per direction: a
side that stops reading stops reads on the other. --idle-timeout counts only
while both directions are quiet. A client whose upstream refuses or times out
is closed at once and counted (tcpkit_relay_upstream_connect_failures_total with
--metrics). SIGINT/SIGTERM closes the listener, then drains the pairs within
--shutdown-grace.

Examples:
  # forward local port 8080 to a web server
  tcpkit relay --listen 127.0.0.1:8080 --to localhost:80
  # terminate TLS in front of a plain service (self-signed certificate)
  tcpkit relay --listen 8443 --to 127.0.0.1:8080 --tls
  # at most 1000 pairs, 2 s to reach the upstream, 30 s idle
  tcpkit relay --listen 9000 --to 10.0.0.5:9000 --max-connections 1000 \\
      --connect-timeout 2s --idle-timeout 30s";

/// Flags to a relay, checked before any socket opens.
fn relay(args: &Args) -> anyhow::Result<Relay<Fixed>> {
    let target = values::host_port("--to", &args.to)?;
    if target.port() == 0 {
        return Err(values::invalid(
            "--to",
            format_args!("{}: port 0 is not a port anyone listens on", args.to),
        ));
    }
    if args.connect_timeout.is_zero() || args.connect_timeout > MAX_CONNECT_TIMEOUT {
        return Err(values::invalid(
            "--connect-timeout",
            "must be more than 0 and at most 5m",
        ));
    }
    Ok(Relay::new(Fixed::new(target, args.connect_timeout)))
}

pub fn run(args: Args, globals: Globals) -> anyhow::Result<ExitCode> {
    let relay = relay(&args)?;
    super::serve::run_with(args.serve, globals, Some(relay))
}
