//! The async server: accept loop, connection limits, idle timeouts and
//! graceful shutdown, running a [`Service`] per connection.
//!
//! * [`builder`]: [`ServerBuilder`] / [`ServerConfig`], validated before any
//!   socket opens; [`Engine`] picks one listener shared by every worker, or
//!   one `SO_REUSEPORT` listener and runtime per worker (a *lane* each).
//! * `accept`: the accept loop (permit before accept, `EMFILE` backoff).
//! * [`access`]: allow/deny CIDRs checked right after accept
//!   ([`ServerBuilder::access_list`]), swappable while the server runs.
//! * `admit` (feature `tls`): between accept and service, the TLS handshake
//!   in the connection's own task, under a deadline and a cap
//!   ([`ServerBuilder::tls`]).
//! * [`proxy`]: the PROXY protocol header read before TLS and the
//!   service, from trusted sources only ([`ServerBuilder::proxy_protocol`]).
//! * [`connection`]: the task that runs a service on one
//!   [`Connection`](crate::service::Connection) and accounts for it.
//! * [`shutdown`]: [`ShutdownHandle`] and the drain with a deadline.
//! * [`handover`] (Linux): restart without losing a connection, the
//!   listening sockets passed to a successor over a UNIX socket.
//! * [`unix`]: a UNIX-domain listener instead of TCP
//!   ([`ServerBuilder::listen_unix`]), its socket file replaced when stale
//!   and removed at exit.
//!
//! ```
//! use tcpkit::{Endpoint, server::ServerBuilder, service::Echo};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tcpkit::Result<()> {
//! let server = ServerBuilder::new().listen(Endpoint::loopback_v4(0)).bind()?;
//! let handle = server.handle();
//! let running = tokio::spawn(server.run(Echo));
//! handle.shutdown();
//! let summary = running.await.expect("server task")?;
//! assert_eq!(summary.snapshot.connections_accepted, 0);
//! # Ok(()) }
//! ```

mod accept;
pub mod access;
#[cfg(feature = "tls")]
mod admit;
pub mod builder;
pub mod connection;
#[cfg(target_os = "linux")]
pub mod handover;
pub mod proxy;
pub mod shutdown;
pub mod unix;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

pub use builder::{Engine, Listen, ServerBuilder, ServerConfig, default_max_connections};
pub use proxy::ProxyProtocol;
pub use shutdown::ShutdownHandle;

use crate::endpoint::{Address, Endpoint};
use crate::error::{Error, ErrorKind, Result, code};
use crate::metrics::{Metrics, Snapshot};
use crate::net::Acceptor;
use crate::service::Service;

/// A bound, listening server, ready to [`Server::run`] a service.
#[derive(Debug)]
pub struct Server {
    /// One, or one per worker with [`Engine::PerCore`] (empty only with
    /// `unix`).
    acceptors: Vec<Acceptor>,
    /// [`Listen::Unix`]: the one listener, instead of `acceptors`.
    unix: Option<unix::UnixBound>,
    config: ServerConfig,
    local: Endpoint,
    metrics: Arc<Metrics>,
    handle: ShutdownHandle,
    /// Set by [`ServerBuilder::tls`]: handshake every connection first.
    #[cfg(feature = "tls")]
    tls: Option<Arc<admit::TlsAdmission>>,
    /// Set by [`ServerBuilder::proxy_protocol`]: read a header first.
    proxy: Option<Arc<proxy::ProxyAdmission>>,
    /// Set by [`ServerBuilder::access_list`]: checked right after accept.
    access: Option<Arc<access::AccessControl>>,
}

/// What a server did, printed by `tcpkit serve` at exit.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The counters at the end (flattened into the top level in JSON).
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// From [`Server::run`] to the end of the drain (`duration_s` in JSON).
    #[serde(rename = "duration_s", serialize_with = "as_seconds")]
    pub duration: Duration,
    /// Connections still open at the end of the grace period, closed by force.
    pub aborted: usize,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.snapshot;
        write!(
            f,
            "served {} connections ({} rejected over the limit, {} idle timeouts, {} closed at the deadline), {} bytes in, {} bytes out, in {:.3}s",
            s.connections_accepted,
            s.connections_rejected,
            s.idle_timeouts,
            self.aborted,
            s.bytes_in,
            s.bytes_out,
            self.duration.as_secs_f64()
        )?;
        if s.rejected_access_list > 0 {
            write!(f, "; {} refused by the access list", s.rejected_access_list)?;
        }
        let proxy = [
            ("untrusted", s.rejected_proxy_untrusted),
            ("missing", s.rejected_proxy_missing),
            ("malformed", s.rejected_proxy_malformed),
            ("too large", s.rejected_proxy_too_large),
            ("timeout", s.rejected_proxy_timeout),
            ("io", s.rejected_proxy_io),
        ];
        let refused: u64 = proxy.iter().map(|(_, n)| n).sum();
        if refused > 0 {
            let each: Vec<String> = proxy
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            write!(f, "; PROXY: {refused} refused ({})", each.join(", "))?;
        }
        let failed = s.tls_failed_timeout
            + s.tls_failed_protocol
            + s.tls_failed_certificate
            + s.tls_failed_io;
        if s.tls_handshakes + failed > 0 {
            write!(
                f,
                "; TLS: {} handshakes, {failed} failed ({} timeouts, {} protocol, {} certificate, {} io)",
                s.tls_handshakes,
                s.tls_failed_timeout,
                s.tls_failed_protocol,
                s.tls_failed_certificate,
                s.tls_failed_io
            )?;
        }
        Ok(())
    }
}

impl Server {
    fn new(acceptors: Vec<Acceptor>, config: ServerConfig) -> Result<Server> {
        let local = match acceptors.first() {
            Some(first) => first.local_endpoint()?,
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    code::INVALID_CONFIG,
                    "a server needs at least one listener",
                ));
            }
        };
        Ok(Server {
            acceptors,
            unix: None,
            config,
            local,
            metrics: Arc::new(Metrics::new()),
            handle: ShutdownHandle::new(),
            #[cfg(feature = "tls")]
            tls: None,
            proxy: None,
            access: None,
        })
    }

    fn new_unix(bound: unix::UnixBound, config: ServerConfig) -> Server {
        Server {
            acceptors: Vec::new(),
            unix: Some(bound),
            config,
            local: Endpoint::any_v4(0),
            metrics: Arc::new(Metrics::new()),
            handle: ShutdownHandle::new(),
            #[cfg(feature = "tls")]
            tls: None,
            proxy: None,
            access: None,
        }
    }

    /// The endpoint actually bound (with the kernel's port after port 0);
    /// the unspecified `0.0.0.0:0` for a UNIX listener
    /// ([`Server::local_address`] names its path).
    pub fn local_endpoint(&self) -> Endpoint {
        self.local
    }

    /// Where the server listens: the endpoint bound, or `unix:PATH`.
    pub fn local_address(&self) -> Address {
        match &self.unix {
            Some(bound) => Address::Unix(bound.file.path().to_path_buf()),
            None => Address::Inet(self.local),
        }
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The backlog in force: the requested one, capped by `somaxconn`.
    pub fn effective_backlog(&self) -> u32 {
        Acceptor::effective_backlog(self.config.backlog)
    }

    /// A handle to stop the server; take it before [`Server::run`].
    pub fn handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Whether connections are handshaken with TLS ([`ServerBuilder::tls`]).
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// A handle to swap new certificates in while the server runs (`None`
    /// without TLS). Take it before [`Server::run`].
    #[cfg(feature = "tls")]
    pub fn tls_reloader(&self) -> Option<crate::tls::TlsReloader> {
        self.tls.as_ref().map(|tls| crate::tls::TlsReloader {
            live: tls.live.clone(),
        })
    }

    /// The live access list, to [`store`](access::AccessControl::store) a
    /// new one while the server runs (`None` without
    /// [`ServerBuilder::access_list`]). Take it before [`Server::run`].
    pub fn access_control(&self) -> Option<Arc<access::AccessControl>> {
        self.access.clone()
    }

    /// The live counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves `service` until the handle asks for shutdown, then closes the
    /// listener, drains connections for up to the grace period, closes the
    /// rest and returns the summary. Must run inside a tokio runtime.
    ///
    /// With [`Engine::PerCore`] this runtime serves the first listener and
    /// a thread with its own single-threaded runtime serves each other one;
    /// they share the service, the connection limit, the counters and the
    /// shutdown handle, and `run` returns once every one has drained.
    pub async fn run<S: Service>(self, service: S) -> Result<Summary> {
        let started = Instant::now();
        let Server {
            acceptors,
            unix,
            config,
            local,
            metrics,
            handle,
            #[cfg(feature = "tls")]
            tls,
            proxy,
            access,
        } = self;
        let lanes = acceptors.len().max(1) as u64;
        let lane = |index: u64| Lane {
            index,
            lanes,
            local,
            config: config.clone(),
            metrics: metrics.clone(),
            handle: handle.clone(),
            #[cfg(feature = "tls")]
            tls: tls.clone(),
            proxy: proxy.clone(),
            access: access.clone(),
        };
        let service = Arc::new(service);
        let permits = Arc::new(Semaphore::new(config.max_connections));
        if let Some(bound) = unix {
            let aborted = match accept::Listener::unix(bound) {
                Ok(listener) => lane(0).serve_on(listener, &service, permits).await,
                Err(e) => return Err(e),
            };
            return Ok(finish(&metrics, started, aborted));
        }
        let mut acceptors = acceptors.into_iter();
        let first = acceptors.next();
        // Every other lane's runtime is built before any lane starts, so a
        // failure here leaves nothing running.
        let runtimes = acceptors
            .map(|acceptor| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| (acceptor, rt))
                    .map_err(|e| Error::io(e, "start a per-core runtime"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut others = Vec::with_capacity(runtimes.len());
        for (i, (acceptor, runtime)) in runtimes.into_iter().enumerate() {
            let (lane, service, permits) = (lane(i as u64 + 1), service.clone(), permits.clone());
            let (done, finished) = oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("tcpkit-lane-{}", lane.index))
                .spawn(move || {
                    let result = runtime.block_on(lane.serve(acceptor, &service, permits));
                    let _ = done.send(result);
                });
            if let Err(e) = spawned {
                // Stop the lanes already running before reporting.
                handle.shutdown_now();
                for finished in others {
                    let _ = finished.await;
                }
                return Err(Error::io(e, "start a per-core thread"));
            }
            others.push(finished);
        }
        let mut result = match first {
            Some(acceptor) => lane(0).serve(acceptor, &service, permits).await,
            None => Ok(0),
        };
        for finished in others {
            let lane_result = finished.await.unwrap_or_else(|_| {
                Err(Error::io(
                    std::io::Error::other("panicked"),
                    "a per-core server thread",
                ))
            });
            result = match (result, lane_result) {
                (Ok(a), Ok(b)) => Ok(a + b),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        Ok(finish(&metrics, started, result?))
    }
}

/// The summary once every lane has drained.
fn finish(metrics: &Metrics, started: Instant, aborted: usize) -> Summary {
    if aborted > 0 {
        tracing::info!(
            aborted,
            "closed connections still open after the grace period"
        );
    }
    Summary {
        snapshot: metrics.snapshot(),
        duration: started.elapsed(),
        aborted,
    }
}

/// One listener's share of a server: its accept loop and its connections.
/// A server has one lane, or one per worker with [`Engine::PerCore`].
struct Lane {
    /// 0 for the lane on the caller's runtime.
    index: u64,
    lanes: u64,
    local: Endpoint,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    handle: ShutdownHandle,
    #[cfg(feature = "tls")]
    tls: Option<Arc<admit::TlsAdmission>>,
    proxy: Option<Arc<proxy::ProxyAdmission>>,
    access: Option<Arc<access::AccessControl>>,
}

impl Lane {
    /// Accepts until shutdown, then drains; returns how many connections
    /// were still open at the deadline.
    async fn serve<S: Service>(
        self,
        acceptor: Acceptor,
        service: &Arc<S>,
        permits: Arc<Semaphore>,
    ) -> Result<usize> {
        let listener = match acceptor.into_tokio() {
            Ok(listener) => listener,
            Err(e) => {
                // The other lanes would serve on without this one's share
                // of connections: stop them all and report.
                self.handle.shutdown_now();
                return Err(e);
            }
        };
        Ok(self
            .serve_on(accept::Listener::Tcp(listener), service, permits)
            .await)
    }

    /// Accepts on `listener` until shutdown, closes it, then drains.
    async fn serve_on<S: Service>(
        self,
        listener: accept::Listener,
        service: &Arc<S>,
        permits: Arc<Semaphore>,
    ) -> usize {
        let mut conns = JoinSet::new();
        accept::AcceptLoop {
            listener: &listener,
            local: self.local,
            service,
            config: &self.config,
            metrics: &self.metrics,
            shutdown: &self.handle.graceful,
            permits,
            // Lane i numbers its connections i+1, i+1+lanes, ...: unique
            // across lanes with no shared counter.
            first_id: self.index + 1,
            id_step: self.lanes,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
            proxy: self.proxy.clone(),
            access: self.access.clone(),
        }
        .run(&mut conns)
        .await;
        // Close the listening socket before draining, so no new client
        // completes a handshake into a backlog nobody will accept from (a
        // UNIX listener's file goes with it).
        drop(listener);
        tracing::info!(
            lane = self.index,
            open = conns.len(),
            "stopped accepting; draining"
        );
        shutdown::drain(&mut conns, self.config.shutdown_grace, &self.handle.now).await
    }
}
