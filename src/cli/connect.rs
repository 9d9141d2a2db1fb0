//! `tcpkit connect HOST:PORT`: a netcat-class client. Copies stdin to the
//! socket and the socket to stdout, as bytes, both at once; the session
//! options (`--idle-timeout`, `--no-shutdown`, `-o`, `-x`) are shared with
//! `tcpkit listen`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use tcpkit::Endpoint;
use tcpkit::client::{
    ConnectOptions, Connector, DumpFormat, Family, PipeEnd, PipeOptions, PipeStats, SessionDump,
    pipe, pipe_stream,
};
use tcpkit::endpoint::{Host, HostPort, Target};
use tokio::io::AsyncRead;

use super::Globals;
use super::exit::{Exit, codes_help};
use super::values;

/// Arguments of `tcpkit connect`.
#[derive(Debug, clap::Args)]
#[command(after_help = codes_help(&[
    Exit::Ok, Exit::Failure, Exit::Usage, Exit::Resolve, Exit::Refused, Exit::Timeout, Exit::Io,
    Exit::Certificate, Exit::Tls,
]))]
pub struct Args {
    /// Whom to connect to: `HOST:PORT`, `a.b.c.d:PORT`, `[v6]:PORT`, a `PORT`
    /// alone (this host), `HOST PORT` as two words (as nc takes them), or
    /// `unix:PATH` (a UNIX-domain stream socket). Every address HOST
    /// resolves to is tried, IPv6 and IPv4 raced (RFC 8305).
    #[arg(value_name = "HOST:PORT")]
    target: String,
    /// The port, when HOST and PORT are given as two words.
    #[arg(value_name = "PORT")]
    port: Option<String>,
    /// Give up connecting after this long (all addresses and retries), e.g.
    /// `5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = values::duration)]
    timeout: Duration,
    /// Use IPv4 addresses only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use IPv6 addresses only.
    #[arg(short = '6')]
    ipv6: bool,
    /// Send TEXT and a newline instead of reading stdin, then read until the
    /// server closes (or `--idle-timeout`, which then ends it with status 0).
    #[arg(long, value_name = "TEXT")]
    send: Option<String>,
    /// Exit after N lines have been received (and printed).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    lines: Option<u64>,
    /// Bind this local address (`IP` or `IP:PORT`) before connecting; only
    /// addresses of its family are tried.
    #[arg(long, value_name = "ADDR")]
    source: Option<String>,
    /// Try all addresses again this many times if they all fail (backoff
    /// 200 ms, doubling).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Only check that HOST:PORT accepts a connection, then close without
    /// sending anything (like `nc -z`): status 0 if it does, 4 if refused,
    /// 5 on timeout. `-v` says which address answered.
    #[arg(
        short = 'z',
        long,
        conflicts_with_all = ["send", "lines", "idle_timeout", "no_shutdown", "output", "hex_dump"]
    )]
    zero_io: bool,
    /// Send a PROXY protocol header first (before TLS and any data),
    /// announcing this connection's own source and destination, as a
    /// balancer would to a `serve --proxy-protocol`.
    #[arg(long, value_enum, value_name = "VERSION")]
    send_proxy: Option<ProxyVersion>,
    #[command(flatten)]
    session: SessionArgs,
    /// Boxed: clippy's `large_enum_variant` on the `Command` enum.
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: Box<super::tls_client::TlsClientArgs>,
}

/// Session options shared by `connect` and `listen`.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// End the session (exit status 5) when no byte moved either way for this
    /// long ("0": never, the default).
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub idle_timeout: Option<Duration>,
    /// At stdin EOF keep the write side open (default: shut it down so the
    /// peer sees EOF, like `nc -N`).
    #[arg(long)]
    pub no_shutdown: bool,
    /// Record the session as text to FILE (`> ` sent, `< ` received).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        conflicts_with = "hex_dump"
    )]
    pub output: Option<PathBuf>,
    /// Record the session as a hex dump to FILE (`>` sent, `<` received).
    #[arg(short = 'x', long = "hex-dump", value_name = "FILE")]
    pub hex_dump: Option<PathBuf>,
}

/// A session dump written to a file.
pub type FileDump = Mutex<SessionDump<std::io::BufWriter<std::fs::File>>>;

impl SessionArgs {
    /// Opens the dump file, if one was asked for.
    pub fn open_dump(&self) -> anyhow::Result<Option<FileDump>> {
        let (path, format) = match (&self.output, &self.hex_dump) {
            (Some(p), _) => (p, DumpFormat::Text),
            (None, Some(p)) => (p, DumpFormat::Hex),
            (None, None) => return Ok(None),
        };
        let flag = if self.output.is_some() {
            "--output"
        } else {
            "--hex-dump"
        };
        let file = std::fs::File::create(path)
            .map_err(|e| values::path_error(flag, "cannot create session dump", path, e))?;
        Ok(Some(Mutex::new(SessionDump::new(
            std::io::BufWriter::new(file),
            format,
        ))))
    }

    /// `--idle-timeout`, with "0" read as none.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout.filter(|d| !d.is_zero())
    }

    /// The pipe options these flags ask for.
    pub fn pipe_options(&self, max_lines: Option<u64>) -> PipeOptions {
        PipeOptions {
            shutdown_on_eof: !self.no_shutdown,
            idle_timeout: self.idle_timeout(),
            max_lines,
        }
    }
}

/// Builds the single-threaded runtime the client runs on. It is shut down in
/// the background at the end because tokio's stdin reader is a blocking
/// thread that would otherwise keep the process waiting for one more line.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| tcpkit::Error::io(e, "start the async runtime").into())
}

/// The error for a session that went idle.
pub fn idle_error(peer: impl std::fmt::Display, idle: Option<Duration>) -> anyhow::Error {
    tcpkit::Error::timed_out(
        format_args!("idle session with {peer}"),
        idle.unwrap_or_default(),
    )
    .into()
}

impl Args {
    /// The socket path, when the target is `unix:PATH` (one word).
    fn unix_path(&self) -> anyhow::Result<Option<PathBuf>> {
        if !self.target.starts_with(tcpkit::endpoint::UNIX_PREFIX) {
            return Ok(None);
        }
        if let Some(port) = &self.port {
            return Err(values::invalid(
                "[PORT]",
                format_args!("{port:?}: a unix: target takes no port"),
            ));
        }
        match Target::parse(&self.target)? {
            Target::Unix(path) => Ok(Some(path)),
            Target::Inet(_) => Ok(None),
        }
    }

    /// The target, from one word or two.
    fn target(&self) -> anyhow::Result<HostPort> {
        let parsed = match &self.port {
            None => HostPort::parse(&self.target),
            Some(port) => HostPort::from_parts(&self.target, port),
        };
        Ok(parsed?)
    }

    /// The library's connect options for these flags (validates `--source`,
    /// and `-4`/`-6` against the target's and the source's IP literals).
    fn connect_options(&self, target: &HostPort) -> anyhow::Result<ConnectOptions> {
        let source = self.source.as_deref().map(parse_source).transpose()?;
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Family::V4,
            (_, true) => Family::V6,
            _ => Family::Any,
        };
        // An address of the other family can never be tried: a usage
        // conflict (exit 2), not a lookup that found nothing (exit 3).
        let (flag, family_name) = if self.ipv6 {
            ("-6", "IPv6")
        } else {
            ("-4", "IPv4")
        };
        if self.ipv4 || self.ipv6 {
            if let Host::Ip(ip, _) = target.host()
                && ip.is_ipv6() != self.ipv6
            {
                return Err(values::invalid(
                    flag,
                    format_args!("{target} is not an {family_name} address"),
                ));
            }
            if let Some(ep) = &source
                && ep.is_ipv6() != self.ipv6
            {
                return Err(values::invalid(
                    flag,
                    format_args!("--source {ep} is not an {family_name} address"),
                ));
            }
        }
        Ok(ConnectOptions {
            attempt_timeout: Some(self.timeout),
            overall_timeout: Some(self.timeout),
            family,
            source,
            retries: self.retries,
            ..ConnectOptions::default()
        })
    }
}

pub fn run(args: Args, globals: Globals) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.unix_path()? {
        return run_unix(&args, globals, path);
    }
    // Validate everything before a socket opens.
    let target = args.target()?;
    let options = args.connect_options(&target)?;
    let dump = args.session.open_dump()?;
    let pipe_options = args.session.pipe_options(args.lines);
    let verbose = globals.verbose > 0 && !globals.quiet;
    #[cfg(feature = "tls")]
    let tls = match args.tls.config()? {
        Some(config) => Some(config.build()?),
        None => None,
    };

    let rt = runtime()?;
    let result = rt.block_on(async {
        let conn = Connector::new()
            .with_options(options)
            .connect_host_port(&target)
            .await?;
        if verbose {
            let list: Vec<String> = conn.resolved.iter().map(ToString::to_string).collect();
            eprintln!("resolved {target} to {}", list.join(", "));
            eprintln!("connected to {} from {}", conn.peer, conn.local);
        }
        let mut conn = conn;
        if let Some(version) = args.send_proxy {
            send_proxy(&mut conn.stream, version.into(), conn.local, conn.peer).await?;
        }
        let mut input: Box<dyn AsyncRead + Unpin + Send> = match &args.send {
            Some(text) => Box::new(std::io::Cursor::new(format!("{text}\n").into_bytes())),
            None => Box::new(tokio::io::stdin()),
        };
        let mut stdout = tokio::io::stdout();
        #[cfg(feature = "tls")]
        if let Some(tls) = &tls {
            let peer = conn.peer;
            let Some(stream) = handshake(tls, conn.stream, &target, verbose, args.zero_io).await?
            else {
                return anyhow::Ok(None);
            };
            let stats = pipe_stream(
                stream,
                peer,
                &mut *input,
                &mut stdout,
                &pipe_options,
                dump.as_ref(),
            )
            .await?;
            return anyhow::Ok(Some((peer, stats)));
        }
        if args.zero_io {
            // Dropped here: a FIN, no byte sent.
            return anyhow::Ok(None);
        }
        let stats = pipe(
            conn.stream,
            &mut *input,
            &mut stdout,
            &pipe_options,
            dump.as_ref(),
        )
        .await?;
        anyhow::Ok(Some((conn.peer, stats)))
    });
    rt.shutdown_background();
    let Some((peer, stats)) = result? else {
        return Ok(ExitCode::SUCCESS);
    };
    finish(&args, verbose, peer, &stats)
}

/// The exit status for a finished session (and `-v`'s closing line).
fn finish(
    args: &Args,
    verbose: bool,
    peer: impl std::fmt::Display,
    stats: &PipeStats,
) -> anyhow::Result<ExitCode> {
    if verbose {
        print_stats(stats);
    }
    match stats.end {
        // With --send the idle timeout is the expected way to stop reading
        // from a server that never closes.
        PipeEnd::IdleTimeout if args.send.is_none() => {
            Err(idle_error(peer, args.session.idle_timeout()))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `connect unix:PATH`: the same session over a UNIX-domain stream socket
/// (input EOF shuts the write side down, reading goes on to the peer's
/// close). The IP-only flags are refused by name.
fn run_unix(args: &Args, globals: Globals, path: PathBuf) -> anyhow::Result<ExitCode> {
    let ip_only = [
        ("-4", args.ipv4),
        ("-6", args.ipv6),
        ("--source", args.source.is_some()),
        ("--send-proxy", args.send_proxy.is_some()),
        #[cfg(feature = "tls")]
        ("--tls", args.tls.enabled()),
    ];
    if let Some((flag, _)) = ip_only.iter().find(|(_, given)| *given) {
        return Err(values::invalid(
            flag,
            format_args!("not available with a unix: target ({})", args.target),
        ));
    }
    let dump = args.session.open_dump()?;
    let pipe_options = args.session.pipe_options(args.lines);
    let verbose = globals.verbose > 0 && !globals.quiet;
    let peer = tcpkit::endpoint::Address::Unix(path.clone());
    let rt = runtime()?;
    let result = rt.block_on(async {
        let connect = tokio::net::UnixStream::connect(&path);
        let stream = match tokio::time::timeout(args.timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(tcpkit::Error::io(e, format_args!("connect to {peer}")).into());
            }
            Err(_) => {
                return Err(tcpkit::Error::timed_out(
                    format_args!("connect to {peer}"),
                    args.timeout,
                )
                .into());
            }
        };
        if verbose {
            eprintln!("connected to {peer}");
        }
        if args.zero_io {
            return anyhow::Ok(None);
        }
        let mut input: Box<dyn AsyncRead + Unpin + Send> = match &args.send {
            Some(text) => Box::new(std::io::Cursor::new(format!("{text}\n").into_bytes())),
            None => Box::new(tokio::io::stdin()),
        };
        let mut stdout = tokio::io::stdout();
        let stats = pipe_stream(
            stream,
            peer.clone(),
            &mut *input,
            &mut stdout,
            &pipe_options,
            dump.as_ref(),
        )
        .await?;
        anyhow::Ok(Some(stats))
    });
    rt.shutdown_background();
    match result? {
        Some(stats) => finish(args, verbose, &peer, &stats),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `--send-proxy`: which PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header (HAProxy's `send-proxy-v2`).
    V2,
}

impl From<ProxyVersion> for tcpkit::proxy::Version {
    fn from(v: ProxyVersion) -> Self {
        match v {
            ProxyVersion::V1 => tcpkit::proxy::Version::V1,
            ProxyVersion::V2 => tcpkit::proxy::Version::V2,
        }
    }
}

/// Writes the header for a connection from `local` to `peer`.
async fn send_proxy(
    stream: &mut tokio::net::TcpStream,
    version: tcpkit::proxy::Version,
    local: tcpkit::Endpoint,
    peer: tcpkit::Endpoint,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let header = tcpkit::proxy::encode(version, local.socket_addr(), peer.socket_addr());
    stream
        .write_all(&header)
        .await
        .map_err(|e| tcpkit::Error::io(e, format_args!("send the PROXY header to {peer}")))?;
    Ok(())
}

/// The TLS handshake over a connected stream, named as the target's host
/// (unless `--sni`); `None` with `-z`, which only checks the handshake and
/// closes with `close_notify`.
#[cfg(feature = "tls")]
async fn handshake(
    tls: &tcpkit::tls::TlsConnector,
    stream: tokio::net::TcpStream,
    target: &HostPort,
    verbose: bool,
    zero_io: bool,
) -> anyhow::Result<Option<tcpkit::tls::client::ClientTlsStream>> {
    let host = match target.host() {
        tcpkit::endpoint::Host::Name(name) => Some(name.as_str()),
        _ => None,
    };
    let mut stream = tls.connect(stream, host).await?;
    if verbose {
        let info = tcpkit::tls::client::HandshakeInfo::of(stream.get_ref().1);
        super::tls_client::print_handshake(&info);
    }
    if zero_io {
        use tokio::io::AsyncWriteExt;
        let _ = stream.shutdown().await;
        return Ok(None);
    }
    Ok(Some(stream))
}

/// `-v`'s closing line.
pub fn print_stats(stats: &PipeStats) {
    let why = match stats.end {
        PipeEnd::PeerClosed => "peer closed",
        PipeEnd::LineLimit => "line limit reached",
        PipeEnd::IdleTimeout => "idle timeout",
        PipeEnd::OutputClosed => "output closed",
    };
    eprintln!(
        "sent {} bytes, received {} bytes ({why})",
        stats.bytes_sent, stats.bytes_received
    );
}

/// `--source`: `IP` (any port) or `IP:PORT`, through the one endpoint parser;
/// a name or a port alone names no local address.
fn parse_source(text: &str) -> anyhow::Result<Endpoint> {
    if let Ok(ep) = Endpoint::new(text, 0) {
        return Ok(ep);
    }
    values::host_port("--source", text)?
        .endpoint()
        .ok_or_else(|| {
            values::invalid(
                "--source",
                format_args!("{text:?} is not an IP address or IP:PORT"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        T::try_parse_from(std::iter::once("connect").chain(argv.iter().copied()))
            .expect("parse")
            .args
    }

    #[test]
    fn idle_timeout_zero_means_none() {
        let args = parse(&["127.0.0.1:1", "--idle-timeout", "0"]);
        assert_eq!(args.session.idle_timeout(), None);
        assert_eq!(args.session.pipe_options(None).idle_timeout, None);
        let args = parse(&["127.0.0.1:1", "--idle-timeout", "2s"]);
        assert_eq!(args.session.idle_timeout(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn host_and_port_as_one_word_or_two() {
        let one = parse(&["[::1]:7"]).target().expect("one word");
        let two = parse(&["::1", "7"]).target().expect("two words");
        assert_eq!(one, two);
        assert!(parse(&["127.0.0.1:7", "8"]).target().is_err());
    }
}
