//! `tcpkit bench`: arguments → [`BenchConfig`], an optional embedded server,
//! progress on stderr, the report on stdout, exit 8 on a verification failure.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use tcpkit::bench::server::ServerProcess;
use tcpkit::bench::{self, BenchConfig, BenchReport, Mode, proc};
use tcpkit::error::code;
use tcpkit::{Endpoint, Error, ErrorKind};

use super::Globals;
use super::{out, values};

/// Workloads of `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    /// Round trips over N connections, every byte verified (closed loop, or open loop with --rate).
    Echo,
    /// Connect, write one message, read the echo, close, repeatedly: conns/s and connect latency.
    Connect,
    /// Open and hold N connections (one byte echoed each): server RSS per connection.
    Idle,
    /// One-way bulk writes to a discard server: MB/s.
    Throughput,
    /// Chat fan-out: N clients in --rooms rooms say stamped lines; every
    /// receiver verifies its room's lines (exactly once, in order per sender).
    Chat,
}

impl ModeArg {
    /// The library's mode; `None` for chat, which has its own runner
    /// ([`tcpkit::bench::chat`]).
    fn echo_family(self) -> Option<Mode> {
        match self {
            ModeArg::Echo => Some(Mode::Echo),
            ModeArg::Connect => Some(Mode::Connect),
            ModeArg::Idle => Some(Mode::Idle),
            ModeArg::Throughput => Some(Mode::Throughput),
            ModeArg::Chat => None,
        }
    }
}

/// Arguments of `tcpkit bench`, boxed so the `Command` enum stays small
/// (clippy's `large_enum_variant`).
#[derive(Debug, clap::Args)]
#[command(after_help = super::exit::all_codes_help())]
pub struct Args {
    #[command(flatten)]
    options: Box<Options>,
}

/// The flags of `tcpkit bench`.
#[derive(Debug, clap::Args)]
struct Options {
    /// Server to load, HOST:PORT. Without it, bench starts `tcpkit serve
    /// --listen 127.0.0.1:0` (echo; discard for throughput; chat for chat)
    /// as a child, measures its CPU and RSS, and stops it with SIGTERM
    /// afterwards. Chat mode takes several (comma-separated or repeated):
    /// client i connects to the (i mod T)-th.
    #[arg(long, short = 't', value_name = "ADDR", value_delimiter = ',', action = clap::ArgAction::Append)]
    target: Vec<String>,
    /// Chat mode: rooms; client i joins room i mod R (each room needs at
    /// least 2 clients). With T targets that share no bus, let T divide R
    /// so that each room lives on one target.
    #[arg(long, value_name = "R", value_parser = values::count(1, values::MAX_CONNECTIONS))]
    rooms: Option<usize>,
    /// Chat mode: a bounded run, each client says exactly N lines (instead
    /// of --duration and --warmup), so the delivered count is exact.
    #[arg(long, value_name = "N", value_parser = values::count(1, 1 << 40))]
    lines: Option<usize>,
    /// Chat mode: the servers' dialect. `tcpkit` joins rooms by name;
    /// `ncat` (`ncat --chat`) and `asio` (the Boost.Asio chat example,
    /// 4-byte length header) are one room per server, so give one --target
    /// per room.
    #[arg(long, value_name = "DIALECT", value_enum)]
    chat_protocol: Option<ChatProtocolArg>,
    /// Chat mode: clients 0..K join their room, then never read (with a
    /// 4 KiB receive buffer): the server must drop them or stall the room.
    #[arg(long, value_name = "K", value_parser = values::count(1, values::MAX_CONNECTIONS))]
    slow_readers: Option<usize>,
    /// Workload.
    #[arg(long, short = 'm', value_enum, default_value_t = ModeArg::Echo)]
    mode: ModeArg,
    /// Connections (concurrent connection slots in connect mode).
    #[arg(long, short = 'c', default_value_t = 50, value_parser = values::count(1, values::MAX_CONNECTIONS))]
    connections: usize,
    /// Echo mode: before the warm-up, open N more connections that each echo
    /// one byte (verified) and then stay silent until the run ends; not
    /// counted as messages.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = values::count(0, values::MAX_CONNECTIONS))]
    idle_connections: usize,
    /// Message size in bytes (at least 16 for echo and connect: the header
    /// carries connection id, sequence number and size).
    #[arg(long, short = 's', default_value_t = 64, value_name = "BYTES")]
    size: usize,
    /// Messages in flight per connection (closed-loop echo).
    #[arg(long, short = 'k', default_value_t = 1, value_name = "K")]
    pipeline: usize,
    /// Open loop: R messages (connect mode: connections) per second in total,
    /// latency measured from each send's scheduled time.
    #[arg(long, short = 'r', value_name = "R")]
    rate: Option<f64>,
    /// Measured window (after the warm-up).
    #[arg(long, short = 'd', default_value = "10s", value_parser = values::duration)]
    duration: Duration,
    /// Load before the window, not counted.
    #[arg(long, default_value = "1s", value_parser = values::duration)]
    warmup: Duration,
    /// Load-generator threads, 1 to 1024 (default: 1 with --client-cpu, else
    /// the number of cores).
    #[arg(long, value_parser = values::count(1, values::MAX_WORKERS))]
    threads: Option<usize>,
    /// Pin the embedded server to this CPU.
    #[arg(long, value_name = "CPU")]
    server_cpu: Option<usize>,
    /// Worker threads of the embedded server (`serve --workers`) [default: 1
    /// with --server-cpu, else serve's default].
    #[arg(long, value_name = "N", conflicts_with = "target", value_parser = values::count(1, values::MAX_WORKERS))]
    server_workers: Option<usize>,
    /// Engine of the embedded server (`serve --engine`): `shared` or
    /// `per-core` [default: serve's default]
    #[arg(long, value_enum, value_name = "ENGINE", conflicts_with = "target")]
    server_engine: Option<super::serve::EngineArg>,
    /// Pin the load generator to this CPU.
    #[arg(long, value_name = "CPU")]
    client_cpu: Option<usize>,
    /// PID of an external server (with --target), to report its CPU time and RSS.
    #[arg(long, value_name = "PID", requires = "target")]
    server_pid: Option<u32>,
    /// Deadline for each connect.
    #[arg(long, default_value = "5s", value_parser = values::duration)]
    connect_timeout: Duration,
    /// Print one JSON object with every field instead of the table.
    #[arg(long)]
    json: bool,
    /// Exit 0 even if connections broke mid-run (reset, closed, timed out):
    /// for runs that measure breakage. Either way the others run on, and
    /// the report counts and lists each broken one.
    #[arg(long)]
    allow_broken: bool,
    /// Write the latency percentile distribution (HdrHistogram text format) to FILE.
    #[arg(long, value_name = "FILE")]
    histogram: Option<PathBuf>,
    /// Write latency by percentile as an SVG plot to FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Every connection first sends a PROXY protocol header (v1 or v2, as
    /// HAProxy's send-proxy / send-proxy-v2) with its real source and
    /// destination. Without --target the embedded server runs with
    /// --proxy-protocol --proxy-trusted 127.0.0.0/8.
    #[arg(long, value_enum, value_name = "VERSION")]
    send_proxy: Option<SendProxy>,
    /// Every connection speaks TLS (each flag of this group implies it):
    /// echo shakes hands once per connection, connect mode once per
    /// connection (full handshakes unless --tls-resume), idle holds TLS
    /// connections. Without --target the embedded server runs `serve --tls`
    /// (a self-signed ECDSA P-256 certificate made at start), pinned by the
    /// bench.
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: super::tls_client::TlsClientArgs,
    /// Resume TLS sessions (tickets) instead of a full handshake on each new
    /// connection after the first ones.
    #[cfg(feature = "tls")]
    #[arg(long, help_heading = "TLS")]
    tls_resume: bool,
}

pub fn run(args: Args, globals: Globals) -> anyhow::Result<ExitCode> {
    let args = *args.options;
    let Some(mode) = args.mode.echo_family() else {
        return super::bench_chat::run(ChatArgs::from(&args), globals);
    };
    if args.target.len() > 1 {
        return Err(values::invalid(
            "--target",
            "several targets apply to --mode chat only",
        ));
    }
    for (flag, set) in [
        ("--rooms", args.rooms.is_some()),
        ("--lines", args.lines.is_some()),
        ("--chat-protocol", args.chat_protocol.is_some()),
        ("--slow-readers", args.slow_readers.is_some()),
    ] {
        if set {
            return Err(values::invalid(flag, "applies to --mode chat only"));
        }
    }
    // Validated before any server starts or socket opens; the target is
    // filled in once known.
    check(&args)?;
    let mut config = config_from(&args, mode, Endpoint::loopback_v4(0));
    config.validate()?;
    #[cfg(feature = "tls")]
    let tls = tls_client(&args)?;
    // Both the bench and a server it starts may hold thousands of sockets.
    tcpkit::net::raise_open_file_limit();
    let mut server = None;
    match args.target.first() {
        Some(text) => {
            config.target = resolve(text)?;
            #[cfg(feature = "tls")]
            {
                config.tls = tls.map(|t| t.build()).transpose()?;
            }
        }
        None => {
            let workers = args.server_workers.or(args.server_cpu.map(|_| 1));
            let service = if config.mode == Mode::Throughput {
                "discard"
            } else {
                "echo"
            };
            let mut cmd = serve_command(service, workers, args.server_engine)?;
            if args.send_proxy.is_some() {
                cmd.args(["--proxy-protocol", "--proxy-trusted", "127.0.0.0/8"]);
            }
            #[cfg(feature = "tls")]
            let s = match tls {
                Some(tls) => {
                    let (s, connector) = tls_server::start(cmd, args.server_cpu, tls)?;
                    config.tls = Some(connector);
                    s
                }
                None => ServerProcess::spawn(cmd, args.server_cpu, SERVER_STARTUP)?,
            };
            #[cfg(not(feature = "tls"))]
            let s = ServerProcess::spawn(cmd, args.server_cpu, SERVER_STARTUP)?;
            tracing::info!("started server pid {}: {}", s.pid(), s.banner());
            config.target = s.endpoint();
            config.server_pid = Some(s.pid());
            server = Some(s);
        }
    }
    if let Some(cpu) = args.client_cpu {
        // Worker threads started later inherit the mask.
        proc::pin_to_cpu(cpu)?;
    }
    let progress = progress_bar(&globals, &config);
    let result = bench::run(&config, |tick| {
        if let Some(bar) = &progress {
            bar.set_position(tick.elapsed.as_millis() as u64);
            bar.set_message(tick.status(config.mode));
        }
    });
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    if let Some(mut s) = server
        && let Err(e) = s.stop(Duration::from_secs(5))
    {
        tracing::warn!("stopping the server: {e}");
    }
    let report = result?;
    output(&args, &report)?;
    verdict(&report, args.allow_broken)
}

/// What chat mode takes of the flags (the rest must be unset).
pub(super) struct ChatArgs {
    pub targets: Vec<String>,
    pub connections: usize,
    pub rooms: usize,
    pub lines: Option<usize>,
    pub protocol: tcpkit::bench::chat::ChatProtocol,
    pub slow_readers: usize,
    pub size: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub threads: Option<usize>,
    pub server_cpu: Option<usize>,
    pub server_workers: Option<usize>,
    pub server_engine: Option<super::serve::EngineArg>,
    pub client_cpu: Option<usize>,
    pub server_pid: Option<u32>,
    pub connect_timeout: Duration,
    pub json: bool,
    pub allow_broken: bool,
    pub histogram: Option<PathBuf>,
    /// Flags set that chat mode does not take.
    pub unsupported: Vec<&'static str>,
}

impl From<&Options> for ChatArgs {
    fn from(a: &Options) -> ChatArgs {
        let mut unsupported = Vec::new();
        if a.idle_connections > 0 {
            unsupported.push("--idle-connections");
        }
        if a.send_proxy.is_some() {
            unsupported.push("--send-proxy");
        }
        if a.plot.is_some() {
            unsupported.push("--plot");
        }
        #[cfg(feature = "tls")]
        if a.tls.enabled() || a.tls_resume {
            unsupported.push("TLS");
        }
        ChatArgs {
            targets: a.target.clone(),
            connections: a.connections,
            rooms: a.rooms.unwrap_or(1),
            lines: a.lines,
            protocol: match a.chat_protocol {
                None | Some(ChatProtocolArg::Tcpkit) => tcpkit::bench::chat::ChatProtocol::Tcpkit,
                Some(ChatProtocolArg::Ncat) => tcpkit::bench::chat::ChatProtocol::Ncat,
                Some(ChatProtocolArg::Asio) => tcpkit::bench::chat::ChatProtocol::Asio,
            },
            slow_readers: a.slow_readers.unwrap_or(0),
            size: a.size,
            pipeline: a.pipeline,
            rate: a.rate,
            duration: a.duration,
            warmup: a.warmup,
            threads: a.threads,
            server_cpu: a.server_cpu,
            server_workers: a.server_workers,
            server_engine: a.server_engine,
            client_cpu: a.client_cpu,
            server_pid: a.server_pid,
            connect_timeout: a.connect_timeout,
            json: a.json,
            allow_broken: a.allow_broken,
            histogram: a.histogram.clone(),
            unsupported,
        }
    }
}

/// `--chat-protocol`'s dialects (see `tcpkit::bench::chat::ChatProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ChatProtocolArg {
    /// `tcpkit serve --mode chat`.
    Tcpkit,
    /// `ncat --chat`.
    Ncat,
    /// The Boost.Asio chat example.
    Asio,
}

/// `--send-proxy`'s versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SendProxy {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

impl From<SendProxy> for tcpkit::proxy::Version {
    fn from(v: SendProxy) -> Self {
        match v {
            SendProxy::V1 => tcpkit::proxy::Version::V1,
            SendProxy::V2 => tcpkit::proxy::Version::V2,
        }
    }
}

/// What `BenchConfig::validate` cannot see: CPUs that exist, output files
/// that can be written, a server PID that is running, a size within bounds;
/// each error names its flag.
fn check(args: &Options) -> anyhow::Result<()> {
    for (flag, cpu) in [
        ("--server-cpu", args.server_cpu),
        ("--client-cpu", args.client_cpu),
    ] {
        if let Some(cpu) = cpu {
            values::check_cpu(flag, cpu)?;
        }
    }
    if args.size > bench::MAX_IN_FLIGHT_BYTES {
        return Err(values::invalid(
            "--size",
            format_args!(
                "{} B is above the maximum of {} B",
                args.size,
                bench::MAX_IN_FLIGHT_BYTES
            ),
        ));
    }
    if let Some(path) = &args.histogram {
        values::check_output_file("--histogram", path)?;
    }
    if let Some(path) = &args.plot {
        values::check_output_file("--plot", path)?;
    }
    #[cfg(target_os = "linux")]
    if let Some(pid) = args.server_pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        return Err(values::invalid(
            "--server-pid",
            format_args!("no running process {pid}"),
        ));
    }
    Ok(())
}

fn config_from(args: &Options, mode: Mode, target: Endpoint) -> BenchConfig {
    let threads = args.threads.unwrap_or_else(|| match args.client_cpu {
        Some(_) => 1,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    BenchConfig {
        target,
        mode,
        connections: args.connections,
        size_bytes: args.size,
        pipeline: args.pipeline,
        rate_per_s: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        threads,
        connect_timeout: args.connect_timeout,
        server_pid: args.server_pid,
        idle_connections: args.idle_connections,
        send_proxy: args.send_proxy.map(Into::into),
        #[cfg(feature = "tls")]
        tls: None,
    }
}

/// Exit 8 if any byte failed verification; the connect error's exit code if
/// no connection opened at all; exit 6 if a connection broke mid-run
/// (unless `allow_broken`).
fn verdict(report: &BenchReport, allow_broken: bool) -> anyhow::Result<ExitCode> {
    if report.verification_failures > 0 {
        let first = report
            .first_verification_failure
            .as_deref()
            .unwrap_or("(no detail)");
        let err = Error::new(
            ErrorKind::Verification,
            code::VERIFICATION,
            format!(
                "{} connection(s) received bytes that differ from those sent; first: {first}",
                report.verification_failures
            ),
        );
        return Err(anyhow::Error::new(err));
    }
    if report.connections_established == 0 && report.connect_failures > 0 {
        let first = report.error_samples.first().map_or("", String::as_str);
        let (kind, code) = report
            .first_connect_error
            .unwrap_or((ErrorKind::Io, libc::EIO));
        let message = format!(
            "no connection to {} could be opened: {first}",
            report.target
        );
        return Err(anyhow::Error::new(Error::new(kind, code, message)));
    }
    if report.broken_connections > 0 && !allow_broken {
        let first = report.broken.first().map_or_else(String::new, |b| {
            let from = b.local.map_or_else(String::new, |a| format!(" from {a}"));
            format!(
                "; first: connection {}{from} after {} verified bytes: {}",
                b.id, b.verified_bytes, b.error
            )
        });
        let message = format!(
            "{} connection(s) broke mid-run{first} (the report lists each; --allow-broken exits 0)",
            report.broken_connections
        );
        // Exit 6 (I/O mid-stream) whatever broke the first one; its code
        // (an errno or tcpkit's) is the one printed.
        let code = report.broken.first().map_or(libc::EIO, |b| b.code);
        return Err(anyhow::Error::new(Error::new(ErrorKind::Io, code, message)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--target` through the one endpoint parser; a name's first address.
pub(super) fn resolve(text: &str) -> anyhow::Result<Endpoint> {
    let target = values::host_port("--target", text)?;
    if target.port() == 0 {
        return Err(values::invalid(
            "--target",
            format_args!("cannot connect to {target}: port 0 is not a port anyone listens on"),
        ));
    }
    values::first_address("--target", &target)
}

/// How long the embedded server may take to print `listening on`.
pub(super) const SERVER_STARTUP: Duration = Duration::from_secs(10);

/// `tcpkit serve` from this same binary, on a port the kernel picks, with
/// the anchors' backlog of 1024 so connect bursts are not dropped.
pub(super) fn serve_command(
    service: &str,
    workers: Option<usize>,
    engine: Option<super::serve::EngineArg>,
) -> anyhow::Result<Command> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io(e, "find the tcpkit executable to start the server"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--mode", service]);
    cmd.args(["--backlog", "1024"]);
    if let Some(n) = workers {
        cmd.args(["--workers", &n.to_string()]);
    }
    if let Some(engine) = engine {
        let name = clap::ValueEnum::to_possible_value(&engine)
            .map(|v| v.get_name().to_owned())
            .context("engine name")?;
        cmd.args(["--engine", &name]);
    }
    Ok(cmd)
}

/// The TLS client flags as a configuration (files read now), `None`
/// without TLS. Trust flags apply to a `--target`: the embedded server's
/// certificate is pinned instead.
#[cfg(feature = "tls")]
fn tls_client(args: &Options) -> anyhow::Result<Option<tcpkit::tls::TlsClientConfig>> {
    if !(args.tls.enabled() || args.tls_resume) {
        return Ok(None);
    }
    // Values first, so a malformed one is named as such.
    let config = args.tls.config()?.unwrap_or_default();
    if args.target.is_empty()
        && (args.tls.ca.is_some() || args.tls.pin.is_some() || args.tls.insecure)
    {
        return Err(values::invalid(
            "--ca/--pin/--insecure",
            "apply with --target; the embedded server's certificate is made at its start and pinned",
        ));
    }
    let config = config
        .resumption(args.tls_resume)
        .handshake_timeout(args.connect_timeout);
    Ok(Some(config))
}

/// The embedded server over TLS: `serve --tls` makes a self-signed
/// certificate at start (no key ever on disk) and prints its fingerprint on
/// stderr, which the client then pins.
#[cfg(feature = "tls")]
mod tls_server {
    use std::process::Command;

    use tcpkit::bench::server::ServerProcess;
    use tcpkit::tls::{TlsClientConfig, TlsConnector};

    use super::SERVER_STARTUP;

    /// What `serve --tls` prints before its fingerprint.
    const MARKER: &str = "SHA-256 fingerprint ";

    pub(super) fn start(
        mut cmd: Command,
        cpu: Option<usize>,
        client: TlsClientConfig,
    ) -> anyhow::Result<(ServerProcess, TlsConnector)> {
        cmd.arg("--tls");
        let (server, line) =
            ServerProcess::spawn_with_stderr_line(cmd, cpu, SERVER_STARTUP, MARKER)?;
        let fingerprint = line.split(MARKER).nth(1).map(str::trim).unwrap_or_default();
        tracing::info!("pinning the embedded server's certificate, SHA-256 {fingerprint}");
        let connector = client.pin(fingerprint)?.build()?;
        Ok((server, connector))
    }
}

fn progress_bar(globals: &Globals, config: &BenchConfig) -> Option<indicatif::ProgressBar> {
    if globals.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = config.warmup + config.duration;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total.as_millis() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
        .ok()?
        .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}

fn output(args: &Options, report: &BenchReport) -> anyhow::Result<()> {
    // Files first: a reader that closed stdout (`| head`) still gets them.
    if let Some(path) = &args.histogram {
        let io = |e| Error::io(e, format_args!("--histogram: write {}", path.display()));
        let mut file = std::fs::File::create(path).map_err(io)?;
        report
            .histogram
            .write_percentile_distribution(&mut file)
            .map_err(io)?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} latency ({}), {} × {} B",
            report.mode.name(),
            report.latency_of,
            report.connections,
            report.size_bytes
        );
        bench::plot::write_svg(&report.histogram, &title, path)?;
    }
    let text = if args.json {
        let mut line = serde_json::to_string(report).context("the report as JSON")?;
        line.push('\n');
        line
    } else {
        report.render_table()
    };
    out::bytes(text.as_bytes())
}
