//! One load-generator thread: a current-thread tokio runtime running one task
//! per connection. Nothing on the message path locks or allocates: each
//! connection fills its send buffer once and rewrites only the header, reads
//! into one reused buffer, and records into its thread's histogram.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{sleep_until, timeout, timeout_at};

use super::histogram::LatencyHistogram;
use super::message::{MessagePattern, Mismatch, Verifier};
use super::{BenchConfig, Mode};
use crate::error::{Error, ErrorKind, Result};

/// How many error descriptions a run keeps (the rest are only counted).
pub const MAX_ERROR_SAMPLES: usize = 5;

/// How long an open-loop run waits after the end for messages still in flight.
const DRAIN: Duration = Duration::from_secs(2);

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
    fn in_window(&self, at: Instant) -> bool {
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
    pub established: u64,
    pub connect_failures: u64,
    pub errors: u64,
    pub verification_failures: u64,
    pub error_samples: Vec<String>,
    /// The first verification failure, kept whole for the exit error.
    pub first_mismatch: Option<String>,
    /// Kind and code of the first failed connect, for the exit status.
    pub first_connect_error: Option<(ErrorKind, i32)>,
}

impl ThreadStats {
    fn sample(&mut self, text: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(text);
        }
    }
}

/// Why a connection stopped early.
enum ConnError {
    Connect(Error),
    Verify(Mismatch),
    Io { offset: u64, err: Error },
}

struct Ctx {
    id: u32,
    config: Arc<BenchConfig>,
    clock: Clock,
    live: Arc<Live>,
    stats: Rc<RefCell<ThreadStats>>,
    gate: Rc<Semaphore>,
    /// Connects made, to rotate source addresses (connect mode).
    connects: std::cell::Cell<u32>,
}

impl Ctx {
    /// Counts one message completed for a send intended `at`.
    fn record(&self, at: Instant, latency: Duration, bytes: usize) {
        if self.clock.in_window(at) {
            let mut s = self.stats.borrow_mut();
            s.histogram.record(latency);
            s.messages += 1;
            s.bytes += bytes as u64;
            self.live.messages.fetch_add(1, Relaxed);
        }
    }

    fn io<'a>(
        &'a self,
        offset: u64,
        what: &'a str,
    ) -> impl FnOnce(std::io::Error) -> ConnError + 'a {
        move |e| ConnError::Io {
            offset,
            err: Error::io(e, format_args!("{what} {}", self.config.target)),
        }
    }

    fn fail(&self, err: ConnError) {
        let mut s = self.stats.borrow_mut();
        let id = self.id;
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
                s.sample(format!("connection {id} at stream offset {offset}: {err}"));
            }
        }
    }

    /// `connect(2)` with the configured deadline and `TCP_NODELAY`, at most
    /// [`CONNECTS_IN_FLIGHT`] at a time per thread. The caller drops the
    /// returned permit once the server has answered: `connect` completes
    /// before the server's `accept`, so only an answer proves the connection
    /// left the accept queue (an overflowing queue drops the handshake's ACK
    /// and costs a 1 s SYN-ACK retransmit).
    async fn open(&self) -> Result<(TcpStream, Option<SemaphorePermit<'_>>), ConnError> {
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
            Ok(Err(e)) => {
                return Err(ConnError::Connect(Error::io(
                    e,
                    format_args!("connect {target}"),
                )));
            }
            Ok(Ok(s)) => s,
        };
        stream.set_nodelay(true).map_err(|e| {
            ConnError::Connect(Error::io(e, format_args!("set TCP_NODELAY on {target}")))
        })?;
        Ok((stream, permit))
    }
}

impl Ctx {
    /// `connect(2)`. In connect mode against 127.0.0.0/8, each connection
    /// leaves from another source address of 127.0.0.0/8 (bound with
    /// `IP_BIND_ADDRESS_NO_PORT`, so the port is still picked at connect): the
    /// client closes first, and tens of thousands of its `TIME_WAIT` sockets
    /// on one source address turn the kernel's ephemeral port search into
    /// the load generator's largest cost (`__inet_hash_connect`).
    async fn connect(&self) -> std::io::Result<TcpStream> {
        let addr = self.config.target.socket_addr();
        let spread = match addr.ip() {
            std::net::IpAddr::V4(ip) => self.config.mode == Mode::Connect && ip.is_loopback(),
            std::net::IpAddr::V6(_) => false,
        };
        if !spread {
            return TcpStream::connect(addr).await;
        }
        let n = self.connects.get().wrapping_add(1);
        self.connects.set(n);
        // One of 60,000 addresses from 127.0.0.2 up, never 127.0.0.1.
        let host = 2 + self.id.wrapping_mul(251).wrapping_add(n) % 60_000;
        let source = std::net::Ipv4Addr::from(0x7f00_0000 | host);
        let socket = tokio::net::TcpSocket::new_v4()?;
        set_bind_address_no_port(&socket)?;
        socket.bind(std::net::SocketAddr::from((source, 0)))?;
        socket.connect(addr).await
    }
}

fn set_bind_address_no_port(socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on an open socket with a correctly sized int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs connections `ids` on a current-thread runtime until the clock stops.
pub(crate) fn run_thread(
    config: Arc<BenchConfig>,
    clock: Clock,
    ids: Vec<u32>,
    live: Arc<Live>,
) -> Result<ThreadStats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(e, "start the bench runtime"))?;
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
        Mode::Echo => echo(&ctx).await,
        Mode::Connect => connect_loop(&ctx).await,
        Mode::Idle => idle(&ctx).await,
        Mode::Throughput => throughput(&ctx).await,
    };
    if let Err(err) = result {
        ctx.fail(err);
    }
}

fn to_tokio(at: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(at)
}

/// Receive buffer: room for every message in flight, within 4..=64 KiB.
fn recv_len(config: &BenchConfig) -> usize {
    (config.size_bytes * config.pipeline).clamp(4096, 65536)
}

async fn echo(ctx: &Ctx) -> Result<(), ConnError> {
    let (mut stream, permit) = ctx.open().await?;
    ctx.stats.borrow_mut().established += 1;
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    match ctx.config.rate_per_s {
        // One timer for the whole loop, not one per read: the deadline ends it.
        None => {
            let run = echo_closed(ctx, &mut stream, permit);
            match timeout_at(to_tokio(ctx.clock.stop_at), run).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
        // The first send may be scheduled far ahead: free the gate now.
        Some(rate) => {
            drop(permit);
            echo_open(ctx, &mut stream, rate).await
        }
    }
}

/// Closed loop: `pipeline` messages in flight; each echo completed sends the next.
async fn echo_closed(
    ctx: &Ctx,
    stream: &mut TcpStream,
    mut permit: Option<SemaphorePermit<'_>>,
) -> Result<(), ConnError> {
    let config = &ctx.config;
    let pattern = MessagePattern::new(ctx.id, config.size_bytes);
    let size = pattern.size();
    let k = config.pipeline;
    // Room for all K messages, so echoes completed by one read are answered
    // with one write(2), not one per message.
    let mut send = pattern.new_buffer().repeat(k);
    let mut verifier = Verifier::new(pattern.clone());
    let mut recv = vec![0u8; recv_len(config)];
    let mut sent_at = vec![Instant::now(); k];
    let mut next_seq = 0u64;
    let mut due = k as u64;
    loop {
        let now = Instant::now();
        for (i, msg) in send.chunks_exact_mut(size).take(due as usize).enumerate() {
            let seq = next_seq + i as u64;
            pattern.set_seq(msg, seq);
            sent_at[(seq % k as u64) as usize] = now;
        }
        stream
            .write_all(&send[..due as usize * size])
            .await
            .map_err(ctx.io(next_seq * size as u64, "write to"))?;
        next_seq += due;
        due = 0;
        while due == 0 {
            let offset = verifier.offset();
            let n = stream
                .read(&mut recv)
                .await
                .map_err(ctx.io(offset, "read from"))?;
            if n == 0 {
                return Err(eof(ctx, offset));
            }
            due = verifier.check(&recv[..n]).map_err(ConnError::Verify)?;
        }
        // The server has answered: let the next connect of this thread go.
        permit.take();
        let now = Instant::now();
        let first = verifier.messages_done() - due;
        for seq in first..first + due {
            ctx.record(now, now - sent_at[(seq % k as u64) as usize], size);
        }
        if now >= ctx.clock.stop_at {
            return Ok(());
        }
    }
}

fn eof(ctx: &Ctx, offset: u64) -> ConnError {
    ConnError::Io {
        offset,
        err: Error::new(
            ErrorKind::UnexpectedEof,
            crate::error::code::UNEXPECTED_EOF,
            format!("{} closed the connection", ctx.config.target),
        ),
    }
}

/// Send times of one connection in an open loop: connection `id` of `n`
/// sends every `n / rate` seconds, offset by `id / n` of that interval.
struct Schedule {
    first: Instant,
    interval_ns: u64,
}

impl Schedule {
    fn new(start: Instant, id: u32, connections: usize, rate_per_s: f64) -> Schedule {
        let interval_ns = ((connections as f64 / rate_per_s) * 1e9).max(1.0) as u64;
        let phase = interval_ns * u64::from(id) / connections as u64;
        Schedule {
            first: start + Duration::from_nanos(phase),
            interval_ns,
        }
    }

    fn at(&self, seq: u64) -> Instant {
        self.first + Duration::from_nanos(self.interval_ns.saturating_mul(seq))
    }

    /// Messages whose send time falls before `stop`.
    fn count_before(&self, stop: Instant) -> u64 {
        let span = stop.saturating_duration_since(self.first).as_nanos() as u64;
        span.div_ceil(self.interval_ns)
    }
}

/// Open loop (wrk2's method): message `seq` is due at a fixed time whether or
/// not earlier echoes came back, and its latency counts from that time, so a
/// stalled server is charged for every message it delayed (no coordinated
/// omission). Writer and reader run side by side on the split stream.
async fn echo_open(ctx: &Ctx, stream: &mut TcpStream, rate_per_s: f64) -> Result<(), ConnError> {
    let config = &ctx.config;
    let pattern = MessagePattern::new(ctx.id, config.size_bytes);
    let size = pattern.size();
    let schedule = Schedule::new(ctx.clock.start, ctx.id, config.connections, rate_per_s);
    let total = schedule.count_before(ctx.clock.stop_at);
    let (mut rd, mut wr) = stream.split();
    let writer = async {
        let mut send = pattern.new_buffer();
        for seq in 0..total {
            sleep_until(to_tokio(schedule.at(seq))).await;
            pattern.set_seq(&mut send, seq);
            wr.write_all(&send)
                .await
                .map_err(ctx.io(seq * size as u64, "write to"))?;
        }
        Ok::<(), ConnError>(())
    };
    let mut verifier = Verifier::new(pattern.clone());
    let reader = async {
        let mut recv = vec![0u8; recv_len(config)];
        while verifier.messages_done() < total {
            let offset = verifier.offset();
            let n = rd
                .read(&mut recv)
                .await
                .map_err(ctx.io(offset, "read from"))?;
            if n == 0 {
                return Err(eof(ctx, offset));
            }
            let done = verifier.check(&recv[..n]).map_err(ConnError::Verify)?;
            let now = Instant::now();
            let first = verifier.messages_done() - done;
            for seq in first..first + done {
                let due = schedule.at(seq);
                ctx.record(due, now.saturating_duration_since(due), size);
            }
        }
        Ok(())
    };
    let deadline = to_tokio(ctx.clock.stop_at + DRAIN);
    match timeout_at(deadline, async { tokio::try_join!(writer, reader) }).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => {
            let missing = total - verifier.messages_done();
            Err(ConnError::Io {
                offset: verifier.offset(),
                err: Error::timed_out(
                    format_args!("{missing} messages not echoed by {}", config.target),
                    DRAIN,
                ),
            })
        }
    }
}

/// Connection churn: connect, write one message, read its echo, close;
/// latency is the connect alone, from the intended start in an open loop.
async fn connect_loop(ctx: &Ctx) -> Result<(), ConnError> {
    let config = &ctx.config;
    let pattern = MessagePattern::new(ctx.id, config.size_bytes);
    let send = pattern.new_buffer();
    let mut recv = vec![0u8; pattern.size()];
    let schedule = config
        .rate_per_s
        .map(|r| Schedule::new(ctx.clock.start, ctx.id, config.connections, r));
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    let mut verifier = Verifier::new(pattern.clone());
    let mut iteration = 0u64;
    loop {
        let started = match &schedule {
            Some(s) => {
                let due = s.at(iteration);
                if due >= ctx.clock.stop_at {
                    return Ok(());
                }
                sleep_until(to_tokio(due)).await;
                due
            }
            None => Instant::now(),
        };
        if Instant::now() >= ctx.clock.stop_at {
            return Ok(());
        }
        iteration += 1;
        verifier.reset();
        match connect_once(ctx, &send, &mut recv, &mut verifier).await {
            Ok(connected) => {
                ctx.record(started, connected - started, send.len());
                if ctx.clock.in_window(started) {
                    ctx.stats.borrow_mut().established += 1;
                }
            }
            Err(e @ ConnError::Verify(_)) => return Err(e),
            Err(e) => {
                ctx.fail(e);
                // Back off so a refused port does not spin a core.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connect / write / read echo / close; returns when the connect completed.
async fn connect_once(
    ctx: &Ctx,
    send: &[u8],
    recv: &mut [u8],
    verifier: &mut Verifier,
) -> Result<Instant, ConnError> {
    // The permit is held through the echo (see `Ctx::open`).
    let (mut stream, _permit) = ctx.open().await?;
    let connected = Instant::now();
    stream
        .write_all(send)
        .await
        .map_err(ctx.io(0, "write to"))?;
    stream
        .read_exact(recv)
        .await
        .map_err(ctx.io(0, "read from"))?;
    verifier.check(recv).map_err(ConnError::Verify)?;
    Ok(connected)
}

/// Open a connection, echo one byte, then hold it until the end.
async fn idle(ctx: &Ctx) -> Result<(), ConnError> {
    let deadline = to_tokio(ctx.clock.stop_at);
    let echoed = match timeout_at(deadline, idle_open(ctx)).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::Connect(Error::timed_out(
            format_args!("open and echo one byte to {}", ctx.config.target),
            ctx.clock.stop_at - ctx.clock.start,
        ))),
    };
    // Counted only once the echo is back, so the orchestrator samples the
    // server's RSS after it has served every connection.
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    let _stream = echoed?;
    sleep_until(to_tokio(ctx.clock.stop_at)).await;
    Ok(())
}

/// Connects and echoes one byte (the connection id's low byte).
async fn idle_open(ctx: &Ctx) -> Result<TcpStream, ConnError> {
    // The permit is held through the echo (see `Ctx::open`).
    let (mut stream, _permit) = ctx.open().await?;
    let byte = [ctx.id as u8];
    let t0 = Instant::now();
    stream
        .write_all(&byte)
        .await
        .map_err(ctx.io(0, "write to"))?;
    let mut got = [0u8; 1];
    stream
        .read_exact(&mut got)
        .await
        .map_err(ctx.io(0, "read from"))?;
    if got != byte {
        return Err(ConnError::Verify(Mismatch {
            conn_id: ctx.id,
            offset: 0,
            seq: 0,
            byte_in_message: 0,
            expected: byte[0],
            got: got[0],
        }));
    }
    {
        let mut s = ctx.stats.borrow_mut();
        s.histogram.record(t0.elapsed());
        s.established += 1;
        s.messages += 1;
        s.bytes += 1;
    }
    ctx.live.messages.fetch_add(1, Relaxed);
    Ok(stream)
}

/// One-way bulk: write `size`-byte chunks as fast as the socket takes them
/// (latency is per write), discarding anything that comes back so an echo
/// server works too.
async fn throughput(ctx: &Ctx) -> Result<(), ConnError> {
    // Nothing comes back from a discard server to wait for.
    let (mut stream, _) = ctx.open().await?;
    ctx.stats.borrow_mut().established += 1;
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    let pattern = MessagePattern::new(ctx.id, ctx.config.size_bytes);
    let send = pattern.new_buffer();
    let (mut rd, mut wr) = stream.split();
    let writer = async {
        let mut offset = 0u64;
        loop {
            let t0 = Instant::now();
            wr.write_all(&send)
                .await
                .map_err(ctx.io(offset, "write to"))?;
            let now = Instant::now();
            ctx.record(now, now - t0, send.len());
            offset += send.len() as u64;
        }
    };
    let reader = async {
        let mut sink = vec![0u8; 65536];
        loop {
            match rd.read(&mut sink).await {
                Ok(0) => return Ok::<(), ConnError>(()),
                Ok(_) => {}
                Err(e) => return Err(ctx.io(0, "read from")(e)),
            }
        }
    };
    let both = async {
        tokio::select! {
            r = writer => r,
            r = reader => r,
        }
    };
    match timeout_at(to_tokio(ctx.clock.stop_at), both).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_schedule_spreads_connections_and_counts_sends() {
        let t0 = Instant::now();
        // 4 connections at 1,000/s in total: each every 4 ms, offset by 1 ms.
        let s1 = Schedule::new(t0, 1, 4, 1000.0);
        assert_eq!(s1.at(0) - t0, Duration::from_millis(1));
        assert_eq!(s1.at(2) - t0, Duration::from_millis(9));
        // Sends at 1, 5, 9 ms fall before 10 ms; 13 ms does not.
        assert_eq!(s1.count_before(t0 + Duration::from_millis(10)), 3);
        let s0 = Schedule::new(t0, 0, 4, 1000.0);
        assert_eq!(s0.count_before(t0 + Duration::from_secs(1)), 250);
    }
}
