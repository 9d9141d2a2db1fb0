//! The task that runs a [`Service`] on one accepted [`Connection`]: it logs
//! open and close (the close at info, `-v`: peer, duration, bytes both
//! ways, reason) and adds the connection's counts, reason and lifetime to
//! the metrics.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Address;
use crate::metrics::{Close, Metrics, Rejection};
use crate::service::{CloseReason, Connection, DRAIN_QUIET, Served, Service};

/// Runs a service on one connection and accounts for it, even if the task is
/// aborted at the end of the shutdown grace period.
///
/// The service's future is built here, consuming the connection, and wrapped
/// in [`Tracked`] rather than an `async` block: awaiting a captured future
/// would store it twice (once captured, once being awaited).
pub(crate) fn run<S: Service>(
    service: &S,
    conn: Connection,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static {
    // `unix:PATH` for a client of a UNIX listener (no IP to log).
    let peer = conn.client();
    let id = conn.id;
    let metrics = conn.metrics.clone();
    tracing::debug!(%peer, id, "connection opened");
    Tracked {
        serving: service.serve(conn),
        done: Some(Done {
            metrics,
            peer,
            id,
            started: Instant::now(),
            _permit: permit,
        }),
    }
}

/// Closes a connection refused at admission (after the accept loop counted
/// it opened, before the service saw a byte): counts the refusal and the
/// close, and logs the close at info like every other, with `detail` (the
/// error) as the reason. The caller logs the refusal itself as it sees fit
/// (warn once per peer, say).
pub(crate) fn refused(
    conn: &Connection,
    started: Instant,
    why: Rejection,
    detail: &dyn fmt::Display,
) {
    conn.metrics.rejected(why);
    conn.metrics.connection_closed(0, 0);
    tracing::info!(
        peer = %conn.client(), id = conn.id, duration_s = started.elapsed().as_secs_f64(),
        bytes_in = 0u64, bytes_out = 0u64, close = Close::Rejected.as_str(),
        reason = %format_args!("{why}: {detail}"), "connection closed"
    );
}

/// Runs an admission step (a PROXY header read, a TLS handshake) of a
/// connection the server accepted, past a shutdown (or handover) that
/// starts meanwhile: the client already got through, so the step goes on
/// for up to [`DRAIN_QUIET`], what a live connection gets to go quiet, and
/// the connection is then served and drained. `None` if it did not finish
/// by then (the caller closes with [`closed_at_shutdown`]). A step already
/// done wins over a shutdown seen at the same poll.
pub(crate) async fn past_shutdown<T>(
    shutdown: &CancellationToken,
    step: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(step);
    tokio::select! {
        biased;
        done = &mut step => return Some(done),
        _ = shutdown.cancelled() => {}
    }
    tokio::time::timeout(DRAIN_QUIET, step).await.ok()
}

/// Counts and logs (info, like every close) a connection closed at
/// shutdown before its service saw a byte, `reason` saying at which step.
pub(crate) fn closed_at_shutdown(conn: &Connection, started: Instant, reason: &str) {
    conn.metrics.closed(Close::Shutdown, 0, 0, None);
    tracing::info!(
        peer = %conn.client(), id = conn.id, duration_s = started.elapsed().as_secs_f64(),
        bytes_in = 0u64, bytes_out = 0u64, close = Close::Shutdown.as_str(),
        reason, "connection closed"
    );
}

/// The metrics' word for a service's close reason.
pub(crate) fn close_of(reason: &CloseReason) -> Close {
    match reason {
        CloseReason::PeerClosed => Close::PeerClosed,
        CloseReason::Done => Close::Done,
        CloseReason::IdleTimeout => Close::IdleTimeout,
        CloseReason::Shutdown => Close::Shutdown,
        CloseReason::LineTooLong => Close::LineTooLong,
        CloseReason::SlowConsumer => Close::SlowConsumer,
        CloseReason::Error(e) => Close::Error(e.kind()),
    }
}

/// What the wrapper does once the service finishes (or, dropped unfinished,
/// in its `Drop`).
struct Done {
    metrics: Arc<Metrics>,
    peer: Address,
    id: u64,
    /// When the service took the connection: its lifetime runs from here.
    started: Instant,
    /// Held for the connection's lifetime: its slot under max connections.
    _permit: OwnedSemaphorePermit,
}

impl Done {
    fn finish(self, served: &Served) {
        let lived = self.started.elapsed();
        let close = close_of(&served.reason);
        self.metrics
            .closed(close, served.bytes_in, served.bytes_out, Some(lived));
        // `close` is the metrics' label, `reason` the words with any error
        // text; below -v this is one relaxed load (tracing's level filter).
        tracing::info!(
            peer = %self.peer, id = self.id, duration_s = lived.as_secs_f64(),
            bytes_in = served.bytes_in, bytes_out = served.bytes_out,
            close = close.as_str(), reason = %served.reason, "connection closed"
        );
    }
}

pin_project_lite::pin_project! {
    /// A service future plus its accounting.
    struct Tracked<F> {
        #[pin]
        serving: F,
        done: Option<Done>,
    }

    impl<F> PinnedDrop for Tracked<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(done) = this.project().done.take() {
                // Aborted after the grace period. The service's own state
                // added what it moved to the metrics as it was dropped
                // (just before this, or just after: fields drop after
                // `drop`), so only the close is counted here.
                let lived = done.started.elapsed();
                done.metrics.closed(Close::Shutdown, 0, 0, Some(lived));
                tracing::info!(
                    peer = %done.peer, id = done.id, duration_s = lived.as_secs_f64(),
                    close = Close::Shutdown.as_str(), reason = "cut off at the shutdown deadline",
                    "connection closed"
                );
            }
        }
    }
}

impl<F: Future<Output = Served>> Future for Tracked<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let served = std::task::ready!(this.serving.poll(cx));
        if let Some(done) = this.done.take() {
            done.finish(&served);
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The whole spawned task (service future + accounting): measured 352
    /// bytes in a debug build and 344 in release (echo's 288 / 280 + 64);
    /// 368 in a debug build with `Connection::unix` and the close log's
    /// `Address`,
    /// bounded at echo's 320 + 64 so it stays in tokio's 512-byte cell class.
    #[tokio::test]
    async fn connection_task_adds_little_to_the_service_future() {
        let (conn, _client) = crate::service::loopback_connection().await;
        let permit = std::sync::Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let task = run(&crate::service::Echo, conn, permit);
        let size = std::mem::size_of_val(&task);
        eprintln!("echo connection task: {size} bytes");
        assert!(size <= 320 + 64, "{size} bytes");
    }
}
