//! One accepted connection: what a [`Service`] is
//! given ([`Connection`]), the idle clock services use, and the task wrapper
//! that logs open/close and adds the connection's byte counts to the metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use crate::service::{CloseReason, Served, Service};

/// After shutdown is requested, a connection that has been quiet this long is
/// considered drained: data still in flight on a live connection keeps
/// arriving well within it, an idle `nc` does not hold shutdown for the whole
/// grace period.
pub const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// Stands in for "no idle timeout": far enough to never fire, near enough for
/// tokio's timer wheel (about two years).
pub(crate) const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// An accepted connection, handed to [`Service::serve`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Connection {
    /// The connected stream (`TCP_NODELAY` already set).
    pub stream: TcpStream,
    /// The client's endpoint.
    pub peer: Endpoint,
    /// The local endpoint the client reached.
    pub local: Endpoint,
    /// A number unique within the server, from 1 (chat's default `user<N>`).
    pub id: u64,
    /// Cancelled when the server starts shutting down: finish in-flight data,
    /// then return. The server closes what is left after its grace period.
    pub shutdown: CancellationToken,
    /// The server's idle timeout (`None`: none).
    pub idle_timeout: Option<Duration>,
    /// The server's maximum line length, for line-based services.
    pub max_line: usize,
    /// The server's counters (services update the backpressure gauge and
    /// slow-consumer count; byte counts are added by the server at close).
    pub metrics: Arc<Metrics>,
}

/// Idle-timeout bookkeeping that costs nothing per message.
///
/// Instead of resetting a timer on every read, a service calls
/// [`IdleClock::touch`] (one clock read) and keeps a single `Sleep`; when it
/// fires, [`IdleClock::expired`] either says the connection really was idle or
/// gives the deadline to re-arm it for the remainder.
#[derive(Debug, Clone, Copy)]
pub struct IdleClock {
    last_activity: Instant,
    timeout: Duration,
}

impl IdleClock {
    /// A clock started now; `None` never expires.
    pub fn new(timeout: Option<Duration>) -> IdleClock {
        IdleClock {
            last_activity: Instant::now(),
            timeout: timeout.unwrap_or(FOREVER),
        }
    }

    /// Records traffic.
    pub fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// When the connection will have been idle for the timeout.
    pub fn deadline(&self) -> Instant {
        self.last_activity + self.timeout
    }

    /// Shortens the timeout to [`DRAIN_QUIET`] for shutdown.
    pub fn start_draining(&mut self) {
        self.timeout = self.timeout.min(DRAIN_QUIET);
    }

    /// Called when the sleep fires: `None` if idle for the whole timeout,
    /// otherwise the new deadline to sleep until.
    pub fn expired(&self) -> Option<Instant> {
        let deadline = self.deadline();
        (deadline > Instant::now()).then_some(deadline)
    }
}

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
    let peer = conn.peer;
    let id = conn.id;
    let metrics = conn.metrics.clone();
    tracing::debug!(%peer, id, "connection opened");
    Tracked {
        serving: service.serve(conn),
        done: Some(Done {
            metrics,
            peer,
            id,
            _permit: permit,
        }),
    }
}

/// What the wrapper does once the service finishes (or, dropped unfinished,
/// in its `Drop`).
struct Done {
    metrics: Arc<Metrics>,
    peer: Endpoint,
    id: u64,
    /// Held for the connection's lifetime: its slot under max connections.
    _permit: OwnedSemaphorePermit,
}

impl Done {
    fn finish(self, served: &Served) {
        self.metrics
            .connection_closed(served.bytes_in, served.bytes_out);
        if matches!(served.reason, CloseReason::IdleTimeout) {
            self.metrics.idle_timeout();
        }
        tracing::debug!(
            peer = %self.peer, id = self.id, bytes_in = served.bytes_in,
            bytes_out = served.bytes_out, reason = %served.reason, "connection closed"
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
                // Aborted after the grace period: its byte counts are lost,
                // but the connection still counts as closed.
                done.metrics.connection_closed(0, 0);
                tracing::debug!(peer = %done.peer, id = done.id, "connection closed at the deadline");
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

    /// A real loopback connection for unit tests: the accepted side as a
    /// [`Connection`], and the client stream (keep it alive while testing).
    pub(crate) async fn loopback_connection() -> (Connection, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let conn = Connection {
            stream,
            peer: peer.into(),
            local: addr.into(),
            id: 1,
            shutdown: Default::default(),
            idle_timeout: None,
            max_line: 8192,
            metrics: Default::default(),
        };
        (conn, client)
    }

    #[test]
    fn idle_clock_rearms_for_the_remainder() {
        let timeout = Duration::from_secs(10);
        // Touched 5 s ago: not idle, re-arm for about 5 s more.
        let clock = IdleClock {
            last_activity: Instant::now() - Duration::from_secs(5),
            timeout,
        };
        let rearm = clock.expired().expect("not idle yet");
        let left = rearm - Instant::now();
        assert!(
            left <= Duration::from_secs(5) && left > Duration::from_secs(4),
            "{left:?}"
        );
        // Touched 11 s ago: idle.
        let mut clock = IdleClock {
            last_activity: Instant::now() - Duration::from_secs(11),
            timeout,
        };
        assert_eq!(clock.expired(), None);
        clock.start_draining();
        assert_eq!(clock.timeout, DRAIN_QUIET);
        clock.touch();
        assert!(clock.expired().is_some());
    }

    /// The whole spawned task (service future + accounting): measured 352
    /// bytes in a debug build and 344 in release (echo's 288 / 280 + 64),
    /// bounded at echo's 320 + 64 so it stays in tokio's 512-byte cell class.
    #[tokio::test]
    async fn connection_task_adds_little_to_the_service_future() {
        let (conn, _client) = loopback_connection().await;
        let permit = std::sync::Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        let task = run(&crate::service::Echo, conn, permit);
        let size = std::mem::size_of_val(&task);
        eprintln!("echo connection task: {size} bytes");
        assert!(size <= 320 + 64, "{size} bytes");
    }
}
