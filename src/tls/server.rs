//! The server side: [`TlsConfig`] (certificates, options, checks at load)
//! and [`TlsReloader`] (swap in new files for new handshakes).
//!
//! A [`TlsConfig`] is loaded and checked once (the key matches its
//! certificate; an expired certificate is a warning, not an error), then
//! built into a rustls `ServerConfig` when the server binds. Reloading
//! builds a new one from the same sources and swaps it whole: handshakes
//! already past their `ClientHello` keep the old one, so open connections
//! are untouched. The session cache and the ticket keys outlive reloads,
//! so clients resume across them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{bad_file, certs_from_pem, fingerprint, key_from_pem, load_certs};
use crate::error::{Error, ErrorKind, Result, code};

/// Default handshake deadline: from accept to the end of the handshake.
/// A real client on any network finishes in a few round trips; a peer that
/// has not in 10 s is stalling, and is holding a connection slot.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on handshakes in progress (past the `ClientHello`, doing
/// the key exchange and waiting for the client's `Finished`).
///
/// 1024: a full ECDSA P-256 handshake costs a core ~0.2-0.5 ms, so even
/// several thousand handshakes a second over a 100 ms round trip keep a few
/// hundred in progress: well-behaved load never waits. What it bounds is
/// the state of peers that stall after their `ClientHello` (rustls' handshake
/// buffers, some KiB each: at most a few MiB in all). Peers that stall
/// *before* completing a `ClientHello` hold no permit at all (it is read
/// first), so a flood of half-open clients cannot use them up; they hold
/// only their connection slot, until the handshake deadline.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

/// Default size of the stateful session cache (sessions resumed by id,
/// for TLS 1.2 clients without ticket support): ~100 bytes each.
pub const DEFAULT_SESSION_CACHE: usize = 4096;

/// The lowest TLS version a server accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Where a certificate and its key came from: files are re-read on reload.
#[derive(Debug, Clone)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Memory,
}

/// One certificate chain with its key, and the DNS names it serves.
#[derive(Clone)]
struct Identity {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    fingerprint: String,
    source: Source,
}

/// Client certificate authorities for mutual TLS.
#[derive(Clone)]
struct ClientCa {
    roots: Arc<rustls::RootCertStore>,
    path: Option<PathBuf>,
}

/// A TLS server configuration: certificates (one default, others chosen
/// by SNI), client CAs for mutual TLS, ALPN, versions, session resumption,
/// and the handshake's deadline and cap. Hand it to
/// [`ServerBuilder::tls`](crate::server::ServerBuilder::tls).
///
/// ```
/// use tcpkit::tls::{TlsConfig, TlsVersion};
/// let (config, fingerprint) = TlsConfig::self_signed(&["localhost"])?;
/// let config = config.alpn(["h2", "http/1.1"]).min_version(TlsVersion::Tls13);
/// assert_eq!(config.fingerprint(), fingerprint);
/// assert!(config.warnings().is_empty());
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    /// The first is the default (no SNI, or no name matched).
    identities: Vec<Identity>,
    client_ca: Option<ClientCa>,
    alpn: Vec<Vec<u8>>,
    min_version: TlsVersion,
    session_tickets: bool,
    session_cache: usize,
    handshake_timeout: Duration,
    max_handshakes: usize,
    warnings: Vec<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "certificates",
                &self
                    .identities
                    .iter()
                    .map(|i| (&i.names, &i.fingerprint))
                    .collect::<Vec<_>>(),
            )
            .field("mutual", &self.client_ca.is_some())
            .field("alpn", &self.alpn)
            .field("min_version", &self.min_version)
            .field("session_tickets", &self.session_tickets)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_handshakes", &self.max_handshakes)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsConfig {
    fn with_default(identity: Identity, warnings: Vec<String>) -> TlsConfig {
        TlsConfig {
            identities: vec![identity],
            client_ca: None,
            alpn: Vec::new(),
            min_version: TlsVersion::Tls12,
            session_tickets: true,
            session_cache: DEFAULT_SESSION_CACHE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            warnings,
        }
    }

    /// A certificate chain (PEM, leaf first) and its private key (PEM) from
    /// files. Errors name the file: missing (with the OS code), not PEM,
    /// or a key that does not match the certificate
    /// ([`ErrorKind::BadCertificateFile`], naming both). A certificate
    /// outside its validity dates loads, with a warning
    /// ([`TlsConfig::warnings`]) giving the date.
    pub fn from_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<TlsConfig> {
        let (identity, warnings) = Identity::from_files(cert.as_ref(), key.as_ref())?;
        Ok(TlsConfig::with_default(identity, warnings))
    }

    /// As [`TlsConfig::from_files`], from PEM text in memory.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig> {
        let (identity, warnings) = Identity::from_pem(cert_pem, key_pem)?;
        Ok(TlsConfig::with_default(identity, warnings))
    }

    /// An ephemeral self-signed certificate (ECDSA P-256, made now with
    /// rcgen) for `names` (DNS names or IP addresses), and its SHA-256
    /// fingerprint for clients to pin.
    pub fn self_signed(names: &[&str]) -> Result<(TlsConfig, String)> {
        let rcgen_error = |e: rcgen::Error| {
            Error::new(
                ErrorKind::Tls,
                code::TLS,
                format!("make a self-signed certificate for {names:?}: {e}"),
            )
        };
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).map_err(rcgen_error)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tcpkit self-signed");
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let config = TlsConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
        let fp = config.fingerprint().to_owned();
        Ok((config, fp))
    }

    /// Adds a certificate and key (files) served to clients that ask for
    /// one of the certificate's DNS names by SNI (wildcards match one
    /// label). The first certificate stays the default.
    pub fn with_sni_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let (identity, warnings) = Identity::from_files(cert.as_ref(), key.as_ref())?;
        self.identities.push(identity);
        self.warnings.extend(warnings);
        Ok(self)
    }

    /// As [`TlsConfig::with_sni_files`], from PEM text.
    pub fn with_sni_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let (identity, warnings) = Identity::from_pem(cert_pem, key_pem)?;
        self.identities.push(identity);
        self.warnings.extend(warnings);
        Ok(self)
    }

    /// Mutual TLS: every client must present a certificate that chains to
    /// one in this PEM file. Errors name the file.
    pub fn client_ca_file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let roots = roots(load_certs(path)?, &path.display().to_string())?;
        self.client_ca = Some(ClientCa {
            roots,
            path: Some(path.to_owned()),
        });
        Ok(self)
    }

    /// As [`TlsConfig::client_ca_file`], from PEM text.
    pub fn client_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        let roots = roots(certs_from_pem(pem, "client CA")?, "client CA")?;
        self.client_ca = Some(ClientCa { roots, path: None });
        Ok(self)
    }

    /// ALPN protocols the server offers, in its order of preference. A
    /// client that offers ALPN but none of these is refused.
    pub fn alpn<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// The lowest version accepted (default: TLS 1.2).
    pub fn min_version(mut self, version: TlsVersion) -> Self {
        self.min_version = version;
        self
    }

    /// Session tickets (stateless resumption); on by default.
    pub fn session_tickets(mut self, on: bool) -> Self {
        self.session_tickets = on;
        self
    }

    /// Sessions kept for resumption by id (0: none).
    pub fn session_cache(mut self, sessions: usize) -> Self {
        self.session_cache = sessions;
        self
    }

    /// The deadline from accept to the end of the handshake.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The most handshakes past their `ClientHello` at once (at least 1);
    /// more wait, within their deadline.
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// The default certificate's SHA-256 fingerprint ([`super::fingerprint`]).
    pub fn fingerprint(&self) -> &str {
        &self.identities[0].fingerprint
    }

    /// What loading found suspicious but not fatal (a certificate outside
    /// its validity dates), one sentence each naming the input and date.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The same configuration with every file read again (memory and
    /// self-signed certificates are kept as they are).
    pub fn reread(&self) -> Result<TlsConfig> {
        let mut next = self.clone();
        next.warnings.clear();
        for identity in &mut next.identities {
            if let Source::Files { cert, key } = &identity.source {
                let (fresh, warnings) = Identity::from_files(cert, key)?;
                *identity = fresh;
                next.warnings.extend(warnings);
            }
        }
        if let Some(ClientCa {
            path: Some(path), ..
        }) = &self.client_ca
        {
            next = next.client_ca_file(path.clone())?;
        }
        Ok(next)
    }

    /// The rustls configuration, sharing `resume`'s cache and ticket keys.
    fn build(&self, resume: &Resumption) -> Result<Arc<rustls::ServerConfig>> {
        let provider = provider();
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| super::tls_error(&e, "TLS versions"))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    ca.roots.clone(),
                    provider,
                )
                .build()
                .map_err(|e| {
                    Error::new(
                        ErrorKind::BadCertificateFile,
                        code::BAD_CERTIFICATE_FILE,
                        format!("client CA {}: {e}", ca.describe()),
                    )
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
            identities: self.identities.clone(),
        }));
        config.alpn_protocols = self.alpn.clone();
        config.session_storage = resume.cache.clone();
        if self.session_tickets {
            config.ticketer = resume.ticketer.clone();
        } else {
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}

impl ClientCa {
    fn describe(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(PEM)".to_owned(), |p| p.display().to_string())
    }
}

fn roots(certs: Vec<CertificateDer<'static>>, what: &str) -> Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| bad_file(what, format_args!("not a usable CA certificate ({e})")))?;
    }
    Ok(Arc::new(store))
}

impl Identity {
    fn from_files(cert: &Path, key: &Path) -> Result<(Identity, Vec<String>)> {
        let certs = load_certs(cert)?;
        let key_der = super::load_key(key)?;
        let what = format!("certificate {} with key {}", cert.display(), key.display());
        let mut made = Identity::new(certs, key_der, &what, &cert.display().to_string())?;
        made.0.source = Source::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        Ok(made)
    }

    fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<(Identity, Vec<String>)> {
        let certs = certs_from_pem(cert_pem, "certificate (PEM)")?;
        let key = key_from_pem(key_pem, "private key (PEM)")?;
        Identity::new(
            certs,
            key,
            "certificate (PEM) with its key",
            "certificate (PEM)",
        )
    }

    /// `pair` names the certificate and key together (for a mismatch),
    /// `cert_name` the certificate alone (for dates).
    fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        pair: &str,
        cert_name: &str,
    ) -> Result<(Identity, Vec<String>)> {
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad_file(pair, format_args!("unusable private key ({e})")))?;
        let certified = CertifiedKey::new(certs, signing);
        match certified.keys_match() {
            Ok(()) => {}
            // A key type whose public half rustls cannot derive: the
            // handshake will tell.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(bad_file(
                    pair,
                    format_args!("the private key does not match the certificate"),
                ));
            }
            Err(e) => return Err(bad_file(pair, format_args!("{e}"))),
        }
        let leaf = certified.cert[0].clone();
        let (names, warnings) = inspect(&leaf, cert_name)?;
        Ok((
            Identity {
                key: Arc::new(certified),
                names,
                fingerprint: fingerprint(&leaf),
                source: Source::Memory,
            },
            warnings,
        ))
    }
}

/// The leaf's DNS names (for SNI) and a warning if today is outside its
/// validity dates.
fn inspect(leaf: &[u8], what: &str) -> Result<(Vec<String>, Vec<String>)> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| bad_file(what, format_args!("not a valid X.509 certificate ({e})")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let mut warnings = Vec::new();
    if now > validity.not_after {
        warnings.push(format!(
            "{what}: certificate expired on {} (clients will refuse it)",
            validity.not_after
        ));
    } else if now < validity.not_before {
        warnings.push(format!(
            "{what}: certificate not valid before {} (clients will refuse it)",
            validity.not_before
        ));
    }
    Ok((names, warnings))
}

/// Picks a certificate by the name the client asked for (SNI), the first
/// one otherwise.
#[derive(Clone)]
struct SniResolver {
    identities: Vec<Identity>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl SniResolver {
    fn choose(&self, server_name: Option<&str>) -> &Identity {
        let found = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.identities
                .iter()
                .find(|i| i.names.iter().any(|n| n == &name))
                .or_else(|| {
                    self.identities
                        .iter()
                        .find(|i| i.names.iter().any(|n| wildcard_matches(n, &name)))
                })
        });
        found.unwrap_or(&self.identities[0])
    }
}

/// `*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && rest == suffix,
        _ => false,
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(client_hello.server_name()).key.clone())
    }
}

/// What a finished server handshake settled.
pub(crate) fn server_info(conn: &rustls::ServerConnection) -> crate::service::TlsInfo {
    let mut info = crate::service::TlsInfo::default();
    if let Some(v) = conn.protocol_version() {
        info.version = format!("{v:?}");
    }
    if let Some(suite) = conn.negotiated_cipher_suite() {
        info.cipher_suite = format!("{:?}", suite.suite());
    }
    info.alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    info.server_name = conn.server_name().map(str::to_owned);
    info.peer_certificate_subject = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| subject(leaf));
    info.resumed = matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    info
}

/// A certificate's subject, as `CN=alice, O=example`.
pub fn subject(der: &[u8]) -> Option<String> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, cert)| cert.subject().to_string())
}

/// What survives reloads so clients resume across them.
struct Resumption {
    cache: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

/// The TLS state a running server shares between its connections and its
/// [`TlsReloader`]s.
pub(crate) struct Live {
    current: RwLock<(TlsConfig, Arc<rustls::ServerConfig>)>,
    resume: Resumption,
    pub(crate) handshakes: Arc<tokio::sync::Semaphore>,
    pub(crate) handshake_timeout: Duration,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Live {
    /// Builds the rustls configuration (errors here, at bind).
    pub(crate) fn new(config: TlsConfig) -> Result<Live> {
        let cache: Arc<dyn StoresServerSessions> = if config.session_cache > 0 {
            rustls::server::ServerSessionMemoryCache::new(config.session_cache)
        } else {
            Arc::new(rustls::server::NoServerSessionStorage {})
        };
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| super::tls_error(&e, "session ticket keys"))?;
        let resume = Resumption { cache, ticketer };
        let built = config.build(&resume)?;
        Ok(Live {
            handshakes: Arc::new(tokio::sync::Semaphore::new(config.max_handshakes)),
            handshake_timeout: config.handshake_timeout,
            current: RwLock::new((config, built)),
            resume,
        })
    }

    /// The configuration new handshakes use.
    pub(crate) fn rustls(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(current) => current.1.clone(),
            // A panic while swapping cannot leave a half-written pair (the
            // swap is one assignment): the value is whole.
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    fn swap(&self, config: TlsConfig) -> Result<Vec<String>> {
        let built = config.build(&self.resume)?;
        let warnings = config.warnings.clone();
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = (config, built);
        Ok(warnings)
    }

    fn config(&self) -> TlsConfig {
        match self.current.read() {
            Ok(current) => current.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }
}

/// Swaps new certificates into a running server
/// ([`Server::tls_reloader`](crate::server::Server::tls_reloader)): new
/// handshakes use them, open connections keep theirs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    pub(crate) live: Arc<Live>,
}

impl TlsReloader {
    /// Reads every certificate, key and client CA file again and, if all
    /// load and check, serves them from the next handshake on. On error the
    /// configuration in force stays, and the error names the file. Returns
    /// the new configuration's warnings (an expired certificate).
    pub fn reload(&self) -> Result<Vec<String>> {
        let next = self.live.config().reread()?;
        self.live.swap(next)
    }

    /// Serves `config`'s certificates, client CAs and ALPN from the next
    /// handshake on (the handshake deadline and cap stay as they are).
    pub fn reload_with(&self, config: TlsConfig) -> Result<Vec<String>> {
        self.live.swap(config)
    }

    /// The default certificate's fingerprint now in force.
    pub fn fingerprint(&self) -> String {
        self.live.config().fingerprint().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(names: &[&str]) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("rcgen");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_key_that_does_not_match_names_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, _) = pem_pair(&["a.test"]);
        let (_, other_key) = pem_pair(&["b.test"]);
        let (c, k) = (dir.path().join("a.pem"), dir.path().join("b.key"));
        std::fs::write(&c, cert).expect("write");
        std::fs::write(&k, other_key).expect("write");
        let err = TlsConfig::from_files(&c, &k).expect_err("mismatch");
        assert_eq!(err.kind(), ErrorKind::BadCertificateFile);
        assert_eq!(err.code(), code::BAD_CERTIFICATE_FILE);
        assert!(err.message().contains("a.pem"), "{err}");
        assert!(err.message().contains("b.key"), "{err}");
        assert!(err.message().contains("does not match"), "{err}");
    }

    #[test]
    fn an_expired_certificate_loads_with_a_dated_warning() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["old.test".to_owned()]).expect("p");
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 3, 4);
        let cert = params.self_signed(&key).expect("cert");
        let config = TlsConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .expect("loads");
        assert_eq!(config.warnings().len(), 1, "{:?}", config.warnings());
        assert!(
            config.warnings()[0].contains("expired"),
            "{:?}",
            config.warnings()
        );
        assert!(
            config.warnings()[0].contains("2002"),
            "{:?}",
            config.warnings()
        );
        // A fresh one has none.
        let (fresh, _) = TlsConfig::self_signed(&["localhost"]).expect("self-signed");
        assert!(fresh.warnings().is_empty());
    }

    #[test]
    fn sni_picks_by_name_and_falls_back_to_the_first() {
        let (a, ak) = pem_pair(&["a.test"]);
        let (b, bk) = pem_pair(&["b.test", "*.wild.test"]);
        let config = TlsConfig::from_pem(a.as_bytes(), ak.as_bytes())
            .and_then(|c| c.with_sni_pem(b.as_bytes(), bk.as_bytes()))
            .expect("config");
        let r = SniResolver {
            identities: config.identities.clone(),
        };
        let fp = |name| r.choose(name).fingerprint.clone();
        let (fa, fb) = (
            config.identities[0].fingerprint.clone(),
            config.identities[1].fingerprint.clone(),
        );
        assert_ne!(fa, fb);
        assert_eq!(fp(Some("B.test")), fb);
        assert_eq!(fp(Some("x.wild.test")), fb);
        assert_eq!(fp(Some("x.y.wild.test")), fa);
        assert_eq!(fp(Some("a.test")), fa);
        assert_eq!(fp(Some("other.test")), fa);
        assert_eq!(fp(None), fa);
    }

    #[test]
    fn self_signed_fingerprint_is_the_served_certificate() {
        let (config, fp) = TlsConfig::self_signed(&["localhost", "127.0.0.1"]).expect("made");
        assert_eq!(fingerprint(&config.identities[0].key.cert[0]), fp);
        assert_eq!(config.identities[0].names, vec!["localhost".to_owned()]);
    }
}
