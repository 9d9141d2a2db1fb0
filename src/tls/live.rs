//! A running server's TLS state: the configuration new handshakes use,
//! swapped whole by [`TlsReloader`] (open connections keep the one they
//! were made with), the resumption state that outlives reloads, and the
//! handshake cap.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ProducesTickets, StoresServerSessions};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsConfig;
use crate::error::{Error, ErrorKind, Result, code};

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
pub(super) struct Resumption {
    pub(super) cache: Arc<dyn StoresServerSessions>,
    pub(super) ticketer: Arc<dyn ProducesTickets>,
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
        if config.handshake_timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                "TLS handshake timeout must be more than 0",
            ));
        }
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
