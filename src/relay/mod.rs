//! The relay: a [`Service`] that connects every accepted client to an
//! upstream and copies bytes both ways until both sides are done.
//!
//! Because it is a service, the server's machinery applies unchanged: the
//! connection limit, TLS termination, the PROXY protocol, access lists,
//! metrics, graceful shutdown (pairs drain within the grace period) and
//! handover. What is the relay's own:
//!
//! * [`upstream`]: where to connect ([`Upstream`], with [`Fixed`] as the
//!   one chooser today), each connect under its own deadline;
//! * edges, each an [`Upstream`] of its own: [`Unix`] (a UNIX socket
//!   upstream), [`SendProxy`] (a PROXY header with the client's address
//!   first), `ToTls` (TLS towards the upstream, feature `tls`), and
//!   [`Either`] to put two kinds in one list or turn a decorator on by a
//!   flag;
//! * [`pair`]: the two-way copy (half-close carried each way, resets
//!   passed on, one fixed buffer per direction, idle = both ways quiet).
//!
//! A client whose upstream cannot be reached is closed at once, counted
//! ([`Snapshot::upstream_connect_failures`](crate::metrics::Snapshot) per
//! failed connect, [`Snapshot::no_upstream`](crate::metrics::Snapshot) per
//! client) and its close logged with the reason.
//!
//! Several upstreams: [`Balanced`] ([`balance`]) puts any number of
//! [`Upstream`]s behind one (round-robin, least-conn, hash-source), with
//! passive and active health and a retry on another upstream when a
//! connect fails.
//!
//! ```no_run
//! # async fn f() -> tcpkit::Result<()> {
//! use std::time::Duration;
//! use tcpkit::endpoint::HostPort;
//! use tcpkit::relay::{Fixed, Relay};
//! use tcpkit::server::ServerBuilder;
//!
//! let upstream = Fixed::new(HostPort::parse("127.0.0.1:8080")?, Duration::from_secs(5));
//! let server = ServerBuilder::new().listen("127.0.0.1:9090".parse()?).bind()?;
//! server.run(Relay::new(upstream)).await?;
//! # Ok(()) }
//! ```

pub mod balance;
pub mod either;
pub mod pair;
pub mod send_proxy;
#[cfg(feature = "tls")]
pub mod to_tls;
pub mod unix;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub use balance::{BackendStatus, BalanceOptions, Balanced, Lease, Policy};
pub use either::Either;
pub use pair::{BUF_BYTES, Ended, Side};
pub use send_proxy::SendProxy;
#[cfg(feature = "tls")]
pub use to_tls::ToTls;
pub use unix::Unix;
pub use upstream::{Connected, Fixed, Upstream};

use crate::error::Error;
use crate::service::{CloseReason, Connection, Served, Service};

/// Forwards every connection to an [`Upstream`].
#[derive(Debug)]
pub struct Relay<U> {
    upstream: Arc<U>,
    buf_bytes: usize,
}

impl<U: Upstream> Relay<U> {
    /// A relay to `upstream` with [`BUF_BYTES`] per direction.
    pub fn new(upstream: U) -> Relay<U> {
        Relay {
            upstream: Arc::new(upstream),
            buf_bytes: BUF_BYTES,
        }
    }

    /// Bytes held per direction of each pair (at least 1): the most a pair
    /// buffers for a side that does not read.
    pub fn with_buffer(mut self, bytes: usize) -> Relay<U> {
        self.buf_bytes = bytes.max(1);
        self
    }

    /// The upstream chooser.
    pub fn upstream(&self) -> &U {
        &self.upstream
    }
}

impl<U: Upstream> Service for Relay<U> {
    fn name(&self) -> &'static str {
        "relay"
    }

    fn serve(&self, conn: Connection) -> impl Future<Output = Served> + Send + 'static {
        let upstream = self.upstream.clone();
        let buf_bytes = self.buf_bytes;
        serve_pair(upstream, buf_bytes, conn)
    }
}

async fn serve_pair<U: Upstream>(upstream: Arc<U>, buf_bytes: usize, conn: Connection) -> Served {
    let Connection {
        mut stream,
        peer,
        id,
        shutdown,
        idle_timeout,
        metrics,
        ..
    } = conn;
    // `_lease` lives as long as the pair: a balancer counts it.
    let (mut up, _lease) = match upstream.connect_leased(&peer, Some(&metrics)).await {
        Ok(leased) => leased,
        Err(e) => {
            tracing::warn!(%peer, id, upstream = %upstream.describe(), "upstream connect failed: {e}");
            // Dropping the client's socket closes it now; the reason goes to
            // the close line through `Served`.
            return Served {
                bytes_in: 0,
                bytes_out: 0,
                reason: CloseReason::Error(e),
            };
        }
    };
    tracing::debug!(%peer, id, upstream = %up.peer, "upstream connected");
    let limits = pair::Limits {
        idle_timeout,
        buf_bytes,
    };
    let moved = pair::Moved::default();
    let mut cut_off = CutOff {
        moved: &moved,
        metrics: &metrics,
        finished: false,
    };
    let ended = pair::copy(&mut stream, &mut up.stream, &limits, &shutdown, &moved).await;
    cut_off.finished = true;
    let reason = match ended {
        Ended::Done => CloseReason::PeerClosed,
        Ended::IdleTimeout => CloseReason::IdleTimeout,
        Ended::Shutdown => CloseReason::Shutdown,
        Ended::Failed {
            side,
            reading,
            error,
        } => {
            let (verb, whom): (_, &dyn std::fmt::Display) = match (reading, side) {
                (true, Side::Client) => ("read from client", &peer),
                (false, Side::Client) => ("write to client", &peer),
                (true, Side::Upstream) => ("read from upstream", &up.peer),
                (false, Side::Upstream) => ("write to upstream", &up.peer),
            };
            CloseReason::Error(Error::io(error, format_args!("relay: {verb} {whom}")))
        }
    };
    Served {
        bytes_in: moved.up.load(Relaxed),
        bytes_out: moved.down.load(Relaxed),
        reason,
    }
}

/// Counts what a pair moved when its future is dropped unfinished (the
/// server's grace period ran out): the server then counts only the close,
/// and the bytes would otherwise be lost from the metrics.
struct CutOff<'a> {
    moved: &'a pair::Moved,
    metrics: &'a crate::metrics::Metrics,
    finished: bool,
}

impl Drop for CutOff<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics
                .add_bytes(self.moved.up.load(Relaxed), self.moved.down.load(Relaxed));
        }
    }
}
