//! [`Stream`]: the bytes a service reads and writes, TCP or not.
//!
//! A plain TCP connection stays a bare [`TcpStream`], so echo and discard
//! keep their zero-copy path (`try_read`/`try_write` on the socket, readiness
//! without a stored future). Anything else (a TLS session, a relay's
//! upstream, an in-memory pipe in tests) is boxed behind
//! [`AsyncRead`]/[`AsyncWrite`]: one allocation per connection, none per
//! message, and the services above do not care which it is.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp;

/// What a non-TCP [`Stream`] must be: a `Send + Unpin` async byte stream.
/// Implemented for every such type.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A connected byte stream handed to a service.
///
/// The enum is the fast path made visible: services that only read and
/// write use it through [`AsyncRead`]/[`AsyncWrite`] (or [`Stream::split`])
/// and never look inside; the echo/discard pump matches on
/// [`Stream::Tcp`] to use the socket directly. Non-exhaustive: another
/// fast path (a Unix socket, `splice(2)` for the relay) may join.
#[non_exhaustive]
pub enum Stream {
    /// A plain TCP connection.
    Tcp(TcpStream),
    /// Any other stream (TLS, a relay's upstream, `tokio::io::duplex`).
    Other(Box<dyn AsyncStream>),
}

impl Stream {
    /// Boxes any async byte stream.
    ///
    /// ```
    /// let (ours, _theirs) = tokio::io::duplex(1024);
    /// let stream = tcpkit::service::Stream::other(ours);
    /// assert!(stream.as_tcp().is_none());
    /// ```
    pub fn other(stream: impl AsyncStream) -> Stream {
        Stream::Other(Box::new(stream))
    }

    /// The TCP socket underneath, if that is what this is (to read or set
    /// socket options).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(tcp) => Some(tcp),
            Stream::Other(_) => None,
        }
    }

    /// Borrows the stream as a read half and a write half, usable at once
    /// (e.g. in two branches of one `select!`). Free for TCP (the socket is
    /// full-duplex); other streams go through `tokio::io::split`, an
    /// uncontended lock per call when both halves live in one task.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Tcp(tcp) => {
                let (rd, wr) = tcp.split();
                (ReadHalf(ReadInner::Tcp(rd)), WriteHalf(WriteInner::Tcp(wr)))
            }
            Stream::Other(other) => {
                let (rd, wr) = tokio::io::split(&mut **other);
                (
                    ReadHalf(ReadInner::Other(rd)),
                    WriteHalf(WriteInner::Other(wr)),
                )
            }
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(tcp: TcpStream) -> Stream {
        Stream::Tcp(tcp)
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Tcp(tcp) => f.debug_tuple("Tcp").field(tcp).finish(),
            Stream::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Other(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The reading half of a [`Stream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a>(ReadInner<'a>);

/// The writing half of a [`Stream::split`].
#[derive(Debug)]
pub struct WriteHalf<'a>(WriteInner<'a>);

enum ReadInner<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Other(tokio::io::ReadHalf<&'a mut dyn AsyncStream>),
}

enum WriteInner<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Other(tokio::io::WriteHalf<&'a mut dyn AsyncStream>),
}

impl fmt::Debug for ReadInner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadInner::Tcp(h) => h.fmt(f),
            ReadInner::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl fmt::Debug for WriteInner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteInner::Tcp(h) => h.fmt(f),
            WriteInner::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            ReadInner::Tcp(h) => Pin::new(h).poll_read(cx, buf),
            ReadInner::Other(h) => Pin::new(h).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            WriteInner::Tcp(h) => Pin::new(h).poll_write(cx, buf),
            WriteInner::Other(h) => Pin::new(h).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            WriteInner::Tcp(h) => Pin::new(h).poll_write_vectored(cx, bufs),
            WriteInner::Other(h) => Pin::new(h).poll_write_vectored(cx, bufs),
        }
    }

    /// True for plain TCP (one `writev` takes several buffers); for other
    /// streams, whatever the stream says.
    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            WriteInner::Tcp(h) => h.is_write_vectored(),
            WriteInner::Other(h) => h.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            WriteInner::Tcp(h) => Pin::new(h).poll_flush(cx),
            WriteInner::Other(h) => Pin::new(h).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            WriteInner::Tcp(h) => Pin::new(h).poll_shutdown(cx),
            WriteInner::Other(h) => Pin::new(h).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Boxing the non-TCP case keeps the enum as small as the TCP stream it
    /// wraps (the box fits in the stream's niche or its size): the echo
    /// future does not grow for the choice.
    #[test]
    fn stream_costs_no_more_than_a_tcp_stream_and_a_tag() {
        let tcp = std::mem::size_of::<TcpStream>();
        let stream = std::mem::size_of::<Stream>();
        eprintln!("TcpStream {tcp} bytes, Stream {stream} bytes");
        assert!(stream <= tcp + 8, "{stream} vs {tcp}");
    }

    #[tokio::test]
    async fn split_halves_work_at_once_over_a_non_tcp_stream() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut stream = Stream::other(ours);
        let (mut rd, mut wr) = stream.split();
        theirs.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        rd.read_exact(&mut buf).await.unwrap();
        wr.write_all(&buf).await.unwrap();
        theirs.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
}
