//! The relay: a [`Service`] that connects every accepted client to an
//! upstream and copies bytes both ways until both sides are done.
//!
//! Because it is a service, the server's machinery applies unchanged: the
//! connection limit, TLS termination, the PROXY protocol, access lists,
//! metrics, graceful shutdown (pairs drain within the grace period) and
//! handover. Clients come over TCP, or over a UNIX-domain socket
//! ([`ServerBuilder::listen_unix`](crate::server::ServerBuilder::listen_unix),
//! `tcpkit relay --listen unix:PATH`): such a client has no address, so
//! the upstream is told the unspecified `0.0.0.0:0` ([`SendProxy`] sends
//! `LOCAL` / `UNKNOWN` for it) and logs name it `unix:PATH`. What is the
//! relay's own:
//!
//! * [`upstream`]: where to connect ([`Upstream`], with [`Fixed`] for one
//!   `HOST:PORT`), each connect under its own deadline;
//! * edges on the upstream side, each an [`Upstream`] of its own: [`Unix`]
//!   (a UNIX socket upstream, `--to unix:PATH`), [`SendProxy`] (a PROXY header with the client's address
//!   first), `ToTls` (TLS towards the upstream, feature `tls`), and
//!   [`Either`] to put two kinds in one list or turn a decorator on by a
//!   flag;
//! * [`pair`]: the two-way copy (half-close carried each way, resets
//!   passed on, idle = both ways quiet). A TCP ⇄ TCP pair holds no buffer
//!   while idle and, on Linux, moves bulk transfers with `splice(2)`
//!   through pipes lent by `splice` (a bounded pool: see its fd budget).
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
#[cfg(target_os = "linux")]
pub mod splice;
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

/// The pair limit the process's descriptor limit allows, the relay's
/// default `max_connections`: each pair holds two sockets, and on Linux up
/// to [`splice::MAX_PIPES`] pipes (two descriptors each) exist beside them,
/// so it is (soft `RLIMIT_NOFILE` − the server's reserve − the pipes) / 2,
/// not the one-descriptor-per-connection figure of
/// [`default_max_connections`](crate::server::default_max_connections)
/// (with it, pairs past half the limit would fail their upstream connect
/// with `EMFILE` instead of being refused at accept).
pub fn default_max_pairs() -> usize {
    #[cfg(target_os = "linux")]
    let pipe_fds = 2 * splice::MAX_PIPES;
    #[cfg(not(target_os = "linux"))]
    let pipe_fds = 0;
    let one_per_connection = crate::server::default_max_connections();
    (one_per_connection.saturating_sub(pipe_fds) / 2).max(1)
}

/// Forwards every connection to an [`Upstream`].
#[derive(Debug)]
pub struct Relay<U> {
    upstream: Arc<U>,
    buf_bytes: usize,
    splice: bool,
}

impl<U: Upstream> Relay<U> {
    /// A relay to `upstream` reading [`BUF_BYTES`] at a time, with
    /// `splice(2)` on (Linux).
    pub fn new(upstream: U) -> Relay<U> {
        Relay {
            upstream: Arc::new(upstream),
            buf_bytes: BUF_BYTES,
            splice: true,
        }
    }

    /// Bytes per read (at least 1): the most a direction of a pair holds
    /// for a side that does not read. A TCP ⇄ TCP pair holds them only
    /// while they are in flight (none while idle); other pairs (TLS, UNIX)
    /// keep one such buffer per direction for their whole life. A Linux
    /// TCP ⇄ TCP direction moving bulk holds up to a pipe's worth (64 KiB,
    /// kernel memory) instead.
    pub fn with_buffer(mut self, bytes: usize) -> Relay<U> {
        self.buf_bytes = bytes.max(1);
        self
    }

    /// Whether TCP ⇄ TCP bulk transfers may go through `splice(2)` (Linux
    /// only; on by default, ignored elsewhere). Off, every byte is copied
    /// through the worker thread's buffer.
    pub fn with_splice(mut self, on: bool) -> Relay<U> {
        self.splice = on;
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
        let limits = pair::Limits {
            idle_timeout: conn.idle_timeout,
            buf_bytes: self.buf_bytes,
            splice: self.splice,
        };
        serve_pair(upstream, limits, conn)
    }
}

async fn serve_pair<U: Upstream>(
    upstream: Arc<U>,
    limits: pair::Limits,
    conn: Connection,
) -> Served {
    let Connection {
        mut stream,
        peer,
        unix,
        id,
        shutdown,
        metrics,
        ..
    } = conn;
    // Boxed: the connect future (resolution, Happy Eyeballs) is large and
    // lives only until the upstream answers; unboxed, every idle pair's
    // task would keep room for it. `_lease` lives as long as the pair: a
    // balancer counts it.
    let (mut up, _lease) = match Box::pin(upstream.connect_leased(&peer, Some(&metrics))).await {
        Ok(leased) => leased,
        Err(e) => {
            tracing::warn!(peer = %client(peer, &unix), id, upstream = %upstream.describe(), "upstream connect failed: {e}");
            // Dropping the client's socket closes it now; the reason goes to
            // the close line through `Served`.
            return Served {
                bytes_in: 0,
                bytes_out: 0,
                reason: CloseReason::Error(e),
            };
        }
    };
    tracing::debug!(peer = %client(peer, &unix), id, upstream = %up.peer, "upstream connected");
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
            let client = client(peer, &unix);
            let (verb, whom): (_, &dyn std::fmt::Display) = match (reading, side) {
                (true, Side::Client) => ("read from client", &client),
                (false, Side::Client) => ("write to client", &client),
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

/// What logs and errors name the client by: its IP endpoint, or
/// `unix:PATH` for a client of a UNIX listener (kept apart until needed:
/// an idle pair's future holds the two small fields, not an [`Address`]).
///
/// [`Address`]: crate::endpoint::Address
fn client(
    peer: crate::endpoint::Endpoint,
    unix: &Option<Arc<std::path::PathBuf>>,
) -> crate::endpoint::Address {
    match unix {
        Some(path) => crate::endpoint::Address::Unix(path.to_path_buf()),
        None => peer.into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every idle pair is one such task: the connect future and the
    /// portable (non-TCP) copy are boxed, and the TCP copy holds no buffer,
    /// so the pair's future stays small (measured 1,456 bytes in a debug
    /// build with the balancer's lease held, 1,480 with the UNIX client's
    /// path beside the peer; 1,536 with the portable copy
    /// inline, far more with the connect future inline).
    #[tokio::test]
    async fn an_idle_pair_future_is_small() {
        let (conn, _client) = crate::service::loopback_connection().await;
        // Never polled, so never dialled: a port bound and released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let target =
            crate::endpoint::HostPort::parse(&format!("127.0.0.1:{port}")).expect("target");
        let relay = Relay::new(Fixed::new(target, Duration::from_secs(1)));
        let fut = relay.serve(conn);
        let size = std::mem::size_of_val(&fut);
        eprintln!("relay pair future: {size} bytes");
        assert!(size <= 1500, "{size} bytes");
    }
}
