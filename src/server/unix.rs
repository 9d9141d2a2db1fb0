//! UNIX-domain stream listeners ([`Listen::Unix`](super::Listen::Unix)):
//! the socket file handled as a mature daemon does.
//!
//! * A path where a server answers is refused (`EADDRINUSE`, "in use").
//! * A stale socket file (nobody answers: `ECONNREFUSED`) is removed and
//!   the path bound again.
//! * A path that exists and is not a socket is refused and never touched.
//! * The file is removed when the listener closes ([`SocketFile`]'s
//!   `Drop`), unless it is no longer ours (another process replaced it).
//!
//! The client of a UNIX listener has no IP address: its
//! [`Connection`](crate::service::Connection) carries the listener's path in
//! [`unix`](crate::service::Connection::unix), and is logged as
//! `unix:PATH`. What needs a client address (access lists, the PROXY
//! protocol's trusted sources), TLS and the per-core engine are refused by
//! [`ServerBuilder::bind`](super::ServerBuilder::bind).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::endpoint::Address;
use crate::error::{Error, ErrorKind, Result, code};

/// A socket file this process bound: removed on drop if it is still the
/// one bound (same device and inode), so a successor's socket at the same
/// path is never removed by mistake.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file right after `bind(2)`.
    id: Option<(u64, u64)>,
}

impl SocketFile {
    /// Takes charge of the socket file just bound at `path`.
    pub fn new(path: impl Into<PathBuf>) -> SocketFile {
        let path = path.into();
        let id = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        SocketFile { path, id }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        // Best effort: someone may have removed or replaced it already.
        if ours.is_some() && ours == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A bound, listening UNIX socket (non-blocking, close-on-exec) and the
/// guard that removes its file.
#[derive(Debug)]
pub struct UnixBound {
    /// The listening socket.
    pub listener: UnixListener,
    /// Removes the socket file when dropped (after the listener is closed).
    pub file: SocketFile,
}

/// Binds and listens on `path` with `backlog`, replacing a stale socket
/// file and refusing a live one or a file that is not a socket; errors
/// name `unix:PATH`.
pub fn bind_listen_unix(path: &Path, backlog: u32) -> Result<UnixBound> {
    let name = Address::Unix(path.to_path_buf());
    let bound = match try_bind(path, backlog) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let meta = std::fs::symlink_metadata(path)
                .map_err(|e| Error::io(e, format_args!("bind {name}")))?;
            if !meta.file_type().is_socket() {
                return Err(Error::new(
                    ErrorKind::AddrInUse,
                    libc::EADDRINUSE,
                    format!("bind {name}: the path exists and is not a socket (left as it is)"),
                ));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(Error::new(
                        ErrorKind::AddrInUse,
                        libc::EADDRINUSE,
                        format!("bind {name}: in use (a server answers on it)"),
                    ));
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    tracing::info!(path = %path.display(), "removing a stale socket file (nobody answers on it)");
                    std::fs::remove_file(path)
                        .map_err(|e| Error::io(e, format_args!("remove the stale {name}")))?;
                    try_bind(path, backlog)
                }
                Err(e) => return Err(Error::io(e, format_args!("bind {name}: probe the socket"))),
            }
        }
        other => other,
    };
    let listener = bound.map_err(|e| Error::io(e, format_args!("bind {name}")))?;
    Ok(UnixBound {
        listener,
        file: SocketFile::new(path),
    })
}

/// `socket(2)` (close-on-exec), `bind(2)`, `listen(2)`, non-blocking.
fn try_bind(path: &Path, backlog: u32) -> io::Result<UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let listening = socket
        .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
        .and_then(|()| socket.set_nonblocking(true));
    if let Err(e) = listening {
        // Bound but unusable: leave no file behind.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(socket.into())
}

/// The error for a server feature a UNIX listener cannot have.
pub(crate) fn refused(what: &str) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        code::INVALID_CONFIG,
        format!("{what} needs a TCP listener: a UNIX-domain listener has no client addresses"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_and_a_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        // Stale: bound, then closed without removing the file.
        drop(UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let bound = bind_listen_unix(&path, 8).expect("stale replaced");
        // Live: refused, naming the path, and the file is still there.
        let err = bind_listen_unix(&path, 8).expect_err("in use");
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
        assert!(err.message().contains("in use"), "{err}");
        assert!(err.message().contains("s.sock"), "{err}");
        drop(bound);
        assert!(!path.exists(), "removed at close");
        // A regular file: refused and left intact.
        std::fs::write(&path, b"keep me").expect("write");
        let err = bind_listen_unix(&path, 8).expect_err("not a socket");
        assert!(err.message().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"keep me");
    }

    #[test]
    fn a_replaced_socket_file_is_not_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.sock");
        let bound = bind_listen_unix(&path, 8).expect("bind");
        // Someone else's socket now lives at the path.
        std::fs::remove_file(&path).expect("remove");
        let theirs = UnixListener::bind(&path).expect("bind theirs");
        drop(bound);
        assert!(path.exists(), "the other socket file stays");
        drop(theirs);
    }
}
