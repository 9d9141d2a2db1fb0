//! The accept loop: take a permit, accept, hand the connection to the service.
//!
//! A permit is taken *before* `accept(2)` so the limit is known the moment a
//! client arrives; without one the client is still accepted (so it does not
//! sit in the backlog retrying) but closed, after the service's optional
//! refusal line, with a lingering close (`linger`) so that a client already
//! sending reads the line instead of a reset. Per-connection accept failures
//! never stop the loop.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ServerConfig;
use super::connection;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;
use crate::service::{Connection, Service, linger};

/// Pause after running out of descriptors (or buffers): accepting again at
/// once would spin on the same error while connections that could free one
/// wait for CPU.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// Rejected connections a loop lets linger at once (each up to
/// [`linger::LINGER_TIME`]). They hold descriptors beyond the connection
/// limit, so they are few: well within the descriptors the limit keeps in
/// reserve. A flood past them is closed at once, as without lingering.
const MAX_LINGERING_REJECTS: usize = 8;

/// A lane's listening socket.
pub(crate) enum Listener {
    Tcp(TcpListener),
    /// Fields drop in order: the socket is closed, then its file removed.
    Unix {
        listener: UnixListener,
        path: Arc<PathBuf>,
        _file: super::unix::SocketFile,
    },
}

impl Listener {
    /// A UNIX listener on the current runtime, from a bound socket.
    pub fn unix(bound: super::unix::UnixBound) -> crate::error::Result<Listener> {
        let path = Arc::new(bound.file.path().to_path_buf());
        let listener = UnixListener::from_std(bound.listener).map_err(|e| {
            Error::io(
                e,
                format_args!("register unix:{} with the runtime", path.display()),
            )
        })?;
        Ok(Listener::Unix {
            listener,
            path,
            _file: bound.file,
        })
    }

    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(tcp) => tcp.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
            Listener::Unix { listener, .. } => {
                listener.accept().await.map(|(s, _)| Accepted::Unix(s))
            }
        }
    }
}

/// An accepted client: over TCP with its address, or over a UNIX socket
/// (no address: its socket is unnamed).
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

/// What the loop needs, borrowed from the [`Server`](super::Server).
pub(crate) struct AcceptLoop<'a, S> {
    pub listener: &'a Listener,
    pub local: Endpoint,
    pub service: &'a Arc<S>,
    pub config: &'a ServerConfig,
    pub metrics: &'a Arc<Metrics>,
    pub shutdown: &'a CancellationToken,
    /// The connection limit, shared by every lane of the server.
    pub permits: Arc<Semaphore>,
    /// This loop's first connection id, and the distance to its next.
    pub first_id: u64,
    pub id_step: u64,
    /// TLS servers: the handshake comes first, in the connection's task.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<super::admit::TlsAdmission>>,
    /// PROXY protocol servers: untrusted sources are closed here, the
    /// header is read first in the connection's task.
    pub proxy: Option<Arc<super::proxy::ProxyAdmission>>,
    /// Checked right after accept, before anything else.
    pub access: Option<Arc<super::access::AccessControl>>,
}

impl<S: Service> AcceptLoop<'_, S> {
    /// Accepts until `shutdown` is cancelled, spawning one task per connection
    /// into `conns` (and reaping finished ones so the set stays small).
    pub async fn run(self, conns: &mut JoinSet<()>) {
        let permits = self.permits.clone();
        let mut next_id = self.first_id;
        let mut errors = RateLimitedLog::default();
        // Rejected connections in their lingering close; dropped (closed)
        // with the loop at shutdown.
        let mut lingering = JoinSet::new();
        let per_conn = PerConnection::new(self.listener, self.local);
        // Created once and kept pinned: a fresh `cancelled()` per accepted
        // connection would register (and lock) a new waiter every time.
        let cancelled = self.shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            let permit = permits.clone().try_acquire_owned().ok();
            let accepted = tokio::select! {
                biased;
                _ = &mut cancelled => return,
                // Reap finished connections while waiting for the next one.
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                Some(_) = lingering.join_next(), if !lingering.is_empty() => continue,
                r = self.listener.accept() => r,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.metrics.accept_error();
                    let err = Error::io(e, format_args!("accept on {}", self.local_label()));
                    errors.log(&err);
                    // An aborted handshake is that client's problem: go on at
                    // once. Anything else (EMFILE, ENFILE, ENOBUFS) would
                    // fail again immediately, so back off.
                    if err.kind() != ErrorKind::ConnectionAborted {
                        self.metrics.accept_backoff();
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(EMFILE_BACKOFF) => {}
                        }
                    }
                    continue;
                }
            };
            let (stream, addr) = match accepted {
                Accepted::Tcp(stream, addr) => (stream, addr),
                Accepted::Unix(stream) => {
                    // No address to check: access lists and PROXY are
                    // refused with a UNIX listener when the server binds.
                    match permit.or_else(|| permits.clone().try_acquire_owned().ok()) {
                        Some(permit) => {
                            let id = next_id;
                            next_id += self.id_step;
                            let conn = self.unix_connection(stream, id);
                            self.metrics.connection_opened();
                            conns.spawn(connection::run(&**self.service, conn, permit));
                        }
                        None => self.reject_unix(stream, &mut lingering),
                    }
                    continue;
                }
            };
            // Untrusted sources on a PROXY listener: closed with nothing
            // read, no task and no slot (a flood costs an accept each).
            if let Some(proxy) = &self.proxy
                && !proxy.trusts(addr)
            {
                proxy.untrusted(self.metrics, addr);
                drop(stream);
                continue;
            }
            // Refused addresses are closed here, before a task, a TLS
            // handshake or a service byte: a denied flood costs an accept
            // and a close each, and holds no connection slot. Behind a
            // PROXY balancer the TCP peer is the balancer: the list is
            // checked against the client its header carries, in the
            // connection's task, instead.
            if self.proxy.is_none()
                && let Some(access) = &self.access
                && !access.admit(addr.ip(), self.metrics)
            {
                drop(stream);
                continue;
            }
            // A connection may have closed while we waited in accept.
            match permit.or_else(|| permits.clone().try_acquire_owned().ok()) {
                Some(permit) => {
                    let id = next_id;
                    next_id += self.id_step;
                    let conn = self.connection(stream, addr, id, per_conn);
                    self.metrics.connection_opened();
                    if let Some(proxy) = &self.proxy {
                        conns.spawn(super::proxy::task(
                            self.service.clone(),
                            proxy.clone(),
                            self.access.clone(),
                            #[cfg(feature = "tls")]
                            self.tls.clone(),
                            conn,
                            permit,
                        ));
                        continue;
                    }
                    #[cfg(feature = "tls")]
                    if let Some(tls) = &self.tls {
                        conns.spawn(super::admit::tls(
                            self.service.clone(),
                            tls.clone(),
                            conn,
                            permit,
                        ));
                        continue;
                    }
                    conns.spawn(connection::run(&**self.service, conn, permit));
                }
                None => self.reject(stream, addr, &mut lingering),
            }
        }
    }

    fn connection(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        id: u64,
        per_conn: PerConnection,
    ) -> Connection {
        if !per_conn.nodelay_inherited
            && let Err(e) = stream.set_nodelay(true)
        {
            tracing::debug!(peer = %addr, "set TCP_NODELAY: {e}");
        }
        let local = match per_conn.local {
            Some(local) => local,
            None => stream.local_addr().map_or(self.local, Endpoint::from),
        };
        Connection {
            local,
            stream: stream.into(),
            peer: Endpoint::from(addr),
            tcp_peer: Endpoint::from(addr),
            id,
            shutdown: self.shutdown.clone(),
            idle_timeout: self.config.idle_timeout,
            max_line: self.config.max_line,
            metrics: self.metrics.clone(),
            tls: None,
            unix: None,
        }
    }

    /// A UNIX client: no IP address (`peer`, `tcp_peer`, `local` are the
    /// unspecified `0.0.0.0:0`), the listener's path in `unix`.
    fn unix_connection(&self, stream: UnixStream, id: u64) -> Connection {
        let path = match self.listener {
            Listener::Unix { path, .. } => Some(path.clone()),
            Listener::Tcp(_) => None,
        };
        let none = Endpoint::any_v4(0);
        Connection {
            local: none,
            stream: crate::service::Stream::other(stream),
            peer: none,
            tcp_peer: none,
            id,
            shutdown: self.shutdown.clone(),
            idle_timeout: self.config.idle_timeout,
            max_line: self.config.max_line,
            metrics: self.metrics.clone(),
            tls: None,
            unix: path,
        }
    }

    /// Over the limit on a UNIX listener: the refusal line, if any, then a
    /// close once the client has stopped sending (or after the lingering
    /// time): Linux resets a UNIX peer whose data was left unread.
    fn reject_unix(&self, mut stream: UnixStream, lingering: &mut JoinSet<()>) {
        self.metrics.connection_rejected();
        if let Some(line) = self.service.reject_line() {
            let _ = stream.try_write(line);
        }
        tracing::info!(
            peer = %self.local_label(), duration_s = 0.0, bytes_in = 0u64, bytes_out = 0u64,
            close = "rejected", reason = "max_connections: at the connection limit",
            "connection closed"
        );
        if lingering.len() < MAX_LINGERING_REJECTS {
            lingering.spawn(async move {
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                let drain = async {
                    loop {
                        match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                };
                let _ = tokio::time::timeout(linger::LINGER_TIME, drain).await;
            });
        }
    }

    /// `unix:PATH` for a UNIX listener, else the local endpoint.
    fn local_label(&self) -> crate::endpoint::Address {
        match self.listener {
            Listener::Unix { path, .. } => crate::endpoint::Address::Unix(path.to_path_buf()),
            Listener::Tcp(_) => self.local.into(),
        }
    }

    /// Over the limit: the service's refusal line, if any, then a
    /// lingering close in its own task (or a plain close if too many linger).
    fn reject(&self, mut stream: TcpStream, addr: SocketAddr, lingering: &mut JoinSet<()>) {
        self.metrics.connection_rejected();
        // Over TLS the client expects a ServerHello: a plain-text line
        // would be garbage to it (and the TLS handshake is what the
        // limit saves), so it is just closed.
        #[cfg(feature = "tls")]
        let line = self.service.reject_line().filter(|_| self.tls.is_none());
        #[cfg(not(feature = "tls"))]
        let line = self.service.reject_line();
        if let Some(line) = line {
            // A fresh socket's send buffer is empty: this does not block, and
            // being best effort it never stalls the loop.
            let _ = stream.try_write(line);
        }
        // Like every close, one line at -v; it never reached a service,
        // so it is not in the closed counters (`rejected_total` has it).
        tracing::info!(
            peer = %addr, duration_s = 0.0, bytes_in = 0u64, bytes_out = 0u64,
            close = "rejected", reason = "max_connections: at the connection limit",
            "connection closed"
        );
        if lingering.len() < MAX_LINGERING_REJECTS {
            let metrics = self.metrics.clone();
            lingering.spawn(async move {
                linger::lingering_close(&mut stream, &metrics).await;
            });
        }
    }
}

/// What the accept loop can settle once for all connections instead of with
/// a syscall per connection (each one is ~2-3 % of an accepted connection's
/// server CPU on loopback).
#[derive(Debug, Clone, Copy)]
struct PerConnection {
    /// Linux copies `TCP_NODELAY` from the listener to every accepted socket,
    /// so one `setsockopt` on the listener replaces one per connection.
    nodelay_inherited: bool,
    /// A listener bound to one address: every connection's local endpoint is
    /// that address, no `getsockname` needed. `None` for a wildcard listener
    /// (the local address depends on the interface the client reached).
    local: Option<Endpoint>,
}

impl PerConnection {
    fn new(listener: &Listener, local: Endpoint) -> PerConnection {
        let nodelay_inherited = match listener {
            Listener::Tcp(tcp) => {
                cfg!(target_os = "linux")
                    && socket2::SockRef::from(tcp).set_tcp_nodelay(true).is_ok()
            }
            Listener::Unix { .. } => false,
        };
        PerConnection {
            nodelay_inherited,
            local: (!local.is_unspecified()).then_some(local),
        }
    }
}

/// Logs accept errors at most once a second, saying how many were skipped.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn log(&mut self, err: &Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        self.last = Some(now);
        let skipped = std::mem::take(&mut self.suppressed);
        match err.kind() {
            // A client gave up between handshake and accept: routine.
            ErrorKind::ConnectionAborted => {
                tracing::debug!(code = err.code(), skipped, "{err}; still accepting")
            }
            _ => tracing::warn!(code = err.code(), skipped, "{err}; still accepting"),
        }
    }
}
