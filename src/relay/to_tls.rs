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
