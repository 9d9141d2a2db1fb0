//! Graceful shutdown: the handle that requests it, and the drain that waits
//! for connections up to the grace period before closing what is left.
//!
//! The order matters and is the [`Server::run`](super::Server::run)'s: the
//! accept loop stops and the listener is dropped *first* (the kernel stops
//! completing handshakes for us), then connections drain.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Requests shutdown of a running [`Server`](super::Server). Cloneable; the
/// library never installs signal handlers, the CLI calls this on SIGINT/SIGTERM.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    pub(crate) graceful: CancellationToken,
    pub(crate) now: CancellationToken,
}

impl ShutdownHandle {
    pub(crate) fn new() -> ShutdownHandle {
        ShutdownHandle {
            graceful: CancellationToken::new(),
            now: CancellationToken::new(),
        }
    }

    /// Stops accepting, closes the listener, and lets connections finish
    /// in-flight data for up to the grace period. Idempotent.
    pub fn shutdown(&self) {
        self.graceful.cancel();
    }

    /// Like [`ShutdownHandle::shutdown`] but closes every connection at once
    /// (a second Ctrl-C).
    pub fn shutdown_now(&self) {
        self.graceful.cancel();
        self.now.cancel();
    }

    /// Whether shutdown has been requested.
    pub fn is_shutting_down(&self) -> bool {
        self.graceful.is_cancelled()
    }
}

/// Waits for every connection task, at most `grace`, or until `now` is
/// cancelled; then aborts the rest. Returns how many were aborted.
pub(crate) async fn drain(
    conns: &mut JoinSet<()>,
    grace: Duration,
    now: &CancellationToken,
) -> usize {
    let all_done = async { while conns.join_next().await.is_some() {} };
    tokio::select! {
        _ = all_done => return 0,
        _ = tokio::time::sleep(grace) => {}
        _ = now.cancelled() => {}
    }
    let left = conns.len();
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    left
}
