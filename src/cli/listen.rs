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
            _ if self.tls_client_ca.is_some() => {
                return Err(values::invalid(
                    "--tls-client-ca",
                    "needs --tls or --tls-cert/--tls-key",
                ));
            }
            _ => return Ok(None),
        };
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_file(ca).map_err(flag("--tls-client-ca"))?;
        }
        Ok(Some(TlsAcceptor::new(config)?))
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
            let outcome: tcpkit::Result<PipeStats> = async {
                #[cfg(feature = "tls")]
                if let Some(tls) = &tls {
                    let stream = tls.accept(stream).await?;
                    if verbose {
                        super::connect::print_handshake(&tcpkit::tls::client::HandshakeInfo::of(
                            stream.get_ref().1,
                        ));
                    }
                    return tcpkit::client::pipe_stream(
                        stream,
                        peer,
                        &mut stdin,
                        &mut stdout,
                        &pipe_options,
                        dump.as_ref(),
                    )
                    .await;
                }
                pipe(
                    stream,
                    &mut stdin,
                    &mut stdout,
                    &pipe_options,
                    dump.as_ref(),
                )
                .await
            }
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
