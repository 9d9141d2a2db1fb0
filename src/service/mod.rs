//! Services: what a connection does once accepted.
//!
//! A [`Service`] gets one call of [`Service::serve`] per accepted
//! [`Connection`] and returns what it moved and why it stopped ([`Served`]).
//! The built-in ones:
//!
//! * [`Echo`]: every byte back, in order (RFC 862), with backpressure.
//! * [`Discard`]: reads and counts (RFC 863).
//! * [`Chat`]: line-based rooms for `nc`/telnet users.
//!
//! Echo and discard share `pump`, the allocation-free read loop; chat and
//! the server's over-the-limit refusal close through [`linger`].
//!
//! A service is given a [`Connection`] over a [`Stream`]: a plain TCP
//! socket or any other async byte stream (TLS, a relay's upstream,
//! `tokio::io::duplex` in tests), so services run over either unchanged.

pub mod chat;
mod connection;
mod discard;
mod echo;
pub mod linger;
mod pump;
mod stream;

use std::fmt;
use std::future::Future;

pub use chat::Chat;
pub(crate) use connection::FOREVER;
#[cfg(test)]
pub(crate) use connection::tests::loopback_connection;
pub use connection::{Connection, DRAIN_QUIET, TlsInfo};
pub use discard::Discard;
pub use echo::Echo;
pub use pump::READ_BUF_BYTES;
pub use stream::{AsyncStream, ReadHalf, Stream, WriteHalf};

use crate::error::Error;

/// What a server runs on each connection.
///
/// `serve` is called once per accepted [`Connection`] and returns the future
/// that serves it; the future owns the connection (finishing closes it) and
/// is `'static`: clone what it needs from `self` (an `Arc` of shared state)
/// before the `async move` block. That keeps the per-connection task to the
/// service's own state, with no reference back into the server. The future
/// should watch `conn.shutdown` and return once in-flight data is done;
/// whatever still runs after the server's grace period is dropped.
///
/// ```
/// use std::future::Future;
/// use tcpkit::service::{CloseReason, Connection, Served, Service};
/// use tokio::io::AsyncWriteExt;
///
/// /// Says hello and closes.
/// struct Hello;
///
/// impl Service for Hello {
///     fn name(&self) -> &'static str {
///         "hello"
///     }
///
///     fn serve(&self, mut conn: Connection) -> impl Future<Output = Served> + Send + 'static {
///         async move {
///             let reason = match conn.stream.write_all(b"hello\n").await {
///                 Ok(()) => CloseReason::Done,
///                 Err(e) => CloseReason::Error(tcpkit::Error::io(e, "write hello")),
///             };
///             Served { bytes_in: 0, bytes_out: 6, reason }
///         }
///     }
/// }
/// ```
pub trait Service: Send + Sync + 'static {
    /// A short name for logs and the `listening on` line.
    fn name(&self) -> &'static str;

    /// The future that serves one connection until it ends.
    fn serve(&self, conn: Connection) -> impl Future<Output = Served> + Send + 'static;

    /// A line to send a client turned away because the server is at its
    /// connection limit (`None`: just close).
    fn reject_line(&self) -> Option<&'static [u8]> {
        None
    }
}

/// What a connection moved and why it ended.
#[derive(Debug)]
pub struct Served {
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
    /// Why the connection ended.
    pub reason: CloseReason,
}

/// Why a connection ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed (EOF), and everything owed to it was written.
    PeerClosed,
    /// The service finished on its own (or the client said `/quit`).
    Done,
    /// No traffic for the idle timeout.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The client sent a line over the maximum.
    LineTooLong,
    /// The client fell behind on what it was sent (chat).
    SlowConsumer,
    /// An I/O error (reset, broken pipe, ...).
    Error(Error),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Done => f.write_str("done"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::LineTooLong => f.write_str("line too long"),
            CloseReason::SlowConsumer => f.write_str("slow consumer"),
            CloseReason::Error(e) => write!(f, "error [code {}]: {e}", e.code()),
        }
    }
}
