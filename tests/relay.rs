//! The relay (`tcpkit::relay`, `tcpkit relay`) over loopback: byte-exact
//! bulk both ways at once, half-close each way, resets passed on each way,
//! bounded buffering for a client that does not read, an upstream killed
//! mid-stream, an upstream that is down, and `ncat`/`socat` as client and
//! upstream.
//!
//! Every listener binds port 0 (a peer program that cannot report its port
//! gets a free one and the test waits until it listens, as in
//! `tests/interop.rs`); every child is killed by PID in a guard's `Drop`;
//! every wait has a deadline. A missing program skips its test, or fails it
//! under `TCPKIT_REQUIRE_INTEROP=1`.
#![cfg(feature = "cli")]

mod common;
mod server_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use server_util::{TestServer, start, within};
use tcpkit::endpoint::HostPort;
use tcpkit::relay::{Fixed, Relay};
use tcpkit::server::ServerBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(30);
/// 64 MiB each way through a debug build on a shared 2-core machine.
const BULK_DEADLINE: Duration = Duration::from_secs(240);
const MIB: usize = 1 << 20;

/// A relay in this process to `upstream`.
fn relay_to(upstream: SocketAddr, builder: ServerBuilder) -> TestServer {
    let target = HostPort::parse(&upstream.to_string()).expect("upstream address");
    start(
        builder,
        Relay::new(Fixed::new(target, Duration::from_secs(10))),
    )
}

/// A loopback listener standing in for the upstream.
async fn upstream_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = l.local_addr().expect("upstream addr");
    (l, addr)
}

/// Deterministic bytes: byte `i` of stream `seed`, so each side can check
/// what it reads without holding a copy.
fn pattern(seed: u8, at: usize) -> u8 {
    (at as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(u32::from(seed))
        .to_le_bytes()[3]
        ^ seed
}

async fn send_pattern(wr: &mut (impl AsyncWriteExt + Unpin), seed: u8, len: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    while at < len {
        let n = buf.len().min(len - at);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(seed, at + i);
        }
        wr.write_all(&buf[..n]).await.expect("send pattern");
        at += n;
    }
}

/// Reads to EOF, checking every byte against the pattern; returns the length.
async fn check_pattern(rd: &mut (impl AsyncReadExt + Unpin), seed: u8) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    loop {
        let n = rd.read(&mut buf).await.expect("read pattern");
        if n == 0 {
            return at;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                pattern(seed, at + i),
                "byte {} of stream {seed}",
                at + i
            );
        }
        at += n;
    }
}

/// 64 MiB each way at once: the client and the upstream both send and
/// check, then half-close; every byte arrives, in order, and the metrics
/// count both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_both_ways_at_once_byte_exact() {
    const LEN: usize = 64 * MIB;
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new());
    let upstream = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("upstream accept");
        let (mut rd, mut wr) = s.into_split();
        let sender = tokio::spawn(async move {
            send_pattern(&mut wr, 2, LEN).await;
            wr.shutdown().await.expect("upstream shutdown");
        });
        let got = check_pattern(&mut rd, 1).await;
        sender.await.expect("upstream sender");
        got
    });
    let client = TcpStream::connect(relay.addr).await.expect("connect relay");
    let (mut rd, mut wr) = client.into_split();
    let sender = tokio::spawn(async move {
        send_pattern(&mut wr, 1, LEN).await;
        wr.shutdown().await.expect("client shutdown");
    });
    let got = within(
        BULK_DEADLINE,
        "client reads 64 MiB",
        check_pattern(&mut rd, 2),
    )
    .await;
    assert_eq!(got, LEN, "client received");
    within(DEADLINE, "client sender", sender)
        .await
        .expect("sender");
    let up_got = within(DEADLINE, "upstream", upstream)
        .await
        .expect("upstream");
    assert_eq!(up_got, LEN, "upstream received");
    relay
        .wait_for("pair closed", |s| s.connections_closed == 1)
        .await;
    let s = relay.metrics.snapshot();
    assert_eq!((s.bytes_in, s.bytes_out), (LEN as u64, LEN as u64));
    relay.stop().await;
}

/// The client half-closes after its request; the upstream sees the EOF,
/// then answers (1 MiB) and closes: the whole answer reaches the client.
#[tokio::test]
async fn client_half_close_reaches_upstream_and_the_reply_still_flows() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new());
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut req = Vec::new();
        // Returns only on the EOF the relay passed on.
        s.read_to_end(&mut req).await.expect("read request");
        send_pattern(&mut s, 7, MIB).await;
        req
    });
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let got = within(DEADLINE, "reply", check_pattern(&mut client, 7)).await;
    assert_eq!(got, MIB);
    let req = within(DEADLINE, "upstream", upstream)
        .await
        .expect("upstream");
    assert_eq!(req, b"request");
    relay
        .wait_for("closed", |s| s.connections_closed == 1)
        .await;
    relay.stop().await;
}

/// The reverse: the upstream greets and half-closes; the client sees the
/// EOF after the greeting, then sends 1 MiB, all of which reaches the
/// upstream, followed by its EOF.
#[tokio::test]
async fn upstream_half_close_reaches_client_and_the_client_still_sends() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new());
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"greeting").await.expect("greet");
        s.shutdown().await.expect("shutdown");
        check_pattern(&mut s, 9).await
    });
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    let mut greeting = Vec::new();
    within(DEADLINE, "greeting", client.read_to_end(&mut greeting))
        .await
        .expect("read greeting");
    assert_eq!(greeting, b"greeting");
    send_pattern(&mut client, 9, MIB).await;
    client.shutdown().await.expect("shutdown");
    let got = within(DEADLINE, "upstream", upstream)
        .await
        .expect("upstream");
    assert_eq!(got, MIB);
    relay
        .wait_for("closed", |s| s.connections_closed == 1)
        .await;
    relay.stop().await;
}

/// A clean close each way, in both orders, is a FIN on both sides, never a
/// reset: the direction that finishes second ends the pair, and its EOF
/// goes out with the sockets' close (no `shutdown` first), which must not
/// turn into a RST for the peer that is still reading.
#[tokio::test]
async fn a_clean_close_both_ways_is_a_fin_not_a_reset_on_either_side() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new());
    // Client first: request, EOF; the upstream answers and closes.
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut req = Vec::new();
        s.read_to_end(&mut req)
            .await
            .expect("request up to the EOF");
        s.write_all(b"reply").await.expect("reply");
        s.shutdown().await.expect("upstream FIN");
        // The relay closes its side now: a FIN, so reads end cleanly.
        let mut rest = [0u8; 8];
        let after = s.read(&mut rest).await.expect("no reset after the close");
        (req, after, listener)
    });
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    client.write_all(b"request").await.expect("write");
    client.shutdown().await.expect("client FIN");
    let mut reply = Vec::new();
    within(DEADLINE, "reply", client.read_to_end(&mut reply))
        .await
        .expect("the reply, then a clean EOF, not a reset");
    assert_eq!(reply, b"reply");
    let mut more = [0u8; 8];
    let again = within(DEADLINE, "after EOF", client.read(&mut more)).await;
    assert_eq!(again.expect("no reset after the EOF"), 0);
    let (req, after, listener) = within(DEADLINE, "upstream", upstream)
        .await
        .expect("upstream");
    assert_eq!((req.as_slice(), after), (&b"request"[..], 0));
    relay
        .wait_for("first pair closed", |s| s.connections_closed == 1)
        .await;

    // Upstream first: greeting, EOF; the client answers and closes last,
    // so the relay's close of the upstream socket carries the client's EOF.
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"greeting").await.expect("greet");
        s.shutdown().await.expect("upstream FIN");
        // Ok(bytes) on a FIN, Err on a reset.
        read_until_end(&mut s).await
    });
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    let mut greeting = Vec::new();
    within(DEADLINE, "greeting", client.read_to_end(&mut greeting))
        .await
        .expect("greeting, then a clean EOF");
    assert_eq!(greeting, b"greeting");
    client.write_all(b"bye").await.expect("write");
    client.shutdown().await.expect("client FIN");
    let end = within(DEADLINE, "upstream", upstream)
        .await
        .expect("upstream");
    assert_eq!(
        end.expect("the upstream must see a clean EOF after the bytes, not a reset"),
        3
    );
    let again = within(DEADLINE, "client after close", client.read(&mut more)).await;
    assert_eq!(again.expect("no reset for the client either"), 0);
    relay
        .wait_for("both pairs closed", |s| s.connections_closed == 2)
        .await;
    relay.stop().await;
}

/// Idle means both directions quiet: a pair where only the upstream talks
/// (every 100 ms for 2 s) outlives a 1 s idle timeout, then is closed by
/// it once the upstream falls silent, counted as an idle timeout.
#[tokio::test]
async fn idle_timeout_needs_both_directions_quiet() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(
        up_addr,
        ServerBuilder::new().idle_timeout(Some(Duration::from_secs(1))),
    );
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    let (mut up, _) = within(DEADLINE, "accept", listener.accept())
        .await
        .expect("accept");
    let mut byte = [0u8; 1];
    for _ in 0..20 {
        up.write_all(b"t").await.expect("upstream tick");
        within(
            DEADLINE,
            "tick through the relay",
            client.read_exact(&mut byte),
        )
        .await
        .expect("tick");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        relay.metrics.snapshot().connections_closed,
        0,
        "closed while one direction was busy"
    );
    let quiet_from = Instant::now();
    let end = within(DEADLINE, "idle close", read_until_end(&mut client)).await;
    assert!(end.is_ok(), "idle close is a FIN: {end:?}");
    let quiet = quiet_from.elapsed();
    assert!(
        quiet >= Duration::from_millis(900),
        "closed after {quiet:?}"
    );
    relay.wait_for("counted", |s| s.idle_timeouts == 1).await;
    relay.stop().await;
}

/// Graceful shutdown: the listener closes first, and a pair with bytes in
/// flight finishes them (1 MiB and the EOF after the shutdown started)
/// within the grace period.
#[tokio::test]
async fn shutdown_closes_the_listener_and_lets_pairs_finish() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(
        up_addr,
        ServerBuilder::new().shutdown_grace(Duration::from_secs(20)),
    );
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    let (mut up, _) = within(DEADLINE, "accept", listener.accept())
        .await
        .expect("accept");
    // The upstream trickles 20 × 64 KiB, 50 ms apart, so the pair is busy
    // (never quiet for DRAIN_QUIET) while the listener's closing is checked.
    let upstream = tokio::spawn(async move {
        let chunk = 64 * 1024;
        let mut buf = vec![0u8; chunk];
        for c in 0..20 {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = pattern(3, c * chunk + i);
            }
            up.write_all(&buf).await.expect("upstream write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        up.shutdown().await.expect("upstream shutdown");
        let mut rest = Vec::new();
        up.read_to_end(&mut rest).await.expect("upstream reads EOF");
        rest
    });
    let reader = tokio::spawn(async move {
        let got = check_pattern(&mut client, 3).await;
        client
            .write_all(b"bye")
            .await
            .expect("write after upstream EOF");
        client.shutdown().await.expect("client shutdown");
        got
    });
    relay.handle.shutdown();
    let addr = relay.addr;
    within(DEADLINE, "listener closed", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let got = within(DEADLINE, "reply during shutdown", reader)
        .await
        .expect("reader");
    assert_eq!(got, 20 * 64 * 1024);
    let rest = within(DEADLINE, "upstream", upstream)
        .await
        .expect("upstream");
    assert_eq!(rest, b"bye");
    let summary = relay.stop().await;
    assert_eq!(summary.aborted, 0, "pairs cut off: {summary:?}");
}

/// A pair still busy at the end of the grace period is cut off, and what
/// it moved until then is still counted.
#[tokio::test]
async fn a_pair_cut_off_at_the_grace_deadline_still_counts_its_bytes() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(
        up_addr,
        ServerBuilder::new().shutdown_grace(Duration::from_secs(1)),
    );
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    let (mut up, _) = within(DEADLINE, "accept", listener.accept())
        .await
        .expect("accept");
    // Busy for good: 1 KiB every 100 ms, never quiet for DRAIN_QUIET.
    let upstream = tokio::spawn(async move {
        while up.write_all(&[7u8; 1024]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = [0u8; 1024];
    within(DEADLINE, "first KiB", client.read_exact(&mut buf))
        .await
        .expect("read");
    let summary = relay.stop().await;
    upstream.abort();
    assert_eq!(summary.aborted, 1, "{summary:?}");
    assert!(
        summary.snapshot.bytes_out >= 1024,
        "bytes moved by the cut-off pair not counted: {summary:?}"
    );
}

/// The server's connection limit applies to pairs: with one allowed, a
/// second client is closed at once and never reaches the upstream.
#[tokio::test]
async fn max_connections_limits_pairs() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new().max_connections(1));
    let mut first = TcpStream::connect(relay.addr).await.expect("connect");
    let (mut up, _) = within(DEADLINE, "accept", listener.accept())
        .await
        .expect("accept");
    up.write_all(b"1").await.expect("write");
    let mut byte = [0u8; 1];
    within(DEADLINE, "first pair works", first.read_exact(&mut byte))
        .await
        .expect("read");
    let mut second = TcpStream::connect(relay.addr).await.expect("connect");
    let end = within(DEADLINE, "second closed", read_until_end(&mut second)).await;
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    relay
        .wait_for("rejected", |s| s.connections_rejected == 1)
        .await;
    let again = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(again.is_err(), "the rejected client reached the upstream");
    drop((first, up));
    relay.stop().await;
}

/// `SO_LINGER` 0, then close: the peer gets a RST.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(s);
}

/// Reads until an error or EOF; `Err` is what a reset looks like.
async fn read_until_end(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.read(&mut buf).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

#[tokio::test]
async fn client_reset_resets_the_upstream() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new());
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    client.write_all(b"x").await.expect("write");
    let (mut up, _) = within(DEADLINE, "accept", listener.accept())
        .await
        .expect("accept");
    let mut one = [0u8; 1];
    up.read_exact(&mut one).await.expect("first byte");
    reset(client);
    let end = within(DEADLINE, "upstream sees the end", read_until_end(&mut up)).await;
    let err = end.expect_err("the upstream must see a reset, not a clean EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    relay
        .wait_for("closed", |s| s.connections_closed == 1)
        .await;
    relay.stop().await;
}

#[tokio::test]
async fn upstream_reset_resets_the_client() {
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new());
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    let (mut up, _) = within(DEADLINE, "accept", listener.accept())
        .await
        .expect("accept");
    up.write_all(b"y").await.expect("write");
    let mut one = [0u8; 1];
    within(DEADLINE, "first byte", client.read_exact(&mut one))
        .await
        .expect("first byte");
    reset(up);
    let end = within(DEADLINE, "client sees the end", read_until_end(&mut client)).await;
    let err = end.expect_err("the client must see a reset, not a clean EOF");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    relay
        .wait_for("closed", |s| s.connections_closed == 1)
        .await;
    relay.stop().await;
}

/// The most the kernel may buffer along client ⇄ relay ⇄ upstream when
/// the client reads nothing: each of the four sockets' largest autotuned
/// buffer (`tcp_rmem`/`tcp_wmem` maximum), plus the relay's own buffer.
fn kernel_buffering_bound() -> usize {
    let max = |path: &str| -> usize {
        std::fs::read_to_string(path)
            .expect(path)
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .expect("third value")
    };
    let rmem = max("/proc/sys/net/ipv4/tcp_rmem");
    let wmem = max("/proc/sys/net/ipv4/tcp_wmem");
    2 * rmem + 2 * wmem + tcpkit::relay::BUF_BYTES
}

/// A client that never reads, an upstream that writes as fast as it can:
/// the upstream is stopped (its writes stall) after at most what the
/// sockets hold plus the relay's one buffer. A relay that buffered without
/// bound would take everything the upstream offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_stops_a_fast_upstream() {
    let bound = kernel_buffering_bound();
    let offered = bound * 4;
    let (listener, up_addr) = upstream_listener().await;
    let relay = relay_to(up_addr, ServerBuilder::new());
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let chunk = vec![0x5au8; 64 * 1024];
        loop {
            if counter.load(Relaxed) as usize >= offered {
                return;
            }
            if s.write_all(&chunk).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Relaxed);
        }
    });
    let client = TcpStream::connect(relay.addr).await.expect("connect");
    // Stalled = no progress for 2 s in a row (the event awaited is the
    // absence of progress, so a quiet period is the only witness).
    let started = Instant::now();
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = written.load(Relaxed);
        if now == last || upstream.is_finished() || started.elapsed() > DEADLINE {
            break;
        }
        last = now;
    }
    let total = written.load(Relaxed) as usize;
    eprintln!("upstream wrote {total} bytes before stalling (bound {bound})");
    assert!(
        total <= bound,
        "the relay took {total} bytes for a client that reads nothing (bound {bound})"
    );
    assert!(total > 0, "the upstream wrote nothing at all");
    upstream.abort();
    drop(client);
    relay.stop().await;
}

/// Resident memory of process `pid`, in bytes (`VmRSS`).
fn rss_bytes(pid: libc::pid_t) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The `tcpkit relay` process itself: with a client that reads nothing and
/// an upstream offering 256 MiB, its resident memory grows by less than
/// 16 MiB (socket buffers are the kernel's, not in RSS). A relay that
/// buffered without bound would grow by about what the upstream offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_process_memory_stays_bounded_for_a_client_that_does_not_read() {
    const OFFERED: u64 = 256 * MIB as u64;
    let (listener, up_addr) = upstream_listener().await;
    let to = up_addr.to_string();
    let (relay, relay_addr) = tcpkit(&["relay", "--listen", "127.0.0.1:0", "--to", &to]);
    let before = rss_bytes(relay.pid());
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let chunk = vec![0xa5u8; 64 * 1024];
        while counter.load(Relaxed) < OFFERED && s.write_all(&chunk).await.is_ok() {
            counter.fetch_add(chunk.len() as u64, Relaxed);
        }
    });
    let client = TcpStream::connect(relay_addr).await.expect("connect");
    let started = Instant::now();
    let mut last = u64::MAX;
    loop {
        // No progress for 2 s in a row: the upstream is stalled.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = written.load(Relaxed);
        if now == last || upstream.is_finished() || started.elapsed() > DEADLINE {
            break;
        }
        last = now;
    }
    let grown = rss_bytes(relay.pid()).saturating_sub(before);
    let total = written.load(Relaxed);
    eprintln!("upstream wrote {total} bytes; relay RSS grew {grown} bytes");
    assert!(
        total < OFFERED,
        "the upstream was never stopped ({total} bytes)"
    );
    assert!(grown < 16 * MIB, "relay RSS grew {grown} bytes");
    upstream.abort();
    drop(client);
}

/// A child process killed by PID and reaped when dropped.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().expect("spawn"))
    }
    fn pid(&self) -> libc::pid_t {
        self.0.id() as libc::pid_t
    }
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// Reads the `listening on <ENDPOINT> (...)` line of a tcpkit child.
fn listening_line(out: impl Read + Send + 'static) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx.recv_timeout(DEADLINE).expect("listening line in time");
    let ep = line
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    ep.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn tcpkit(args: &[&str]) -> (Proc, SocketAddr) {
    let mut p = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let out = p.0.stdout.take().expect("stdout");
    (p, listening_line(out))
}

/// The upstream (a `tcpkit serve` echo process) is killed with SIGKILL
/// while bytes flow: the client's read ends (EOF or reset) instead of
/// hanging, and the relay closes the pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_mid_stream_ends_the_client() {
    let (mut echo, up_addr) = tcpkit(&["serve", "--listen", "127.0.0.1:0"]);
    let relay = relay_to(up_addr, ServerBuilder::new());
    let client = TcpStream::connect(relay.addr).await.expect("connect");
    let (mut rd, mut wr) = client.into_split();
    // Keeps sending until the pair breaks.
    let writer = tokio::spawn(async move {
        let chunk = vec![1u8; 16 * 1024];
        while wr.write_all(&chunk).await.is_ok() {}
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut echoed = 0;
    while echoed < MIB {
        let n = within(DEADLINE, "echo through the relay", rd.read(&mut buf))
            .await
            .expect("read echo");
        assert!(n > 0, "closed before the upstream was killed");
        echoed += n;
    }
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(echo.pid(), libc::SIGKILL);
    }
    echo.kill();
    let end = within(DEADLINE, "client sees the upstream gone", async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return "eof",
                Ok(_) => continue,
                Err(_) => return "reset",
            }
        }
    })
    .await;
    eprintln!("client saw {end} after the upstream was killed");
    within(DEADLINE, "writer stops", writer)
        .await
        .expect("writer");
    relay
        .wait_for("pair closed", |s| s.connections_closed == 1)
        .await;
    relay.stop().await;
}

/// Nothing listens upstream: the client is closed at once (well within the
/// 10 s connect timeout: refused is immediate), and the failure counted.
#[tokio::test]
async fn upstream_down_closes_the_client_at_once_and_counts_it() {
    let up_addr: SocketAddr = format!("127.0.0.1:{}", common::closed_port())
        .parse()
        .expect("addr");
    let relay = relay_to(up_addr, ServerBuilder::new());
    let started = Instant::now();
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let r = within(DEADLINE, "client closed", client.read(&mut buf)).await;
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}, not at once",
        started.elapsed()
    );
    relay
        .wait_for("failure counted", |s| s.upstream_connect_failures == 1)
        .await;
    assert_eq!(relay.metrics.snapshot().connections_closed, 1);
    relay.stop().await;
}

// ---- interop: the `tcpkit relay` command between real programs ----

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 0");
    l.local_addr().expect("addr").port()
}

/// Whether something listens on 127.0.0.1:`port` (from `/proc/net/tcp`).
fn listening_on(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&hex) && f[3] == "0A"
            })
        })
        .unwrap_or(false)
}

/// Starts a peer listening on a free port; another port if it lost this one.
fn peer_listening(make: impl Fn(u16) -> Command) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut p = Proc::spawn(&mut make(port));
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if listening_on(port) {
                return (p, port);
            }
            if p.0.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("peer never listened");
}

fn random_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern(seed, i)).collect()
}

/// Feeds `send` to the child's stdin and collects its stdout. Its stdin
/// stays open until all `expect_len` bytes arrived on its stdout: `ncat`
/// stops at the first EOF it reads (from either side), so each peer
/// half-closes only once it has everything.
fn talk(p: &mut Proc, send: Vec<u8>, expect_len: usize) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let mut stdin = p.0.stdin.take().expect("stdin");
    let mut stdout = p.0.stdout.take().expect("stdout");
    let (got_all_tx, got_all_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&send);
        let _ = got_all_rx.recv_timeout(Duration::from_secs(120));
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut signalled = false;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if !signalled && got.len() >= expect_len {
                signalled = true;
                let _ = got_all_tx.send(());
            }
        }
        let _ = tx.send(got);
    });
    rx
}

/// `client` and `upstream` (real programs) exchange 1 MiB each way through
/// `tcpkit relay`, then close; each receives exactly what the other sent,
/// and the relay exits 0 on SIGTERM.
fn exchange_through_cli_relay(
    upstream: impl Fn(u16) -> Command,
    mut client: impl FnMut(u16) -> Command,
) {
    let (to_upstream, to_client) = (random_bytes(5, MIB), random_bytes(6, MIB));
    let (mut up, up_port) = peer_listening(|port| {
        let mut cmd = upstream(port);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    });
    let up_got = talk(&mut up, to_client.clone(), to_upstream.len());
    let to = format!("127.0.0.1:{up_port}");
    let (mut relay, relay_addr) = tcpkit(&["relay", "--listen", "127.0.0.1:0", "--to", &to]);
    let mut c = Proc::spawn(
        client(relay_addr.port())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let client_got = talk(&mut c, to_upstream.clone(), to_client.len());
    let limit = Duration::from_secs(120);
    let client_got = client_got
        .recv_timeout(limit)
        .expect("client output in time");
    let up_got = up_got.recv_timeout(limit).expect("upstream output in time");
    assert_eq!(
        client_got.len(),
        to_client.len(),
        "bytes the client received"
    );
    assert!(client_got == to_client, "what the client received differs");
    assert_eq!(
        up_got.len(),
        to_upstream.len(),
        "bytes the upstream received"
    );
    assert!(up_got == to_upstream, "what the upstream received differs");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(relay.pid(), libc::SIGTERM);
    }
    let status = relay.0.wait().expect("relay exit");
    assert!(status.success(), "tcpkit relay exited {status:?}");
}

#[test]
fn socat_client_through_relay_to_ncat_upstream() {
    if !common::have_program("socat") || !common::have_program("ncat") {
        return;
    }
    exchange_through_cli_relay(
        |port| {
            let mut cmd = Command::new("ncat");
            cmd.args(["-l", "127.0.0.1", &port.to_string()]);
            cmd
        },
        |port| {
            let mut cmd = Command::new("socat");
            cmd.args(["-t", "30", "-", &format!("TCP4:127.0.0.1:{port}")]);
            cmd
        },
    );
}

#[test]
fn ncat_client_through_relay_to_socat_upstream() {
    if !common::have_program("socat") || !common::have_program("ncat") {
        return;
    }
    exchange_through_cli_relay(
        |port| {
            let mut cmd = Command::new("socat");
            cmd.args([
                "-t",
                "30",
                &format!("TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr"),
                "-",
            ]);
            cmd
        },
        |port| {
            let mut cmd = Command::new("ncat");
            cmd.args(["127.0.0.1", &port.to_string()]);
            cmd
        },
    );
}

/// TLS termination for free: `tcpkit relay --tls` in front of a plain
/// upstream that reads to EOF, then answers. `tcpkit connect --tls` sends
/// its stdin and half-closes (close_notify, FIN); the relay passes the end
/// on as a FIN, and the answer comes back through TLS.
#[cfg(feature = "tls")]
#[test]
fn tls_terminating_relay_carries_half_close_to_a_plain_upstream() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let to = upstream.local_addr().expect("addr").to_string();
    let answer = std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().expect("accept");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut req = Vec::new();
        s.read_to_end(&mut req).expect("read to the relayed EOF");
        s.write_all(b"got ")
            .and_then(|()| s.write_all(&req))
            .expect("answer");
        req
    });
    let (mut relay, relay_addr) =
        tcpkit(&["relay", "--listen", "127.0.0.1:0", "--to", &to, "--tls"]);
    let mut client = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["connect", "--tls", "--insecure", &relay_addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut stdin = client.0.stdin.take().expect("stdin");
    stdin.write_all(b"ping\n").expect("client stdin");
    drop(stdin);
    let mut stdout = client.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = stdout.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(DEADLINE).expect("client output in time");
    assert_eq!(got, b"got ping\n");
    assert_eq!(answer.join().expect("upstream"), b"ping\n");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(relay.pid(), libc::SIGTERM);
    }
    let status = relay.0.wait().expect("relay exit");
    assert!(status.success(), "tcpkit relay exited {status:?}");
}

/// `serve`'s flags that mean nothing to a relay are refused by name, exit
/// 2, before any socket opens (they were once accepted and ignored).
#[test]
fn serve_only_flags_are_refused_not_ignored() {
    for (flag, value) in [
        ("--mode", Some("chat")),
        ("--max-line", Some("10")),
        ("--history", Some("3")),
        ("--no-defer-accept", None),
    ] {
        let to = format!("127.0.0.1:{}", common::closed_port());
        let mut args = vec![
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            to.as_str(),
            flag,
        ];
        args.extend(value);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tcpkit");
        // A relay that wrongly starts would run forever: bounded by a
        // deadline, then killed (by its PID) and reported.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{args:?} (None: still running after 10 s): {stderr}"
        );
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening on"), "{args:?}: {stderr}");
    }
}
