//! [`Unix`]: an upstream on a UNIX-domain stream socket
//! (`tcpkit relay --to unix:PATH`).
//!
//! The stream goes into the pair as [`Stream::Other`]: the copy, the
//! half-close (`shutdown(SHUT_WR)` on the socket) and the idle timeout are
//! the same as for TCP. What TCP has and a UNIX socket has not: a reset. A
//! client's reset ends the pair and closes the UNIX socket, which the
//! upstream reads as an end of stream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use super::{Connected, Upstream};
use crate::endpoint::{Address, Endpoint};
use crate::error::{Error, Result};
use crate::service::Stream;

/// A UNIX socket upstream: every client gets its own connection to the
/// socket at one path.
///
/// ```
/// use std::time::Duration;
/// use tcpkit::relay::{Unix, Upstream};
/// let up = Unix::new("/run/app.sock", Duration::from_secs(5));
/// assert_eq!(up.describe(), "unix:/run/app.sock");
/// ```
#[derive(Debug, Clone)]
pub struct Unix {
    path: PathBuf,
    connect_timeout: Duration,
}

impl Unix {
    /// Forwards to the socket at `path`, each connect bounded by
    /// `connect_timeout` (a listener whose backlog is full makes a
    /// connect wait).
    pub fn new(path: impl Into<PathBuf>, connect_timeout: Duration) -> Unix {
        Unix {
            path: path.into(),
            connect_timeout,
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Upstream for Unix {
    async fn connect(&self, _client: &Endpoint) -> Result<Connected> {
        let peer = Address::Unix(self.path.clone());
        let connect = UnixStream::connect(&self.path);
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => Ok(Connected {
                stream: Stream::other(stream),
                peer,
            }),
            Ok(Err(e)) => Err(Error::io(e, format_args!("connect to {peer}"))),
            Err(_) => Err(Error::timed_out(
                format_args!("connect to {peer}"),
                self.connect_timeout,
            )),
        }
    }

    fn describe(&self) -> String {
        Address::Unix(self.path.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connects_and_carries_bytes_both_ways() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("up.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let up = Unix::new(&path, Duration::from_secs(5));
        let client = Endpoint::loopback_v4(1);
        let (connected, accepted) = tokio::join!(up.connect(&client), listener.accept());
        let mut connected = connected.expect("connect");
        let (mut server, _) = accepted.expect("accept");
        assert_eq!(connected.peer, Address::Unix(path.clone()));
        connected.stream.write_all(b"ping").await.expect("write");
        connected.stream.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"ping");
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_naming_the_path_with_the_os_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.sock");
        let up = Unix::new(&path, Duration::from_secs(5));
        let err = up
            .connect(&Endpoint::loopback_v4(1))
            .await
            .expect_err("no socket there");
        assert_eq!(err.os_code(), Some(libc::ENOENT), "{err}");
        assert!(err.message().contains("none.sock"), "{err}");
    }
}
