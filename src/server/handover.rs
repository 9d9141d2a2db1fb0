//! Restart without losing a connection (Linux): a running server *offers*
//! its listening sockets on a UNIX socket; its successor *receives* them
//! (`SCM_RIGHTS`, as HAProxy's `expose-fd listeners` / `-x`), starts
//! accepting, and *confirms*; only then does the old server stop accepting
//! and drain.
//!
//! Both processes hold the same kernel socket, so there is one accept queue
//! throughout: a client that connected while neither was calling `accept`
//! waits in it and is accepted by whichever comes first. Nothing is closed
//! under a queued client, unlike a successor binding its own `SO_REUSEPORT`
//! socket (the old socket's queue is reset when it closes) or a stop then
//! start (refused while nobody listens).
//!
//! The wire format, one exchange per connection: the old server sends the
//! line `tcpkit-handover 1 N\n` carrying N descriptors; the new one answers
//! `ready\n` once it serves them. The old server answers only a peer of its
//! own user (or root) (`SO_PEERCRED`); the new one checks that the peer is
//! the process it meant (the pid in the pidfile).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

use super::{Server, ShutdownHandle};
use crate::error::{Error, ErrorKind, Result, code};
use crate::net::Inherited;
use crate::net::pass_fd::{peer_pid, recv_fds, send_fds};

const HELLO: &str = "tcpkit-handover 1";
const READY: &[u8] = b"ready\n";

/// How long each side waits on the other during one exchange: the new
/// server has its sockets within this, or the old one keeps serving.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The control socket beside a pidfile: `PIDFILE.sock`.
pub fn control_path(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_owned();
    name.push(".sock");
    PathBuf::from(name)
}

impl Server {
    /// Duplicates of the listening sockets (`dup(2)`, close-on-exec), to
    /// [`offer`] them. Take them before [`Server::run`].
    pub fn listener_fds(&self) -> Result<Vec<OwnedFd>> {
        self.acceptors
            .iter()
            .map(|a| {
                a.as_socket2()
                    .try_clone()
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io(e, "duplicate a listening socket for handover"))
            })
            .collect()
    }
}

/// A server's listening sockets offered at a control socket, until a
/// successor takes them or the server shuts down.
#[derive(Debug)]
pub struct Offer {
    listener: UnixListener,
    path: PathBuf,
    inode: u64,
    fds: Vec<OwnedFd>,
}

/// Binds the control socket at `path` (mode 0600; bound beside it, then
/// renamed over it, so a successor taking over the path never leaves a
/// moment without one) and offers `fds` there. Must run inside a runtime.
pub fn offer(path: &Path, fds: Vec<OwnedFd>) -> Result<Offer> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let named = |what: &str| format!("{what} {}", path.display());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let std_listener = std::os::unix::net::UnixListener::bind(&tmp)
        .map_err(|e| Error::io(e, named("bind handover socket")))?;
    let setup = || -> io::Result<u64> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        std_listener.set_nonblocking(true)?;
        Ok(std::fs::metadata(path)?.ino())
    };
    let inode = match setup() {
        Ok(inode) => inode,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(e, named("set up handover socket")));
        }
    };
    crate::net::require_runtime(&named("handover socket"))?;
    let listener = UnixListener::from_std(std_listener)
        .map_err(|e| Error::io(e, named("register handover socket")))?;
    Ok(Offer {
        listener,
        path: path.to_owned(),
        inode,
        fds,
    })
}

impl Offer {
    /// Answers successors until one confirms (then asks `handle` for a
    /// graceful shutdown: stop accepting, drain) or the server shuts down
    /// for another reason. Either way the duplicates are closed and the
    /// control socket removed, unless a successor has put its own there.
    pub async fn serve(self, handle: ShutdownHandle) {
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = handle.graceful.cancelled() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("handover socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match tokio::time::timeout(HANDOVER_TIMEOUT, self.hand_over(stream)).await {
                Ok(Ok(())) => {
                    tracing::info!("handover: the successor accepts on our sockets; draining");
                    handle.shutdown();
                    break;
                }
                Ok(Err(e)) => tracing::warn!("handover failed, still serving: {e}"),
                Err(_) => tracing::warn!(
                    "handover: no confirmation within {HANDOVER_TIMEOUT:?}, still serving"
                ),
            }
        }
        // Dropping self closes the duplicates and removes the socket file.
    }

    async fn hand_over(&self, mut stream: UnixStream) -> Result<()> {
        let cred = stream
            .peer_cred()
            .map_err(|e| Error::io(e, "handover: read peer credentials"))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if cred.uid() != me && cred.uid() != 0 {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                libc::EPERM,
                format!("handover: peer uid {} is not ours ({me})", cred.uid()),
            ));
        }
        let hello = format!("{HELLO} {}\n", self.fds.len());
        let raw: Vec<RawFd> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
        loop {
            stream
                .writable()
                .await
                .map_err(|e| Error::io(e, "handover: wait to send"))?;
            match stream.try_io(tokio::io::Interest::WRITABLE, || {
                send_fds(stream.as_raw_fd(), hello.as_bytes(), &raw)
            }) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::io(e, "handover: send the listening sockets")),
            }
        }
        let mut answer = [0u8; READY.len()];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| Error::io(e, "handover: read the successor's confirmation"))?;
        if answer != READY {
            return Err(protocol(format!(
                "handover: the successor answered {:?}, not \"ready\"",
                String::from_utf8_lossy(&answer)
            )));
        }
        Ok(())
    }
}

impl Drop for Offer {
    /// Removes the control socket file, unless a successor has put its own
    /// in its place (another inode), also when the offer was never served.
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn protocol(message: String) -> Error {
    Error::new(ErrorKind::InvalidConfig, code::INVALID_CONFIG, message)
}

/// Listening sockets received from a predecessor: serve them
/// ([`Listen::Inherited`](super::Listen::Inherited)), then [`Taken::confirm`].
#[derive(Debug)]
pub struct Taken {
    /// The sockets, one per lane of the predecessor.
    pub inherited: Inherited,
    stream: StdUnixStream,
}

impl Taken {
    /// Tells the predecessor this process accepts on the sockets now, so it
    /// stops accepting and drains.
    pub fn confirm(mut self) -> Result<()> {
        self.stream
            .write_all(READY)
            .map_err(|e| Error::io(e, "handover: confirm to the predecessor"))
    }
}

/// Connects to a predecessor's control socket at `path` and takes its
/// listening sockets (blocking, at most [`HANDOVER_TIMEOUT`]). With
/// `expect_pid`, the peer must be that process (`SO_PEERCRED`): a stale
/// pidfile never hands us someone else's sockets.
pub fn receive(path: &Path, expect_pid: Option<u32>) -> Result<Taken> {
    let at = |what: &str| format!("{what} {}", path.display());
    let stream =
        StdUnixStream::connect(path).map_err(|e| Error::io(e, at("connect to handover socket")))?;
    if let Some(pid) = expect_pid {
        let peer = peer_pid(&stream).map_err(|e| Error::io(e, at("peer credentials of")))?;
        if peer != pid {
            return Err(protocol(format!(
                "{} is served by pid {peer}, not {pid} from the pidfile",
                path.display()
            )));
        }
    }
    let set = |s: &StdUnixStream| {
        s.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
        s.set_write_timeout(Some(HANDOVER_TIMEOUT))
    };
    set(&stream).map_err(|e| Error::io(e, at("set timeouts on")))?;
    let (text, fds) = recv_fds(&stream).map_err(|e| Error::io(e, at("receive sockets from")))?;
    let count = text
        .strip_prefix(HELLO)
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|n| n.trim().parse::<usize>().ok());
    if count != Some(fds.len()) || fds.is_empty() {
        // Dropping the stream without "ready" leaves the predecessor serving.
        return Err(protocol(format!(
            "{}: expected \"{HELLO} N\" with N sockets, got {text:?} with {}",
            path.display(),
            fds.len()
        )));
    }
    let named = fds
        .into_iter()
        .enumerate()
        .map(|(i, fd)| (fd, format!("handed-over socket {i}")))
        .collect();
    Ok(Taken {
        inherited: Inherited::new(named),
        stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use crate::server::{Listen, ServerBuilder};
    use crate::service::Echo;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_successor_takes_the_socket_and_the_old_server_drains() {
        let dir = tempfile::tempdir().unwrap();
        let path = control_path(&dir.path().join("pid"));
        let old = ServerBuilder::new()
            .listen(Endpoint::loopback_v4(0))
            .bind()
            .unwrap();
        let at = old.local_endpoint();
        let old_handle = old.handle();
        let offered = offer(&path, old.listener_fds().unwrap()).unwrap();
        let offering = tokio::spawn(offered.serve(old_handle.clone()));
        let old_run = tokio::spawn(old.run(Echo));
        // A connection to the old server, still open across the handover.
        let mut held = tokio::net::TcpStream::connect(at.socket_addr())
            .await
            .unwrap();
        held.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        held.read_exact(&mut one).await.unwrap();

        let path2 = path.clone();
        let taken = tokio::task::spawn_blocking(move || receive(&path2, Some(std::process::id())))
            .await
            .unwrap()
            .unwrap();
        let mut b = ServerBuilder::new().workers(1);
        b = b.listen(at);
        let mut config = b.config().clone();
        config.listen = Listen::Inherited(taken.inherited.clone());
        let new = ServerBuilder::from_config(config).bind().unwrap();
        assert_eq!(new.local_endpoint(), at);
        let new_handle = new.handle();
        let new_run = tokio::spawn(new.run(Echo));
        taken.confirm().unwrap();
        offering.await.unwrap();
        assert!(old_handle.is_shutting_down());
        // The held connection still echoes while the old server drains.
        held.write_all(b"b").await.unwrap();
        held.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"b");
        drop(held);
        let summary = tokio::time::timeout(Duration::from_secs(30), old_run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(summary.aborted, 0);
        // New clients reach the successor on the same port.
        let mut c = tokio::net::TcpStream::connect(at.socket_addr())
            .await
            .unwrap();
        c.write_all(b"c").await.unwrap();
        c.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"c");
        new_handle.shutdown();
        drop(c);
        tokio::time::timeout(Duration::from_secs(30), new_run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!path.exists(), "the old server removed its control socket");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_successor_that_never_confirms_leaves_the_old_server_serving() {
        let dir = tempfile::tempdir().unwrap();
        let path = control_path(&dir.path().join("pid"));
        let old = ServerBuilder::new()
            .listen(Endpoint::loopback_v4(0))
            .bind()
            .unwrap();
        let handle = old.handle();
        let offering = tokio::spawn(
            offer(&path, old.listener_fds().unwrap())
                .unwrap()
                .serve(handle.clone()),
        );
        let take = |path: PathBuf| {
            tokio::task::spawn_blocking(move || receive(&path, Some(std::process::id())))
        };
        // Takes the sockets, then goes away (a successor that failed to start).
        let gone = take(path.clone()).await.unwrap().unwrap();
        assert_eq!(gone.inherited.len(), 1);
        drop(gone);
        // The old server still offers (the next successor gets the sockets)
        // and never started shutting down.
        let next = take(path.clone()).await.unwrap().unwrap();
        assert!(!handle.is_shutting_down());
        // A stale pidfile: the peer is not the pid it names.
        let stale = tokio::task::spawn_blocking({
            let path = path.clone();
            move || receive(&path, Some(std::process::id() + 1))
        });
        next.confirm().unwrap();
        tokio::time::timeout(Duration::from_secs(30), offering)
            .await
            .unwrap()
            .unwrap();
        assert!(handle.is_shutting_down());
        let stale = stale.await.unwrap();
        assert!(stale.is_err(), "{stale:?}");
    }
}
