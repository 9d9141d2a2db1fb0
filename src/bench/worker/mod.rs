//! One load-generator thread: a current-thread tokio runtime running one task
//! per connection. Nothing on the message path locks or allocates: each
//! connection fills its send buffer once and rewrites only the header, reads
//! into one reused buffer, and records into its thread's histogram. The
//! workloads live in [`echo`] (closed and open loop) and [`churn`] (connect,
//! idle, throughput).

mod churn;
mod echo;
mod stream;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::timeout;

pub(crate) use stream::BenchStream;

use super::histogram::LatencyHistogram;
use super::message::Mismatch;
use super::report::BrokenConnection;
use super::{BenchConfig, Mode};
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::net::{Protocol, Socket};

/// How many error descriptions a run keeps (the rest are only counted).
pub const MAX_ERROR_SAMPLES: usize = 5;

/// How many broken connections a run lists one by one (the rest are only
/// counted): every one of echo mode's connections up to this many, while
/// connect mode's endless reconnects during an outage cannot grow the
/// report without bound.
pub const MAX_BROKEN_LISTED: usize = 10_000;

/// Connects in flight per thread: a burst of thousands of SYNs would overflow
/// the server's accept queue and cost 1 s SYN retransmits.
const CONNECTS_IN_FLIGHT: usize = 64;

/// The run's timeline, shared by every thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// When load starts (warm-up begins).
    pub start: Instant,
    /// When counting starts (warm-up ends).
    pub measure_from: Instant,
    /// When counting and sending stop.
    pub stop_at: Instant,
}

impl Clock {
    pub(super) fn in_window(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.stop_at
    }
}

/// Counters the orchestrator reads while the run goes on (progress, idle).
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Messages (or connections) counted so far in the window.
    pub messages: AtomicU64,
    /// Connections that finished opening, successfully or not.
    pub opened_or_failed: AtomicU64,
}

/// What one thread measured.
#[derive(Debug, Default)]
pub(crate) struct ThreadStats {
    pub histogram: LatencyHistogram,
    pub messages: u64,
    pub bytes: u64,
    /// Open-loop echo: messages actually written inside the window.
    pub sends_in_window: u64,
    pub established: u64,
    pub connect_failures: u64,
    pub errors: u64,
    /// Of `errors`: connections the server reset after they connected.
    pub resets: u64,
    pub verification_failures: u64,
    pub error_samples: Vec<String>,
    /// Connections that broke after they opened (reset, closed, timed out).
    pub broken: u64,
    /// The first [`MAX_BROKEN_LISTED`] of them, each with its local address.
    pub broken_list: Vec<BrokenConnection>,
    /// The first verification failure, kept whole for the exit error.
    pub first_mismatch: Option<String>,
    /// Kind and code of the first failed connect, for the exit status.
    pub first_connect_error: Option<(ErrorKind, i32)>,
    /// `--idle-connections` that opened and echoed (set by the orchestrator).
    pub idle_established: u64,
    /// `--idle-connections` that failed to open or echo.
    pub idle_connect_failures: u64,
    /// TLS handshakes counted (connect mode: started in the window; other
    /// modes: all), their latency, and how many resumed a session.
    pub handshakes: u64,
    pub handshake_histogram: LatencyHistogram,
    pub resumed_handshakes: u64,
}

impl ThreadStats {
    fn sample(&mut self, text: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(text);
        }
    }
}

/// Why a connection stopped early.
pub(super) enum ConnError {
    Connect(Error),
    Verify(Mismatch),
    Io { offset: u64, err: Error },
}

pub(super) struct Ctx {
    pub(super) id: u32,
    pub(super) config: Arc<BenchConfig>,
    pub(super) clock: Clock,
    pub(super) live: Arc<Live>,
    pub(super) stats: Rc<RefCell<ThreadStats>>,
    gate: Rc<Semaphore>,
    /// Connects made, to rotate source addresses (connect mode).
    connects: std::cell::Cell<u32>,
    /// The local address of the last connection opened: what a balancer
    /// in between reports as the client (`Ctx::fail` lists it).
    local: std::cell::Cell<Option<std::net::SocketAddr>>,
    /// Bytes verified on the current connection (set by the echo loops).
    pub(super) verified_bytes: std::cell::Cell<u64>,
}

impl Ctx {
    /// Counts one message completed for a send intended `at`.
    pub(super) fn record(&self, at: Instant, latency: Duration, bytes: usize) {
        if self.clock.in_window(at) {
            let mut s = self.stats.borrow_mut();
            s.histogram.record(latency);
            s.messages += 1;
            s.bytes += bytes as u64;
            self.live.messages.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn io<'a>(
        &'a self,
        offset: u64,
        what: &'a str,
    ) -> impl FnOnce(std::io::Error) -> ConnError + 'a {
        move |e| ConnError::Io {
            offset,
            err: Error::io(e, format_args!("{what} {}", self.config.target)),
        }
    }

    pub(super) fn fail(&self, err: ConnError) {
        let mut s = self.stats.borrow_mut();
        let id = self.id;
        let reset = [libc::ECONNRESET, libc::EPIPE, libc::ECONNABORTED];
        let err = match err {
            // The handshake completed and the server reset it before
            // `connect` returned: a reset connection, not a failed connect.
            ConnError::Connect(e) if e.os_code().is_some_and(|c| reset.contains(&c)) => {
                ConnError::Io { offset: 0, err: e }
            }
            other => other,
        };
        match err {
            ConnError::Connect(e) => {
                s.connect_failures += 1;
                s.first_connect_error.get_or_insert((e.kind(), e.code()));
                s.sample(format!("connection {id}: {e}"));
            }
            ConnError::Verify(m) => {
                s.errors += 1;
                s.verification_failures += 1;
                let text = m.to_string();
                s.sample(text.clone());
                s.first_mismatch.get_or_insert(text);
            }
            ConnError::Io { offset, err } => {
                s.errors += 1;
                s.resets += u64::from(err.os_code().is_some_and(|c| reset.contains(&c)));
                s.sample(format!("connection {id} at stream offset {offset}: {err}"));
                s.broken += 1;
                if s.broken_list.len() < MAX_BROKEN_LISTED {
                    s.broken_list.push(BrokenConnection {
                        id,
                        local: self.local.get(),
                        verified_bytes: self.verified_bytes.get(),
                        error: err.to_string(),
                        code: err.code(),
                    });
                }
            }
        }
    }

    /// `connect(2)` with the configured deadline and `TCP_NODELAY`, at most
    /// [`CONNECTS_IN_FLIGHT`] at a time per thread. The caller drops the
    /// returned permit once the server has answered: `connect` completes
    /// before the server's `accept`, so only an answer proves the connection
    /// left the accept queue (an overflowing queue drops the handshake's ACK
    /// and costs a 1 s SYN-ACK retransmit).
    pub(super) async fn open(
        &self,
    ) -> Result<(BenchStream, Option<SemaphorePermit<'_>>), ConnError> {
        let permit = self.gate.acquire().await.ok();
        let target = self.config.target;
        let stream = match timeout(self.config.connect_timeout, self.connect()).await {
            Err(_) => {
                let e = Error::timed_out(
                    format_args!("connect {target}"),
                    self.config.connect_timeout,
                );
                return Err(ConnError::Connect(e));
            }
            Ok(Err(e)) => return Err(ConnError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        stream.set_nodelay(true).map_err(|e| {
            ConnError::Connect(Error::io(e, format_args!("set TCP_NODELAY on {target}")))
        })?;
        self.local.set(stream.local_addr().ok());
        self.verified_bytes.set(0);
        if let Some(version) = self.config.send_proxy {
            send_proxy(&stream, version, target)
                .await
                .map_err(ConnError::Connect)?;
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            return Ok((self.handshake(tls, stream).await?, permit));
        }
        Ok((BenchStream::Plain(stream), permit))
    }

    /// The TLS handshake over a connected stream (under the connector's
    /// deadline), counted and timed: in connect mode only when it started
    /// in the window, in the others always (they shake hands once, mostly
    /// before the window). A failed handshake counts as a failed connect.
    #[cfg(feature = "tls")]
    async fn handshake(
        &self,
        tls: &crate::tls::TlsConnector,
        stream: TcpStream,
    ) -> Result<BenchStream, ConnError> {
        let t0 = Instant::now();
        let stream = tls
            .connect(stream, None)
            .await
            .map_err(ConnError::Connect)?;
        let took = t0.elapsed();
        if self.config.mode != Mode::Connect || self.clock.in_window(t0) {
            let resumed =
                stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let mut s = self.stats.borrow_mut();
            s.handshakes += 1;
            s.resumed_handshakes += u64::from(resumed);
            s.handshake_histogram.record(took);
        }
        Ok(BenchStream::Tls(Box::new(stream)))
    }
}

/// The PROXY header for this connection's real source and destination.
/// A fresh socket's send buffer is empty, so the write completes at once;
/// a failure counts as a failed connect.
async fn send_proxy(
    stream: &TcpStream,
    version: crate::proxy::Version,
    target: Endpoint,
) -> Result<()> {
    let fail = |e| Error::io(e, format_args!("send the PROXY header to {target}"));
    let local = stream.local_addr().map_err(fail)?;
    let peer = stream.peer_addr().map_err(fail)?;
    let header = crate::proxy::encode(version, local, peer);
    let mut written = 0;
    while written < header.len() {
        stream.writable().await.map_err(fail)?;
        match stream.try_write(&header[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

impl Ctx {
    /// `connect(2)` on a [`Socket`]. In connect mode against 127.0.0.0/8, each connection
    /// leaves from another source address of 127.0.0.0/8 (bound with
    /// `IP_BIND_ADDRESS_NO_PORT`, so the port is still picked at connect): the
    /// client closes first, and tens of thousands of its `TIME_WAIT` sockets
    /// on one source address turn the kernel's ephemeral port search into
    /// the load generator's largest cost (`__inet_hash_connect`).
    async fn connect(&self) -> Result<TcpStream> {
        let target = self.config.target;
        let socket = Socket::open(Protocol::of(&target))?;
        // Idle connections (ids past the active ones) spread too: with
        // thousands of them, and other runs on the machine, one source
        // address's ephemeral ports could run short.
        let many = self.config.mode == Mode::Connect || self.id as usize >= self.config.connections;
        if many && target.is_ipv4() && target.ip().is_loopback() {
            let n = self.connects.get().wrapping_add(1);
            self.connects.set(n);
            // One of 60,000 addresses from 127.0.0.2 up, never 127.0.0.1.
            let host = 2 + self.id.wrapping_mul(251).wrapping_add(n) % 60_000;
            let source = std::net::Ipv4Addr::from(0x7f00_0000 | host);
            // Elsewhere the kernel picks the port at `bind(2)`, which is what
            // the option avoids: many connections from one source address
            // may then run out of ports sooner, nothing worse.
            if cfg!(target_os = "linux") {
                socket.set_bind_address_no_port(true)?;
            }
            socket.bind(&Endpoint::from(std::net::SocketAddr::from((source, 0))))?;
        }
        socket.connect_async(&target).await
    }
}

/// Opens the run's `idle_connections` (ids from `connections` up) on a
/// current-thread runtime, [`CONNECTS_IN_FLIGHT`] at a time, each echoing one
/// verified byte, and returns them as plain std sockets: deregistered from
/// any reactor and holding no buffer, they cost the load generator nothing
/// until dropped. Failures are in the returned stats (`connect_failures`,
/// `errors`); `established` counts the streams returned.
pub(crate) fn open_idle(
    config: &Arc<BenchConfig>,
) -> Result<(Vec<std::net::TcpStream>, ThreadStats)> {
    let rt = thread_runtime()?;
    let stats = Rc::new(RefCell::new(ThreadStats::default()));
    let gate = Rc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let live = Arc::new(Live::default());
    let now = Instant::now();
    let clock = Clock {
        start: now,
        measure_from: now,
        stop_at: now,
    };
    let first = config.connections as u32;
    let local = tokio::task::LocalSet::new();
    let held = local.block_on(&rt, async {
        let mut tasks = Vec::with_capacity(config.idle_connections);
        for i in 0..config.idle_connections as u32 {
            let ctx = Ctx {
                id: first + i,
                config: config.clone(),
                clock,
                live: live.clone(),
                stats: stats.clone(),
                gate: gate.clone(),
                connects: std::cell::Cell::new(0),
                local: std::cell::Cell::new(None),
                verified_bytes: std::cell::Cell::new(0),
            };
            tasks.push(tokio::task::spawn_local(async move {
                // The connect has its own deadline; this one bounds the echo.
                let limit = ctx.config.connect_timeout * 2;
                let opened = match timeout(limit, churn::echo_one_byte(&ctx)).await {
                    Ok(r) => r,
                    Err(_) => Err(ConnError::Connect(Error::timed_out(
                        format_args!("open and echo one byte to {}", ctx.config.target),
                        limit,
                    ))),
                };
                // The TCP socket only: a TLS connection's state is not
                // needed to hold it open (see `BenchStream::into_tcp`).
                let held =
                    opened.and_then(|(s, _)| s.into_tcp().into_std().map_err(ctx.io(0, "hold")));
                match held {
                    Ok(s) => {
                        ctx.stats.borrow_mut().established += 1;
                        Some(s)
                    }
                    Err(e) => {
                        ctx.fail(e);
                        None
                    }
                }
            }));
        }
        let mut held = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(Some(s)) = task.await {
                held.push(s);
            }
        }
        held
    });
    drop(local);
    Ok((held, stats.take()))
}

/// Runs connections `ids` on a current-thread runtime until the clock stops.
pub(crate) fn run_thread(
    config: Arc<BenchConfig>,
    clock: Clock,
    ids: Vec<u32>,
    live: Arc<Live>,
) -> Result<ThreadStats> {
    let rt = thread_runtime()?;
    let stats = Rc::new(RefCell::new(ThreadStats::default()));
    let gate = Rc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            let ctx = Ctx {
                id,
                config: config.clone(),
                clock,
                live: live.clone(),
                stats: stats.clone(),
                gate: gate.clone(),
                connects: std::cell::Cell::new(0),
                local: std::cell::Cell::new(None),
                verified_bytes: std::cell::Cell::new(0),
            };
            tasks.push(tokio::task::spawn_local(connection(ctx)));
        }
        for task in tasks {
            // A panicking connection task is a bug; the others still finish.
            let _ = task.await;
        }
    });
    drop(local);
    Ok(stats.take())
}

async fn connection(ctx: Ctx) {
    let result = match ctx.config.mode {
        Mode::Echo => echo::run(&ctx).await,
        Mode::Connect => churn::connect_loop(&ctx).await,
        Mode::Idle => churn::idle(&ctx).await,
        Mode::Throughput => churn::throughput(&ctx).await,
    };
    if let Err(err) = result {
        ctx.fail(err);
    }
}

pub(super) fn to_tokio(at: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(at)
}

/// Receive buffer: room for every message in flight, within 4..=64 KiB.
pub(super) fn recv_len(config: &BenchConfig) -> usize {
    (config.size_bytes * config.pipeline).clamp(4096, 65536)
}

pub(super) fn eof(ctx: &Ctx, offset: u64) -> ConnError {
    ConnError::Io {
        offset,
        err: Error::new(
            ErrorKind::UnexpectedEof,
            crate::error::code::UNEXPECTED_EOF,
            format!("{} closed the connection", ctx.config.target),
        ),
    }
}

/// One load-generator thread's runtime: current-thread, so connections on
/// it never migrate and need no cross-thread synchronisation.
fn thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(e, "start the bench runtime"))
}
