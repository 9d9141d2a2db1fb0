//! `tcpkit listen [ADDR]`: a netcat-class listener. Binds, listens with the
//! seed's backlog of 30, accepts one client and copies it to stdout and stdin
//! to it; `-k` accepts the next client when one leaves.
//!
//! `listening on <ENDPOINT>` goes to stderr with `-v`, and always when port 0
//! was asked for: the kernel picked the port, and a script (or a test) has no
//! other way to learn it.

#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::process::ExitCode;

use tcpkit::client::{PipeEnd, PipeStats, pipe};
use tcpkit::endpoint::Host;
#[cfg(feature = "tls")]
use tcpkit::tls::TlsAcceptor;
use tcpkit::{Acceptor, DEFAULT_BACKLOG, DEFAULT_PORT, Endpoint};

use super::Globals;
use super::connect::{SessionArgs, idle_error, print_stats, runtime};
use super::exit::{Exit, codes_help};
use super::values;

/// Arguments of `tcpkit listen`.
#[derive(Debug, clap::Args)]
#[command(after_help = codes_help(&[
    Exit::Ok, Exit::Failure, Exit::Usage, Exit::Resolve, Exit::Timeout, Exit::Io, Exit::Bind,
    Exit::Certificate, Exit::Tls,
]))]
pub struct Args {
    /// Where to listen: `IP:PORT`, `[v6]:PORT`, `HOST:PORT` (its first
    /// address), a `PORT` alone (every interface, dual-stack), or
    /// `unix:PATH` (a UNIX-domain socket, created, and removed when listen
    /// exits; an existing file is an error, as for nc). Default:
    /// `[::]:3333`. Port 0 lets the kernel
    /// pick one (printed as `listening on ...` on stderr).
    #[arg(value_name = "ADDR")]
    addr: Option<String>,
    /// After a client leaves, accept the next one instead of exiting.
    #[arg(short = 'k', long)]
    keep_open: bool,
    #[command(flatten)]
    session: SessionArgs,
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: TlsListenArgs,
}

/// TLS on the listening side.
#[cfg(feature = "tls")]
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "TLS")]
struct TlsListenArgs {
    /// Speak TLS with an ephemeral self-signed certificate (ECDSA P-256)
    /// for localhost and the listen address; its SHA-256 fingerprint is
    /// printed on stderr for the client to pin.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: bool,
    /// Speak TLS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate signed by a CA in this PEM
    /// file (its subject is printed with -v).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// ALPN protocols offered, in order of preference (`h2,http/1.1`), as
    /// `serve --alpn`; a client offering only others is refused.
    #[arg(long, value_name = "LIST", value_parser = super::serve_tls::alpn_list)]
    alpn: Option<super::serve_tls::AlpnList>,
    /// Lowest TLS version accepted: 1.2 or 1.3, as `serve --tls-min`.
    #[arg(long, value_name = "VERSION", value_parser = super::serve_tls::tls_version)]
    tls_min: Option<tcpkit::tls::TlsVersion>,
}

#[cfg(feature = "tls")]
impl TlsListenArgs {
    /// The acceptor these flags ask for (files read now, errors naming the
    /// flag), or `None` without TLS.
    fn acceptor(
        &self,
        ip: Option<std::net::IpAddr>,
        quiet: bool,
    ) -> anyhow::Result<Option<TlsAcceptor>> {
        use tcpkit::tls::TlsConfig;
        let flag = |flag: &'static str| {
            move |e: tcpkit::Error| -> anyhow::Error {
                tcpkit::Error::new(
                    tcpkit::ErrorKind::InvalidConfig,
                    e.code(),
                    format!("{flag}: {}", e.message()),
                )
                .into()
            }
        };
        let mut config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tcpkit::tls::load_certs(cert).map_err(flag("--tls-cert"))?;
                tcpkit::tls::load_key(key).map_err(flag("--tls-key"))?;
                TlsConfig::from_files(cert, key).map_err(flag("--tls-cert/--tls-key"))?
            }
            _ if self.tls => {
                let ip = ip.map(|ip| ip.to_string());
                let mut names = vec!["localhost"];
                names.extend(ip.as_deref());
                let (config, fp) = TlsConfig::self_signed(&names).map_err(flag("--tls"))?;
                if !quiet {
                    eprintln!("tls: self-signed certificate, SHA-256 fingerprint {fp}");
                }
                config
            }
            _ => {
                let given = [
                    ("--tls-client-ca", self.tls_client_ca.is_some()),
                    ("--alpn", self.alpn.is_some()),
                    ("--tls-min", self.tls_min.is_some()),
                ];
                if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                    return Err(values::invalid(flag, "needs --tls or --tls-cert/--tls-key"));
                }
                return Ok(None);
            }
        };
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_file(ca).map_err(flag("--tls-client-ca"))?;
        }
        if let Some(super::serve_tls::AlpnList(protocols)) = &self.alpn {
            config = config.alpn(protocols);
        }
        if let Some(min) = self.tls_min {
            config = config.min_version(min);
        }
        Ok(Some(TlsAcceptor::new(config)?))
    }
}

/// One client's session: the TLS handshake if asked for, then the pipe.
// `peer` and `verbose` serve the handshake only.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
struct Session<'a> {
    #[cfg(feature = "tls")]
    tls: Option<&'a TlsAcceptor>,
    peer: Endpoint,
    verbose: bool,
    options: &'a tcpkit::client::PipeOptions,
    dump: Option<&'a super::connect::FileDump>,
}

impl Session<'_> {
    async fn run(
        &self,
        stream: tokio::net::TcpStream,
        stdin: &mut tokio::io::Stdin,
        stdout: &mut tokio::io::Stdout,
    ) -> tcpkit::Result<PipeStats> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls {
            let stream = tls.accept(stream).await?;
            if self.verbose {
                let info = tcpkit::tls::client::HandshakeInfo::of(stream.get_ref().1);
                super::tls_client::print_handshake(&info);
            }
            return tcpkit::client::pipe_stream(
                stream,
                self.peer,
                stdin,
                stdout,
                self.options,
                self.dump,
            )
            .await;
        }
        pipe(stream, stdin, stdout, self.options, self.dump).await
    }
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
    if let Some(text) = args.addr.as_deref()
        && text.starts_with(tcpkit::endpoint::UNIX_PREFIX)
    {
        return run_unix(&args, globals, text);
    }
    let place = parse_addr(args.addr.as_deref())?;
    let dump = args.session.open_dump()?;
    let pipe_options = args.session.pipe_options(None);
    let verbose = globals.verbose > 0 && !globals.quiet;
    // Before the bind: a bad TLS flag leaves no socket behind.
    #[cfg(feature = "tls")]
    let tls = {
        let ip = match &place {
            Where::At(ep) => Some(ep.ip()),
            Where::Any(_) => None,
        };
        args.tls.acceptor(ip, globals.quiet)?
    };

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
            let session = Session {
                #[cfg(feature = "tls")]
                tls: tls.as_ref(),
                peer,
                verbose,
                options: &pipe_options,
                dump: dump.as_ref(),
            };
            let outcome = session.run(stream, &mut stdin, &mut stdout).await;
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

/// `listen unix:PATH`: the same sessions over a UNIX-domain socket.
fn run_unix(args: &Args, globals: Globals, text: &str) -> anyhow::Result<ExitCode> {
    let tcpkit::endpoint::Target::Unix(path) =
        tcpkit::endpoint::Target::parse(text).map_err(|e| e.context("ADDR"))?
    else {
        return Err(values::invalid(
            "ADDR",
            format_args!("{text:?}: not unix:PATH"),
        ));
    };
    #[cfg(feature = "tls")]
    if args.tls.acceptor(None, true)?.is_some() {
        return Err(values::invalid(
            "--tls",
            format_args!("not available with a unix: address ({text})"),
        ));
    }
    let dump = args.session.open_dump()?;
    let pipe_options = args.session.pipe_options(None);
    let verbose = globals.verbose > 0 && !globals.quiet;
    let local = tcpkit::endpoint::Address::Unix(path.clone());
    let rt = runtime()?;
    let result = rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| tcpkit::Error::io(e, format_args!("bind {local}")))?;
        // Removes the socket file when listen exits (by return or error;
        // a process killed by a signal leaves it, as nc does), unless
        // another process has put its own there since.
        let _remove = tcpkit::server::unix::SocketFile::new(&path);
        if verbose {
            eprintln!("listening on {local}");
        }
        let mut stdin = tokio::io::stdin();
        let mut stdout = tokio::io::stdout();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    return Err(tcpkit::Error::io(e, format_args!("accept on {local}")).into());
                }
            };
            if verbose {
                eprintln!("connection on {local}");
            }
            let outcome = tcpkit::client::pipe_stream(
                stream,
                local.clone(),
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
                        PipeEnd::IdleTimeout => idle_error(&local, pipe_options.idle_timeout),
                        _ if args.keep_open => continue,
                        _ => return Ok(ExitCode::SUCCESS),
                    }
                }
                Err(e) => anyhow::Error::from(e),
            };
            if !args.keep_open {
                return Err(err);
            }
            if !globals.quiet {
                eprintln!("tcpkit: client on {local}: {err:#}");
            }
        }
    });
    rt.shutdown_background();
    result
}
