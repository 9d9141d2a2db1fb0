//! [`ServerBuilder`] and [`ServerConfig`]: every knob of the server, validated
//! before any socket opens, then [`ServerBuilder::bind`] to get a [`Server`].

use std::time::Duration;

use crate::codec::DEFAULT_MAX_LINE;
use crate::endpoint::{DEFAULT_PORT, Endpoint};
use crate::error::{Error, ErrorKind, Result, code};
use crate::net::{Acceptor, DEFAULT_BACKLOG};

use super::Server;

/// Default idle timeout: a connection with no traffic for 5 minutes is closed.
/// Long enough for a person typing into `nc`, short enough that forgotten
/// clients do not pin descriptors forever.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default grace period for draining connections at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `TCP_DEFER_ACCEPT` wait, in seconds: how long the kernel holds a silent
/// handshake before handing it to `accept` anyway.
///
/// One second, the shortest there is: the kernel counts the wait in SYN-ACK
/// retransmissions (1 s, then 3 s, 7 s, 15 s in total), so 10 would hold a
/// silent client for 15 s. The saving does not depend on the value (any
/// client that sends within it is accepted together with its first bytes),
/// while a silent client is seen (and its idle timeout, connection slot and
/// shutdown apply) about a second late instead of 15 s late.
pub const DEFER_ACCEPT_SECS: u32 = 1;

/// Descriptors kept back from the `RLIMIT_NOFILE`-derived connection limit for
/// the listener, the runtime's epoll/eventfd, stdio and logs.
const RESERVED_FDS: u64 = 32;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `[::]:port` dual-stack, falling back to `0.0.0.0:port` on hosts
    /// without IPv6 ([`Acceptor::bind_listen_any`]).
    Any(u16),
    /// Exactly this endpoint (port 0 lets the kernel choose).
    At(Endpoint),
    /// Sockets already listening, opened by someone else: systemd socket
    /// activation ([`ListenFds`](crate::net::ListenFds)), a predecessor's
    /// handover ([`handover`](super::handover)), or the caller's own
    /// `TcpListener` ([`ServerBuilder::listener`]). One lane per socket
    /// with either engine: [`Engine::PerCore`] gets no more lanes than
    /// sockets (one inherited socket is one worker thread), since a
    /// listener of our own beside them would lose its queue at exit.
    #[cfg(target_os = "linux")]
    Inherited(crate::net::Inherited),
    /// A UNIX-domain stream socket at this path
    /// ([`ServerBuilder::listen_unix`], [`unix`](super::unix) for the
    /// socket file's lifecycle). Its clients have no IP address: access
    /// lists, the PROXY protocol, TLS and [`Engine::PerCore`] are refused
    /// with it.
    Unix(std::path::PathBuf),
}

/// How a server spreads connections over its [`ServerConfig::workers`]
/// threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// One listener and one tokio runtime whose worker threads share every
    /// connection; an idle worker steals tasks from a busy one. Portable,
    /// and balanced however unevenly clients behave. The default.
    #[default]
    Shared,
    /// One single-threaded runtime per worker, each with its own
    /// `SO_REUSEPORT` listener on the same endpoint
    /// ([`Acceptor::bind_listen_shared`]): the kernel assigns each connection
    /// to a thread by a hash of the client's address, and it stays there. No
    /// work stealing and no cross-thread wakeups, but no rebalancing either:
    /// a few heavy clients hashed to one thread leave the others idle. Linux
    /// (and the BSDs') `SO_REUSEPORT`.
    PerCore,
}

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; default `[::]:3333` dual-stack.
    pub listen: Listen,
    /// `listen(2)` backlog requested; default 30 (the kernel may cap it).
    pub backlog: u32,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Close a connection after this long without traffic; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Longest line line-based services accept, in bytes.
    pub max_line: usize,
    /// How long shutdown waits for connections to finish before closing them.
    pub shutdown_grace: Duration,
    /// Runtime worker threads ([`ServerConfig::runtime`]); 1 means a
    /// single-threaded runtime with no work stealing.
    pub workers: usize,
    /// Set `TCP_DEFER_ACCEPT` on the listener (for client-speaks-first services).
    pub defer_accept: bool,
    /// How connections are spread over the workers; default [`Engine::Shared`].
    pub engine: Engine,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Listen::Any(DEFAULT_PORT),
            backlog: DEFAULT_BACKLOG,
            max_connections: default_max_connections(),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_line: DEFAULT_MAX_LINE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            defer_accept: false,
            engine: Engine::Shared,
        }
    }
}

impl ServerConfig {
    /// Checks every value's range; the error names the offending setting.
    pub fn validate(&self) -> Result<()> {
        let checks: [(&str, bool); 4] = [
            ("backlog", self.backlog >= 1),
            ("max connections", self.max_connections >= 1),
            ("max line", self.max_line >= 1),
            ("workers", self.workers >= 1),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((name, _)) => Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                format!("{name} must be at least 1"),
            )),
            None => Ok(()),
        }
    }

    /// The runtime to call [`Server::run`] on: for [`Engine::Shared`], one
    /// with [`ServerConfig::workers`] threads (the current-thread flavour for
    /// 1: no work stealing, no cross-thread wakeups; multi-threaded
    /// otherwise). For [`Engine::PerCore`], a current-thread one: it serves
    /// the first listener, and `run` starts a thread for each other.
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime> {
        let mut builder = if self.workers <= 1 || self.engine == Engine::PerCore {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(self.workers);
            b
        };
        builder
            .enable_all()
            .build()
            .map_err(|e| Error::io(e, "start the tokio runtime"))
    }
}

/// Opens the server's listeners: one, or one per worker with
/// [`Engine::PerCore`], all on the port the first one got; or takes the
/// inherited ones.
fn listeners(config: &ServerConfig) -> Result<Vec<Acceptor>> {
    let backlog = config.backlog;
    let first = match (&config.listen, config.engine) {
        (Listen::Any(port), Engine::Shared) => Acceptor::bind_listen_any(*port, backlog)?,
        (Listen::At(ep), Engine::Shared) => Acceptor::bind_listen(ep, backlog)?,
        (Listen::Any(port), Engine::PerCore) => Acceptor::bind_listen_any_shared(*port, backlog)?,
        (Listen::At(ep), Engine::PerCore) => Acceptor::bind_listen_shared(ep, backlog)?,
        #[cfg(target_os = "linux")]
        (Listen::Inherited(inherited), engine) => {
            let acceptors = inherited.take()?;
            if engine == Engine::PerCore && acceptors.len() < config.workers {
                tracing::warn!(
                    listeners = acceptors.len(),
                    workers = config.workers,
                    "per-core engine on inherited listeners: one worker per listener"
                );
            }
            return Ok(acceptors);
        }
        (Listen::Unix(path), _) => {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                format!("unix:{} is not a TCP listener", path.display()),
            ));
        }
    };
    let mut acceptors = vec![first];
    if config.engine == Engine::PerCore {
        let bound = acceptors[0].local_endpoint()?;
        for _ in 1..config.workers {
            acceptors.push(Acceptor::bind_listen_shared(&bound, backlog)?);
        }
    }
    Ok(acceptors)
}

/// The connection limit the process's descriptor limit allows: the soft
/// `RLIMIT_NOFILE` minus a few descriptors the server itself needs.
pub fn default_max_connections() -> usize {
    let soft = crate::net::open_file_limit().unwrap_or(1024);
    let usable = soft.saturating_sub(RESERVED_FDS).max(1);
    usize::try_from(usable).unwrap_or(usize::MAX)
}

/// Builds a [`Server`]: set what differs from the defaults, then
/// [`ServerBuilder::bind`].
///
/// ```no_run
/// use std::time::Duration;
/// use tcpkit::{Endpoint, server::ServerBuilder};
/// let server = ServerBuilder::new()
///     .listen(Endpoint::loopback_v4(0))
///     .idle_timeout(Some(Duration::from_secs(30)))
///     .bind()?;
/// println!("listening on {}", server.local_endpoint());
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
    proxy: Option<super::ProxyProtocol>,
    access: Option<super::access::AccessList>,
}

impl ServerBuilder {
    /// A builder with the defaults of [`ServerConfig::default`].
    pub fn new() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Starts from an existing configuration.
    pub fn from_config(config: ServerConfig) -> ServerBuilder {
        ServerBuilder {
            config,
            #[cfg(feature = "tls")]
            tls: None,
            proxy: None,
            access: None,
        }
    }

    /// Reads a PROXY protocol header (v1 or v2) on every connection before
    /// anything else, TLS included: the client it carries becomes the
    /// connection's `peer` (the socket's stays in `tcp_peer`). Sources
    /// outside the trusted networks ([`ProxyProtocol::trusts`](super::ProxyProtocol::trusts)) are refused at accept; a trusted
    /// source without a valid header within the deadline is closed.
    pub fn proxy_protocol(mut self, proxy: super::ProxyProtocol) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Checks every accepted client's address against `list` right after
    /// accept, before the TLS handshake and before any service byte; a
    /// refused client is closed at once, counted
    /// (`Rejection::AccessList`: [`Snapshot::rejected_access_list`](crate::metrics::Snapshot::rejected_access_list))
    /// and logged at most once a second per reason. Swap the list while the
    /// server runs with [`Server::access_control`].
    pub fn access_list(mut self, list: super::access::AccessList) -> Self {
        self.access = Some(list);
        self
    }

    /// Serves over TLS: every accepted connection is handshaken (in its
    /// own task, under the config's deadline and handshake cap) before the
    /// service gets it; the service sees the decrypted stream.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Listens on exactly `endpoint`. A `[::]` wildcard still falls back to
    /// `0.0.0.0` on hosts without IPv6.
    pub fn listen(mut self, endpoint: Endpoint) -> Self {
        self.config.listen = if endpoint.is_ipv6() && endpoint.is_unspecified() {
            Listen::Any(endpoint.port())
        } else {
            Listen::At(endpoint)
        };
        self
    }

    /// Listens on a UNIX-domain stream socket at `path` ([`Listen::Unix`]):
    /// a stale socket file there is replaced, a live one or any other file
    /// refused; the file is removed when the server stops. Path checks
    /// (length, NUL) belong to the caller
    /// ([`Target::parse`](crate::endpoint::Target::parse) makes them).
    pub fn listen_unix(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.listen = Listen::Unix(path.into());
        self
    }

    /// Serves on a listener the caller opened (bound and listening, e.g.
    /// from a supervisor): [`Listen::Inherited`].
    #[cfg(target_os = "linux")]
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.config.listen = Listen::Inherited(crate::net::Inherited::from_listener(listener));
        self
    }

    /// The `listen(2)` backlog.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// The most connections served at once.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = max;
        self
    }

    /// Idle timeout; `None` disables it.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Longest accepted line, in bytes.
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.config.max_line = bytes;
        self
    }

    /// Grace period for draining at shutdown.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Worker threads for [`ServerConfig::runtime`].
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// Whether to set `TCP_DEFER_ACCEPT` on the listener.
    pub fn defer_accept(mut self, on: bool) -> Self {
        self.config.defer_accept = on;
        self
    }

    /// How connections are spread over the workers ([`Engine`]).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.config.engine = engine;
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Validates, then opens, binds and listens (`socket(2)`, `bind(2)`,
    /// `listen(2)`), blocking. No runtime is needed until [`Server::run`].
    /// With [`Engine::PerCore`], one listener per worker, all on the port
    /// the first one got.
    pub fn bind(self) -> Result<Server> {
        self.config.validate()?;
        if let Some(proxy) = &self.proxy {
            proxy.validate()?;
        }
        // Built before any socket opens: a bad configuration binds nothing.
        #[cfg(feature = "tls")]
        let tls = match self.tls {
            Some(tls) => Some(std::sync::Arc::new(crate::tls::Live::new(tls)?)),
            None => None,
        };
        if let Listen::Unix(path) = &self.config.listen {
            let refused = [
                ("access lists", self.access.is_some()),
                ("the PROXY protocol", self.proxy.is_some()),
                #[cfg(feature = "tls")]
                ("TLS", tls.is_some()),
                ("the per-core engine", self.config.engine == Engine::PerCore),
            ];
            if let Some((what, _)) = refused.iter().find(|(_, on)| *on) {
                return Err(super::unix::refused(what));
            }
            let bound = super::unix::bind_listen_unix(path, self.config.backlog)?;
            return Ok(Server::new_unix(bound, self.config));
        }
        let acceptors = listeners(&self.config)?;
        if self.config.defer_accept {
            for acceptor in &acceptors {
                acceptor.set_defer_accept(DEFER_ACCEPT_SECS)?;
            }
        }
        let mut server = Server::new(acceptors, self.config)?;
        server.proxy = self
            .proxy
            .map(|p| std::sync::Arc::new(super::proxy::ProxyAdmission::new(p)));
        server.access = self
            .access
            .map(|list| std::sync::Arc::new(super::access::AccessControl::new(list)));
        #[cfg(feature = "tls")]
        {
            server.tls = tls.map(|live| std::sync::Arc::new(super::admit::TlsAdmission::new(live)));
        }
        Ok(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_are_rejected_before_binding() {
        let err = ServerBuilder::new().backlog(0).bind().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("backlog"), "{err}");
        let err = ServerBuilder::new().workers(0).bind().unwrap_err();
        assert!(err.message().contains("workers"), "{err}");
    }

    #[test]
    fn per_core_binds_one_listener_per_worker_on_one_port() {
        for listen in [Endpoint::loopback_v4(0), Endpoint::any_v6(0)] {
            let server = ServerBuilder::new()
                .listen(listen)
                .workers(3)
                .engine(Engine::PerCore)
                .bind()
                .unwrap();
            let ports: Vec<u16> = server
                .acceptors
                .iter()
                .map(|a| a.local_endpoint().unwrap().port())
                .collect();
            assert_eq!(ports.len(), 3, "{listen}");
            assert!(ports.iter().all(|&p| p == ports[0] && p != 0), "{ports:?}");
        }
        // The shared engine: one listener whatever the workers.
        let server = ServerBuilder::new()
            .listen(Endpoint::loopback_v4(0))
            .workers(3)
            .bind()
            .unwrap();
        assert_eq!(server.acceptors.len(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn inherited_listeners_are_served_as_they_are_with_either_engine() {
        for engine in [Engine::Shared, Engine::PerCore] {
            let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let at = std.local_addr().unwrap();
            let builder = ServerBuilder::new().listener(std).workers(3).engine(engine);
            let again = builder.clone();
            let server = builder.bind().unwrap();
            // Per-core opens no listener of its own beside the inherited one.
            assert_eq!(server.acceptors.len(), 1, "{engine:?}");
            assert_eq!(server.local_endpoint().socket_addr(), at);
            // A clone of the builder cannot take the same descriptor twice.
            assert_eq!(again.bind().unwrap_err().kind(), ErrorKind::InvalidConfig);
        }
    }

    #[test]
    fn a_unix_listener_refuses_what_needs_a_client_address_or_tcp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.sock");
        let unix = || ServerBuilder::new().listen_unix(&path);
        let list = super::super::access::AccessList::default();
        for (builder, what) in [
            (unix().access_list(list), "access lists"),
            (
                unix().proxy_protocol(super::super::ProxyProtocol::new(["127.0.0.0/8"
                    .parse()
                    .expect("cidr")])),
                "PROXY",
            ),
            (unix().engine(Engine::PerCore), "per-core"),
        ] {
            let err = builder.bind().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
            assert!(err.message().contains(what), "{err}");
            assert!(err.message().contains("TCP listener"), "{err}");
            assert!(!path.exists(), "{what}: a socket file was made");
        }
        let server = unix().bind().unwrap();
        assert_eq!(
            server.local_address().to_string(),
            format!("unix:{}", path.display())
        );
        assert!(server.local_endpoint().is_unspecified());
        drop(server);
        assert!(!path.exists(), "an unused server removes its file too");
    }

    #[test]
    fn wildcard_v6_listen_keeps_the_fallback() {
        let b = ServerBuilder::new().listen(Endpoint::any_v6(7));
        assert_eq!(b.config().listen, Listen::Any(7));
    }

    #[test]
    fn default_max_connections_leaves_descriptors_for_the_rest() {
        // Built with `.max(1)`, so ">= 1" could not fail: compare with the
        // soft open-file limit this process really has.
        let soft = || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the struct we pass and nothing else.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
            #[allow(clippy::useless_conversion)]
            u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX)
        };
        let want = |soft: u64| {
            soft.checked_sub(RESERVED_FDS)
                .filter(|&n| n > 0)
                .unwrap_or(1)
        };
        // Another test may raise the limit meanwhile: read it on both sides.
        let (before, got, after) = (soft(), default_max_connections() as u64, soft());
        assert!(
            got == want(before) || got == want(after),
            "{got} for a soft limit of {before} (then {after}), {RESERVED_FDS} reserved"
        );
    }
}
