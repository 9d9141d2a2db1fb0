//! The two-way copy of one relayed pair: client ⇄ upstream.
//!
//! A direction reads a chunk only once the previous one is fully written to
//! the other side, so a side that stops reading stops reads on the other
//! (backpressure) and a pair never holds more than one chunk per
//! direction. An EOF is passed on as `shutdown(SHUT_WR)` while the other
//! direction keeps flowing (half-close); an error on either side ends the
//! pair and resets the other side (`SO_LINGER` 0, then close), so an abort
//! is never passed on as a clean end. The pair ends cleanly when both
//! directions have passed their EOF on.
//!
//! Two paths behind the same [`Moved`]/[`Ended`] result:
//!
//! * **TCP ⇄ TCP** (both sides [`Stream::Tcp`]): readiness-driven, like the
//!   echo pump. An idle pair holds no buffer and no pipe: it waits for read
//!   readiness, reads into a buffer owned by the worker *thread*, writes
//!   straight on, and only the unwritten rest of a chunk (the other side's
//!   window was full) is copied into a buffer of the pair's own until it
//!   is out. On Linux a direction whose read filled the whole buffer
//!   switches to `splice(2)` through a pipe lent by [`super::splice`], and
//!   back to copying once a splice moves less than a buffer (HAProxy's
//!   `splice-auto` idea); the pipe goes back to the pool as soon as it is
//!   empty and the socket has nothing more to read, and bytes in it are
//!   written out before an EOF is passed on.
//! * **anything else** (TLS, UNIX, in-memory streams): the portable path,
//!   one buffer per direction for the pair's life.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

#[cfg(target_os = "linux")]
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, tcp};
use tokio_util::sync::CancellationToken;

use crate::service::{DRAIN_QUIET, FOREVER, Stream};

/// Bytes per direction: what one pair holds for a side that does not read.
///
/// Measured (release build, one connection of 64 KiB writes through the
/// relay to a discard server, relay on one worker, 2-core machine shared
/// with other builds, so noisy): 4 KiB moved 190-460 MB/s at 1.4-2.1 CPU
/// s/GB; 16 KiB 550-740 MB/s at 0.57-0.90 s/GB; 64 KiB 660-1140 MB/s at
/// 0.50-0.99 s/GB. 16 KiB keeps most of 64 KiB's throughput at a quarter
/// of the memory per pair; bulk transfers are for the `splice(2)` path to
/// take ([`Relay::with_buffer`](super::Relay::with_buffer) changes it).
///
/// A TCP ⇄ TCP pair reads into a per-thread buffer of this size and keeps
/// only an unwritten rest of its own, so it holds none of it while idle
/// (relay RSS per idle pair: 2.50 KiB in a release build at 5,000 pairs,
/// three runs alike; `tests/relay_scale.rs` asserts ≤ 8 KiB in a debug
/// build, where it measures 2.6–2.7 KiB and measured 35 KiB with the two
/// buffers per pair this replaced); in bulk mode (Linux) a direction holds
/// up to one pipe instead (64 KiB of kernel memory, not RSS). Other pairs
/// keep one such buffer per direction.
pub const BUF_BYTES: usize = 16 * 1024;

/// Slices per idle timeout: a pair is idle after this many timer slices
/// in a row with no byte moved either way (the timeout's precision).
const SLICES: u32 = 8;

/// Which way bytes were going when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

/// Which side of the pair failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepted client.
    Client,
    /// The upstream the relay connected.
    Upstream,
}

/// How a pair ended.
#[derive(Debug)]
pub enum Ended {
    /// Both directions passed their EOF on; nothing was lost.
    Done,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
    /// Shutdown was requested and the pair went quiet (or was cut off).
    Shutdown,
    /// `side` failed (reset, broken pipe, ...) while reading or writing;
    /// the other side was reset.
    Failed {
        /// The side whose socket failed.
        side: Side,
        /// Whether it failed as the reader (`read`) or the writer.
        reading: bool,
        /// The error.
        error: io::Error,
    },
}

/// Bytes moved each way.
#[derive(Debug, Default)]
pub struct Moved {
    /// Client to upstream.
    pub up: AtomicU64,
    /// Upstream to client.
    pub down: AtomicU64,
}

impl Moved {
    fn total(&self) -> u64 {
        self.up.load(Relaxed) + self.down.load(Relaxed)
    }
}

/// Timing and sizes of one pair.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Close when nothing moved either way for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Bytes per read, and so the most a direction holds for a side that
    /// does not read.
    pub buf_bytes: usize,
    /// Linux, TCP ⇄ TCP: let bulk transfers go through `splice(2)` (ignored
    /// elsewhere).
    pub splice: bool,
}

/// Copies both ways until the pair ends, then resets the side that did
/// not fail if the other one did. `moved` is updated as bytes are written,
/// so it is right even if this future is dropped (the server's grace
/// period ran out).
pub async fn copy(
    client: &mut Stream,
    upstream: &mut Stream,
    limits: &Limits,
    shutdown: &CancellationToken,
    moved: &Moved,
) -> Ended {
    let ended = copy_inner(client, upstream, limits, shutdown, moved).await;
    if let Ended::Failed { side, .. } = &ended {
        // The survivor learns of the abort as an abort (RST), not a FIN it
        // would take for a complete reply.
        let survivor = match side {
            Side::Client => upstream.as_tcp(),
            Side::Upstream => client.as_tcp(),
        };
        if let Some(tcp) = survivor {
            reset_tcp(tcp);
        }
    }
    ended
}

/// `SO_LINGER` 0: the close that follows sends RST and drops anything
/// unsent.
fn reset_tcp(tcp: &TcpStream) {
    // Best effort: failing here only means a FIN instead of a RST.
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

async fn copy_inner(
    client: &mut Stream,
    upstream: &mut Stream,
    limits: &Limits,
    shutdown: &CancellationToken,
    moved: &Moved,
) -> Ended {
    let buf_bytes = limits.buf_bytes.max(1);
    match (client, upstream) {
        (Stream::Tcp(client), Stream::Tcp(upstream)) => {
            let (mut c_rd, mut c_wr) = client.split();
            let (mut u_rd, mut u_wr) = upstream.split();
            let (mut up, mut down) = (Flow::new(limits.splice), Flow::new(limits.splice));
            drive(
                |cx, last| up.poll(cx, &mut c_rd, &mut u_wr, buf_bytes, &moved.up, last),
                |cx, last| down.poll(cx, &mut u_rd, &mut c_wr, buf_bytes, &moved.down, last),
                limits,
                shutdown,
                moved,
            )
            .await
        }
        // Boxed: its state (two `one_way` futures) would otherwise make
        // every TCP pair's future as large.
        (client, upstream) => {
            Box::pin(buffered(
                client, upstream, buf_bytes, limits, shutdown, moved,
            ))
            .await
        }
    }
}

/// The portable path: one buffer per direction, `AsyncRead`/`AsyncWrite`.
async fn buffered(
    client: &mut Stream,
    upstream: &mut Stream,
    buf_bytes: usize,
    limits: &Limits,
    shutdown: &CancellationToken,
    moved: &Moved,
) -> Ended {
    let (mut c_rd, mut c_wr) = client.split();
    let (mut u_rd, mut u_wr) = upstream.split();
    let mut up_buf = vec![0u8; buf_bytes];
    let mut down_buf = vec![0u8; buf_bytes];
    let up = one_way(&mut c_rd, &mut u_wr, &mut up_buf, &moved.up);
    let down = one_way(&mut u_rd, &mut c_wr, &mut down_buf, &moved.down);
    tokio::pin!(up, down);
    drive(
        |cx, _| up.as_mut().poll(cx),
        |cx, _| down.as_mut().poll(cx),
        limits,
        shutdown,
        moved,
    )
    .await
}

/// Runs both directions (each a poll function that is ready once its EOF
/// was passed on) under the idle timeout and the shutdown drain. Each is
/// told whether the other one is done already (it is then the last: see
/// [`Flow::poll`]).
async fn drive<U, D>(
    mut up: U,
    mut down: D,
    limits: &Limits,
    shutdown: &CancellationToken,
    moved: &Moved,
) -> Ended
where
    U: FnMut(&mut Context<'_>, bool) -> Poll<Result<(), Failure>>,
    D: FnMut(&mut Context<'_>, bool) -> Poll<Result<(), Failure>>,
{
    let (mut up_done, mut down_done) = (false, false);
    let mut slice = limits.idle_timeout.unwrap_or(FOREVER) / SLICES;
    let tick = tokio::time::sleep(slice);
    // Created once: a fresh `cancelled()` per chunk would register and
    // unregister a waiter (a lock) on every wake-up.
    let cancelled = shutdown.cancelled();
    tokio::pin!(tick, cancelled);
    let (mut quiet, mut seen, mut draining) = (0u32, 0u64, false);
    loop {
        tokio::select! {
            // I/O first: the timer and the shutdown wait are only polled
            // when neither direction can move.
            biased;
            r = std::future::poll_fn(|cx| up(cx, down_done)), if !up_done => match r {
                Ok(()) => up_done = true,
                Err(f) => return f.ended(Side::Client, Side::Upstream),
            },
            r = std::future::poll_fn(|cx| down(cx, up_done)), if !down_done => match r {
                Ok(()) => down_done = true,
                Err(f) => return f.ended(Side::Upstream, Side::Client),
            },
            () = &mut tick => {
                // One clock read per slice, never per chunk.
                let now = moved.total();
                if now == seen {
                    quiet += 1;
                    if quiet >= SLICES {
                        return if draining { Ended::Shutdown } else { Ended::IdleTimeout };
                    }
                } else {
                    quiet = 0;
                    seen = now;
                }
                tick.as_mut().reset(tokio::time::Instant::now() + slice);
            }
            () = &mut cancelled, if !draining => {
                // Finish what is in flight: stay until the pair goes quiet
                // for DRAIN_QUIET (or the idle timeout, if shorter).
                draining = true;
                slice = slice.min(DRAIN_QUIET / SLICES);
                quiet = 0;
                seen = moved.total();
                tick.as_mut().reset(tokio::time::Instant::now() + slice);
            }
        }
        if up_done && down_done {
            return Ended::Done;
        }
    }
}

thread_local! {
    /// The read buffer of every TCP ⇄ TCP pair on this worker thread: a
    /// chunk lives in it only between its read and its (first) write.
    static CHUNK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One direction of a TCP ⇄ TCP pair between wake-ups: nothing at all
/// while idle.
#[derive(Debug)]
struct Flow {
    /// The unwritten rest of the last chunk (empty, unallocated, when
    /// nothing is owed).
    owed: Vec<u8>,
    /// How much of `owed` is written.
    owed_at: usize,
    /// The reader's EOF was seen: pass it on once everything is out.
    eof: bool,
    /// Bulk mode: reads go through a pipe (Linux).
    #[cfg(target_os = "linux")]
    splicing: bool,
    /// Splice allowed at all (`Limits::splice`).
    #[cfg(target_os = "linux")]
    may_splice: bool,
    /// The pipe lent while bytes are in flight in bulk mode.
    #[cfg(target_os = "linux")]
    pipe: Option<super::splice::Lease>,
}

impl Flow {
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    fn new(may_splice: bool) -> Flow {
        Flow {
            owed: Vec::new(),
            owed_at: 0,
            eof: false,
            #[cfg(target_os = "linux")]
            splicing: false,
            #[cfg(target_os = "linux")]
            may_splice,
            #[cfg(target_os = "linux")]
            pipe: None,
        }
    }

    /// Moves what it can from `rd` to `wr`: what is owed first, then reads;
    /// ready once the EOF is passed on (or on a failure).
    ///
    /// `last`: the other direction has passed its EOF on already, so the
    /// pair ends (and both sockets close) as soon as this one is done. Its
    /// EOF then needs no `shutdown(SHUT_WR)`: the `close(2)` right after
    /// sends the FIN, after anything still unsent, and it is not a reset,
    /// since both sockets were read to their EOF (nothing unread in either
    /// receive queue).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        rd: &mut tcp::ReadHalf<'_>,
        wr: &mut tcp::WriteHalf<'_>,
        buf_bytes: usize,
        moved: &AtomicU64,
        last: bool,
    ) -> Poll<Result<(), Failure>> {
        loop {
            if self.owed_at < self.owed.len() {
                let n = ready!(Pin::new(&mut *wr).poll_write(cx, &self.owed[self.owed_at..]))
                    .map_err(Failure::Write)?;
                if n == 0 {
                    return Poll::Ready(Err(Failure::Write(io::ErrorKind::WriteZero.into())));
                }
                self.owed_at += n;
                moved.fetch_add(n as u64, Relaxed);
                if self.owed_at == self.owed.len() {
                    // Give the memory back: an idle pair holds none.
                    self.owed = Vec::new();
                    self.owed_at = 0;
                }
                continue;
            }
            #[cfg(target_os = "linux")]
            if let Some(lease) = self.pipe.as_mut() {
                if lease.held() > 0 {
                    ready!(drain_pipe(cx, lease, wr.as_ref(), moved))?;
                    continue;
                }
                if !self.splicing || self.eof {
                    // Empty and no longer wanted: back to the pool.
                    self.pipe = None;
                }
            }
            if self.eof {
                if last {
                    // The close that ends the pair sends the FIN.
                    return Poll::Ready(Ok(()));
                }
                // Everything read was written, the other way still flows:
                // shutdown(SHUT_WR), the FIN.
                return Pin::new(&mut *wr).poll_shutdown(cx).map_err(Failure::Write);
            }
            #[cfg(target_os = "linux")]
            if self.splicing {
                ready!(self.fill_pipe(cx, rd.as_ref(), buf_bytes))?;
                continue;
            }
            ready!(self.copy_chunk(cx, rd, wr, buf_bytes, moved))?;
        }
    }

    /// Reads one chunk into the thread's buffer and writes what the other
    /// side takes at once; the rest becomes `owed`.
    fn copy_chunk(
        &mut self,
        cx: &mut Context<'_>,
        rd: &mut tcp::ReadHalf<'_>,
        wr: &mut tcp::WriteHalf<'_>,
        buf_bytes: usize,
        moved: &AtomicU64,
    ) -> Poll<Result<(), Failure>> {
        CHUNK.with_borrow_mut(|chunk| {
            if chunk.len() < buf_bytes {
                chunk.resize(buf_bytes, 0);
            }
            let buf = &mut chunk[..buf_bytes];
            // `poll_read`, not readiness + `try_read`: after a short read
            // tokio clears the readiness it saw before the read, so the next
            // wait parks without a `recvfrom` that says `EAGAIN`.
            let mut rb = ReadBuf::new(&mut *buf);
            ready!(Pin::new(&mut *rd).poll_read(cx, &mut rb)).map_err(Failure::Read)?;
            let n = rb.filled().len();
            if n == 0 {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            #[cfg(target_os = "linux")]
            if self.may_splice && n == buf_bytes {
                // The socket had at least a buffer's worth: bulk.
                self.splicing = true;
            }
            let mut at = 0;
            while at < n {
                match Pin::new(&mut *wr).poll_write(cx, &buf[at..n]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Failure::Write(io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(w)) => {
                        at += w;
                        // Partial writes count as progress: a slow but live
                        // reader is not idle.
                        moved.fetch_add(w as u64, Relaxed);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Write(e))),
                    Poll::Pending => break,
                }
            }
            if at < n {
                self.owed = buf[at..n].to_vec();
                self.owed_at = 0;
            }
            Poll::Ready(Ok(()))
        })
    }

    /// Bulk mode: splices what the socket has into a pipe from the pool.
    /// With nothing to read the pipe (empty) goes back to the pool before
    /// the wait; a splice of less than a buffer ends bulk mode.
    #[cfg(target_os = "linux")]
    fn fill_pipe(
        &mut self,
        cx: &mut Context<'_>,
        rd: &TcpStream,
        buf_bytes: usize,
    ) -> Poll<Result<(), Failure>> {
        use std::os::fd::AsRawFd;
        if self.pipe.is_none() {
            self.pipe = super::splice::take();
            if self.pipe.is_none() {
                // No pipe to be had (budget spent, EMFILE): copy.
                self.splicing = false;
                return Poll::Ready(Ok(()));
            }
        }
        match rd.poll_read_ready(cx) {
            Poll::Pending => {
                // Idle: no pipe held while waiting.
                self.pipe = None;
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Read(e))),
            Poll::Ready(Ok(())) => {}
        }
        let Some(lease) = self.pipe.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match rd.try_io(Interest::READABLE, || lease.fill_from(rd.as_raw_fd())) {
            Ok(0) => self.eof = true,
            Ok(n) if n < buf_bytes => self.splicing = false,
            Ok(_) => {}
            // Readiness cleared: the next poll waits.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // This socket cannot splice (nothing was moved): copy for good.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                tracing::debug!("relay: splice(2) refused, copying instead: {e}");
                self.may_splice = false;
                self.splicing = false;
            }
            Err(e) => return Poll::Ready(Err(Failure::Read(e))),
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes what the pipe holds to `wr` (one `splice(2)`), or waits for room.
#[cfg(target_os = "linux")]
fn drain_pipe(
    cx: &mut Context<'_>,
    lease: &mut super::splice::Lease,
    wr: &TcpStream,
    moved: &AtomicU64,
) -> Poll<Result<(), Failure>> {
    use std::os::fd::AsRawFd;
    ready!(wr.poll_write_ready(cx)).map_err(Failure::Write)?;
    match wr.try_io(Interest::WRITABLE, || lease.drain_to(wr.as_raw_fd())) {
        Ok(n) => {
            moved.fetch_add(n as u64, Relaxed);
        }
        // Readiness cleared: the next poll waits for room.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Poll::Ready(Err(Failure::Write(e))),
    }
    Poll::Ready(Ok(()))
}

/// A failure in one direction, before we know which side it names.
enum Failure {
    Read(io::Error),
    Write(io::Error),
}

impl Failure {
    fn ended(self, reader: Side, writer: Side) -> Ended {
        match self {
            Failure::Read(error) => Ended::Failed {
                side: reader,
                reading: true,
                error,
            },
            Failure::Write(error) => Ended::Failed {
                side: writer,
                reading: false,
                error,
            },
        }
    }
}

/// One direction: read a chunk, write all of it (counting as it goes),
/// repeat; on EOF shut the writer's sending side down.
async fn one_way<R, W>(
    rd: &mut R,
    wr: &mut W,
    buf: &mut [u8],
    moved: &AtomicU64,
) -> Result<(), Failure>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        let n = rd.read(buf).await.map_err(Failure::Read)?;
        if n == 0 {
            // For TCP this is shutdown(SHUT_WR): a FIN after everything
            // written; for TLS, close_notify then the FIN.
            return wr.shutdown().await.map_err(Failure::Write);
        }
        let mut at = 0;
        while at < n {
            let w = wr.write(&buf[at..n]).await.map_err(Failure::Write)?;
            if w == 0 {
                return Err(Failure::Write(io::ErrorKind::WriteZero.into()));
            }
            at += w;
            // Partial writes count as progress: a slow but live reader is
            // not idle.
            moved.fetch_add(w as u64, Relaxed);
        }
        // A TLS stream holds records until flushed; TCP's flush is free.
        wr.flush().await.map_err(Failure::Write)?;
    }
}
