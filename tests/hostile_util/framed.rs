//! A length-prefixed echo server for the framing cases: the library's
//! codec on a real loopback socket, reporting how each connection ended and
//! how large its read buffer ever got.

use std::net::SocketAddr;
use std::time::Duration;

/// How a length-prefixed connection ended, seen by the server side.
#[derive(Debug)]
pub struct FramedEnd {
    /// The decoder's error, if any.
    pub error: Option<tcpkit::ErrorKind>,
    /// Frames decoded (and echoed).
    pub frames: usize,
    /// The read buffer's largest capacity.
    pub peak_capacity: usize,
}

/// An echo server for length-prefixed frames: the library codec on a real
/// socket, reading into a buffer that only grows with what arrives.
pub async fn echo_server(
    max_frame: usize,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<FramedEnd>) {
    use tcpkit::codec::LengthPrefixedCodec;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::{Decoder, Encoder};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut codec = LengthPrefixedCodec::new(max_frame);
                let mut buf = bytes::BytesMut::with_capacity(8 * 1024);
                let mut out = bytes::BytesMut::new();
                let mut end = FramedEnd {
                    error: None,
                    frames: 0,
                    peak_capacity: 0,
                };
                loop {
                    // read_buf reserves at most a little when full; what a
                    // header announces is never reserved.
                    if buf.capacity() == buf.len() {
                        buf.reserve(8 * 1024);
                    }
                    let n = match s.read_buf(&mut buf).await {
                        Ok(n) => n,
                        Err(_) => break,
                    };
                    end.peak_capacity = end.peak_capacity.max(buf.capacity());
                    let decoded = if n == 0 {
                        codec.decode_eof(&mut buf)
                    } else {
                        codec.decode(&mut buf)
                    };
                    let mut step = decoded;
                    loop {
                        match step {
                            Ok(Some(frame)) => {
                                end.frames += 1;
                                codec.encode(&frame, &mut out).unwrap();
                            }
                            Ok(None) => break,
                            Err(e) => {
                                end.error = Some(e.kind());
                                break;
                            }
                        }
                        step = codec.decode(&mut buf);
                    }
                    if !out.is_empty() && s.write_all(&out.split()).await.is_err() {
                        break;
                    }
                    if n == 0 || end.error.is_some() {
                        break;
                    }
                }
                let _ = tx.send(end);
            });
        }
    });
    (addr, rx)
}

/// The next connection's end, seen by the server side.
pub async fn next_end(
    ends: &mut tokio::sync::mpsc::UnboundedReceiver<FramedEnd>,
    what: &str,
) -> FramedEnd {
    tokio::time::timeout(Duration::from_secs(10), ends.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: server side did not finish in 10s"))
        .expect("server running")
}
