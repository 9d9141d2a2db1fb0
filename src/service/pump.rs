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
//!
//! That is the [`Stream::Tcp`] path. Any other stream (TLS, a test's
//! in-memory pipe) takes the same loop through `AsyncRead`/`AsyncWrite`:
//! `poll_read` into the same thread buffer, `poll_write` back, the
//! remainder to the same backlog, then `poll_flush` (a TLS stream holds
//! records until flushed) before reading again, and `poll_shutdown` after
//! the peer's EOF. Still no allocation per message.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{CloseReason, Connection, Served, Stream};
use super::{DRAIN_QUIET, FOREVER};
use crate::error::Error;
use crate::metrics::Metrics;

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
    /// A non-TCP stream wrote (and flushed) what the peer was owed.
    Drained(io::Result<()>),
    /// EOF and nothing owed: the stream is shut down (TCP: nothing to do).
    Closed(io::Result<()>),
}

/// What one readiness event produced.
enum Step {
    /// Bytes read (and how many of them were written straight back).
    Moved { read: usize, written: usize },
    /// End of stream from the peer.
    Eof,
}

/// Not an `async fn`: a hand-written future holds exactly the connection's
/// state, the idle timer and the shutdown wait. An `async` block stored more
/// per connection: its captured token next to the borrowing wait, references
/// to the state, and the readiness closure's captures across the `.await`.
/// Fields the loop never uses (endpoints, id) are dropped here.
pub(crate) fn pump(conn: Connection, mode: Mode) -> impl Future<Output = Served> + Send {
    let Connection {
        stream,
        shutdown,
        idle_timeout,
        metrics,
        ..
    } = conn;
    let idle = SliceClock::new(idle_timeout);
    PumpFuture {
        sleep: tokio::time::sleep(idle.slice),
        // Created once and kept: re-creating the wait each iteration would
        // register and unregister a waiter (a lock) per message.
        cancelled: shutdown.cancelled_owned(),
        state: Pump {
            stream,
            metrics,
            mode,
            idle,
            backlog: None,
            bytes_in: 0,
            bytes_out: 0,
            eof: false,
            draining: false,
            unflushed: false,
        },
    }
}

pin_project_lite::pin_project! {
    /// The read loop as a future.
    struct PumpFuture {
        #[pin]
        sleep: tokio::time::Sleep,
        #[pin]
        cancelled: WaitForCancellationFutureOwned,
        state: Pump,
    }
}

/// One connection's state between wakeups.
struct Pump {
    stream: Stream,
    metrics: Arc<Metrics>,
    mode: Mode,
    idle: SliceClock,
    /// Bytes the peer has not taken yet. Boxed: only a connection whose peer
    /// stopped reading has one, and idle ones should not carry its header.
    backlog: Option<Box<Backlog>>,
    bytes_in: u64,
    bytes_out: u64,
    /// The peer shut down its sending side.
    eof: bool,
    /// Shutdown was requested: finishing in-flight data.
    draining: bool,
    /// Non-TCP streams: written since the last `poll_flush`.
    unflushed: bool,
}

/// What the peer is owed: `buf[written..]`.
struct Backlog {
    buf: Vec<u8>,
    written: usize,
}

impl Future for PumpFuture {
    type Output = Served;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Served> {
        let mut this = self.project();
        let p = &mut *this.state;
        loop {
            // I/O first, so the timer and the shutdown wait are only polled
            // when the socket has nothing for us.
            let event = match p.poll_io(cx) {
                Poll::Ready(event) => event,
                Poll::Pending if this.sleep.as_mut().poll(cx).is_ready() => Event::Timer,
                Poll::Pending if !p.draining && this.cancelled.as_mut().poll(cx).is_ready() => {
                    Event::Shutdown
                }
                Poll::Pending => return Poll::Pending,
            };
            let step = match event {
                Event::Closed(Ok(())) => Err(CloseReason::PeerClosed),
                Event::Closed(Err(e)) | Event::Failed(e) | Event::Drained(Err(e)) => {
                    Err(io_error(e))
                }
                Event::Drained(Ok(())) => Ok(()),
                Event::Writable => p.on_writable(),
                Event::Read(r) => p.on_read(r),
                Event::Timer if p.idle.slice_ended() => {
                    // One clock read per slice, not per message; from "now"
                    // so a late wake-up never shortens the next slice.
                    let next = tokio::time::Instant::now() + p.idle.slice;
                    this.sleep.as_mut().reset(next);
                    Ok(())
                }
                Event::Timer if p.draining => Err(CloseReason::Shutdown),
                Event::Timer => Err(CloseReason::IdleTimeout),
                Event::Shutdown => {
                    // Finish what is in flight: stay until the peer goes quiet.
                    p.draining = true;
                    p.idle.start_draining();
                    this.sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + p.idle.slice);
                    Ok(())
                }
            };
            if let Err(reason) = step {
                return Poll::Ready(p.finish(reason));
            }
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
    /// Waits for what the loop needs next: to close after the peer's EOF,
    /// to write what the peer is owed, or to read.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let owed = self.backlog.is_some() || self.unflushed;
        match &mut self.stream {
            // Everything echoed: returning drops (closes) the stream, which
            // passes the EOF on. No `shutdown(SHUT_WR)` first: the close
            // right after sends the same FIN, and the extra syscall was ~3 %
            // of a short connection's server CPU.
            Stream::Tcp(_) if self.eof && !owed => Poll::Ready(Event::Closed(Ok(()))),
            // Other streams may have their own goodbye (TLS close_notify).
            Stream::Other(s) if self.eof && !owed => {
                Pin::new(s).poll_shutdown(cx).map(Event::Closed)
            }
            // `poll_write_ready` uses the stream's own waker slot, so the
            // wait stores no readiness future in the connection's state.
            Stream::Tcp(tcp) if owed => tcp
                .poll_write_ready(cx)
                .map(|r| r.map_or_else(Event::Failed, |()| Event::Writable)),
            Stream::Other(_) if owed => self.poll_drain(cx).map(Event::Drained),
            _ => self.read_once(cx).map(Event::Read),
        }
    }

    /// TCP: writes what the peer is owed; frees the buffer once it is all out.
    fn on_writable(&mut self) -> Result<(), CloseReason> {
        let (Some(backlog), Stream::Tcp(tcp)) = (self.backlog.as_mut(), &self.stream) else {
            return Ok(());
        };
        match tcp.try_write(&backlog.buf[backlog.written..]) {
            Ok(n) => {
                backlog.written += n;
                self.bytes_out += n as u64;
                self.idle.active = true;
                if backlog.written == backlog.buf.len() {
                    self.metrics.buffer_shrank(backlog.buf.len() as u64);
                    // Give the memory back: an idle connection holds none.
                    self.backlog = None;
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
                if let Some(backlog) = &self.backlog {
                    self.metrics.buffer_grew(backlog.buf.len() as u64);
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

    /// Other streams: writes what the peer is owed, then flushes.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Stream::Other(s) = &mut self.stream else {
            return Poll::Ready(Ok(()));
        };
        if let Some(backlog) = self.backlog.as_mut() {
            while backlog.written < backlog.buf.len() {
                let n = ready!(Pin::new(&mut *s).poll_write(cx, &backlog.buf[backlog.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                backlog.written += n;
                self.bytes_out += n as u64;
                self.idle.active = true;
            }
            self.metrics.buffer_shrank(backlog.buf.len() as u64);
            self.backlog = None;
        }
        if self.unflushed {
            ready!(Pin::new(s).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// One read and, for echo, its write-back; the remainder goes to the
    /// backlog. Called only when nothing is owed.
    fn read_once(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Step>> {
        match &mut self.stream {
            Stream::Tcp(tcp) => read_once_tcp(tcp, self.mode, &mut self.backlog, cx),
            Stream::Other(s) => {
                let step = read_once_other(s, self.mode, &mut self.backlog, cx);
                if let Poll::Ready(Ok(Step::Moved { .. })) = step {
                    self.unflushed = self.mode == Mode::Echo;
                }
                step
            }
        }
    }

    /// The connection's result; releases the backlog (and its gauge). The
    /// counts move into the result, so `drop` does not add them again.
    fn finish(&mut self, reason: CloseReason) -> Served {
        if let Some(backlog) = self.backlog.take() {
            self.metrics.buffer_shrank(backlog.buf.len() as u64);
        }
        Served {
            bytes_in: std::mem::take(&mut self.bytes_in),
            bytes_out: std::mem::take(&mut self.bytes_out),
            reason,
        }
    }
}

impl Drop for Pump {
    /// Dropped unfinished (the server's grace period ended, or the caller
    /// gave up on the future): what moved still counts, and what was held
    /// for the peer no longer is.
    fn drop(&mut self) {
        if self.bytes_in != 0 || self.bytes_out != 0 {
            self.metrics.add_bytes(self.bytes_in, self.bytes_out);
        }
        if let Some(backlog) = self.backlog.take() {
            self.metrics.buffer_shrank(backlog.buf.len() as u64);
        }
    }
}

/// One read into the thread's buffer and, for echo, `try_write`s of it until
/// the peer's window is full; the remainder goes to the backlog.
///
/// The read is `AsyncRead::poll_read`, not `try_read`: after a read shorter
/// than the buffer (the socket is drained: epoll is edge-triggered) tokio
/// clears the readiness it observed *before* the read, so the next wait
/// parks at once instead of paying a `recvfrom` that returns `EAGAIN`. With
/// `try_read` that extra syscall came with almost every message (measured
/// 1.43 `recvfrom` per echoed 64 B message, now 1.0, as the C loop's
/// "once" mode). The readiness snapshot predates the read, so data arriving
/// meanwhile is never missed.
fn read_once_tcp(
    stream: &mut tokio::net::TcpStream,
    mode: Mode,
    backlog: &mut Option<Box<Backlog>>,
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
            // Not backlogged on entry (reads stop while it is), so fresh.
            *backlog = Some(Box::new(Backlog {
                buf: buf[written..read].to_vec(),
                written: 0,
            }));
        }
        Poll::Ready(Ok(Step::Moved { read, written }))
    })
}

/// [`read_once_tcp`] for any other stream: `poll_read`, then `poll_write`
/// until it is pending; the caller flushes before the next read.
fn read_once_other(
    stream: &mut Box<dyn super::AsyncStream>,
    mode: Mode,
    backlog: &mut Option<Box<Backlog>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Step>> {
    READ_BUF.with_borrow_mut(|buf| {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut rb))?;
        let read = rb.filled().len();
        if read == 0 {
            return Poll::Ready(Ok(Step::Eof));
        }
        if mode == Mode::Discard {
            return Poll::Ready(Ok(Step::Moved { read, written: 0 }));
        }
        let mut written = 0;
        while written < read {
            match Pin::new(&mut *stream).poll_write(cx, &buf[written..read]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if written < read {
            *backlog = Some(Box::new(Backlog {
                buf: buf[written..read].to_vec(),
                written: 0,
            }));
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
