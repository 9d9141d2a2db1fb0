//! Lingering close: how the server closes a client on purpose without the
//! close turning into a TCP reset.
//!
//! `close(2)` on a socket whose receive buffer still holds unread bytes (or
//! that receives more afterwards) makes the kernel send `RST` instead of
//! `FIN` (RFC 1122 4.2.2.13, RFC 2525 2.17). The reset discards whatever
//! the client had not read yet, so a client that was still sending when the
//! server gave up on it (a line over the maximum, a slow consumer, the
//! connection limit, shutdown) gets "connection reset by peer" instead of
//! the line saying why. [`lingering_close`] does what nginx's
//! `lingering_close` does: after the reason is written, `shutdown(2)` the
//! write side (the client reads the reason, then EOF), then read and
//! discard what the client still sends, until it closes too or a bound is
//! reached, and only then close.
//!
//! The bounds, and why they are far below nginx's (`lingering_time` 30 s,
//! `lingering_timeout` 5 s): lingering only has to outlast the data that
//! was already in flight when the server decided to close, and the reason
//! line reaches any client within a round trip. [`LINGER_TIME`] (2 s in all)
//! covers that on any path a line-based server is used over, while keeping
//! a client that will not stop from holding a descriptor for long;
//! [`LINGER_IDLE`] (1 s without a byte) lets a client that neither sends
//! nor closes go at once, as nothing unread can be pending then;
//! [`LINGER_BYTES`] (8 MiB) is more than can be in flight on Linux (the
//! largest default receive window, 6 MiB, plus a little), so a 1 MiB paste
//! is always absorbed, but a client sending at loopback speed is cut off
//! in milliseconds instead of costing 2 s of CPU.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Longest a lingering close reads and discards, in all.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// Longest a lingering close waits for the client's next bytes (or EOF).
pub const LINGER_IDLE: Duration = Duration::from_secs(1);

/// Most bytes a lingering close reads and discards.
pub const LINGER_BYTES: u64 = 8 * 1024 * 1024;

/// Size of the buffer discarded bytes are read into: allocated only once a
/// close lingers, so it costs nothing to connections that never do.
const DISCARD_BUF: usize = 16 * 1024;

/// How a [`lingering_close`] ended. Either way the caller then drops the
/// stream, which closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lingered {
    /// The client closed its side (EOF) after `discarded` more bytes: the
    /// close that follows is a clean `FIN`.
    PeerClosed {
        /// Bytes read and thrown away.
        discarded: u64,
    },
    /// The client sent nothing for [`LINGER_IDLE`]: nothing is unread, so
    /// the close is still a `FIN` (a reset only if it sends again later).
    Quiet {
        /// Bytes read and thrown away.
        discarded: u64,
    },
    /// The client was still sending at [`LINGER_TIME`] or [`LINGER_BYTES`]:
    /// it is closed anyway (likely with a reset; it had its reason by then).
    CutOff {
        /// Bytes read and thrown away.
        discarded: u64,
    },
    /// The connection failed (reset, or `shutdown(2)` refused): nothing
    /// more to wait for.
    Failed,
}

/// The limits of one lingering close (the defaults are [`LINGER_TIME`],
/// [`LINGER_IDLE`] and [`LINGER_BYTES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LingerBounds {
    /// Longest the whole close may take.
    pub time: Duration,
    /// Longest to wait for the next bytes.
    pub idle: Duration,
    /// Most bytes to discard.
    pub bytes: u64,
}

impl Default for LingerBounds {
    fn default() -> Self {
        LingerBounds {
            time: LINGER_TIME,
            idle: LINGER_IDLE,
            bytes: LINGER_BYTES,
        }
    }
}

/// Shuts down the write side of `stream` (`shutdown(2)`, `SHUT_WR`: what
/// was written goes out, then `FIN`), then reads and discards until the
/// client closes or a [default bound](LingerBounds::default) is reached.
/// Counted in `metrics` (lingering closes, and those cut off by a bound).
///
/// Call it after the last line to the client is written; drop the stream
/// afterwards. Cancelling it (dropping the future) is safe: the stream is
/// then closed as it would have been without lingering.
pub async fn lingering_close<S>(stream: &mut S, metrics: &Metrics) -> Lingered
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    lingering_close_within(stream, LingerBounds::default(), metrics).await
}

/// [`lingering_close`] with explicit bounds.
pub async fn lingering_close_within<S>(
    stream: &mut S,
    bounds: LingerBounds,
    metrics: &Metrics,
) -> Lingered
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let end = Instant::now() + bounds.time;
    metrics.lingering_close();
    // For a TCP stream this returns at once; a wrapper (TLS) may have
    // more to write, so it gets the same deadline.
    match tokio::time::timeout_at(end, stream.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Lingered::Failed,
        Err(_) => {
            metrics.lingering_cut_off();
            return Lingered::CutOff { discarded: 0 };
        }
    }
    let mut buf = vec![0u8; DISCARD_BUF];
    let mut discarded = 0u64;
    loop {
        if discarded >= bounds.bytes {
            break;
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        let wait_until = end.min(now + bounds.idle);
        let room = buf
            .len()
            .min(usize::try_from(bounds.bytes - discarded).unwrap_or(usize::MAX));
        match tokio::time::timeout_at(wait_until, stream.read(&mut buf[..room])).await {
            Ok(Ok(0)) => return Lingered::PeerClosed { discarded },
            Ok(Ok(n)) => discarded += n as u64,
            Ok(Err(_)) => return Lingered::Failed,
            // Idle: quiet, unless this was the overall deadline.
            Err(_) if wait_until < end => return Lingered::Quiet { discarded },
            Err(_) => break,
        }
    }
    metrics.lingering_cut_off();
    Lingered::CutOff { discarded }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn bounds(time_ms: u64, idle_ms: u64, bytes: u64) -> LingerBounds {
        LingerBounds {
            time: Duration::from_millis(time_ms),
            idle: Duration::from_millis(idle_ms),
            bytes,
        }
    }

    #[tokio::test]
    async fn ends_at_the_clients_eof_after_discarding_what_it_sent() {
        let (mut server, mut client) = pair().await;
        let metrics = Metrics::new();
        client.write_all(&[7u8; 5000]).await.unwrap();
        client.shutdown().await.unwrap();
        let got =
            lingering_close_within(&mut server, bounds(10_000, 10_000, 1 << 20), &metrics).await;
        assert_eq!(got, Lingered::PeerClosed { discarded: 5000 });
        let s = metrics.snapshot();
        assert_eq!((s.lingering_closes, s.lingering_cut_off), (1, 0));
    }

    #[tokio::test]
    async fn a_quiet_client_is_let_go_after_the_idle_bound() {
        let (mut server, _client) = pair().await;
        let metrics = Metrics::new();
        let started = Instant::now();
        let got = lingering_close_within(&mut server, bounds(10_000, 50, 1 << 20), &metrics).await;
        assert_eq!(got, Lingered::Quiet { discarded: 0 });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(metrics.snapshot().lingering_cut_off, 0);
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_cut_off_by_bytes() {
        let (mut server, mut client) = pair().await;
        let metrics = Metrics::new();
        let sender = tokio::spawn(async move {
            let chunk = [1u8; 4096];
            while client.write_all(&chunk).await.is_ok() {}
        });
        let got =
            lingering_close_within(&mut server, bounds(10_000, 10_000, 100_000), &metrics).await;
        assert_eq!(got, Lingered::CutOff { discarded: 100_000 });
        assert_eq!(metrics.snapshot().lingering_cut_off, 1);
        drop(server);
        tokio::time::timeout(Duration::from_secs(10), sender)
            .await
            .expect("the sender sees the close")
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_cut_off_by_time() {
        let (mut server, mut client) = pair().await;
        let metrics = Metrics::new();
        let sender = tokio::spawn(async move {
            while client.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let started = Instant::now();
        let got = lingering_close_within(&mut server, bounds(300, 10_000, 1 << 30), &metrics).await;
        let took = started.elapsed();
        assert!(
            matches!(got, Lingered::CutOff { discarded } if discarded > 0),
            "{got:?}"
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        drop(server);
        tokio::time::timeout(Duration::from_secs(10), sender)
            .await
            .expect("the sender sees the close")
            .unwrap();
    }
}
