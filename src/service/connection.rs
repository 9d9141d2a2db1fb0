//! [`Connection`]: what a [`Service`](super::Service) is given, and the
//! timing constants services share.
//!
//! It lives on the service side so that the dependency runs one way: the
//! server builds connections and runs services, services know nothing of
//! the server.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Stream;
use crate::codec::DEFAULT_MAX_LINE;
use crate::endpoint::{Address, Endpoint};
use crate::metrics::Metrics;

/// After shutdown is requested, a connection that has been quiet this long is
/// considered drained: data still in flight on a live connection keeps
/// arriving well within it, an idle `nc` does not hold shutdown for the whole
/// grace period.
pub const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// Stands in for "no idle timeout": far enough to never fire, near enough for
/// tokio's timer wheel (about two years).
pub(crate) const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A connection, handed to [`Service::serve`](super::Service::serve).
///
/// The server builds one per accepted socket; [`Connection::new`] builds one
/// over any stream (TLS, an in-memory pipe in tests), to run a service
/// without a server.
#[derive(Debug)]
#[non_exhaustive]
pub struct Connection {
    /// The connected stream (an accepted TCP socket has `TCP_NODELAY` set).
    pub stream: Stream,
    /// The client's endpoint: the one a PROXY protocol header carried
    /// (`ServerBuilder::proxy_protocol`), or else the TCP peer. This is the
    /// address logged, counted and checked against access lists.
    ///
    /// A client of a UNIX-domain listener has no IP address: `peer`,
    /// `tcp_peer` and `local` are then the unspecified `0.0.0.0:0` (the
    /// "no client address" an [`Upstream`](crate::relay::Upstream) is also
    /// given for a health check) and [`unix`](Self::unix) is set; log
    /// [`client`](Self::client) rather than `peer`.
    pub peer: Endpoint,
    /// The socket's own peer (`getpeername(2)`): the balancer when a PROXY
    /// header named someone else, otherwise the same as `peer`.
    pub tcp_peer: Endpoint,
    /// The local endpoint the client reached.
    pub local: Endpoint,
    /// A number unique within the server, from 1 (chat's default `user<N>`).
    pub id: u64,
    /// Cancelled when the server starts shutting down: finish in-flight data,
    /// then return. The server closes what is left after its grace period.
    pub shutdown: CancellationToken,
    /// The server's idle timeout (`None`: none).
    pub idle_timeout: Option<Duration>,
    /// The server's maximum line length, for line-based services.
    pub max_line: usize,
    /// The server's counters (services update the backpressure gauge and
    /// slow-consumer count; byte counts are added at close, or when the
    /// service is dropped unfinished).
    pub metrics: Arc<Metrics>,
    /// What the TLS handshake settled, when the stream is TLS (`None` for
    /// plain TCP). Boxed: a plain connection pays one pointer for it.
    pub tls: Option<Box<TlsInfo>>,
    /// The socket path of the UNIX-domain listener the client came in on
    /// ([`Listen::Unix`](crate::server::Listen::Unix)); `None` over TCP.
    pub unix: Option<Arc<std::path::PathBuf>>,
}

/// What a TLS handshake settled, for services and logs that care (the
/// services built in do not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version, as rustls names it (`TLSv1_3`).
    pub version: String,
    /// The cipher suite, as rustls names it (`TLS13_AES_256_GCM_SHA384`).
    pub cipher_suite: String,
    /// The ALPN protocol agreed, if any.
    pub alpn: Option<Vec<u8>>,
    /// The name the client asked for (SNI), if any.
    pub server_name: Option<String>,
    /// Mutual TLS: the subject of the client's certificate (`CN=alice, O=..`).
    pub peer_certificate_subject: Option<String>,
    /// The session was resumed (ticket or session id), not a full handshake.
    pub resumed: bool,
}

impl Connection {
    /// A connection over `stream` with id 1, no idle timeout, the default
    /// maximum line, its own shutdown token and counters. Change the public
    /// fields to taste before serving it.
    ///
    /// ```
    /// use tcpkit::{Endpoint, service::{Connection, Stream}};
    /// let (ours, _theirs) = tokio::io::duplex(1024);
    /// let ep = Endpoint::loopback_v4(0);
    /// let mut conn = Connection::new(Stream::other(ours), ep, ep);
    /// conn.max_line = 80;
    /// assert_eq!(conn.id, 1);
    /// ```
    pub fn new(stream: impl Into<Stream>, peer: Endpoint, local: Endpoint) -> Connection {
        Connection {
            stream: stream.into(),
            peer,
            tcp_peer: peer,
            local,
            id: 1,
            shutdown: CancellationToken::new(),
            idle_timeout: None,
            max_line: DEFAULT_MAX_LINE,
            metrics: Arc::default(),
            tls: None,
            unix: None,
        }
    }

    /// Who the client is, for logs and messages: its IP endpoint (`peer`),
    /// or `unix:PATH` (the listener's path) for a client of a UNIX-domain
    /// listener, which has no address of its own.
    ///
    /// ```
    /// use tcpkit::{Endpoint, service::{Connection, Stream}};
    /// let (ours, _theirs) = tokio::io::duplex(1024);
    /// let ep = Endpoint::loopback_v4(7);
    /// let mut conn = Connection::new(Stream::other(ours), ep, ep);
    /// assert_eq!(conn.client().to_string(), "127.0.0.1:7");
    /// conn.unix = Some(std::sync::Arc::new("app.sock".into()));
    /// assert_eq!(conn.client().to_string(), "unix:app.sock");
    /// ```
    pub fn client(&self) -> Address {
        match &self.unix {
            Some(path) => Address::Unix(path.to_path_buf()),
            None => Address::Inet(self.peer),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// A real loopback connection for unit tests: the accepted side as a
    /// [`Connection`], and the client stream (keep it alive while testing).
    pub(crate) async fn loopback_connection() -> (Connection, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        (Connection::new(stream, peer.into(), addr.into()), client)
    }
}
