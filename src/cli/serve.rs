//! `tcpkit serve`: flags -> validated [`ServerConfig`] -> bind -> print the
//! `listening on` line -> serve until SIGINT/SIGTERM -> print the summary.
//!
//! The first line on stdout is a contract other tools parse:
//! `listening on <ENDPOINT> (<mode>, backlog <N>)`, with the endpoint actually
//! bound, followed by ` (tls)` when serving TLS (flags in `serve_tls`). SIGHUP
//! reloads the certificate files and the `--allow-file`/`--deny-file` access
//! lists (flags in `serve_access`); with neither, it is logged and ignored
//! (never the default action, which terminates). Signals are wired here, never in the
//! library: the first SIGINT/SIGTERM drains, a second closes everything at
//! once.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tcpkit::endpoint::{Host, Target};
use tcpkit::server::{Engine, Listen, Server, ServerBuilder, ServerConfig, Summary};
use tcpkit::service::{Chat, Discard, Echo, Service};
use tcpkit::{Error, ErrorKind};
use tokio::signal::unix::{SignalKind, signal};

use super::Globals;
use super::exit::{Exit, codes_help};
use super::log::{self, LogFormat};
use super::out::outln;
use super::values;

/// What each connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Every byte back, in order (RFC 862).
    Echo,
    /// Read and count (RFC 863).
    Discard,
    /// Line-based chat rooms (/nick, /join, /who, /quit).
    Chat,
}

/// How connections are spread over the worker threads (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// One listener; the workers share every connection and steal work from
    /// each other (balanced however clients behave).
    Shared,
    /// One listener per worker on the same port (SO_REUSEPORT), each with
    /// its own single-threaded runtime; the kernel assigns each connection to
    /// one by a hash of the client's address. No work stealing.
    PerCore,
}

/// Arguments of `tcpkit serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = codes_help(&[
    Exit::Ok, Exit::Failure, Exit::Usage, Exit::Resolve, Exit::Io, Exit::Bind,
]))]
pub struct Args {
    /// Endpoint to listen on: a PORT alone (every interface), 127.0.0.1:0,
    /// [::1]:4000, localhost:4000 (its first address) [default: [::]:3333
    /// dual-stack, 0.0.0.0:3333 without IPv6]. On Linux also `systemd`
    /// (the sockets of systemd socket activation: LISTEN_PID, LISTEN_FDS,
    /// LISTEN_FDNAMES) or fd:N (a listening descriptor this process
    /// inherited). Or unix:PATH, a UNIX-domain socket (echo, discard and
    /// relay): a stale socket file there is replaced, a live one or any
    /// other file refused, and it is removed at exit; its clients have no
    /// address, so access lists, PROXY, TLS, --engine per-core and restarts
    /// are refused with it
    #[arg(short, long, value_name = "ADDR")]
    listen: Option<String>,
    /// What each connection gets.
    #[arg(short, long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// listen(2) backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = tcpkit::DEFAULT_BACKLOG, value_name = "N")]
    backlog: u32,
    /// Connections served at once; more are accepted and closed at once
    /// [default: the open-file limit minus a few]
    #[arg(long, value_name = "N", value_parser = values::count(1, values::MAX_CONNECTIONS))]
    max_connections: Option<usize>,
    /// Close connections with no traffic for this long ("0" disables).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = values::duration)]
    idle_timeout: Duration,
    /// Longest chat line, in bytes (at most 16 MiB: each member may buffer
    /// one line this long).
    #[arg(long, default_value_t = tcpkit::codec::DEFAULT_MAX_LINE, value_name = "BYTES", value_parser = values::count(1, values::MAX_LINE_BYTES))]
    max_line: usize,
    /// Chat: lines each room replays to whoever joins it ("0" keeps none).
    #[arg(long, default_value_t = tcpkit::service::chat::DEFAULT_HISTORY, value_name = "LINES")]
    history: usize,
    /// Chat: rooms span every instance on this Redis (redis://HOST:PORT[/DB]):
    /// lines, each room's history, names and /who are shared. Redis down:
    /// each instance goes on alone and reconnects (see README, "Chat across
    /// instances").
    #[arg(long, value_name = "URL")]
    bus: Option<String>,
    /// Chat bus: how long a member's or a name's entry lives unless its
    /// instance refreshes it (every third of this): a crashed instance's
    /// members leave every /who within it. 300ms to 24h [default: 15s]
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    bus_ttl: Option<Duration>,
    /// Runtime worker threads, 1 to 1024; 1 uses a single-threaded runtime
    /// [default: cores]
    #[arg(long, value_name = "N", value_parser = values::count(1, values::MAX_WORKERS))]
    workers: Option<usize>,
    /// How connections are spread over the workers.
    #[arg(long, value_enum, default_value_t = EngineArg::Shared)]
    engine: EngineArg,
    /// How long shutdown waits for connections to finish.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = values::duration)]
    shutdown_grace: Duration,
    /// Accepted for compatibility: TCP_DEFER_ACCEPT is already the default
    /// for echo and discard (an error with chat, which greets first).
    #[arg(long, hide = true, conflicts_with = "no_defer_accept")]
    defer_accept: bool,
    /// Print the exit summary as one JSON object (counters, `aborted`,
    /// `duration_s`) instead of a sentence. The `listening on` line is the
    /// same either way.
    #[arg(long)]
    json: bool,
    /// Turn off TCP_DEFER_ACCEPT (on by default for echo and discard: the
    /// kernel hands over a connection once its first bytes arrived, or after
    /// about a second of silence; chat never defers).
    #[arg(long)]
    no_defer_accept: bool,
    /// Serve Prometheus text on http://ADDR/metrics (a PORT alone:
    /// loopback; port 0: any free port, printed on stderr).
    #[cfg(feature = "metrics")]
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    proxy: super::serve_proxy::ProxyArgs,
    /// Log lines on stderr as text, or as one JSON object a line (for log
    /// shippers). Each connection's close is logged at -v.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: super::serve_tls::TlsArgs,
    #[cfg(target_os = "linux")]
    #[command(flatten)]
    restart: super::serve_restart::RestartArgs,
    #[command(flatten)]
    access: super::serve_access::AccessArgs,
}

fn invalid(msg: impl Into<String>) -> anyhow::Error {
    Error::new(
        ErrorKind::InvalidConfig,
        tcpkit::error::code::INVALID_CONFIG,
        msg,
    )
    .into()
}

/// `--listen` through the one endpoint parser: a port alone is every
/// interface (dual-stack); a name is resolved within
/// [`tcpkit::endpoint::RESOLVE_TIMEOUT`] and its first address used.
fn listen_at(text: &str) -> anyhow::Result<Listen> {
    if text.starts_with(tcpkit::endpoint::UNIX_PREFIX) {
        return match Target::parse(text).map_err(|e| e.context("--listen"))? {
            Target::Unix(path) => Ok(Listen::Unix(path)),
            Target::Inet(_) => Err(values::invalid(
                "--listen",
                format_args!("{text:?}: not unix:PATH"),
            )),
        };
    }
    #[cfg(target_os = "linux")]
    if let Some(inherited) = super::serve_restart::inherited_listen(text) {
        return inherited;
    }
    let place = values::host_port("--listen", text)?;
    let ep = match place.host() {
        Host::Unspecified => return Ok(Listen::Any(place.port())),
        _ => values::first_address("--listen", &place)?,
    };
    Ok(if ep.is_ipv6() && ep.is_unspecified() {
        Listen::Any(ep.port())
    } else {
        Listen::At(ep)
    })
}

impl Args {
    /// Whether `--listen` asks for a UNIX-domain socket (`unix:PATH`).
    pub fn listens_unix(&self) -> bool {
        self.listen
            .as_deref()
            .is_some_and(|text| text.starts_with(tcpkit::endpoint::UNIX_PREFIX))
    }
}

/// With `--listen unix:PATH`: the flags a UNIX listener cannot honour,
/// refused (a usage error naming the flag) rather than ignored.
fn unix_refusals(args: &Args, text: &str) -> anyhow::Result<()> {
    let no_address = format!("needs a TCP listener; --listen {text} has no client addresses");
    let tcp_only = format!("not available with --listen {text} (TCP only)");
    if args.access.sources().is_some() {
        return Err(values::invalid(
            "--allow/--deny/--allow-file/--deny-file",
            no_address,
        ));
    }
    if args.proxy.config().is_some() {
        return Err(values::invalid("--proxy-protocol", no_address));
    }
    #[cfg(feature = "tls")]
    if args.tls.enabled() {
        return Err(values::invalid("--tls", tcp_only));
    }
    if args.engine == EngineArg::PerCore {
        return Err(values::invalid("--engine per-core", tcp_only));
    }
    if args.defer_accept {
        return Err(values::invalid("--defer-accept", tcp_only));
    }
    #[cfg(target_os = "linux")]
    {
        if args.restart.pidfile.is_some() {
            return Err(values::invalid("--pidfile", tcp_only));
        }
        if args.restart.upgrade_from.is_some() {
            return Err(values::invalid("--upgrade-from", tcp_only));
        }
    }
    if args.mode == Mode::Chat {
        return Err(values::invalid(
            "--mode chat",
            format_args!("not available with --listen {text}: chat names its clients by address"),
        ));
    }
    Ok(())
}

/// `--bus` and `--bus-ttl`, checked (not connected to).
fn bus_config(args: &Args) -> anyhow::Result<Option<BusConfig>> {
    let Some(url) = &args.bus else {
        if args.bus_ttl.is_some() {
            return Err(values::invalid("--bus-ttl", "needs --bus"));
        }
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        use tcpkit::service::chat::redis_bus::{DEFAULT_TTL, MAX_TTL, MIN_TTL, RedisConfig};
        let ttl = args.bus_ttl.unwrap_or(DEFAULT_TTL);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(values::invalid(
                "--bus-ttl",
                format_args!("{ttl:?} is not between {MIN_TTL:?} and {MAX_TTL:?}"),
            ));
        }
        let config = RedisConfig {
            url: url.clone(),
            ttl,
            history: args.history,
        };
        config
            .validate()
            .map_err(|e| values::invalid("--bus", e.message()))?;
        if args.mode != Mode::Chat {
            return Err(values::invalid("--bus", "needs --mode chat"));
        }
        Ok(Some(config))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err(values::invalid(
            "--bus",
            "this tcpkit was built without the `redis` feature",
        ))
    }
}

#[cfg(feature = "redis")]
type BusConfig = tcpkit::service::chat::redis_bus::RedisConfig;
#[cfg(not(feature = "redis"))]
type BusConfig = ();

/// Flags to a config, checked before any socket opens.
fn config(args: &Args) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::default();
    if let Some(text) = &args.listen {
        config.listen = listen_at(text)?;
        if matches!(config.listen, Listen::Unix(_)) {
            unix_refusals(args, text)?;
        }
    }
    if args.defer_accept && args.mode == Mode::Chat {
        return Err(invalid(
            "--defer-accept needs a client-speaks-first mode (echo or discard); chat greets first",
        ));
    }
    bus_config(args)?;
    config.backlog = args.backlog;
    if let Some(max) = args.max_connections {
        config.max_connections = max;
    }
    config.idle_timeout = (!args.idle_timeout.is_zero()).then_some(args.idle_timeout);
    config.max_line = args.max_line;
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    config.engine = match args.engine {
        EngineArg::Shared => Engine::Shared,
        EngineArg::PerCore => Engine::PerCore,
    };
    config.shutdown_grace = args.shutdown_grace;
    // Client-speaks-first modes defer by default: accept and the first read
    // then happen in one wake-up (connect-rate server CPU per connection
    // measured 10-15 % lower). Chat sends a welcome first, so a deferred
    // client would wait for a greeting the server cannot send.
    // Linux only (elsewhere the kernel has no TCP_DEFER_ACCEPT).
    config.defer_accept = cfg!(target_os = "linux")
        && args.mode != Mode::Chat
        && !args.no_defer_accept
        && !matches!(config.listen, Listen::Unix(_));
    #[cfg(target_os = "linux")]
    if let Some(pidfile) = &args.restart.pidfile {
        values::check_output_file("--pidfile", pidfile)?;
    }
    config.validate()?;
    Ok(config)
}

pub fn run(args: Args, globals: Globals) -> anyhow::Result<ExitCode> {
    run_with::<tcpkit::relay::Fixed>(args, globals, None)
}

/// `serve`, or with `relay` set, `tcpkit relay`: the same server (limits,
/// TLS, PROXY, access lists, metrics, restarts) running the relay instead
/// of `--mode`.
pub fn run_with<U: tcpkit::relay::Upstream>(
    args: Args,
    globals: Globals,
    relay: Option<tcpkit::relay::Relay<U>>,
) -> anyhow::Result<ExitCode> {
    let quiet = globals.quiet;
    // Before sizing the default connection limit from it.
    tcpkit::net::raise_open_file_limit();
    #[allow(unused_mut)]
    let mut config = config(&args)?;
    // The upstream may speak first (SSH, SMTP): a deferred accept would hold
    // its client until the client spoke.
    if relay.is_some() {
        config.defer_accept = false;
        if args.max_connections.is_none() {
            config.max_connections = tcpkit::relay::default_max_pairs();
        }
    }
    #[cfg(target_os = "linux")]
    if args.listen.as_deref() == Some("systemd") {
        super::serve_restart::forget_activation_env();
    }
    // Taken before the runtime starts (blocking, bounded by the handover
    // timeout); the predecessor serves on until we confirm.
    #[cfg(target_os = "linux")]
    let taken = match &args.restart.upgrade_from {
        Some(pidfile) => {
            let taken = super::serve_restart::take_over(pidfile)?;
            config.listen = Listen::Inherited(taken.inherited.clone());
            Some(taken)
        }
        None => None,
    };
    #[allow(unused_mut)]
    let mut builder = ServerBuilder::from_config(config.clone());
    if let Some(proxy) = args.proxy.config() {
        builder = builder.proxy_protocol(proxy);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = args.tls.config(&config.listen, args.listen.as_deref())? {
        if let Some(fp) = &tls.self_signed_fingerprint
            && !quiet
        {
            log::notice(
                "INFO",
                format_args!("tls: self-signed certificate, SHA-256 fingerprint {fp}"),
            );
        }
        builder = builder.tls(tls.config);
    }
    let access = args.access.sources();
    if let Some(sources) = &access {
        builder = builder.access_list(sources.build()?);
    }
    #[cfg(feature = "metrics")]
    let metrics_at = match &args.metrics {
        Some(text) => Some(values::first_address(
            "--metrics",
            &values::host_port("--metrics", text)?,
        )?),
        None => None,
    };
    let runtime = config.runtime()?;
    let server = builder.bind()?;
    runtime.block_on(async move {
        #[cfg(feature = "metrics")]
        let exporter = match metrics_at {
            Some(at) => {
                let registry = tcpkit::prometheus::registry(server.metrics());
                let exporter =
                    tcpkit::prometheus::Exporter::bind(at.socket_addr(), registry).await?;
                let bound = exporter.local_addr()?;
                if !quiet {
                    log::notice("INFO", format_args!("metrics on http://{bound}/metrics"));
                }
                Some(tokio::spawn(exporter.run()))
            }
            None => None,
        };
        // Before the `listening on` line (printed by `serve`), as every
        // signal handler.
        let access_reload = match (server.access_control(), access) {
            (Some(control), Some(sources)) if sources.has_files() => {
                Some(watch_access_reload(control, sources)?)
            }
            _ => None,
        };
        #[cfg(target_os = "linux")]
        let restart = Restart {
            offer: match &args.restart.pidfile {
                Some(pidfile) => Some(super::serve_restart::publish(&server, pidfile)?),
                None => None,
            },
            taken,
        };
        #[cfg(not(target_os = "linux"))]
        let restart = Restart {};
        let summary = match (relay, args.mode) {
            (Some(relay), _) => {
                // Active health checks (--health-interval), for as long as
                // the relay serves.
                let checks = relay.upstream().background().map(tokio::spawn);
                let summary = serve(server, relay, quiet, restart).await;
                if let Some(checks) = checks {
                    checks.abort();
                }
                summary?
            }
            (None, Mode::Echo) => serve(server, Echo, quiet, restart).await?,
            (None, Mode::Discard) => serve(server, Discard, quiet, restart).await?,
            (None, Mode::Chat) => {
                #[cfg(feature = "redis")]
                let mut flush = None;
                let chat = match bus_config(&args)? {
                    #[cfg(feature = "redis")]
                    Some(config) => {
                        use tcpkit::service::chat::redis_bus;
                        let (chat, bus) = redis_bus::chat(&config, server.metrics())?;
                        flush = Some(bus.clone());
                        // Connected before the first client if Redis is
                        // there; if not, serving alone and retrying.
                        let up = bus.wait_up(redis_bus::CONNECT_TIMEOUT * 2).await;
                        let url = &config.url;
                        if up && !quiet {
                            log::notice("INFO", format_args!("chat bus up: {url}"));
                        } else if !up {
                            log::notice(
                                "WARN",
                                format_args!("chat bus {url} unreachable: serving this instance alone, reconnecting"),
                            );
                        }
                        chat
                    }
                    _ => Chat::new().with_history(args.history),
                };
                let summary = serve(server, chat, quiet, restart).await?;
                // The members' leaves reach Redis before we exit.
                #[cfg(feature = "redis")]
                if let Some(bus) = flush {
                    bus.flush(Duration::from_secs(1)).await;
                }
                summary
            }
        };
        #[cfg(target_os = "linux")]
        if let Some(pidfile) = &args.restart.pidfile {
            super::serve_restart::unpublish(pidfile);
        }
        #[cfg(feature = "metrics")]
        if let Some(exporter) = exporter {
            exporter.abort();
        }
        if let Some(reload) = access_reload {
            reload.abort();
        }
        // The summary is a result (stdout), so -q, which quiets stderr, keeps it.
        if args.json {
            let line = serde_json::to_string(&summary).context("summary as JSON")?;
            outln!("{line}")?;
        } else {
            outln!("{summary}")?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What a restart hands to [`serve`]: the sockets offered to a successor
/// (`--pidfile`), and those taken from a predecessor, to confirm once we
/// serve them (`--upgrade-from`).
struct Restart {
    #[cfg(target_os = "linux")]
    offer: Option<tcpkit::server::handover::Offer>,
    #[cfg(target_os = "linux")]
    taken: Option<tcpkit::server::handover::Taken>,
}

async fn serve<S: Service>(
    server: Server,
    service: S,
    quiet: bool,
    restart: Restart,
) -> anyhow::Result<Summary> {
    let requested = server.config().backlog;
    let granted = server.effective_backlog();
    if granted < requested {
        tracing::warn!(
            "backlog {requested} capped by the kernel (net.core.somaxconn) at {granted}"
        );
    }
    tracing::info!(
        max_connections = server.config().max_connections,
        idle_timeout = ?server.config().idle_timeout,
        workers = server.config().workers,
        engine = ?server.config().engine,
        "server configured"
    );
    // Signal handlers before the contract line: once a supervisor has read
    // it, SIGTERM must already drain rather than kill.
    let signals = watch_signals(&server, quiet)?;
    #[cfg(feature = "tls")]
    let reload = match server.tls_reloader() {
        Some(reloader) => Some(watch_reload(reloader)?),
        None => None,
    };
    outln!(
        "listening on {} ({}, backlog {requested}){}",
        server.local_address(),
        service.name(),
        if server.is_tls() { " (tls)" } else { "" }
    )?;
    #[cfg(target_os = "linux")]
    let offering = restart
        .offer
        .map(|offer| tokio::spawn(offer.serve(server.handle())));
    #[cfg(target_os = "linux")]
    if let Some(taken) = restart.taken {
        // Confirmed before `run` polls the listener: harmless, since the
        // predecessor's listener and ours are one kernel socket with one
        // queue; a client arriving between its last accept and our first
        // waits there, it is not refused.
        taken.confirm()?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = restart;
    let summary = server.run(service).await?;
    #[cfg(target_os = "linux")]
    if let Some(offering) = offering {
        // It ends when shutdown starts; awaited so its socket file is gone.
        let _ = offering.await;
    }
    signals.abort();
    #[cfg(feature = "tls")]
    if let Some(reload) = reload {
        reload.abort();
    }
    Ok(summary)
}

/// Whether a SIGHUP handler that reloads something (TLS files, access-list
/// files) is installed; set by [`watch_reload`] and [`watch_access_reload`].
static SIGHUP_RELOADS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// First SIGINT/SIGTERM: graceful shutdown, saying on stderr how many
/// connections are draining and for how long at most; second: immediate.
/// SIGHUP is always caught (its default action terminates: a closed
/// terminal or a `systemctl reload` must not kill the server); with
/// nothing to reload it is logged and ignored.
fn watch_signals(server: &Server, quiet: bool) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let install =
        |kind, name| signal(kind).map_err(|e| Error::io(e, format_args!("install {name} handler")));
    let mut int = install(SignalKind::interrupt(), "SIGINT")?;
    let mut term = install(SignalKind::terminate(), "SIGTERM")?;
    let mut hup = install(SignalKind::hangup(), "SIGHUP")?;
    let handle = server.handle();
    let metrics = server.metrics();
    let grace = server.config().shutdown_grace;
    Ok(tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => {
                    // The reload handlers, if any, get this signal too.
                    if !SIGHUP_RELOADS.load(std::sync::atomic::Ordering::Relaxed) {
                        tracing::info!("SIGHUP: nothing to reload");
                    }
                    continue;
                }
            };
            seen += 1;
            if seen == 1 {
                let live = metrics.snapshot().connections_active;
                tracing::info!("{name}: draining {live} connections (again to stop at once)");
                if live > 0 && !quiet {
                    // A state the user waits on: said even without -v.
                    log::notice("INFO", format_args!("{}", draining_message(live, grace)));
                }
                handle.shutdown();
            } else {
                tracing::warn!("{name} again: closing every connection now");
                handle.shutdown_now();
                return;
            }
        }
    }))
}

/// SIGHUP: read the certificate, key and client CA files again; new
/// handshakes use them, open connections keep theirs. A file that does not
/// load is logged and the configuration in force stays.
#[cfg(feature = "tls")]
fn watch_reload(reloader: tcpkit::tls::TlsReloader) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| Error::io(e, "install SIGHUP handler"))?;
    SIGHUP_RELOADS.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match reloader.reload() {
                Ok(warnings) => {
                    for warning in warnings {
                        tracing::warn!("{warning}");
                    }
                    tracing::info!(
                        fingerprint = %reloader.fingerprint(),
                        "SIGHUP: TLS certificates reloaded; new handshakes use them"
                    );
                }
                Err(e) => tracing::error!(
                    code = e.code(),
                    "SIGHUP: TLS reload failed, the certificates in force stay: {e}"
                ),
            }
        }
    }))
}

/// SIGHUP: read the --allow-file and --deny-file files again; the next
/// connection is checked against the new list, open ones are untouched. A
/// file that does not parse is logged (naming file:line) and the list in
/// force stays. (With TLS, `watch_reload` reloads the certificates on the
/// same signal: each handler gets every SIGHUP.)
fn watch_access_reload(
    control: std::sync::Arc<tcpkit::server::access::AccessControl>,
    sources: super::serve_access::Sources,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| Error::io(e, "install SIGHUP handler"))?;
    SIGHUP_RELOADS.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match sources.build() {
                Ok(list) => {
                    tracing::info!(
                        allow = list.allow_rules(),
                        deny = list.deny_rules(),
                        "SIGHUP: access lists reloaded; new connections are checked against them"
                    );
                    control.store(list);
                }
                Err(e) => tracing::error!(
                    code = e.code(),
                    "SIGHUP: access list reload failed, the list in force stays: {e}"
                ),
            }
        }
    }))
}

/// What the first Ctrl-C says while connections are still open.
fn draining_message(live: u64, grace: Duration) -> String {
    let noun = if live == 1 {
        "connection"
    } else {
        "connections"
    };
    format!(
        "draining {live} {noun} (up to {}); Ctrl-C again to stop now",
        humantime::format_duration(grace)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tcpkit::Endpoint;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> anyhow::Result<ServerConfig> {
        let t = T::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))?;
        config(&t.args)
    }

    #[test]
    fn flags_become_a_config() {
        let c = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout",
            "500ms",
            "--shutdown-grace",
            "2s",
            "--backlog",
            "64",
            "--workers",
            "1",
            "--max-connections",
            "7",
        ])
        .unwrap();
        assert_eq!(c.listen, Listen::At(Endpoint::loopback_v4(0)));
        assert_eq!(c.idle_timeout, Some(Duration::from_millis(500)));
        assert_eq!(c.shutdown_grace, Duration::from_secs(2));
        assert_eq!((c.backlog, c.workers, c.max_connections), (64, 1, 7));
        assert_eq!(parse(&["--idle-timeout", "0"]).unwrap().idle_timeout, None);
        assert_eq!(
            parse(&[]).unwrap().listen,
            Listen::Any(tcpkit::DEFAULT_PORT)
        );
        assert_eq!(parse(&[]).unwrap().engine, Engine::Shared);
        assert_eq!(
            parse(&["--engine", "per-core"]).unwrap().engine,
            Engine::PerCore
        );
        assert!(parse(&["--engine", "uring"]).is_err());
    }

    #[test]
    fn bad_flags_fail_before_binding() {
        assert!(parse(&["--idle-timeout", "soon"]).is_err());
        assert!(parse(&["--backlog", "0"]).is_err());
        assert!(parse(&["--listen", "nowhere"]).is_err());
        assert!(parse(&["--mode", "chat", "--defer-accept"]).is_err());
        assert!(parse(&["--defer-accept", "--no-defer-accept"]).is_err());
        assert!(parse(&["--workers", "100000"]).is_err());
        assert!(parse(&["--workers", "0"]).is_err());
        assert!(parse(&["--idle-timeout", "300000000000y"]).is_err());
        assert!(parse(&["--shutdown-grace", "400d"]).is_err());
        assert!(parse(&["--listen", ":80"]).is_err());
    }

    #[test]
    fn listen_takes_every_endpoint_form() {
        let at = |text: &str| parse(&["--listen", text]).unwrap().listen;
        assert_eq!(at("5600"), Listen::Any(5600));
        assert_eq!(at("[::]:5600"), Listen::Any(5600));
        assert_eq!(at("[::1]:0"), Listen::At(Endpoint::loopback_v6(0)));
        match at("localhost:0") {
            Listen::At(ep) => assert!(ep.ip().is_loopback(), "{ep}"),
            other => panic!("localhost:0 gave {other:?}"),
        }
    }

    #[test]
    fn listen_takes_a_unix_path_and_refuses_what_needs_tcp() {
        let c = parse(&["--listen", "unix:s.sock"]).unwrap();
        assert_eq!(c.listen, Listen::Unix("s.sock".into()));
        assert!(!c.defer_accept, "no TCP_DEFER_ACCEPT on a UNIX socket");
        for extra in [
            &["--allow", "127.0.0.1"][..],
            &["--engine", "per-core"],
            &["--mode", "chat"],
            &["--defer-accept"],
        ] {
            let mut argv = vec!["--listen", "unix:s.sock"];
            argv.extend_from_slice(extra);
            let err = parse(&argv).unwrap_err().to_string();
            assert!(err.contains(extra[0]), "{argv:?}: {err}");
        }
        assert!(parse(&["--listen", "unix:"]).is_err());
    }

    #[test]
    fn the_drain_message_says_how_many_and_how_long() {
        assert_eq!(
            draining_message(3, Duration::from_secs(10)),
            "draining 3 connections (up to 10s); Ctrl-C again to stop now"
        );
        assert!(draining_message(1, Duration::from_secs(1)).starts_with("draining 1 connection ("));
    }

    #[test]
    fn defer_accept_is_on_for_client_first_modes_only() {
        assert!(parse(&[]).unwrap().defer_accept);
        assert!(parse(&["--mode", "discard"]).unwrap().defer_accept);
        assert!(parse(&["--defer-accept"]).unwrap().defer_accept);
        assert!(!parse(&["--no-defer-accept"]).unwrap().defer_accept);
        assert!(!parse(&["--mode", "chat"]).unwrap().defer_accept);
    }
}
