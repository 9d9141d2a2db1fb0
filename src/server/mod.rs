//! The async server: accept loop, connection limits, idle timeouts and
//! graceful shutdown, running a [`Service`] per connection.
//!
//! * [`builder`]: [`ServerBuilder`] / [`ServerConfig`], validated before any
//!   socket opens.
//! * `accept`: the accept loop (permit before accept, `EMFILE` backoff).
//! * [`connection`]: what a service is given ([`Connection`], [`IdleClock`]).
//! * [`shutdown`]: [`ShutdownHandle`] and the drain with a deadline.
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
pub mod builder;
pub mod connection;
pub mod shutdown;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

pub use builder::{Listen, ServerBuilder, ServerConfig};
pub use connection::{Connection, IdleClock};
pub use shutdown::ShutdownHandle;

use crate::endpoint::Endpoint;
use crate::error::Result;
use crate::metrics::{Metrics, Snapshot};
use crate::net::Acceptor;
use crate::service::Service;

/// A bound, listening server, ready to [`Server::run`] a service.
#[derive(Debug)]
pub struct Server {
    acceptor: Acceptor,
    config: ServerConfig,
    local: Endpoint,
    metrics: Arc<Metrics>,
    handle: ShutdownHandle,
}

/// What a server did, printed by `tcpkit serve` at exit.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The counters at the end.
    pub snapshot: Snapshot,
    /// From [`Server::run`] to the end of the drain.
    pub duration: Duration,
    /// Connections still open at the end of the grace period, closed by force.
    pub aborted: usize,
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
        )
    }
}

impl Server {
    fn new(acceptor: Acceptor, config: ServerConfig) -> Result<Server> {
        let local = acceptor.local_endpoint()?;
        Ok(Server {
            acceptor,
            config,
            local,
            metrics: Arc::new(Metrics::new()),
            handle: ShutdownHandle::new(),
        })
    }

    /// The endpoint actually bound (with the kernel's port after port 0).
    pub fn local_endpoint(&self) -> Endpoint {
        self.local
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

    /// The live counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves `service` until the handle asks for shutdown, then closes the
    /// listener, drains connections for up to the grace period, closes the
    /// rest and returns the summary. Must run inside a tokio runtime.
    pub async fn run<S: Service>(self, service: S) -> Result<Summary> {
        let started = Instant::now();
        let listener = self.acceptor.into_tokio()?;
        let mut conns = JoinSet::new();
        accept::AcceptLoop {
            listener: &listener,
            local: self.local,
            service: &service,
            config: &self.config,
            metrics: &self.metrics,
            shutdown: &self.handle.graceful,
        }
        .run(&mut conns)
        .await;
        // Close the listening socket before draining, so no new client
        // completes a handshake into a backlog nobody will accept from.
        drop(listener);
        tracing::info!(open = conns.len(), "stopped accepting; draining");
        let aborted =
            shutdown::drain(&mut conns, self.config.shutdown_grace, &self.handle.now).await;
        if aborted > 0 {
            tracing::info!(
                aborted,
                "closed connections still open after the grace period"
            );
        }
        Ok(Summary {
            snapshot: self.metrics.snapshot(),
            duration: started.elapsed(),
            aborted,
        })
    }
}
