//! The stream a bench connection runs on: plain TCP, or TLS over it. The
//! workloads are generic over the stream (monomorphised per type), so the
//! plain path is the same code as before TLS existed.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connected bench stream.
pub(crate) enum BenchStream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::client::ClientTlsStream>),
}

impl BenchStream {
    /// The TCP socket alone, to hold a connection open at no cost: a TLS
    /// stream's state (and buffers) is dropped, so the peer later sees the
    /// close as one without `close_notify`.
    pub(crate) fn into_tcp(self) -> TcpStream {
        match self {
            BenchStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            BenchStream::Tls(s) => s.into_inner().0,
        }
    }
}

impl BenchStream {
    /// Closes the connection: over TLS with a `close_notify` first, so the
    /// server sees a clean close, not a truncation; plain TCP is dropped
    /// (its FIN) as before.
    pub(crate) async fn close(self) {
        #[cfg(feature = "tls")]
        if let BenchStream::Tls(mut s) = self {
            use tokio::io::AsyncWriteExt;
            // Best effort: the server may already be gone.
            let _ = s.shutdown().await;
        }
    }
}

impl AsyncRead for BenchStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            BenchStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BenchStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BenchStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            BenchStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            BenchStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            BenchStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
