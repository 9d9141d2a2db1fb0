//! The read loop echo and discard share, built so an idle connection holds no
//! buffer and a busy one allocates nothing per message.
//!
//! It waits for read readiness and reads with `try_read` into a buffer owned
//! by the worker *thread* (not the connection), writes back with `try_write`,
//! and only when the peer's receive window is full copies the unwritten
//! remainder into a connection-owned buffer. While that buffer is non-empty
//! the loop waits for write readiness and does not read: that is the
//! backpressure, and it bounds what the server holds per connection to one
//! read. A peer that neither reads nor sends for the idle timeout is closed
//! (the timer runs during that wait too), which is the write deadline.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{CloseReason, Connection, Served};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::server::connection::{DRAIN_QUIET, FOREVER};

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
    /// Backlogged: the socket can take more of what the peer is owed.
    Writable,
    /// Not backlogged: a read happened (and, for echo, its write-back).
    Read(io::Result<Step>),
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
    let mut state = Pump {
        stream,
        metrics,
        mode,
        idle: SliceClock::new(idle_timeout),
        pending: Vec::new(),
        written: 0,
        bytes_in: 0,
        bytes_out: 0,
        eof: false,
    };
    // The loop borrows the state rather than taking it: an argument moved
    // into an `async fn` is stored twice in its future.
    async move {
        let reason = pump_loop(&mut state, &shutdown).await;
        state.finish(reason)
    }
}

/// One connection's state between wakeups.
struct Pump {
    stream: TcpStream,
    metrics: Arc<Metrics>,
    mode: Mode,
    idle: SliceClock,
    /// Bytes the peer has not taken yet; `pending[written..]` is still owed.
    pending: Vec<u8>,
    written: usize,
    bytes_in: u64,
    bytes_out: u64,
    /// The peer shut down its sending side.
    eof: bool,
}

async fn pump_loop(p: &mut Pump, shutdown: &CancellationToken) -> CloseReason {
    let sleep = tokio::time::sleep(p.idle.slice);
    tokio::pin!(sleep);
    // Created once and kept: re-creating the wait each iteration would
    // register and unregister a waiter (a lock) per message.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut draining = false;
    loop {
        let backlogged = p.backlogged();
        if !backlogged && p.eof {
            // Everything echoed: returning drops (closes) the stream, which
            // passes the EOF on. No `shutdown(SHUT_WR)` first: the close
            // right after sends the same FIN, and the extra syscall was ~3 %
            // of a short connection's server CPU.
            break CloseReason::PeerClosed;
        }
        // Hand-written rather than `select!`: `poll_*_ready` use the
        // stream's own waker slot, so the wait stores no readiness future
        // in the connection's state. I/O first, so the timer and the
        // shutdown wait are only polled when the socket has nothing for us.
        let event = std::future::poll_fn(|cx| {
            let io = if backlogged {
                p.stream
                    .poll_write_ready(cx)
                    .map(|r| r.map_or_else(Event::Failed, |()| Event::Writable))
            } else {
                read_once(&mut p.stream, p.mode, &mut p.pending, cx).map(Event::Read)
            };
            if io.is_ready() {
                return io;
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
        let step = match event {
            Event::Failed(e) => Err(io_error(e)),
            Event::Writable => p.on_writable(),
            Event::Read(r) => p.on_read(r),
            Event::Timer if p.idle.slice_ended() => {
                // One clock read per slice, not per message; from "now" so
                // a late wake-up never shortens the next slice.
                let next = tokio::time::Instant::now() + p.idle.slice;
                sleep.as_mut().reset(next);
                Ok(())
            }
            Event::Timer if draining => Err(CloseReason::Shutdown),
            Event::Timer => Err(CloseReason::IdleTimeout),
            Event::Shutdown => {
                // Finish what is in flight: stay until the peer goes quiet.
                draining = true;
                p.idle.start_draining();
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + p.idle.slice);
                Ok(())
            }
        };
        if let Err(reason) = step {
            break reason;
        }
    }
}

/// Idle timeout without a clock read per message.
///
/// Reading the clock on every read (to remember the last activity) showed as
/// ~0.7 % of the server's CPU at 64 B messages. Instead a read or write only
/// sets `active`, and the timer fires every `timeout / SLICES`: a slice with
/// no activity counts as quiet, and `SLICES` quiet slices in a row close the
/// connection. So a silent peer is closed after between `timeout` and
/// `timeout × (1 + 1/SLICES)` of silence, and a busy connection costs one
/// timer wake-up per slice (every 37.5 s at the default 5 minutes).
#[derive(Debug)]
struct SliceClock {
    slice: Duration,
    quiet: u8,
    /// Traffic since the last slice ended.
    active: bool,
}

/// Slices per timeout: the precision of the idle timeout (12.5 %).
const SLICES: u8 = 8;

impl SliceClock {
    fn new(timeout: Option<Duration>) -> SliceClock {
        SliceClock {
            slice: timeout.unwrap_or(FOREVER) / u32::from(SLICES),
            quiet: 0,
            active: false,
        }
    }

    /// The timer fired: `true` to keep going (re-arm for one more slice),
    /// `false` once the connection has been quiet for the whole timeout.
    fn slice_ended(&mut self) -> bool {
        if std::mem::take(&mut self.active) {
            self.quiet = 0;
        } else {
            self.quiet += 1;
        }
        self.quiet < SLICES
    }

    /// Shutdown: quiet for [`DRAIN_QUIET`] (or the idle timeout, if shorter)
    /// means drained; counting starts afresh.
    fn start_draining(&mut self) {
        let per = DRAIN_QUIET / u32::from(SLICES);
        self.slice = self.slice.min(per);
        self.quiet = 0;
        self.active = false;
    }
}

impl Pump {
    fn backlogged(&self) -> bool {
        self.written < self.pending.len()
    }

    /// Writes what the peer is owed; frees the buffer once it is all out.
    fn on_writable(&mut self) -> Result<(), CloseReason> {
        match self.stream.try_write(&self.pending[self.written..]) {
            Ok(n) => {
                self.written += n;
                self.bytes_out += n as u64;
                self.idle.active = true;
                if self.written == self.pending.len() {
                    self.metrics.buffer_shrank(self.pending.len() as u64);
                    // Give the memory back: an idle connection holds none.
                    self.pending = Vec::new();
                    self.written = 0;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Accounts for what one read (and its write-back) moved.
    fn on_read(&mut self, r: io::Result<Step>) -> Result<(), CloseReason> {
        match r {
            Ok(Step::Moved { read, written }) => {
                self.bytes_in += read as u64;
                self.bytes_out += written as u64;
                self.idle.active = true;
                if !self.pending.is_empty() {
                    self.metrics.buffer_grew(self.pending.len() as u64);
                }
                Ok(())
            }
            Ok(Step::Eof) => {
                self.eof = true;
                Ok(())
            }
            Err(e) => Err(io_error(e)),
        }
    }

    fn finish(self, reason: CloseReason) -> Served {
        if self.backlogged() {
            self.metrics.buffer_shrank(self.pending.len() as u64);
        }
        Served {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            reason,
        }
    }
}

/// One read into the thread's buffer and, for echo, `try_write`s of it until
/// the peer's window is full; the remainder goes to `pending`.
///
/// The read is `AsyncRead::poll_read`, not `try_read`: after a read shorter
/// than the buffer (the socket is drained: epoll is edge-triggered) tokio
/// clears the readiness it observed *before* the read, so the next wait
/// parks at once instead of paying a `recvfrom` that returns `EAGAIN`. With
/// `try_read` that extra syscall came with almost every message (measured
/// 1.43 `recvfrom` per echoed 64 B message, now 1.0, as the C loop's
/// "once" mode). The readiness snapshot predates the read, so data arriving
/// meanwhile is never missed.
fn read_once(
    stream: &mut TcpStream,
    mode: Mode,
    pending: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Step>> {
    READ_BUF.with_borrow_mut(|buf| {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let read = rb.filled().len();
        if read == 0 {
            return Poll::Ready(Ok(Step::Eof));
        }
        if mode == Mode::Discard {
            return Poll::Ready(Ok(Step::Moved { read, written: 0 }));
        }
        let mut written = 0;
        while written < read {
            match stream.try_write(&buf[written..read]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if written < read {
            pending.extend_from_slice(&buf[written..read]);
        }
        Poll::Ready(Ok(Step::Moved { read, written }))
    })
}

fn io_error(e: io::Error) -> CloseReason {
    CloseReason::Error(Error::io(e, "echo/discard connection"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_clock_closes_after_a_full_quiet_timeout() {
        let mut c = SliceClock::new(Some(Duration::from_secs(8)));
        assert_eq!(c.slice, Duration::from_secs(1));
        // Activity in a slice resets the count.
        for _ in 0..SLICES - 1 {
            assert!(c.slice_ended());
        }
        c.active = true;
        assert!(c.slice_ended());
        for _ in 0..SLICES - 1 {
            assert!(c.slice_ended());
        }
        assert!(!c.slice_ended(), "8 quiet slices: idle");
        c.start_draining();
        assert_eq!(c.slice, DRAIN_QUIET / u32::from(SLICES));
        assert!(c.slice_ended());
        // No timeout: the slices are long enough never to matter.
        assert!(SliceClock::new(None).slice > Duration::from_secs(3600));
    }
}
