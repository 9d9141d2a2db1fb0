//! The server side: [`TlsConfig`] (certificates, options, checks at load),
//! built into a rustls configuration when the server binds; reloads go
//! through [`TlsReloader`](super::TlsReloader) (`live.rs`).
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
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::identity::{Identity, SniResolver, Source, provider};
use super::live::Resumption;
use super::{bad_file, certs_from_pem, load_certs};
use crate::error::{Error, ErrorKind, Result, code};

/// Default handshake deadline: from accept to the end of the handshake.
/// A real client on any network finishes in a few round trips; a peer that
/// has not in 10 s is stalling, and is holding a connection slot.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on handshakes in progress (past the `ClientHello`, doing
/// the key exchange and waiting for the client's `Finished`).
///
/// 1024: handshakes in progress are the handshake rate times how long each
/// waits on its client (about a round trip after the server's flight):
/// 2,000 full handshakes a second over a 150 ms round trip keep about 300
/// in progress, so well-behaved load never waits. What it bounds is
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
    pub(super) session_cache: usize,
    pub(super) handshake_timeout: Duration,
    pub(super) max_handshakes: usize,
    pub(super) warnings: Vec<String>,
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

    /// The deadline from accept to the end of the handshake (more than 0:
    /// zero fails at bind).
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
    pub(super) fn build(&self, resume: &Resumption) -> Result<Arc<rustls::ServerConfig>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::fingerprint;

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
    fn a_zero_handshake_timeout_is_refused_at_bind() {
        let (config, _) = TlsConfig::self_signed(&["localhost"]).expect("made");
        let err = crate::server::ServerBuilder::new()
            .listen(crate::Endpoint::loopback_v4(0))
            .tls(config.handshake_timeout(Duration::ZERO))
            .bind()
            .expect_err("zero timeout");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("handshake timeout"), "{err}");
    }

    #[test]
    fn self_signed_fingerprint_is_the_served_certificate() {
        let (config, fp) = TlsConfig::self_signed(&["localhost", "127.0.0.1"]).expect("made");
        assert_eq!(fingerprint(&config.identities[0].key.cert[0]), fp);
        assert_eq!(config.identities[0].names, vec!["localhost".to_owned()]);
    }
}
