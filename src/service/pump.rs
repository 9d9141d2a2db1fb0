//! The read loop echo and discard share, built so an idle connection holds no
//! buffer and a busy one allocates nothing per message.
//!
//! It waits with `readable()` and reads with `try_read` into a buffer owned by
//! the worker *thread* (not the connection), writes back with `try_write`, and
//! only when the peer's receive window is full copies the unwritten remainder
//! into a connection-owned buffer. While that buffer is non-empty the loop
//! waits for `writable()` and does not read: that is the backpressure, and it
//! bounds what the server holds per connection to one read.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::task::Poll;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{CloseReason, Connection, Served};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::server::IdleClock;

/// The per-thread read buffer: one read's worth, and so the most a stalled
/// peer can make the server hold for it.
pub const READ_BUF_BYTES: usize = 64 * 1024;

thread_local! {
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF_BYTES].into_boxed_slice());
}

/// Whether read bytes go back to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Echo,
    Discard,
}

/// What woke the loop.
enum Event {
    /// The socket is ready for the operation we waited on.
    Ready,
    /// The idle (or drain) timer fired.
    Timer,
    /// Shutdown was requested.
    Shutdown,
    /// The readiness wait itself failed.
    Failed(io::Error),
}

/// What one readiness event produced.
enum Step {
    /// Bytes read (and how many of them were written straight back).
    Moved { read: usize, written: usize },
    /// End of stream from the peer.
    Eof,
    /// Spurious readiness.
    Again,
}

/// Not an `async fn`: destructuring here, outside the future, keeps the
/// fields the loop never uses (endpoints, id) out of the per-connection state;
/// an `async fn` would keep its whole argument alongside the locals.
pub(crate) fn pump(conn: Connection, mode: Mode) -> impl Future<Output = Served> + Send {
    let Connection {
        stream,
        shutdown,
        idle_timeout,
        metrics,
        ..
    } = conn;
    pump_loop(stream, shutdown, idle_timeout, metrics, mode)
}

async fn pump_loop(
    mut stream: TcpStream,
    shutdown: CancellationToken,
    idle_timeout: Option<std::time::Duration>,
    metrics: Arc<Metrics>,
    mode: Mode,
) -> Served {
    let mut idle = IdleClock::new(idle_timeout);
    let sleep = tokio::time::sleep_until(idle.deadline());
    tokio::pin!(sleep);
    // Created once and kept: re-creating the wait each iteration would
    // register and unregister a waiter (a lock) per message.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut draining = false;
    let mut eof = false;
    // Bytes the peer has not taken yet; `pending[written..]` is still owed.
    let mut pending: Vec<u8> = Vec::new();
    let mut written = 0usize;
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);

    let reason = loop {
        let backlogged = written < pending.len();
        if !backlogged && eof {
            // Half-close: everything echoed; pass the EOF on.
            let _ = stream.shutdown().await;
            break CloseReason::PeerClosed;
        }
        // Hand-written rather than `select!`: `poll_*_ready` use the
        // stream's own waker slot, so the wait stores no readiness future
        // in the connection's state. I/O first, so the timer and the
        // shutdown wait are only polled when the socket has nothing for us.
        let event = std::future::poll_fn(|cx| {
            let io = if backlogged {
                stream.poll_write_ready(cx)
            } else {
                stream.poll_read_ready(cx)
            };
            if let Poll::Ready(r) = io {
                return Poll::Ready(r.map_or_else(Event::Failed, |()| Event::Ready));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            if !draining && cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Failed(e) => break io_error(e),
            Event::Ready if backlogged => match stream.try_write(&pending[written..]) {
                Ok(n) => {
                    written += n;
                    bytes_out += n as u64;
                    idle.touch();
                    if written == pending.len() {
                        metrics.buffer_shrank(pending.len() as u64);
                        // Give the memory back: an idle connection holds none.
                        pending = Vec::new();
                        written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break io_error(e),
            },
            Event::Ready => match read_once(&stream, mode, &mut pending) {
                Ok(Step::Moved { read, written: w }) => {
                    bytes_in += read as u64;
                    bytes_out += w as u64;
                    idle.touch();
                    if !pending.is_empty() {
                        metrics.buffer_grew(pending.len() as u64);
                    }
                }
                Ok(Step::Eof) => eof = true,
                Ok(Step::Again) => {}
                Err(e) => break io_error(e),
            },
            Event::Timer => match idle.expired() {
                Some(deadline) => sleep.as_mut().reset(deadline),
                None if draining => break CloseReason::Shutdown,
                None => break CloseReason::IdleTimeout,
            },
            Event::Shutdown => {
                // Finish what is in flight: stay until the peer goes quiet.
                draining = true;
                idle.start_draining();
                sleep.as_mut().reset(idle.deadline());
            }
        }
    };
    if written < pending.len() {
        metrics.buffer_shrank(pending.len() as u64);
    }
    Served {
        bytes_in,
        bytes_out,
        reason,
    }
}

/// One `try_read` into the thread's buffer and, for echo, `try_write`s of it
/// until the peer's window is full; the remainder goes to `pending`.
fn read_once(stream: &TcpStream, mode: Mode, pending: &mut Vec<u8>) -> io::Result<Step> {
    READ_BUF.with_borrow_mut(|buf| {
        let read = match stream.try_read(buf) {
            Ok(0) => return Ok(Step::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Again),
            Err(e) => return Err(e),
        };
        if mode == Mode::Discard {
            return Ok(Step::Moved { read, written: 0 });
        }
        let mut written = 0;
        while written < read {
            match stream.try_write(&buf[written..read]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if written < read {
            pending.extend_from_slice(&buf[written..read]);
        }
        Ok(Step::Moved { read, written })
    })
}

fn io_error(e: io::Error) -> CloseReason {
    CloseReason::Error(Error::io(e, "echo/discard connection"))
}
