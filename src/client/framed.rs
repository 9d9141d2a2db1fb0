//! [`FramedClient`]: send and receive whole messages (lines or
//! length-prefixed frames) over a connected stream, on tokio-util's `Framed`
//! with tcpkit's codecs, so every receive is bounded by the codec's maximum.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::codec::{LengthPrefixedCodec, LineCodec};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// A connected stream that speaks in messages.
///
/// ```no_run
/// # async fn f() -> tcpkit::Result<()> {
/// use tcpkit::client::{Connector, FramedClient};
/// let conn = Connector::new().connect("127.0.0.1:3333").await?;
/// let mut lines = FramedClient::lines(conn.stream, 8 * 1024)?;
/// lines.send(b"hello").await?;
/// let echoed = lines.recv().await?; // None once the server closes
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FramedClient<C> {
    inner: Framed<TcpStream, C>,
    peer: Endpoint,
}

impl FramedClient<LineCodec> {
    /// Newline-terminated messages of at most `max_line` bytes each way.
    pub fn lines(stream: TcpStream, max_line: usize) -> Result<Self> {
        FramedClient::new(stream, LineCodec::new(max_line))
    }
}

impl FramedClient<LengthPrefixedCodec> {
    /// `u32` big-endian length-prefixed messages of at most `max_frame` bytes;
    /// a larger announced length fails the receive before it is buffered.
    pub fn length_prefixed(stream: TcpStream, max_frame: usize) -> Result<Self> {
        FramedClient::new(stream, LengthPrefixedCodec::new(max_frame))
    }
}

impl<C> FramedClient<C>
where
    C: Decoder<Item = Bytes, Error = Error> + for<'a> Encoder<&'a [u8], Error = Error>,
{
    /// Wraps `stream` with any tcpkit codec.
    pub fn new(stream: TcpStream, codec: C) -> Result<Self> {
        let peer = stream
            .peer_addr()
            .map(Endpoint::from)
            .map_err(|e| Error::io(e, "getpeername"))?;
        Ok(FramedClient {
            inner: Framed::new(stream, codec),
            peer,
        })
    }

    /// The remote endpoint, as named in errors.
    pub fn peer(&self) -> Endpoint {
        self.peer
    }

    /// Encodes and writes one message, flushing it to the socket.
    pub async fn send(&mut self, message: &[u8]) -> Result<()> {
        let peer = self.peer;
        self.inner
            .send(message)
            .await
            .map_err(|e| in_context(e, "send to", peer))
    }

    /// The next message; `Ok(None)` when the peer closed cleanly between
    /// messages. Oversized messages and EOF inside one are errors.
    /// Cancel-safe: a partial message stays buffered for the next call.
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(msg)) => Ok(Some(msg)),
            Some(Err(e)) => Err(in_context(e, "receive from", self.peer)),
        }
    }

    /// [`FramedClient::recv`] with a deadline ([`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut)).
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Bytes>> {
        let peer = self.peer;
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| Error::timed_out(format_args!("receive from {peer}"), timeout))?
    }

    /// The underlying `Framed`, for `Stream`/`Sink` combinators.
    pub fn into_inner(self) -> Framed<TcpStream, C> {
        self.inner
    }
}

/// Codec errors do not know the endpoint; name it, keeping kind, code and
/// the OS error (and with it [`Error::os_code`]).
fn in_context(e: Error, verb: &str, peer: Endpoint) -> Error {
    e.context(format_args!("{verb} {peer}"))
}
