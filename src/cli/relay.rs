//! `tcpkit relay`: `serve`'s server running the relay instead of a mode.
//!
//! Flags: `--to HOST:PORT` (repeated for several upstreams), `--balance`,
//! `--health-interval` and `--connect-timeout`, plus every `serve` flag
//! that applies to a relay (listen address, limits, idle timeout, shutdown
//! grace, workers, TLS termination, PROXY from a balancer, access lists,
//! metrics, restarts). `--listen unix:PATH` takes clients on a UNIX-domain
//! socket (checks in `serve::unix_refusals`, plus `--balance hash-source`
//! here). The `listening on` line and the exit summary are
//! `serve`'s, with `relay` as the mode.

use std::process::ExitCode;
use std::time::Duration;

use tcpkit::relay::{BalanceOptions, Balanced, Policy, Relay};

use super::Globals;
use super::exit::{Exit, codes_help};
use super::relay_edges::Backend;
use super::values;

/// Longest `--connect-timeout`: beyond it the kernel gives up on the SYN
/// anyway (about two minutes on Linux).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest `--health-interval`.
const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);

/// The upstream `tcpkit relay` runs: every `--to`, balanced (one `--to` is
/// a balancer of one, never marked down).
pub type Upstreams = Balanced<Backend>;

/// `--balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Balance {
    /// Each upstream in turn.
    RoundRobin,
    /// The upstream with the fewest live pairs (ties in turn).
    LeastConn,
    /// By the client's IP address (not its port): a client keeps its
    /// upstream while that one is up; when one goes down only its clients
    /// move.
    HashSource,
}

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
    mut_arg("listen", |a| a.help(
        "Where clients connect: a PORT alone (every interface), 127.0.0.1:9000, [::1]:9000, \
         localhost:9000, or unix:PATH (a UNIX-domain socket: a stale socket file is replaced, \
         a live one or any other file refused, removed at exit; its clients have no address, \
         so --allow/--deny, --proxy-protocol, --tls, --balance hash-source, --engine per-core \
         and restarts are refused with it, and --send-proxy sends v2 LOCAL / v1 UNKNOWN) \
         [default: [::]:3333]; on Linux also systemd or fd:N"
    )),
    mut_arg("max_connections", |a| a.help(
        "Pairs relayed at once (two sockets each); more clients are accepted and closed at once \
         [default: half the open-file limit left after the splice pipes' 512]"
    )),
    after_help = codes_help(&[Exit::Ok, Exit::Failure, Exit::Usage, Exit::Resolve, Exit::Io, Exit::Bind]),
    after_long_help = EXAMPLES,
)]
pub struct Args {
    /// Upstream clients are connected to: HOST:PORT, [V6]:PORT, a PORT
    /// alone (this host), or unix:PATH (a UNIX socket). Repeat for several upstreams, balanced by
    /// --balance. A name is resolved again at each connect (client or
    /// health check), so a changed address is followed.
    #[arg(long, value_name = "HOST:PORT", required = true)]
    to: Vec<String>,
    /// How to pick an upstream per client, among those up.
    #[arg(long, value_enum, default_value = "round-robin", value_name = "POLICY")]
    balance: Balance,
    /// Connect to each upstream this often (e.g. 2s); a failure marks it
    /// down, a success brings it back at once. Default: no active checks,
    /// only clients' connects count (passive health).
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    health_interval: Option<Duration>,
    /// Deadline of each upstream connect (and health check), resolution
    /// included; an upstream that does not answer in time is marked down
    /// like one that refuses, and the client tried on another (each try
    /// has its own deadline) or closed (and counted).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = values::duration)]
    connect_timeout: Duration,
    #[command(flatten)]
    pub serve: super::serve::Args,
    // Edges (h2-edges): --send-proxy, --to-tls and its flags. Last: their
    // help headings would otherwise apply to serve's flags after them.
    #[command(flatten)]
    edges: super::relay_edges::EdgeArgs,
}

const EXAMPLES: &str = "\
How it works: every accepted client gets its own connection to an upstream; bytes
flow both ways until both sides are done. A client's FIN reaches the upstream
as a FIN while the reply keeps flowing (and the other way round); a reset on
one side resets the other. Each pair holds at most 16 KiB per direction: a
side that stops reading stops reads on the other. --idle-timeout counts only
while both directions are quiet. A client whose upstream refuses or times out
is closed at once and counted (tcpkit_relay_upstream_connect_failures_total with
--metrics). SIGINT/SIGTERM closes the listener, then drains the pairs within
--shutdown-grace.

Several --to: --balance picks one per client among those up. An upstream
whose connect fails (refused, timed out, unresolvable) is down for 1 s, then
2 s, 4 s ... at most 30 s while it keeps failing; one success clears that. The
client is retried on another upstream (each at most once); a client with no
upstream left is closed at once (tcpkit_relay_no_upstream_total). A single
--to is never marked down. --health-interval adds active checks.

Examples:
  # forward local port 8080 to a web server
  tcpkit relay --listen 127.0.0.1:8080 --to localhost:80
  # terminate TLS in front of a plain service (self-signed certificate)
  tcpkit relay --listen 8443 --to 127.0.0.1:8080 --tls
  # expose a UNIX-socket service on TCP, telling it each client's address
  tcpkit relay --listen 9000 --to unix:/run/app.sock --send-proxy v2
  # the other way: local clients on a UNIX socket, forwarded over TCP
  tcpkit relay --listen unix:/run/db-proxy.sock --to 10.0.0.5:5432
  # originate TLS towards an upstream that wants it
  tcpkit relay --listen 9000 --to example.com:443 --to-tls
  # at most 1000 pairs, 2 s to reach the upstream, 30 s idle
  tcpkit relay --listen 9000 --to 10.0.0.5:9000 --max-connections 1000 \\
      --connect-timeout 2s --idle-timeout 30s
  # three upstreams, each client to the least busy, checked every 2 s
  tcpkit relay --listen 9000 --to 10.0.0.5:9000 --to 10.0.0.6:9000 \\
      --to 10.0.0.7:9000 --balance least-conn --health-interval 2s";

/// Flags to a relay, checked before any socket opens.
fn relay(args: &Args) -> anyhow::Result<Relay<Upstreams>> {
    if args.connect_timeout.is_zero() || args.connect_timeout > MAX_CONNECT_TIMEOUT {
        return Err(values::invalid(
            "--connect-timeout",
            "must be more than 0 and at most 5m",
        ));
    }
    if let Some(every) = args.health_interval
        && (every.is_zero() || every > MAX_HEALTH_INTERVAL)
    {
        return Err(values::invalid(
            "--health-interval",
            "must be more than 0 and at most 1h",
        ));
    }
    if args.serve.listens_unix() && args.balance == Balance::HashSource {
        return Err(values::invalid(
            "--balance hash-source",
            "needs a TCP listener; --listen unix:PATH has no client addresses to hash",
        ));
    }
    let targets = args
        .to
        .iter()
        .map(|text| args.edges.backend(text, args.connect_timeout))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = BalanceOptions {
        policy: match args.balance {
            Balance::RoundRobin => Policy::RoundRobin,
            Balance::LeastConn => Policy::LeastConn,
            Balance::HashSource => Policy::HashSource,
        },
        health_interval: args.health_interval,
        ..BalanceOptions::default()
    };
    Ok(Relay::new(Balanced::with_options(targets, options)?))
}

pub fn run(args: Args, globals: Globals) -> anyhow::Result<ExitCode> {
    let relay = relay(&args)?;
    super::serve::run_with(args.serve, globals, Some(relay))
}
