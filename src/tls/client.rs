//! The client side of TLS: [`TlsClientConfig`] says whom to trust and what
//! to offer, [`TlsConnector`] (built from it once) wraps a connected
//! [`TcpStream`] into a TLS stream under a handshake deadline.
//!
//! Whom to trust, one of:
//! * the **system roots** (the default), read with `rustls-native-certs`:
//!   on Linux and the BSDs these are the distribution's PEM bundle (or
//!   `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), so what is trusted is a
//!   file one can read, the same on every run, and a test can point it at
//!   its own CA. The alternative, `rustls-platform-verifier`, asks the
//!   platform's verifier at each handshake (on Linux it falls back to the
//!   same files, elsewhere it runs the OS's verifier on its own threads);
//!   tcpkit does not need revocation checks or OS policy, and a load
//!   generator wants no extra threads per handshake;
//! * the certificates of a **CA file** (`--ca`), instead of the system's;
//! * a **pin**: exactly the certificate whose SHA-256 fingerprint is given
//!   ([`fingerprint`](super::fingerprint)'s format, colons and case
//!   optional), whatever its issuer, name or dates (the way to trust an
//!   ephemeral self-signed certificate from `serve --tls`); the handshake
//!   signature is still verified, so the peer must hold its key;
//! * **nothing** ([`TlsClientConfig::insecure`]): any certificate, logged
//!   as a warning each time a connector is built.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::verify::{Pinned, parse_fingerprint};
use super::{
    DEFAULT_HANDSHAKE_TIMEOUT, TlsVersion, handshake_error, load_certs, load_key, tls_error,
};
use crate::endpoint::{Address, Endpoint};
use crate::error::{Error, ErrorKind, Result, code};

/// A TLS client stream over TCP, as [`TlsConnector::connect`] returns it.
pub type ClientTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The protocol versions to offer from the oldest accepted on.
fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        TlsVersion::Tls13 => TLS13_ONLY,
    }
}

/// `"1.2"` or `"1.3"` (as `--tls-min` takes them) as a [`TlsVersion`].
///
/// ```
/// use tcpkit::tls::{TlsVersion, client::parse_version};
/// assert_eq!(parse_version("1.3").unwrap(), TlsVersion::Tls13);
/// assert!(parse_version("1.1").is_err());
/// ```
pub fn parse_version(text: &str) -> Result<TlsVersion> {
    match text.trim() {
        "1.2" => Ok(TlsVersion::Tls12),
        "1.3" => Ok(TlsVersion::Tls13),
        other => Err(invalid(format_args!(
            "TLS version {other:?}: expected 1.2 or 1.3"
        ))),
    }
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Whom a client trusts.
#[derive(Debug, Clone)]
enum Trust {
    SystemRoots,
    /// CA certificates and the file (or input) they came from.
    Roots(Vec<CertificateDer<'static>>, String),
    Pin([u8; 32]),
    Insecure,
}

/// A client's TLS settings, built by chaining; [`build`](Self::build) turns
/// them into a [`TlsConnector`] (loading the system roots then).
///
/// ```
/// use tcpkit::tls::client::TlsClientConfig;
/// let fp = "AB".repeat(32);
/// let connector = TlsClientConfig::new()
///     .pin(&fp)?
///     .server_name("example.test")
///     .alpn(["h2", "http/1.1"])
///     .build()?;
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TlsClientConfig {
    trust: Trust,
    server_name: Option<String>,
    alpn: Vec<Vec<u8>>,
    client_auth: Option<(
        Vec<CertificateDer<'static>>,
        Arc<PrivateKeyDer<'static>>,
        String,
    )>,
    min_version: TlsVersion,
    resumption: bool,
    handshake_timeout: Duration,
}

impl Default for TlsClientConfig {
    fn default() -> Self {
        TlsClientConfig::new()
    }
}

impl TlsClientConfig {
    /// Verify against the system roots, name from the target, no ALPN, no
    /// client certificate, TLS 1.2 and 1.3, session resumption on, a
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new() -> TlsClientConfig {
        TlsClientConfig {
            trust: Trust::SystemRoots,
            server_name: None,
            alpn: Vec::new(),
            client_auth: None,
            min_version: TlsVersion::default(),
            resumption: true,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Trust the CA certificates in this PEM file instead of the system's;
    /// errors name the file.
    pub fn ca_file(self, path: &Path) -> Result<TlsClientConfig> {
        let certs = load_certs(path)?;
        Ok(self.ca_certs(certs, path.display().to_string()))
    }

    /// Trust these CA certificates (`what` names them in errors).
    pub fn ca_certs(
        mut self,
        certs: Vec<CertificateDer<'static>>,
        what: impl Into<String>,
    ) -> TlsClientConfig {
        self.trust = Trust::Roots(certs, what.into());
        self
    }

    /// Accept exactly the certificate with this SHA-256 fingerprint (64
    /// hex digits, colons and case optional); an error names the input.
    ///
    /// ```
    /// use tcpkit::tls::client::TlsClientConfig;
    /// let fp = tcpkit::tls::fingerprint(b"cert");
    /// assert!(TlsClientConfig::new().pin(&fp).is_ok());
    /// assert!(TlsClientConfig::new().pin(&fp.replace(':', "").to_lowercase()).is_ok());
    /// assert!(TlsClientConfig::new().pin("AB:CD").is_err());
    /// ```
    pub fn pin(mut self, fingerprint: &str) -> Result<TlsClientConfig> {
        self.trust = Trust::Pin(parse_fingerprint(fingerprint)?);
        Ok(self)
    }

    /// Accept any certificate: no protection against an active attacker.
    /// Each [`build`](Self::build) logs a warning that says so.
    pub fn insecure(mut self) -> TlsClientConfig {
        self.trust = Trust::Insecure;
        self
    }

    /// The name sent as SNI and verified in the certificate, instead of the
    /// target's host name.
    pub fn server_name(mut self, name: impl Into<String>) -> TlsClientConfig {
        self.server_name = Some(name.into());
        self
    }

    /// The ALPN protocols to offer, most preferred first.
    pub fn alpn<I, P>(mut self, protocols: I) -> TlsClientConfig
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Present this certificate chain and key (PEM files) when the server
    /// asks for one (mutual TLS); errors name the file.
    pub fn client_auth_files(self, cert: &Path, key: &Path) -> Result<TlsClientConfig> {
        let certs = load_certs(cert)?;
        let key_der = load_key(key)?;
        let what = format!("{} and {}", cert.display(), key.display());
        Ok(self.client_auth(certs, key_der, what))
    }

    /// Present this certificate chain and key (`what` names them in errors).
    pub fn client_auth(
        mut self,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        what: impl Into<String>,
    ) -> TlsClientConfig {
        self.client_auth = Some((certs, Arc::new(key), what.into()));
        self
    }

    /// The oldest TLS version to accept.
    pub fn min_version(mut self, version: TlsVersion) -> TlsClientConfig {
        self.min_version = version;
        self
    }

    /// Resume sessions (tickets, kept in memory per connector) on later
    /// connections to the same name: on by default; off makes every
    /// handshake a full one.
    pub fn resumption(mut self, on: bool) -> TlsClientConfig {
        self.resumption = on;
        self
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsClientConfig {
        self.handshake_timeout = timeout;
        self
    }

    /// The connector: loads the system roots if they are the trust (an
    /// error if none load), checks the client key against its certificate.
    pub fn build(&self) -> Result<TlsConnector> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(self.min_version))
            .map_err(|e| tls_error(&e, "TLS client configuration"))?;
        let algorithms = provider.signature_verification_algorithms;
        let builder = match &self.trust {
            Trust::SystemRoots => builder.with_root_certificates(system_roots()?),
            Trust::Roots(certs, what) => builder.with_root_certificates(roots(certs, what)?),
            Trust::Pin(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    pin: Some(*fp),
                    algorithms,
                })),
            Trust::Insecure => {
                tracing::warn!(
                    "TLS certificate verification is OFF (--insecure): any server, or anyone \
                     between, is accepted"
                );
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Pinned {
                        pin: None,
                        algorithms,
                    }))
            }
        };
        let mut config = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some((certs, key, what)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| {
                    Error::new(
                        ErrorKind::BadCertificateFile,
                        code::BAD_CERTIFICATE_FILE,
                        format!("client certificate {what}: {e}"),
                    )
                })?,
        };
        config.alpn_protocols = self.alpn.clone();
        if !self.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let server_name = self
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map_err(|e| invalid(format_args!("TLS server name {name:?}: {e}")))
            })
            .transpose()?;
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// A built client configuration: cheap to clone (one `Arc`), shared by
/// every connection that should resume the others' sessions.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Runs the handshake over `stream` within the handshake timeout.
    /// The name sent (SNI) and verified is the configured
    /// [`server_name`](TlsClientConfig::server_name), else `host` (the name
    /// the target was given by), else the peer's IP address (verified
    /// against the certificate's IP addresses; no SNI is sent for an IP).
    ///
    /// Errors name the peer: a refused certificate is
    /// [`ErrorKind::Certificate`], another TLS failure [`ErrorKind::Tls`],
    /// the deadline [`ErrorKind::TimedOut`], a socket error keeps its OS
    /// code. Dropping the future closes the connection.
    pub async fn connect(&self, stream: TcpStream, host: Option<&str>) -> Result<ClientTlsStream> {
        let peer = stream
            .peer_addr()
            .map(Endpoint::from)
            .map_err(|e| Error::io(e, "getpeername"))?;
        self.connect_over(stream, &peer.into(), host).await
    }

    /// [`connect`](Self::connect) over any connected stream (a UNIX
    /// socket, a relay's upstream) to `peer`, which names it in errors and
    /// is the name verified when there is neither a configured name nor
    /// `host` (a UNIX socket path is no name: that is an error).
    pub async fn connect_over<S>(
        &self,
        stream: S,
        peer: &Address,
        host: Option<&str>,
    ) -> Result<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = self.name_for(host, peer)?;
        let shown = name.to_str().into_owned();
        let handshake = self.inner.connect(name, stream);
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(handshake_error(
                e,
                format_args!("TLS handshake with {peer} as {shown}"),
            )),
            Err(_) => Err(Error::timed_out(
                format_args!("TLS handshake with {peer} as {shown}"),
                self.handshake_timeout,
            )),
        }
    }

    /// The handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    fn name_for(&self, host: Option<&str>, peer: &Address) -> Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        match host {
            Some(host) => ServerName::try_from(host.to_owned())
                .map_err(|e| invalid(format_args!("TLS server name {host:?}: {e}"))),
            None => match peer.endpoint() {
                Some(ep) => Ok(ServerName::IpAddress(ep.ip().into())),
                None => Err(invalid(format_args!(
                    "TLS to {peer}: no server name to verify (a socket path is not one); \
                     give one"
                ))),
            },
        }
    }
}

/// What a handshake settled, for `-v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: String,
    /// E.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The protocol the server chose, if ALPN was offered and accepted.
    pub alpn: Option<String>,
    /// The peer certificate's subject (`CN=...`), if it sent one.
    pub peer_subject: Option<String>,
    /// The peer certificate's SHA-256 fingerprint.
    pub peer_fingerprint: Option<String>,
    /// Whether the session was resumed rather than a full handshake.
    pub resumed: bool,
}

impl HandshakeInfo {
    /// What `conn` negotiated (client or server side).
    pub fn of<D>(conn: &rustls::ConnectionCommon<D>) -> HandshakeInfo {
        let leaf = conn.peer_certificates().and_then(|c| c.first());
        HandshakeInfo {
            version: conn
                .protocol_version()
                .map_or_else(|| "none".into(), |v| format!("{v:?}")),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "none".into(), |s| format!("{:?}", s.suite())),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            peer_subject: leaf.map(|der| {
                super::subject(der).unwrap_or_else(|| "(unparsable certificate)".to_owned())
            }),
            peer_fingerprint: leaf.map(|der| super::fingerprint(der)),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("system root certificates: {e}");
    }
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!("system root certificates: {ignored} unusable, skipped");
    }
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(Error::new(
            ErrorKind::BadCertificateFile,
            code::BAD_CERTIFICATE_FILE,
            format!(
                "no usable system root certificates ({why}); install ca-certificates, set \
                 SSL_CERT_FILE, or give a CA file or a pin"
            ),
        ));
    }
    Ok(store)
}

fn roots(certs: &[CertificateDer<'static>], what: &str) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert.clone()).map_err(|e| {
            Error::new(
                ErrorKind::BadCertificateFile,
                code::BAD_CERTIFICATE_FILE,
                format!("CA certificate {what}: not usable as a trust anchor ({e})"),
            )
        })?;
    }
    Ok(store)
}

pub(super) fn invalid(message: std::fmt::Arguments<'_>) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        code::INVALID_CONFIG,
        message.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem").expect("write");
        let err = TlsClientConfig::new().ca_file(&path).expect_err("not PEM");
        assert_eq!(err.kind(), ErrorKind::BadCertificateFile);
        assert!(err.message().contains("ca.pem"), "{err}");
    }

    #[test]
    fn a_client_key_that_does_not_match_is_refused_naming_the_files() {
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).expect("rcgen");
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).expect("rcgen");
        let certs = vec![a.cert.der().clone()];
        let key = PrivateKeyDer::try_from(b.signing_key.serialize_der()).expect("key");
        let err = TlsClientConfig::new()
            .insecure()
            .client_auth(certs, key, "a.pem and b.key")
            .build()
            .expect_err("mismatched key");
        assert_eq!(err.kind(), ErrorKind::BadCertificateFile);
        assert!(err.message().contains("a.pem and b.key"), "{err}");
    }
}
