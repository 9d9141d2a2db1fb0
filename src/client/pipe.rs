//! [`pipe`]: copy an input to a socket and the socket to an output, both at
//! once, as raw bytes: the data path of `tcpkit connect` and `tcpkit listen`.
//!
//! Each direction ends on its own, as TCP's half-close intends: at input EOF
//! the write side is shut down (`shutdown(2)`, `SHUT_WR`) so the peer reads
//! EOF too (unless [`PipeOptions::shutdown_on_eof`] is off), and the peer's
//! EOF stops the reading only. The session ends when both directions are
//! done (as with `ncat` and OpenBSD `nc`), when a line limit is reached, when
//! nothing moved either way for the idle timeout, or when the output is
//! closed (a broken pipe on stdout is a normal way for a reader such as
//! `head` to say "enough").

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::dump::{Direction, SessionDump};
use crate::endpoint::{Address, Endpoint};
use crate::error::{Error, ErrorKind, Result};

/// How a [`pipe`] session behaves.
#[derive(Debug, Clone)]
pub struct PipeOptions {
    /// Shut down the socket's write side when the input ends (`nc -N`).
    pub shutdown_on_eof: bool,
    /// End the session when no byte moved either way for this long.
    pub idle_timeout: Option<Duration>,
    /// End the session after this many `\n`-terminated lines were received.
    pub max_lines: Option<u64>,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            shutdown_on_eof: true,
            idle_timeout: None,
            max_lines: None,
        }
    }
}

/// Why a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// The peer closed its side (clean EOF).
    PeerClosed,
    /// [`PipeOptions::max_lines`] lines arrived.
    LineLimit,
    /// Nothing moved for [`PipeOptions::idle_timeout`].
    IdleTimeout,
    /// The output was closed (broken pipe): the reader wants no more.
    OutputClosed,
}

/// What a session moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeStats {
    /// Bytes written to the socket.
    pub bytes_sent: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// `\n` bytes among those received.
    pub lines_received: u64,
    /// Why it ended.
    pub end: PipeEnd,
}

const CHUNK: usize = 64 * 1024;

/// How long a failed write waits for the peer's last words (see
/// [`session`]): they are already queued if there are any.
const LATE_READ: Duration = Duration::from_millis(500);

/// A write error that means the peer closed or reset the connection.
fn peer_gone(e: &Error) -> bool {
    e.kind() == ErrorKind::ConnectionReset || e.os_code() == Some(libc::EPIPE)
}

/// What both directions of one session share: counters (atomics, so the two
/// halves can run as concurrent futures without a lock), the dump and the
/// peer's name for errors.
struct Session<'a, W: Write> {
    peer: Address,
    options: &'a PipeOptions,
    dump: Option<&'a Mutex<SessionDump<W>>>,
    start: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    lines: AtomicU64,
    /// Milliseconds since `start` of the last byte moved, for the idle timer.
    last_activity_ms: AtomicU64,
}

impl<W: Write> Session<'_, W> {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    fn record(&self, direction: Direction, bytes: &[u8]) {
        if let Some(dump) = self.dump {
            let mut dump = dump.lock().unwrap_or_else(|p| p.into_inner());
            // A dump that cannot be written must not end the session itself.
            if let Err(e) = dump.record(direction, bytes) {
                tracing::warn!("session dump: {e}");
            }
        }
    }

    /// When the session goes idle if nothing moves before then.
    fn idle_deadline(&self) -> Option<tokio::time::Instant> {
        let idle = self.options.idle_timeout?;
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        Some(tokio::time::Instant::from_std(self.start + last + idle))
    }

    /// Input to socket until input EOF, then (by default) `shutdown(SHUT_WR)`.
    async fn upload<I, S>(&self, input: &mut I, wr: &mut S) -> Result<()>
    where
        I: AsyncRead + Unpin + ?Sized,
        S: AsyncWrite + Unpin,
    {
        let peer = &self.peer;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input
                .read(&mut buf)
                .await
                .map_err(|e| Error::io(e, "read input"))?;
            if n == 0 {
                break;
            }
            wr.write_all(&buf[..n])
                .await
                .map_err(|e| stream_error(e, format_args!("write to {peer}")))?;
            self.record(Direction::Sent, &buf[..n]);
            self.sent.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
        if self.options.shutdown_on_eof {
            // Over TLS: close_notify first, then the TCP write side.
            wr.shutdown()
                .await
                .map_err(|e| Error::io(e, format_args!("shutdown write to {peer}")))?;
        }
        Ok(())
    }

    /// Socket to output until the peer closes, the line limit, or a closed
    /// output.
    async fn download<S, O>(&self, rd: &mut S, output: &mut O) -> Result<PipeEnd>
    where
        S: AsyncRead + Unpin,
        O: AsyncWrite + Unpin + ?Sized,
    {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(n) => n,
                // Only TLS reports a TCP EOF this way: the peer closed
                // without close_notify, so what came may be cut short. Many
                // servers close so; say it, and end as a close.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::warn!(
                        "{} closed the connection without a TLS close_notify: the data may be truncated",
                        self.peer
                    );
                    return Ok(PipeEnd::PeerClosed);
                }
                Err(e) => return Err(stream_error(e, format_args!("read from {}", self.peer))),
            };
            if n == 0 {
                return Ok(PipeEnd::PeerClosed);
            }
            self.touch();
            self.received.fetch_add(n as u64, Ordering::Relaxed);
            let (take, limit_hit) =
                within_line_limit(&buf[..n], &self.lines, self.options.max_lines);
            self.record(Direction::Received, &buf[..take]);
            let written = async {
                output.write_all(&buf[..take]).await?;
                output.flush().await
            };
            match written.await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(PipeEnd::OutputClosed);
                }
                Err(e) => return Err(Error::io(e, "write output")),
            }
            if limit_hit {
                return Ok(PipeEnd::LineLimit);
            }
        }
    }
}

/// Copies `input` to `stream` and `stream` to `output` concurrently until the
/// session ends (see the module docs), recording both directions in `dump`.
///
/// Socket errors are [`Error`]s naming the peer; a broken output ends the
/// session with [`PipeEnd::OutputClosed`]. Cancel-safe in the sense that
/// dropping the future closes the socket; input bytes read but not yet
/// written are lost.
pub async fn pipe<I, O, W>(
    stream: TcpStream,
    input: &mut I,
    output: &mut O,
    options: &PipeOptions,
    dump: Option<&Mutex<SessionDump<W>>>,
) -> Result<PipeStats>
where
    I: AsyncRead + Unpin + ?Sized,
    O: AsyncWrite + Unpin + ?Sized,
    W: Write,
{
    let peer = stream
        .peer_addr()
        .map(Endpoint::from)
        .map_err(|e| Error::io(e, "getpeername"))?;
    // Owned halves: the write half must outlive the upload (dropping it
    // would shut the write side down even with --no-shutdown).
    let (rd, wr) = stream.into_split();
    session(rd, wr, peer.into(), input, output, options, dump).await
}

/// [`pipe`] over any stream, such as a TLS one or a UNIX socket,
/// connected to `peer` (an [`Endpoint`] or an [`Address`]). At
/// input EOF the stream's `poll_shutdown` ends the write side: over TLS
/// that sends `close_notify` and then shuts the TCP write side down, and
/// reading goes on until the peer's own close.
pub async fn pipe_stream<S, I, O, W>(
    stream: S,
    peer: impl Into<Address>,
    input: &mut I,
    output: &mut O,
    options: &PipeOptions,
    dump: Option<&Mutex<SessionDump<W>>>,
) -> Result<PipeStats>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: AsyncRead + Unpin + ?Sized,
    O: AsyncWrite + Unpin + ?Sized,
    W: Write,
{
    let (rd, wr) = tokio::io::split(stream);
    session(rd, wr, peer.into(), input, output, options, dump).await
}

async fn session<R, S, I, O, W>(
    mut rd: R,
    mut wr: S,
    peer: Address,
    input: &mut I,
    output: &mut O,
    options: &PipeOptions,
    dump: Option<&Mutex<SessionDump<W>>>,
) -> Result<PipeStats>
where
    R: AsyncRead + Unpin,
    S: AsyncWrite + Unpin,
    I: AsyncRead + Unpin + ?Sized,
    O: AsyncWrite + Unpin + ?Sized,
    W: Write,
{
    let session = Session {
        peer,
        options,
        dump,
        start: Instant::now(),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        lines: AtomicU64::new(0),
        last_activity_ms: AtomicU64::new(0),
    };
    let upload = session.upload(input, &mut wr);
    let download = session.download(&mut rd, output);
    tokio::pin!(upload, download);
    let mut uploading = true;
    let mut peer_closed = false;
    let end = loop {
        let deadline = session.idle_deadline();
        let idle = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Each direction ends on its own (TCP half-close): input EOF
            // does not end the session, since the peer may still be
            // answering; the peer's EOF does not either, since our input may
            // still be on its way to it (it only said it will send no more).
            r = &mut upload, if uploading => {
                uploading = false;
                match r {
                    Ok(()) => {}
                    // The peer closed and then reset our late data: it is
                    // gone, which is how this session was ending anyway.
                    Err(e) if peer_closed && e.kind() == ErrorKind::ConnectionReset => {}
                    // The peer went away while we wrote: why it did (a TLS
                    // alert such as "certificate required", an error line)
                    // may wait in the receive queue. Read it first; it says
                    // more than our broken pipe.
                    Err(e) if !peer_closed && peer_gone(&e) => {
                        return match tokio::time::timeout(LATE_READ, &mut download).await {
                            Ok(Err(why)) => Err(why),
                            _ => Err(e),
                        };
                    }
                    Err(e) => return Err(e),
                }
                if peer_closed {
                    break PipeEnd::PeerClosed;
                }
            }
            r = &mut download, if !peer_closed => match r? {
                PipeEnd::PeerClosed if uploading => peer_closed = true,
                end => break end,
            },
            // Activity since the timer was set moves the deadline: re-check.
            () = idle => if session.idle_deadline().is_some_and(|at| at <= tokio::time::Instant::now()) {
                break PipeEnd::IdleTimeout;
            },
        }
    };
    if let Some(dump) = dump {
        let _ = dump.lock().unwrap_or_else(|p| p.into_inner()).flush();
    }
    Ok(PipeStats {
        bytes_sent: session.sent.load(Ordering::Relaxed),
        bytes_received: session.received.load(Ordering::Relaxed),
        lines_received: session.lines.load(Ordering::Relaxed),
        end,
    })
}

/// A stream's I/O error as the crate's: a TLS record error keeps its TLS
/// kind (and code), anything else its OS code.
fn stream_error(err: std::io::Error, context: std::fmt::Arguments<'_>) -> Error {
    #[cfg(feature = "tls")]
    if err
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        return crate::tls::handshake_error(err, context);
    }
    Error::io(err, context)
}

/// How much of `chunk` to pass on under a line limit, and whether the limit
/// was reached inside it (the rest of the chunk is dropped).
fn within_line_limit(chunk: &[u8], lines: &AtomicU64, max: Option<u64>) -> (usize, bool) {
    let seen = lines.load(Ordering::Relaxed);
    let Some(max) = max else {
        let n = memchr::memchr_iter(b'\n', chunk).count() as u64;
        lines.store(seen + n, Ordering::Relaxed);
        return (chunk.len(), false);
    };
    let mut count = seen;
    for pos in memchr::memchr_iter(b'\n', chunk) {
        count += 1;
        if count >= max {
            lines.store(count, Ordering::Relaxed);
            return (pos + 1, true);
        }
    }
    lines.store(count, Ordering::Relaxed);
    (chunk.len(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_limit_cuts_after_the_nth_newline() {
        let lines = AtomicU64::new(0);
        assert_eq!(within_line_limit(b"a\nb", &lines, Some(2)), (3, false));
        assert_eq!(within_line_limit(b"\nc\nd\n", &lines, Some(2)), (1, true));
        let lines = AtomicU64::new(0);
        assert_eq!(within_line_limit(b"a\nb\n", &lines, None), (4, false));
        assert_eq!(lines.load(Ordering::Relaxed), 2);
    }
}
