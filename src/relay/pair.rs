//! The two-way copy of one relayed pair: client ⇄ upstream.
//!
//! Each direction owns one fixed buffer and reads into it only once the
//! previous chunk is fully written to the other side, so a side that stops
//! reading stops reads on the other (backpressure) and a pair never holds
//! more than two buffers. An EOF is passed on as `shutdown(SHUT_WR)` while
//! the other direction keeps flowing (half-close); an error on either side
//! ends the pair and resets the other side (`SO_LINGER` 0, then close), so
//! an abort is never passed on as a clean end. The pair ends cleanly when
//! both directions have passed their EOF on.
//!
//! This is the portable path; a `splice(2)` path can replace [`copy`]
//! behind the same [`Moved`]/[`Ended`] result.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
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

/// Timing of one pair.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Close when nothing moved either way for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Bytes per direction.
    pub buf_bytes: usize,
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
    let (mut c_rd, mut c_wr) = client.split();
    let (mut u_rd, mut u_wr) = upstream.split();
    let mut up_buf = vec![0u8; limits.buf_bytes];
    let mut down_buf = vec![0u8; limits.buf_bytes];
    let up = one_way(&mut c_rd, &mut u_wr, &mut up_buf, &moved.up);
    let down = one_way(&mut u_rd, &mut c_wr, &mut down_buf, &moved.down);
    tokio::pin!(up, down);
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
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(f) => return f.ended(Side::Client, Side::Upstream),
            },
            r = &mut down, if !down_done => match r {
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
