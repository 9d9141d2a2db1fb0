//! One TLS handshake on an accepted stream, outside the server: `tcpkit
//! listen --tls`, a netcat-class listener with no accept loop, services or
//! handshake cap of its own. What it presents is the server's
//! [`TlsConfig`] (certificates, client CAs, ALPN, versions), built the
//! same way.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{Live, TlsConfig, handshake_error};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// A TLS server stream over TCP, as [`TlsAcceptor::accept`] returns it.
pub type ServerTlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A built server configuration for accepting peers one by one.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Builds `config` (errors as at a server's bind).
    pub fn new(config: TlsConfig) -> Result<TlsAcceptor> {
        let live = Live::new(config)?;
        Ok(TlsAcceptor {
            config: live.rustls(),
            handshake_timeout: live.handshake_timeout,
        })
    }

    /// The server side of the handshake over `stream`, within the
    /// configuration's handshake timeout. Errors name the peer: a refused
    /// client certificate is [`ErrorKind::Certificate`](crate::ErrorKind::Certificate),
    /// another failure [`ErrorKind::Tls`](crate::ErrorKind::Tls), the
    /// deadline [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut).
    /// Dropping the future closes the connection.
    pub async fn accept(&self, stream: TcpStream) -> Result<ServerTlsStream> {
        let peer = stream
            .peer_addr()
            .map(Endpoint::from)
            .map_err(|e| Error::io(e, "getpeername"))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(handshake_error(
                e,
                format_args!("TLS handshake with {peer}"),
            )),
            Err(_) => Err(Error::timed_out(
                format_args!("TLS handshake with {peer}"),
                self.handshake_timeout,
            )),
        }
    }
}
