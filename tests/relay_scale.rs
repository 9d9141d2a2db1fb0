//! The relay at scale: an idle pair costs little memory (two sockets, no
//! idle buffer, no idle pipe), 10,000 pairs work at once (through two
//! relays sharing the port where one process may not hold 20,544
//! descriptors), and bulk
//! TCP ⇄ TCP transfers go through `splice(2)` (Linux) byte-exact.
//!
//! Every listener binds port 0; the `tcpkit relay` children are killed by
//! PID when dropped; every wait has a deadline. A host whose open-file
//! limit is too low even for that skips the large tests, or fails them
//! under `TCPKIT_REQUIRE_INTEROP=1`. The heavy tests take a lock so that
//! they do not run at once (and do not load each other's measurements).
//! Linux only: memory and descriptors are read from `/proc`.
#![cfg(all(feature = "cli", target_os = "linux"))]

mod common;
mod server_util;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use server_util::within;

static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A whole large test, setup and teardown included.
const TEST_DEADLINE: Duration = Duration::from_secs(120);
const KIB: usize = 1024;
const MIB: usize = 1 << 20;

/// Raises this process's open-file limit towards `need` (the `tcpkit`
/// children inherit it): the soft limit to `need`, and the hard one too
/// where the process may (`CAP_SYS_RESOURCE`), else the soft one to the
/// hard one. Returns the soft limit in force afterwards.
fn raise_nofile(need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur >= need {
        return lim.rlim_cur;
    }
    for want in [
        libc::rlimit {
            rlim_cur: need,
            rlim_max: need.max(lim.rlim_max),
        },
        libc::rlimit {
            rlim_cur: need.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        },
    ] {
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// A `tcpkit` child, killed (by PID) and reaped when dropped.
struct Tcpkit {
    child: Child,
    addr: SocketAddr,
}

impl Tcpkit {
    /// An echo server (`tcpkit serve`) for upstream, once it listens.
    fn echo() -> Tcpkit {
        Tcpkit::start(&["serve", "--listen", "127.0.0.1:0", "--backlog", "4096"])
    }

    /// `tcpkit relay` to `upstream`, once it listens.
    fn relay(upstream: SocketAddr) -> Tcpkit {
        let to = upstream.to_string();
        Tcpkit::start(&[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &to,
            "--backlog",
            "4096",
        ])
    }

    /// `tcpkit relay` to `upstream` on 127.0.0.1:`port` with
    /// `SO_REUSEPORT` (`--engine per-core`, one worker), so that a second
    /// one can bind the same port.
    fn relay_sharing(upstream: SocketAddr, port: u16) -> Tcpkit {
        let to = upstream.to_string();
        let listen = format!("127.0.0.1:{port}");
        Tcpkit::start(&[
            "relay",
            "--listen",
            &listen,
            "--to",
            &to,
            "--backlog",
            "4096",
            "--engine",
            "per-core",
            "--workers",
            "1",
        ])
    }

    fn start(args: &[&str]) -> Tcpkit {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tcpkit relay");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut relay = Tcpkit {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("listening line in time");
        relay.addr = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split(' ').next())
            .and_then(|ep| ep.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        relay
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (`VmRSS`), in bytes.
    fn rss(&self) -> usize {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib * KIB
    }

    /// Open descriptors: (all, pipes).
    fn fds(&self) -> (usize, usize) {
        let dir = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("proc fd");
        let (mut all, mut pipes) = (0, 0);
        for entry in dir.flatten() {
            all += 1;
            if std::fs::read_link(entry.path())
                .map(|t| t.to_string_lossy().starts_with("pipe:"))
                .unwrap_or(false)
            {
                pipes += 1;
            }
        }
        (all, pipes)
    }
}

impl Drop for Tcpkit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` pairs through the relay at `addr`, `batch` at a time, each
/// checked with a round trip of `msg` through the echo upstream;
/// returns the open client sockets.
async fn open_pairs(addr: SocketAddr, n: usize, batch: usize, msg: Arc<Vec<u8>>) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    while open.len() < n {
        let mut set = JoinSet::new();
        for _ in 0..batch.min(n - open.len()) {
            let msg = msg.clone();
            set.spawn(async move {
                let mut s = TcpStream::connect(addr).await.expect("connect relay");
                s.write_all(&msg).await.expect("send through the relay");
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back)
                    .await
                    .expect("round trip through the relay");
                assert!(back == *msg, "the round trip changed the bytes");
                s
            });
        }
        while let Some(s) = set.join_next().await {
            open.push(s.expect("pair task"));
        }
    }
    open
}

/// Idle pairs hold no buffer: after a round trip of a whole read buffer
/// (16 KiB each way, so every buffer the old relay kept was touched), the
/// relay's RSS grows by at most 8 KiB per pair (it held 32 KiB of buffers
/// per pair before; the target is 3 KiB) and it holds no more pipes than
/// its pool keeps, however many pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pairs_hold_no_buffers_and_no_pipes() {
    const WARM: usize = 200;
    const PAIRS: usize = 2000;
    let _heavy = HEAVY.lock().await;
    if raise_nofile(2 * (WARM + PAIRS) as u64 + 1000) < 2 * (WARM + PAIRS) as u64 + 1000 {
        return common::skip_or_fail("cannot raise RLIMIT_NOFILE to 5,400");
    }
    within(TEST_DEADLINE, "idle pairs", async {
        let upstream = Tcpkit::echo();
        let relay = Tcpkit::relay(upstream.addr);
        let msg = Arc::new((0..16 * KIB).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        // Warm-up pairs: the runtime's, the allocator's and the threads'
        // one-time costs fall before the baseline.
        let mut open = open_pairs(relay.addr, WARM, 100, msg.clone()).await;
        let before = relay.rss();
        let started = Instant::now();
        open.extend(open_pairs(relay.addr, PAIRS, 100, msg.clone()).await);
        let after = relay.rss();
        let per_pair = after.saturating_sub(before) as f64 / PAIRS as f64;
        let (fds, pipes) = relay.fds();
        eprintln!(
            "{PAIRS} idle pairs in {:?}: relay RSS {before} -> {after} bytes, {per_pair:.0} B/pair \
             ({:.2} KiB); {fds} fds open, {pipes} of them pipes",
            started.elapsed(),
            per_pair / KIB as f64
        );
        assert!(
            per_pair <= 8.0 * KIB as f64,
            "{per_pair:.0} bytes of relay RSS per idle pair"
        );
        // stdin/stdout/stderr may be pipes too; the pool keeps at most 32
        // (64 descriptors), whatever the number of pairs.
        assert!(
            pipes <= 2 * 32 + 3,
            "{pipes} pipe descriptors held by idle pairs"
        );
        assert!(fds >= 2 * (WARM + PAIRS), "{fds} fds: pairs missing");
        drop(open);
    })
    .await;
}

/// 10,000 relayed pairs at once, each checked with a round trip: 20,000
/// relay sockets (10,000 client sockets here, 10,000 upstream sockets in
/// the echo server's process).
///
/// The descriptor budget of one relay process: 2 per pair, up to 512 for
/// the splice pool's pipes, and its own few (listener, epoll, eventfd,
/// stdio), so 10,000 pairs need 20,544. Where the hard `RLIMIT_NOFILE`
/// allows that, one relay holds them all. Where it does not (20,000 is
/// common, CI's included, and raising it needs `CAP_SYS_RESOURCE`), no
/// single process can hold 10,000 pairs, so two relays share the port with
/// `SO_REUSEPORT` (`--engine per-core`, the second binding the first's
/// port, as nginx workers share one), the kernel spreading the clients
/// over them by hash; each then holds about 5,000 under its own default
/// limit of (limit − 544) / 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pairs_at_once() {
    const PAIRS: usize = 10_000;
    const SPARE: u64 = 2 * 256 + 32;
    const NEED: u64 = 2 * PAIRS as u64 + SPARE;
    let _heavy = HEAVY.lock().await;
    let limit = raise_nofile(NEED);
    let per_process = (limit.saturating_sub(SPARE) / 2) as usize;
    let processes = if per_process >= PAIRS { 1 } else { 2 };
    // Two processes get 5,000 ± a few hundred each (a hash of the
    // client's port): each must hold well over half.
    if per_process * processes < PAIRS || (processes == 2 && per_process < MIN_PAIRS) {
        return common::skip_or_fail(&format!(
            "RLIMIT_NOFILE is {limit}: {per_process} pairs per relay process, too few for \
             10,000 pairs in {processes} (one process needs {NEED}; raising the hard limit \
             needs CAP_SYS_RESOURCE)"
        ));
    }
    within(TEST_DEADLINE, "10,000 pairs", async {
        let upstream = Tcpkit::echo();
        let first = Tcpkit::relay_sharing(upstream.addr, 0);
        let mut relays = vec![first];
        if processes == 2 {
            let port = relays[0].addr.port();
            relays.push(Tcpkit::relay_sharing(upstream.addr, port));
        }
        let started = Instant::now();
        let open = open_pairs(relays[0].addr, PAIRS, 500, Arc::new(vec![0x42])).await;
        let took = started.elapsed();
        assert_eq!(open.len(), PAIRS);
        let mut total = 0;
        for (i, relay) in relays.iter().enumerate() {
            let (fds, pipes) = relay.fds();
            eprintln!(
                "relay {} of {processes} (pid {}): {fds} fds ({pipes} pipes), RSS {} KiB",
                i + 1,
                relay.pid(),
                relay.rss() / KIB
            );
            // Each process holds a share: the port really is shared.
            assert!(
                fds > 2 * PAIRS / 4,
                "relay {} holds only {fds} fds: the clients were not spread",
                i + 1
            );
            total += fds - pipes;
        }
        eprintln!(
            "{PAIRS} pairs open and checked in {took:?} through {processes} relay process(es) \
             (RLIMIT_NOFILE {limit}: {per_process} pairs per process)"
        );
        assert!(
            total >= 2 * PAIRS,
            "the relays hold {total} sockets for {PAIRS} pairs"
        );
        drop(open);
    })
    .await;
}

/// The fewest pairs each of two relay processes sharing the port must be
/// able to hold in `ten_thousand_pairs_at_once`: half of 10,000, with room
/// for the kernel's uneven spread by hash.
const MIN_PAIRS: usize = 6_000;

/// A periodic test pattern (a prime period, so it never lines up with
/// buffer sizes): checked a slice at a time, fast even in a debug build.
fn pattern(seed: u8) -> Vec<u8> {
    (0..65_521usize)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
        .collect()
}

async fn send(wr: &mut (impl AsyncWriteExt + Unpin), seed: u8, len: usize) {
    let p = pattern(seed);
    let mut at = 0;
    while at < len {
        let off = at % p.len();
        let n = (p.len() - off).min(len - at);
        wr.write_all(&p[off..off + n]).await.expect("send");
        at += n;
    }
    wr.shutdown().await.expect("shutdown");
}

/// Reads to EOF, checking every byte; returns the length.
async fn check(rd: &mut (impl AsyncReadExt + Unpin), seed: u8) -> usize {
    let p = pattern(seed);
    let mut buf = vec![0u8; 256 * KIB];
    let mut at = 0;
    loop {
        let n = rd.read(&mut buf).await.expect("read");
        if n == 0 {
            return at;
        }
        let mut i = 0;
        while i < n {
            let off = (at + i) % p.len();
            let m = (p.len() - off).min(n - i);
            assert!(
                buf[i..i + m] == p[off..off + m],
                "stream {seed} differs within bytes {}..{}",
                at + i,
                at + i + m
            );
            i += m;
        }
        at += n;
    }
}

/// `len` bytes each way at once through an in-process relay (client and
/// upstream both send, then half-close): every byte arrives in order, and
/// the EOFs pass after the last byte.
async fn both_ways(splice: bool, len: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let target = tcpkit::endpoint::HostPort::parse(&up_addr.to_string()).expect("target");
    let relay = server_util::start(
        tcpkit::server::ServerBuilder::new(),
        tcpkit::relay::Relay::new(tcpkit::relay::Fixed::new(target, Duration::from_secs(10)))
            .with_splice(splice),
    );
    let upstream = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let (mut rd, mut wr) = s.into_split();
        let sender = tokio::spawn(async move { send(&mut wr, 2, len).await });
        let got = check(&mut rd, 1).await;
        sender.await.expect("upstream sender");
        got
    });
    let client = TcpStream::connect(relay.addr).await.expect("connect");
    let (mut rd, mut wr) = client.into_split();
    let sender = tokio::spawn(async move { send(&mut wr, 1, len).await });
    let got = within(TEST_DEADLINE, "client reads", check(&mut rd, 2)).await;
    assert_eq!(got, len, "bytes the client received");
    within(TEST_DEADLINE, "client sender", sender)
        .await
        .expect("sender");
    let up_got = within(TEST_DEADLINE, "upstream", upstream)
        .await
        .expect("upstream");
    assert_eq!(up_got, len, "bytes the upstream received");
    relay
        .wait_for("pair closed", |s| s.connections_closed == 1)
        .await;
    let s = relay.metrics.snapshot();
    assert_eq!((s.bytes_in, s.bytes_out), (len as u64, len as u64));
    relay.stop().await;
}

/// 64 MiB each way at once with splice on: byte-exact, and most of it went
/// through pipes (the pool's counter), which are all back in the pool
/// afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_goes_through_splice_byte_exact_both_ways() {
    use tcpkit::relay::splice;
    const LEN: usize = 64 * MIB;
    let _heavy = HEAVY.lock().await;
    let before = splice::stats();
    let started = Instant::now();
    both_ways(true, LEN).await;
    let after = splice::stats();
    let spliced = after.bytes_spliced - before.bytes_spliced;
    eprintln!(
        "2 × 64 MiB in {:?}; {spliced} bytes spliced; pipes open {} (pooled {})",
        started.elapsed(),
        after.pipes_open,
        after.pipes_pooled
    );
    assert!(
        spliced >= LEN as u64,
        "only {spliced} of {} bytes went through splice(2)",
        2 * LEN
    );
    assert_eq!(
        after.pipes_open, after.pipes_pooled,
        "a pipe is still lent out after the pair closed"
    );
}

/// The same with splice off: the copy path alone is byte-exact, and no
/// byte goes through a pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_path_alone_is_byte_exact_both_ways() {
    const LEN: usize = 16 * MIB;
    let _heavy = HEAVY.lock().await;
    let before = tcpkit::relay::splice::stats().bytes_spliced;
    both_ways(false, LEN).await;
    assert_eq!(
        tcpkit::relay::splice::stats().bytes_spliced,
        before,
        "splice(2) ran with splice off"
    );
}

/// Small messages keep the plain read/write path: 500 round trips of 64 B
/// through a relay with splice on take no pipe and splice no byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_are_copied_not_spliced() {
    let _heavy = HEAVY.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let target = tcpkit::endpoint::HostPort::parse(&up_addr.to_string()).expect("target");
    let relay = server_util::start(
        tcpkit::server::ServerBuilder::new(),
        tcpkit::relay::Relay::new(tcpkit::relay::Fixed::new(target, Duration::from_secs(10))),
    );
    let upstream = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut b = [0u8; 64];
        while s.read_exact(&mut b).await.is_ok() {
            s.write_all(&b).await.expect("echo");
        }
    });
    let before = tcpkit::relay::splice::stats().bytes_spliced;
    let mut client = TcpStream::connect(relay.addr).await.expect("connect");
    within(TEST_DEADLINE, "500 round trips", async {
        let mut back = [0u8; 64];
        for i in 0..500u32 {
            let msg = [(i % 251) as u8; 64];
            client.write_all(&msg).await.expect("send");
            client.read_exact(&mut back).await.expect("reply");
            assert_eq!(back, msg, "round trip {i}");
        }
    })
    .await;
    assert_eq!(
        tcpkit::relay::splice::stats().bytes_spliced,
        before,
        "64 B messages went through splice(2)"
    );
    drop(client);
    within(TEST_DEADLINE, "upstream ends", upstream)
        .await
        .expect("upstream");
    relay.stop().await;
}

/// The `max_connections` a `tcpkit -v ARGS…` server logs at start (it is
/// stopped, by PID, as soon as the line is read).
fn logged_max_connections(args: &[&str]) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .arg("-v")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpkit");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("server configured") => break Some(line),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no `server configured` line from {args:?}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("max_connections="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max_connections in {line:?}"))
}

/// A relay's default limit counts pairs: two sockets each, beside the
/// splice pool's pipes, so half of what `serve` takes for one socket per
/// connection once the pipes' 512 descriptors are set aside. (With
/// serve's figure, pairs past half the descriptor limit would fail their
/// upstream connect with EMFILE instead of being refused at accept.) Both
/// processes raise their soft limit to the same hard one first.
#[test]
fn default_limit_counts_two_descriptors_per_pair_and_the_pipes() {
    let serve = logged_max_connections(&["serve", "--listen", "127.0.0.1:0"]);
    let to = format!("127.0.0.1:{}", common::closed_port());
    let relay = logged_max_connections(&["relay", "--listen", "127.0.0.1:0", "--to", &to]);
    assert_eq!(relay, (serve - 2 * 256) / 2, "serve {serve}, relay {relay}");
    // An explicit limit is kept as given.
    let given = logged_max_connections(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--to",
        &to,
        "--max-connections",
        "77",
    ]);
    assert_eq!(given, 77);
}
