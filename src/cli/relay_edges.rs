//! `tcpkit relay`'s edges: `--to unix:PATH`, `--send-proxy`, and TLS
//! towards the upstream (`--to-tls`, `--to-ca`, `--to-sni`,
//! `--to-insecure`, with `connect --tls`'s meanings), checked before any
//! socket opens and built into one [`Upstream`] per `--to`.

#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "tls")]
use tcpkit::endpoint::Host;
use tcpkit::endpoint::Target;
#[cfg(feature = "tls")]
use tcpkit::relay::ToTls;
use tcpkit::relay::{Either, Fixed, SendProxy, Unix};

use super::connect::ProxyVersion;
use super::values;

/// A `--to` target: TCP or a UNIX socket.
pub type Base = Either<Fixed, Unix>;
/// With or without a PROXY header first.
pub type Proxied = Either<SendProxy<Base>, Base>;
/// The upstream of one `--to`, with every edge flag applied.
#[cfg(feature = "tls")]
pub type Backend = Either<ToTls<Proxied>, Proxied>;
/// The upstream of one `--to`, with every edge flag applied.
#[cfg(not(feature = "tls"))]
pub type Backend = Proxied;

/// The edge flags (flattened into `relay`'s arguments, after serve's).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "To the upstream")]
pub struct EdgeArgs {
    /// Send a PROXY protocol header (v1 text or v2 binary) to the upstream
    /// before any byte, naming the client's address (for an upstream such
    /// as `serve --proxy-protocol` or nginx `proxy_protocol`). Sent before
    /// --to-tls's handshake.
    #[arg(long, value_enum, value_name = "VERSION")]
    send_proxy: Option<ProxyVersion>,
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: ToTlsArgs,
}

/// TLS towards the upstream: `connect --tls`'s flags, prefixed `--to-`.
#[cfg(feature = "tls")]
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "TLS to the upstream")]
struct ToTlsArgs {
    /// Speak TLS to the upstream: its certificate is verified against the
    /// system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when
    /// set) and --to's host (or address). Each flag below implies --to-tls.
    /// A failed handshake closes the client, logged and counted as a failed
    /// upstream connect.
    #[arg(long)]
    to_tls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE", conflicts_with = "to_insecure")]
    to_ca: Option<PathBuf>,
    /// The server name to send (SNI) and verify, instead of --to's host
    /// (needed for a unix: upstream).
    #[arg(long, value_name = "NAME")]
    to_sni: Option<String>,
    /// Accept any upstream certificate (no protection against an active
    /// attacker; a warning says so).
    #[arg(long)]
    to_insecure: bool,
}

#[cfg(feature = "tls")]
impl ToTlsArgs {
    fn enabled(&self) -> bool {
        self.to_tls || self.to_ca.is_some() || self.to_sni.is_some() || self.to_insecure
    }

    /// The connector (files read now, errors naming the flag), or `None`.
    fn connector(&self) -> anyhow::Result<Option<tcpkit::tls::TlsConnector>> {
        if !self.enabled() {
            return Ok(None);
        }
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
        let mut config = tcpkit::tls::TlsClientConfig::new();
        if let Some(path) = &self.to_ca {
            config = config.ca_file(path).map_err(flag("--to-ca"))?;
        }
        if self.to_insecure {
            config = config.insecure();
        }
        if let Some(name) = &self.to_sni {
            super::tls_client::check_server_name("--to-sni", name)?;
            config = config.server_name(name.clone());
        }
        Ok(Some(config.build().map_err(flag("--to-tls"))?))
    }
}

impl EdgeArgs {
    /// The upstream for `--to TEXT` with these flags, checked (a usage
    /// error, exit 2, naming the flag) before any socket opens.
    pub fn backend(&self, to: &str, connect_timeout: Duration) -> anyhow::Result<Backend> {
        let target = Target::parse(to).map_err(|e| anyhow::Error::from(e.context("--to")))?;
        let base = match &target {
            Target::Inet(hp) if hp.port() == 0 => {
                return Err(values::invalid(
                    "--to",
                    format_args!("{to}: port 0 is not a port anyone listens on"),
                ));
            }
            Target::Inet(hp) => Either::Left(Fixed::new(hp.clone(), connect_timeout)),
            Target::Unix(path) => Either::Right(Unix::new(path.clone(), connect_timeout)),
        };
        let proxied = match self.send_proxy {
            Some(version) => Either::Left(SendProxy::new(base, version.into())),
            None => Either::Right(base),
        };
        #[cfg(feature = "tls")]
        {
            let Some(connector) = self.tls.connector()? else {
                return Ok(Either::Right(proxied));
            };
            let tls = ToTls::new(proxied, connector);
            let tls = match (&target, &self.tls.to_sni) {
                (_, Some(_)) => tls,
                (Target::Inet(hp), None) => match hp.host() {
                    Host::Name(name) => tls.with_name(name.clone()),
                    _ => tls,
                },
                (Target::Unix(_), None) => {
                    return Err(values::invalid(
                        "--to-sni",
                        format_args!(
                            "--to-tls to {to} needs --to-sni NAME: a socket path is no name \
                             to verify the certificate by"
                        ),
                    ));
                }
            };
            Ok(Either::Left(tls))
        }
        #[cfg(not(feature = "tls"))]
        Ok(proxied)
    }
}
