//! `splice(2)` for the relay (Linux): bulk bytes move socket → pipe →
//! socket inside the kernel, never through the relay's memory.
//!
//! A pipe is the kernel buffer `splice(2)` needs between two sockets. Pipes
//! come from one process-wide pool: a direction of a pair [`take`]s one
//! only while it moves a bulk transfer, and gives it back (a [`Lease`]
//! dropped empty returns to the pool) as soon as the pipe is empty and
//! the socket has nothing more to read. So an idle pair holds no pipe,
//! and a pipe with bytes in it is never shared: a lease dropped with bytes
//! inside (the pair was reset or cut off) closes its pipe instead, and
//! those bytes are lost like bytes in a copy buffer would be.
//!
//! # When it is used, and what it saves
//!
//! A direction of a TCP ⇄ TCP pair copies (read/write through the worker
//! thread's buffer) until one read fills the whole buffer
//! ([`BUF_BYTES`](super::BUF_BYTES), 16 KiB): the socket had a bulk
//! transfer's worth queued. It then splices, up to [`SPLICE_BYTES`] per
//! call, until a splice moves less than a buffer, and copies again (the
//! idea of HAProxy's `splice-auto`). Small messages never take a pipe.
//!
//! Measured with `examples/relay_splice.rs` (release build, one connection
//! of 64 KiB writes through the relay to a sink, the relay's thread pinned
//! to CPU 0, client and sink on CPU 1; CPU is the relay thread's own; a
//! 2-core machine at load average 8–10 from other builds, so throughput is
//! what was left over; medians of 5 rounds of 256 MiB, 07:17 UTC):
//!
//! | path   | MB/s (range)      | relay CPU s/GB (runs)              |
//! |--------|-------------------|------------------------------------|
//! | copy   | 210 (201–217)     | 0.965 (0.89–1.04)                  |
//! | splice | 321 (261–359)     | 0.483 (0.43–0.51)                  |
//!
//! An earlier 3-round run: copy 152 MB/s at 1.03 s/GB, splice 253 MB/s
//! at 0.59 s/GB. Splice halves the relay's CPU per GB.
//!
//! # File descriptors
//!
//! A pipe costs two descriptors. At most [`MAX_PIPES`] exist at once
//! (leased or pooled), so the relay's descriptor budget is
//! `2 × pairs + 2 × MAX_PIPES` (512) plus the listeners and the runtime's
//! few; at most [`POOL_KEEP`] idle pipes are kept open for reuse. A
//! direction that finds the pool exhausted, or whose `pipe2(2)` fails
//! (`EMFILE`: the descriptor limit), copies instead: splice is an
//! optimisation, never a reason to fail a pair.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Most pipes alive at once in the process (each is two descriptors): this
/// many bulk directions splice at the same time; more copy.
pub const MAX_PIPES: usize = 256;

/// Idle pipes kept open for the next bulk transfer; more are closed.
pub const POOL_KEEP: usize = 32;

/// Bytes asked of one `splice(2)` call: the default pipe capacity (16
/// pages), so one call can fill an empty pipe.
pub const SPLICE_BYTES: usize = 64 * 1024;

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());
static LIVE: AtomicUsize = AtomicUsize::new(0);
static SPLICED: AtomicU64 = AtomicU64::new(0);

/// What the pool holds and has moved, process-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Pipes open now, leased or pooled (two descriptors each).
    pub pipes_open: usize,
    /// Pipes idle in the pool.
    pub pipes_pooled: usize,
    /// Bytes written to sockets by `splice(2)` since the process started.
    pub bytes_spliced: u64,
}

/// The pool's counts now.
pub fn stats() -> Stats {
    Stats {
        pipes_open: LIVE.load(Relaxed),
        pipes_pooled: POOL.lock().map(|p| p.len()).unwrap_or(0),
        bytes_spliced: SPLICED.load(Relaxed),
    }
}

/// One pipe: its read and write ends, both non-blocking.
#[derive(Debug)]
struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just opened and are owned by no one
        // else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { rd, wr })
    }
}

/// A pipe lent to one direction of one pair, and how many bytes it holds.
/// Dropped empty, it goes back to the pool; dropped with bytes inside, it
/// is closed (never handed on with someone else's bytes in it).
#[derive(Debug)]
pub struct Lease {
    pipe: Option<Pipe>,
    held: usize,
}

/// A pipe from the pool, or a new one while fewer than [`MAX_PIPES`] are
/// open; `None` when the budget is spent or `pipe2(2)` fails (the caller
/// copies instead).
pub fn take() -> Option<Lease> {
    if let Some(pipe) = POOL.lock().ok().and_then(|mut p| p.pop()) {
        return Some(Lease {
            pipe: Some(pipe),
            held: 0,
        });
    }
    if LIVE.fetch_add(1, Relaxed) >= MAX_PIPES {
        LIVE.fetch_sub(1, Relaxed);
        return None;
    }
    match Pipe::new() {
        Ok(pipe) => Some(Lease {
            pipe: Some(pipe),
            held: 0,
        }),
        Err(e) => {
            LIVE.fetch_sub(1, Relaxed);
            tracing::debug!("relay: no pipe for splice, copying instead: {e}");
            None
        }
    }
}

impl Lease {
    /// Bytes in the pipe, not yet written out.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves up to [`SPLICE_BYTES`] from socket `from` into the pipe (which
    /// must be empty: a full pipe would also say `EAGAIN`). `Ok(0)` is the
    /// socket's EOF; `WouldBlock` means the socket has nothing to read.
    pub fn fill_from(&mut self, from: RawFd) -> io::Result<usize> {
        let Some(pipe) = &self.pipe else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let n = splice(from, pipe.wr.as_raw_fd(), SPLICE_BYTES)?;
        self.held += n;
        Ok(n)
    }

    /// Moves what the pipe holds to socket `to`; `WouldBlock` means the
    /// socket's send buffer is full. Returns the bytes written.
    pub fn drain_to(&mut self, to: RawFd) -> io::Result<usize> {
        let Some(pipe) = &self.pipe else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let n = splice(pipe.rd.as_raw_fd(), to, self.held)?;
        if n == 0 && self.held > 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.held -= n;
        SPLICED.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

impl Lease {
    /// Gives the pipe up: to the pool if it is empty and the pool has
    /// room (`true`), else closed.
    fn release(&mut self) -> bool {
        let Some(pipe) = self.pipe.take() else {
            return false;
        };
        if self.held == 0
            && let Ok(mut pool) = POOL.lock()
            && pool.len() < POOL_KEEP
        {
            pool.push(pipe);
            return true;
        }
        drop(pipe);
        LIVE.fetch_sub(1, Relaxed);
        false
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain descriptors and null offsets (both ends are a
        // socket or a pipe, which have no offset); the kernel moves bytes
        // between them and touches no memory of ours.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    /// Bytes go socket → pipe → socket; an empty lease returns its pipe to
    /// the pool, a lease dropped with bytes inside closes it.
    #[test]
    fn splices_through_a_pooled_pipe_and_never_pools_a_full_one() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut d, _) = l2.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        a.write_all(b"hello splice").unwrap();
        let mut lease = take().expect("a pipe");
        let mut n = 0;
        for _ in 0..1000 {
            match lease.fill_from(b.as_raw_fd()) {
                Ok(got) => {
                    n += got;
                    if n == 12 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((n, lease.held()), (12, 12));
        let before = stats().bytes_spliced;
        assert_eq!(lease.drain_to(c.as_raw_fd()).unwrap(), 12);
        assert!(stats().bytes_spliced >= before + 12);
        let mut got = [0u8; 12];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello splice");
        // Empty: back to the pool.
        assert!(lease.release(), "an empty pipe is pooled");
        // With bytes inside: closed.
        let mut lease = take().expect("a pipe");
        a.write_all(b"x").unwrap();
        while lease.fill_from(b.as_raw_fd()).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!lease.release(), "a pipe with bytes is closed, not pooled");
    }
}
