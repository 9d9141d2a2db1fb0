//! [`ToTls`]: TLS towards the upstream (`tcpkit relay --to-tls`), over
//! whatever stream the wrapped upstream connected (TCP or a UNIX socket).

use super::{Connected, Upstream};
use crate::endpoint::Endpoint;
use crate::error::Result;
use crate::service::Stream;
use crate::tls::TlsConnector;

/// Wraps an upstream: once it is connected (and after a PROXY header, if
/// [`SendProxy`](super::SendProxy) is inside), runs the TLS handshake with
/// `connector` and hands the pair the TLS stream. A refused certificate or
/// a failed handshake is a failed upstream connect: the client is closed
/// and the reason logged and counted, as for a refused connect.
///
/// The name verified (and sent as SNI) is the connector's
/// [`server_name`](crate::tls::TlsClientConfig::server_name) if it has one,
/// else the name given to [`with_name`](Self::with_name) (the upstream's
/// host name), else the upstream's IP address; a UNIX socket upstream has
/// no address to verify, so it needs one of the first two.
///
/// Half-close over TLS: the client's FIN becomes `close_notify` and a FIN
/// towards the upstream, and the upstream's `close_notify` + FIN a FIN to
/// the client.
#[derive(Debug, Clone)]
pub struct ToTls<U> {
    inner: U,
    connector: TlsConnector,
    name: Option<String>,
}

impl<U: Upstream> ToTls<U> {
    /// TLS with `connector` over every connection `inner` makes.
    pub fn new(inner: U, connector: TlsConnector) -> ToTls<U> {
        ToTls {
            inner,
            connector,
            name: None,
        }
    }

    /// The name to verify when the connector names none (e.g. the host
    /// name of `--to`).
    pub fn with_name(mut self, name: impl Into<String>) -> ToTls<U> {
        self.name = Some(name.into());
        self
    }

    /// The wrapped upstream.
    pub fn inner(&self) -> &U {
        &self.inner
    }
}

impl<U: Upstream> Upstream for ToTls<U> {
    async fn connect(&self, client: &Endpoint) -> Result<Connected> {
        let up = self.inner.connect(client).await?;
        let tls = self
            .connector
            .connect_over(up.stream, &up.peer, self.name.as_deref())
            .await?;
        Ok(Connected {
            stream: Stream::other(tls),
            peer: up.peer,
        })
    }

    fn describe(&self) -> String {
        format!("{} (TLS)", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::ErrorKind;
    use crate::relay::Unix;
    use crate::tls::TlsClientConfig;

    /// A UNIX socket upstream has no address to verify a certificate by:
    /// without a name the connect fails before any handshake byte, naming
    /// the socket.
    #[tokio::test]
    async fn a_unix_upstream_without_a_name_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tls.sock");
        let _listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let connector = TlsClientConfig::new()
            .insecure()
            .build()
            .expect("connector");
        let up = ToTls::new(Unix::new(&path, Duration::from_secs(5)), connector);
        assert!(
            up.describe().ends_with("tls.sock (TLS)"),
            "{}",
            up.describe()
        );
        let err = up
            .connect(&Endpoint::loopback_v4(1))
            .await
            .expect_err("no name to verify");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        assert!(err.message().contains("unix:"), "{err}");
    }
}
