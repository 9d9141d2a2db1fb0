//! `tcpkit connect HOST:PORT`: a netcat-class client. Copies stdin to the
//! socket and the socket to stdout, as bytes, both at once; the session
//! options (`--idle-timeout`, `--no-shutdown`, `-o`, `-x`) are shared with
//! `tcpkit listen`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use tcpkit::Endpoint;
#[cfg(feature = "tls")]
use tcpkit::client::pipe_stream;
use tcpkit::client::{
    ConnectOptions, Connector, DumpFormat, Family, PipeEnd, PipeOptions, PipeStats, SessionDump,
    pipe,
};
use tcpkit::endpoint::HostPort;
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
    /// alone (this host), or `HOST PORT` as two words (as nc takes them).
    /// Every address HOST resolves to is tried, IPv6 and IPv4 raced (RFC 8305).
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
    #[command(flatten)]
    session: SessionArgs,
    /// Boxed: clippy's `large_enum_variant` on the `Command` enum.
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: Box<TlsClientArgs>,
}

/// TLS client options shared by `connect` and `bench`.
#[cfg(feature = "tls")]
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsClientArgs {
    /// Speak TLS: the server's certificate is verified against the system's
    /// root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set) and the
    /// name connected to. Each flag below implies --tls.
    #[arg(long)]
    pub tls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "insecure"])]
    pub ca: Option<PathBuf>,
    /// Accept exactly the certificate with this SHA-256 fingerprint (as
    /// `serve --tls` prints it; colons and case optional), whatever its
    /// issuer, name or dates.
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub pin: Option<String>,
    /// Accept any certificate (no protection against an active attacker; a
    /// warning says so).
    #[arg(long)]
    pub insecure: bool,
    /// The server name to send (SNI) and verify, instead of the host connected to.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Offer these ALPN protocols, comma-separated, most preferred first
    /// (e.g. `h2,http/1.1`).
    #[arg(long, value_name = "LIST")]
    pub alpn: Option<String>,
    /// Present this client certificate (PEM, leaf first) when the server
    /// asks for one (mutual TLS); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The oldest TLS version to accept: 1.2 (default) or 1.3.
    #[arg(long, value_name = "VERSION", value_parser = tls_version)]
    pub tls_min: Option<tcpkit::tls::TlsVersion>,
}

#[cfg(feature = "tls")]
fn tls_version(text: &str) -> Result<tcpkit::tls::TlsVersion, String> {
    tcpkit::tls::client::parse_version(text).map_err(|e| e.message().to_owned())
}

#[cfg(feature = "tls")]
impl TlsClientArgs {
    /// Whether any flag asks for TLS.
    pub fn enabled(&self) -> bool {
        self.tls
            || self.ca.is_some()
            || self.pin.is_some()
            || self.insecure
            || self.sni.is_some()
            || self.alpn.is_some()
            || self.cert.is_some()
            || self.tls_min.is_some()
    }

    /// The client configuration these flags ask for (files read now, each
    /// error naming its flag and file), or `None` without TLS.
    pub fn config(&self) -> anyhow::Result<Option<tcpkit::tls::TlsClientConfig>> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut config = tcpkit::tls::TlsClientConfig::new();
        if let Some(path) = &self.ca {
            config = config.ca_file(path).map_err(|e| flag_error("--ca", e))?;
        }
        if let Some(pin) = &self.pin {
            config = config.pin(pin).map_err(|e| flag_error("--pin", e))?;
        }
        if self.insecure {
            config = config.insecure();
        }
        if let Some(name) = &self.sni {
            check_server_name(name)?;
            config = config.server_name(name.clone());
        }
        if let Some(list) = &self.alpn {
            config = config.alpn(parse_alpn(list)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let certs = tcpkit::tls::load_certs(cert).map_err(|e| flag_error("--cert", e))?;
            let key_der = tcpkit::tls::load_key(key).map_err(|e| flag_error("--key", e))?;
            let what = format!("--cert {} and --key {}", cert.display(), key.display());
            config = config.client_auth(certs, key_der, what);
        }
        if let Some(version) = self.tls_min {
            config = config.min_version(version);
        }
        Ok(Some(config))
    }
}

/// A library error about a flag's value as a usage error (exit 2) naming
/// the flag, keeping the error's code.
#[cfg(feature = "tls")]
fn flag_error(flag: &str, e: tcpkit::Error) -> anyhow::Error {
    tcpkit::Error::new(
        tcpkit::ErrorKind::InvalidConfig,
        e.code(),
        format!("{flag}: {}", e.message()),
    )
    .into()
}

/// `--sni`: a DNS name (an IP address sends no SNI, so it is refused here).
#[cfg(feature = "tls")]
fn check_server_name(name: &str) -> anyhow::Result<()> {
    use rustls_pki_types::ServerName;
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        Ok(_) => Err(values::invalid(
            "--sni",
            format_args!("{name:?} is an IP address; SNI carries names only"),
        )),
        Err(e) => Err(values::invalid(
            "--sni",
            format_args!("{name:?} is not a DNS name ({e})"),
        )),
    }
}

/// `--alpn`: comma-separated protocol names, each 1..=255 bytes.
#[cfg(feature = "tls")]
pub fn parse_alpn(list: &str) -> anyhow::Result<Vec<String>> {
    let protocols: Vec<String> = list.split(',').map(|p| p.trim().to_owned()).collect();
    for p in &protocols {
        if p.is_empty() || p.len() > 255 {
            return Err(values::invalid(
                "--alpn",
                format_args!("{list:?}: each protocol must be 1 to 255 bytes"),
            ));
        }
    }
    Ok(protocols)
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
pub fn idle_error(peer: Endpoint, idle: Option<Duration>) -> anyhow::Error {
    tcpkit::Error::timed_out(
        format_args!("idle session with {peer}"),
        idle.unwrap_or_default(),
    )
    .into()
}

impl Args {
    /// The target, from one word or two.
    fn target(&self) -> anyhow::Result<HostPort> {
        let parsed = match &self.port {
            None => HostPort::parse(&self.target),
            Some(port) => HostPort::from_parts(&self.target, port),
        };
        Ok(parsed?)
    }

    /// The library's connect options for these flags (validates `--source`).
    fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        let source = self.source.as_deref().map(parse_source).transpose()?;
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Family::V4,
            (_, true) => Family::V6,
            _ => Family::Any,
        };
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
    // Validate everything before a socket opens.
    let target = args.target()?;
    let options = args.connect_options()?;
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
        let mut input: Box<dyn AsyncRead + Unpin + Send> = match &args.send {
            Some(text) => Box::new(std::io::Cursor::new(format!("{text}\n").into_bytes())),
            None => Box::new(tokio::io::stdin()),
        };
        let mut stdout = tokio::io::stdout();
        #[cfg(feature = "tls")]
        if let Some(tls) = &tls {
            let host = match target.host() {
                tcpkit::endpoint::Host::Name(name) => Some(name.as_str()),
                _ => None,
            };
            let mut stream = tls.connect(conn.stream, host).await?;
            if verbose {
                print_handshake(&tcpkit::tls::client::HandshakeInfo::of(stream.get_ref().1));
            }
            if args.zero_io {
                // The handshake was the check: close_notify, then FIN.
                use tokio::io::AsyncWriteExt;
                let _ = stream.shutdown().await;
                return anyhow::Ok(None);
            }
            let stats = pipe_stream(
                stream,
                conn.peer,
                &mut *input,
                &mut stdout,
                &pipe_options,
                dump.as_ref(),
            )
            .await?;
            return anyhow::Ok(Some((conn.peer, stats)));
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
    if verbose {
        print_stats(&stats);
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

/// `-v`'s handshake lines (connect and listen).
#[cfg(feature = "tls")]
pub fn print_handshake(info: &tcpkit::tls::client::HandshakeInfo) {
    eprintln!(
        "TLS {} {}{}, ALPN {}",
        info.version,
        info.cipher_suite,
        if info.resumed { " (resumed)" } else { "" },
        info.alpn.as_deref().unwrap_or("none"),
    );
    match (&info.peer_subject, &info.peer_fingerprint) {
        (Some(subject), Some(fp)) => {
            eprintln!("peer certificate: {subject}");
            eprintln!("peer certificate SHA-256: {fp}");
        }
        _ => eprintln!("peer certificate: none"),
    }
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
