//! [`Upstream`]: where a relayed client's bytes go.
//!
//! The relay asks its upstream for one connected socket per client and
//! knows nothing else about it. [`Fixed`] is the one-target chooser (one
//! `HOST:PORT`, resolved at every connect so a changed name is followed);
//! [`Balanced`](super::Balanced) chooses among several of any `Upstream`
//! and implements the same trait.
//!
//! Re-resolution schedule: a name is resolved at every connect, the
//! client's and (with active health checks) each check's, through the
//! [`Connector`]'s resolver, within the connect deadline. There is no cache
//! of our own; a caching resolver on the host (nscd, systemd-resolved)
//! applies its TTLs.

use std::future::Future;
use std::time::Duration;

use crate::client::{ConnectOptions, Connector};
use crate::endpoint::{Address, Endpoint, HostPort};
use crate::error::Result;
use crate::service::Stream;

/// Chooses and connects the upstream for one client.
///
/// A decorator (PROXY header towards the upstream, TLS origination) wraps
/// any `Upstream` and implements it again; [`Balanced`](super::Balanced)
/// goes outermost, over the decorated targets. Only `connect` and
/// `describe` are required; the other methods have defaults a balancer
/// overrides.
pub trait Upstream: Send + Sync + 'static {
    /// Connects to an upstream for `client` (a balancer may hash it),
    /// within the chooser's own deadline. Dropping the future closes any
    /// pending attempt.
    fn connect(&self, client: &Endpoint) -> impl Future<Output = Result<Connected>> + Send;

    /// What the relay forwards to, for logs and the `listening on` line.
    fn describe(&self) -> String;

    /// [`Upstream::connect`], plus a [`Lease`](super::Lease) the relay
    /// holds while the pair lives (a balancer counts live pairs with it:
    /// `least-conn`), counting failures into `metrics` if given: the one
    /// the relay calls. The default has no lease and counts a failure once
    /// in [`Snapshot::upstream_connect_failures`](crate::metrics::Snapshot)
    /// and once in [`Snapshot::no_upstream`](crate::metrics::Snapshot); a
    /// balancer counts each failed attempt.
    fn connect_leased(
        &self,
        client: &Endpoint,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> impl Future<Output = Result<(Connected, Option<super::Lease>)>> + Send {
        async move {
            match self.connect(client).await {
                Ok(connected) => Ok((connected, None)),
                Err(e) => {
                    if let Some(m) = metrics {
                        m.upstream_connect_failed();
                        m.no_upstream();
                    }
                    Err(e)
                }
            }
        }
    }

    /// An active health check: whether a connect succeeds now. The default
    /// connects (for an unspecified client, `0.0.0.0:0`) and closes at
    /// once; a decorator that would send something on behalf of a client
    /// (a PROXY header) may override it to send v2 `LOCAL` or to check its
    /// inner upstream only.
    fn check(&self) -> impl Future<Output = Result<()>> + Send {
        async move { self.connect(&Endpoint::any_v4(0)).await.map(drop) }
    }

    /// Work to run beside the relay for as long as it serves, for the
    /// caller to spawn (a balancer's active health checks). Default: none.
    fn background(&self) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> {
        None
    }
}

/// An upstream connection and where it went.
#[derive(Debug)]
pub struct Connected {
    /// The connected stream: [`Stream::Tcp`] for a TCP upstream
    /// (`TCP_NODELAY` set: the relay forwards what it reads at once and must
    /// not add Nagle's delay to a small reply), [`Stream::Other`] for
    /// anything wrapped (TLS, a UNIX socket).
    pub stream: Stream,
    /// The address that answered (an IP endpoint, or a UNIX socket path).
    pub peer: Address,
}

/// One `HOST:PORT` upstream, connected through the [`Connector`] that
/// `tcpkit connect` uses (every resolved address, IPv6 and IPv4 raced).
#[derive(Debug, Clone)]
pub struct Fixed {
    target: HostPort,
    connector: Connector,
}

impl Fixed {
    /// Forwards to `target`, each connect (resolution included) bounded by
    /// `connect_timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tcpkit::endpoint::HostPort;
    /// use tcpkit::relay::{Fixed, Upstream};
    /// let up = Fixed::new(HostPort::parse("127.0.0.1:8080")?, Duration::from_secs(5));
    /// assert_eq!(up.describe(), "127.0.0.1:8080");
    /// # Ok::<(), tcpkit::Error>(())
    /// ```
    pub fn new(target: HostPort, connect_timeout: Duration) -> Fixed {
        let options = ConnectOptions {
            attempt_timeout: Some(connect_timeout),
            overall_timeout: Some(connect_timeout),
            ..ConnectOptions::default()
        };
        Fixed {
            target,
            connector: Connector::new().with_options(options),
        }
    }

    /// Uses `connector` (its resolver and options) instead of the default.
    pub fn with_connector(mut self, connector: Connector) -> Fixed {
        self.connector = connector;
        self
    }
}

impl Upstream for Fixed {
    async fn connect(&self, _client: &Endpoint) -> Result<Connected> {
        // No `getsockname(2)`: the relay never uses its local address.
        let (stream, peer) = self
            .connector
            .connect_host_port_stream(&self.target)
            .await?;
        // Best effort: a relay without it still relays, only slower for
        // small messages.
        let _ = stream.set_nodelay(true);
        Ok(Connected {
            stream: Stream::Tcp(stream),
            peer: peer.into(),
        })
    }

    fn describe(&self) -> String {
        self.target.to_string()
    }
}
