//! The client library (`tcpkit::client`) and `tcpkit connect` / `tcpkit
//! listen`, against in-test peers built from `tcpkit::Acceptor` on loopback
//! port 0. No DNS: names go through a `StaticResolver`.
// Runs the `tcpkit` binary, which the `cli` feature builds.
#![cfg(feature = "cli")]

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tcpkit::client::{ConnectOptions, Connector, FramedClient};
use tcpkit::endpoint::StaticResolver;
use tcpkit::net::Protocol;
use tcpkit::{Acceptor, Endpoint, ErrorKind};

mod common;

const DEADLINE: Duration = Duration::from_secs(20);

/// A child process killed (by PID) and reaped when the test ends, however it
/// ends.
struct Proc(Child);

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().expect("spawn tcpkit"))
    }

    /// Waits for exit, killing the child and failing the test at the deadline.
    fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.0.kill();
                panic!("process {} did not exit within {deadline:?}", self.0.id());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `tcpkit ARGS` with `stdin` fed to it, under a deadline.
fn tcpkit(args: &[&str], stdin: &[u8]) -> Output {
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut input = proc.0.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = proc.0.stdout.take().expect("stdout");
    let mut err = proc.0.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = proc.wait(DEADLINE);
    let _ = writer.join();
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// An echo peer on 127.0.0.1:0 serving one client, on a thread.
fn echo_once() -> (Endpoint, thread::JoinHandle<()>) {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    let handle = thread::spawn(move || {
        let (mut conn, _) = acceptor.accept().expect("accept");
        conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read_some(&mut buf) {
            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    (ep, handle)
}

#[test]
fn connect_echoes_hello_and_exits_0() {
    let (ep, server) = echo_once();
    let out = tcpkit(&["connect", &ep.to_string()], b"hello\n");
    assert!(out.status.success(), "{:?} {}", out.status, out.stderr);
    assert_eq!(out.stdout, b"hello\n");
    server.join().expect("server");
}

#[test]
fn connect_is_binary_safe_and_verbose_counts_bytes() {
    let (ep, server) = echo_once();
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let out = tcpkit(&["-v", "connect", &ep.to_string()], &data);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout == data, "echoed bytes differ");
    assert!(
        out.stderr.contains(&format!("connected to {ep}")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("sent 100000 bytes, received 100000 bytes"),
        "{}",
        out.stderr
    );
    server.join().expect("server");
}

#[test]
fn connect_falls_back_across_localhost_addresses() {
    // localhost may resolve to ::1 first; the echo peer is IPv4 only, so
    // this passes only if connect goes on to 127.0.0.1.
    let (ep, server) = echo_once();
    let target = format!("localhost:{}", ep.port());
    let out = tcpkit(&["-v", "connect", &target], b"lo\n");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, b"lo\n");
    assert!(
        out.stderr
            .contains(&format!("connected to {ep} from 127.0.0.1:")),
        "{}",
        out.stderr
    );
    server.join().expect("server");
}

#[test]
fn connect_binds_the_source_address() {
    let (ep, server) = echo_once();
    let out = tcpkit(
        &["-v", "connect", "--source", "127.0.0.2", &ep.to_string()],
        b"src\n",
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, b"src\n");
    assert!(
        out.stderr
            .contains(&format!("connected to {ep} from 127.0.0.2:")),
        "{}",
        out.stderr
    );
    server.join().expect("server");
}

/// `-6` keeps only a name's IPv6 addresses: `localhost` (127.0.0.1 alone
/// in this host's /etc/hosts, or 127.0.0.1 and ::1) with `-6` has none or
/// only ::1, never 127.0.0.1. (An IPv4 *literal* with `-6` is a usage
/// error instead, exit 2: tests/cli_behaviour.rs.)
#[test]
fn family_flag_filters_addresses() {
    let port = common::closed_port();
    let out = tcpkit(&["connect", "-6", &format!("localhost:{port}")], b"");
    assert!(
        !out.stderr.contains("127.0.0.1"),
        "-6 tried an IPv4 address: {}",
        out.stderr
    );
    match out.status.code() {
        // No IPv6 address for localhost here: a resolution failure.
        Some(3) => assert!(out.stderr.contains("no IPv6 address"), "{}", out.stderr),
        // ::1 exists: refused there (nothing listens on ::1 at that port).
        Some(4) => assert!(out.stderr.contains("::1"), "{}", out.stderr),
        other => panic!("exit {other:?}: {}", out.stderr),
    }
    assert!(out.stderr.contains("localhost"), "{}", out.stderr);
}

#[test]
fn refused_exits_4_naming_the_endpoint() {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    drop(acceptor);
    let out = tcpkit(&["connect", &ep.to_string()], b"");
    assert_eq!(out.status.code(), Some(4), "{}", out.stderr);
    assert!(out.stderr.contains(&ep.to_string()), "{}", out.stderr);
    assert!(out.stderr.contains("[code 111]"), "{}", out.stderr);
}

/// `-z` (like `nc -z`): 0 for a port that accepts, without sending a byte;
/// 4 for one that refuses. Scripts poll a server's readiness this way.
#[test]
fn zero_io_checks_the_port_and_sends_nothing() {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    let out = tcpkit(&["connect", "-z", "-v", &ep.to_string()], b"not sent\n");
    assert!(out.status.success(), "{:?} {}", out.status, out.stderr);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains(&format!("connected to {ep}")),
        "{}",
        out.stderr
    );
    let (mut conn, _) = acceptor.accept().expect("accept");
    conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 16];
    assert_eq!(
        conn.read_some(&mut buf).expect("read EOF"),
        0,
        "a byte was sent"
    );
    drop(acceptor);
    let out = tcpkit(&["connect", "-z", &ep.to_string()], b"");
    assert_eq!(out.status.code(), Some(4), "{}", out.stderr);
    let out = tcpkit(&["connect", "-z", "--send", "x", &ep.to_string()], b"");
    assert_eq!(out.status.code(), Some(2), "-z with --send: {}", out.stderr);
}

#[test]
fn bad_address_exits_2_naming_the_input() {
    let out = tcpkit(&["connect", "192.168.1.3x:3333"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("192.168.1.3x"), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("tcpkit: error [code 1001]"),
        "{}",
        out.stderr
    );
    // One past the largest port: rejected while parsing, never dialed.
    let too_big = u32::from(u16::MAX) + 1;
    let out = tcpkit(&["connect", &format!("127.0.0.1:{too_big}")], b"");
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains(&too_big.to_string()), "{}", out.stderr);
    let out = tcpkit(&["connect", "--timeout", "soon", "127.0.0.1:0"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

/// A peer that writes `lines` lines, then waits for the client to go.
fn talker(lines: usize) -> (Endpoint, thread::JoinHandle<()>) {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    let handle = thread::spawn(move || {
        let (mut conn, _) = acceptor.accept().expect("accept");
        for i in 0..lines {
            if conn.write_all(format!("line {i}\n").as_bytes()).is_err() {
                return;
            }
        }
        conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut buf = [0u8; 64];
        while matches!(conn.read_some(&mut buf), Ok(n) if n > 0) {}
    });
    (ep, handle)
}

#[test]
fn lines_limit_exits_after_n_lines() {
    let (ep, server) = talker(5);
    // --no-shutdown so the peer does not see EOF; only the limit ends it.
    let out = tcpkit(
        &["connect", "--no-shutdown", "--lines", "2", &ep.to_string()],
        b"",
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, b"line 0\nline 1\n");
    server.join().expect("server");
}

#[test]
fn idle_timeout_exits_5_but_ends_send_with_0() {
    let (ep, server) = talker(0);
    let start = Instant::now();
    let out = tcpkit(
        &[
            "connect",
            "--no-shutdown",
            "--idle-timeout",
            "300ms",
            &ep.to_string(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(5), "{}", out.stderr);
    assert!(out.stderr.contains(&ep.to_string()), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(5));
    server.join().expect("server");

    let (ep, server) = talker(1);
    let out = tcpkit(
        &[
            "connect",
            "--no-shutdown",
            "--send",
            "hi",
            "--idle-timeout",
            "300ms",
            &ep.to_string(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, b"line 0\n");
    server.join().expect("server");
}

#[test]
fn broken_stdout_exits_quietly() {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    let server = thread::spawn(move || {
        let (mut conn, _) = acceptor.accept().expect("accept");
        conn.set_write_timeout(Some(DEADLINE)).expect("timeout");
        let chunk = [b'y'; 8192];
        while conn.write_all(&chunk).is_ok() {}
    });
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["connect", "--no-shutdown", &ep.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut out = proc.0.stdout.take().expect("stdout");
    let mut buf = [0u8; 100];
    out.read_exact(&mut buf).expect("some output");
    drop(out);
    let status = proc.wait(DEADLINE);
    let mut stderr = String::new();
    let _ = proc
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(status.success(), "{status:?} {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    drop(proc);
    server.join().expect("server");
}

#[test]
fn session_dump_marks_both_directions() {
    let (ep, server) = echo_once();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("session.txt");
    let out = tcpkit(
        &[
            "connect",
            "-o",
            text.to_str().expect("utf-8"),
            &ep.to_string(),
        ],
        b"ping\n",
    );
    assert!(out.status.success(), "{}", out.stderr);
    let dump = std::fs::read_to_string(&text).expect("dump");
    assert_eq!(dump, "> ping\n< ping\n");
    server.join().expect("server");
}

#[test]
fn listen_on_port_0_prints_its_endpoint_and_pipes_both_ways() {
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let ep = read_listening(&mut proc);
    let mut client = TcpStream::connect(ep.socket_addr()).expect("connect");
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    client.write_all(b"to listener\n").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut stdin = proc.0.stdin.take().expect("stdin");
    stdin.write_all(b"from listener\n").expect("stdin");
    drop(stdin);
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"from listener\n");
    let status = proc.wait(DEADLINE);
    assert!(status.success(), "{status:?}");
    let mut out = Vec::new();
    proc.0
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("stdout");
    assert_eq!(out, b"to listener\n");
}

/// Reads tcpkit's `listening on <ENDPOINT>` line from the child's stderr.
fn read_listening(proc: &mut Proc) -> Endpoint {
    let mut err = proc.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = err.read(&mut byte) {
            if byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
        // Keep draining so the child never blocks on a full stderr pipe.
        let _ = std::io::copy(&mut err, &mut std::io::sink());
    });
    let line = rx.recv_timeout(DEADLINE).expect("listening line");
    let text = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Endpoint::parse(text).expect("endpoint")
}

#[test]
fn listen_keep_open_serves_clients_one_after_another() {
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["-v", "listen", "-k", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let ep = read_listening(&mut proc);
    for i in 0..2 {
        let mut client = TcpStream::connect(ep.socket_addr()).expect("connect");
        client.set_read_timeout(Some(DEADLINE)).expect("timeout");
        client
            .write_all(format!("client {i}\n").as_bytes())
            .expect("write");
        client.shutdown(Shutdown::Write).expect("shutdown");
        // The listener's stdin is empty, so it shuts its side at once.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("eof");
    }
    let mut out = proc.0.stdout.take().expect("stdout");
    let mut got = vec![0u8; "client 0\nclient 1\n".len()];
    out.read_exact(&mut got).expect("stdout");
    assert_eq!(got, b"client 0\nclient 1\n");
}

#[test]
fn peer_half_close_does_not_cut_off_our_late_input() {
    // The client says its piece and half-closes before the listener's stdin
    // has anything: the listener must still deliver its stdin afterwards.
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let ep = read_listening(&mut proc);
    let mut client = TcpStream::connect(ep.socket_addr()).expect("connect");
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    client.write_all(b"early\n").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    // The listener has our piece (and, queued behind it, our FIN) before its
    // stdin has anything: wait for the piece on its stdout, not for a time.
    let mut out = proc.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut early = [0u8; 6];
        let got = out.read_exact(&mut early).map(|()| early);
        let _ = tx.send((got, out));
    });
    let (early, mut out) = rx.recv_timeout(DEADLINE).expect("listener's stdout");
    assert_eq!(&early.expect("stdout"), b"early\n");
    let mut stdin = proc.0.stdin.take().expect("stdin");
    stdin.write_all(b"late\n").expect("stdin");
    drop(stdin);
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"late\n");
    assert!(proc.wait(DEADLINE).success());
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).expect("stdout");
    assert_eq!(rest, b"", "stdout after the client's piece");
}

#[test]
fn listen_port_alone_is_every_interface() {
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["listen", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let ep = read_listening(&mut proc);
    assert!(ep.is_unspecified(), "{ep}");
    // An IPv4 client reaches it whether the wildcard is dual-stack [::] or
    // the 0.0.0.0 fallback.
    let mut client = TcpStream::connect(("127.0.0.1", ep.port())).expect("connect");
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    client.write_all(b"any\n").expect("write");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("eof");
    assert!(proc.wait(DEADLINE).success());
    let mut out = Vec::new();
    proc.0
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("stdout");
    assert_eq!(out, b"any\n");
}

#[test]
fn listen_on_a_taken_port_exits_7() {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    let out = tcpkit(&["listen", &ep.to_string()], b"");
    assert_eq!(out.status.code(), Some(7), "{}", out.stderr);
    assert!(out.stderr.contains(&ep.to_string()), "{}", out.stderr);
}

// ---- library: Happy Eyeballs, deadlines, source address, framing ----

fn dual(v6_first: bool) -> StaticResolver {
    let v6: IpAddr = "::1".parse().expect("ip");
    let v4: IpAddr = "127.0.0.1".parse().expect("ip");
    let addrs = if v6_first { [v6, v4] } else { [v4, v6] };
    StaticResolver::new().with("dual.test", addrs)
}

/// A listener on `ip:0` whose accept queue is full, so further SYNs are
/// dropped and a connect to it hangs (on loopback, no outside address).
/// Returns it with the connections filling it, or `None` if the kernel
/// would not stall.
fn stalled(ip: &str) -> Option<(Acceptor, Vec<tcpkit::Socket>, Endpoint)> {
    let acceptor = Acceptor::open(Protocol::V4).ok()?;
    acceptor.bind(&Endpoint::new(ip, 0).ok()?).ok()?;
    acceptor.listen(0).ok()?;
    let ep = acceptor.local_endpoint().ok()?;
    let mut fillers = Vec::new();
    for _ in 0..16 {
        let mut s = tcpkit::Socket::open(Protocol::V4).ok()?;
        match s.connect_timeout(&ep, Duration::from_millis(200)) {
            Ok(()) => fillers.push(s),
            Err(e) if e.kind() == ErrorKind::TimedOut => return Some((acceptor, fillers, ep)),
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test]
async fn happy_eyeballs_falls_back_from_refused_v6_without_waiting() {
    // [::1]:P has nothing listening (refused); 127.0.0.1:P answers. The
    // attempt delay is long, so only "next attempt on failure" explains a
    // fast success.
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let port = acceptor.local_endpoint().expect("local").port();
    let connector = Connector::new()
        .with_resolver(dual(true))
        .with_options(ConnectOptions {
            attempt_delay: Duration::from_secs(5),
            overall_timeout: Some(Duration::from_secs(10)),
            ..ConnectOptions::default()
        });
    let start = Instant::now();
    let conn = connector
        .connect(&format!("dual.test:{port}"))
        .await
        .expect("connect");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(conn.peer, Endpoint::loopback_v4(port));
    assert_eq!(
        conn.resolved,
        vec![Endpoint::loopback_v6(port), Endpoint::loopback_v4(port)]
    );
}

#[tokio::test]
async fn happy_eyeballs_races_the_next_address_after_the_attempt_delay() {
    // First address: 127.0.0.2:P, whose full backlog drops our SYN; second:
    // 127.0.0.1:P, listening. The port must be free on both addresses.
    let mut setup = None;
    for _ in 0..10 {
        let Some((full, fillers, stalled_ep)) = stalled("127.0.0.2") else {
            continue;
        };
        let port = stalled_ep.port();
        if let Ok(ok) = Acceptor::bind_listen(&Endpoint::loopback_v4(port), 30) {
            setup = Some((full, fillers, ok, port));
            break;
        }
    }
    let Some((_full, _fillers, _ok, port)) = setup else {
        return common::skip_or_fail("this kernel does not stall SYNs to a full backlog");
    };
    let resolver = StaticResolver::new().with(
        "stall.test",
        [
            "127.0.0.2".parse().expect("ip"),
            "127.0.0.1".parse().expect("ip"),
        ],
    );
    let connector = Connector::new()
        .with_resolver(resolver)
        .with_options(ConnectOptions {
            attempt_timeout: Some(Duration::from_secs(10)),
            overall_timeout: Some(Duration::from_secs(10)),
            ..ConnectOptions::default()
        });
    let start = Instant::now();
    let conn = connector
        .connect(&format!("stall.test:{port}"))
        .await
        .expect("connect");
    let took = start.elapsed();
    assert_eq!(conn.peer, Endpoint::loopback_v4(port));
    // Not before the 250 ms attempt delay, and far below the stalled
    // attempt's 10 s deadline: the second address was raced, not waited for.
    // (Bounds are loose: two shared cores run many test binaries at once.)
    assert!(took >= Duration::from_millis(240), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn overall_and_attempt_timeouts_fire_within_their_bounds() {
    let Some((_full, _fillers, ep)) = stalled("127.0.0.1") else {
        return common::skip_or_fail("this kernel does not stall SYNs to a full backlog");
    };
    let connector = Connector::new().with_options(ConnectOptions {
        attempt_timeout: Some(Duration::from_secs(10)),
        overall_timeout: Some(Duration::from_millis(300)),
        ..ConnectOptions::default()
    });
    let start = Instant::now();
    let err = connector.connect_endpoints(&[ep]).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(err.message().contains(&ep.to_string()), "{err}");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );

    let connector = Connector::new().with_options(ConnectOptions {
        attempt_timeout: Some(Duration::from_millis(200)),
        overall_timeout: Some(Duration::from_secs(10)),
        retries: 1,
        retry_backoff: Duration::from_millis(50),
        ..ConnectOptions::default()
    });
    let start = Instant::now();
    let err = connector.connect_endpoints(&[ep]).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(err.message().contains(&format!("connect {ep}")), "{err}");
    // Two attempts of 200 ms and one 50 ms backoff.
    assert!(
        took >= Duration::from_millis(440) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn source_address_is_bound_before_connecting() {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    let source = Endpoint::new("127.0.0.2", 0).expect("source");
    let connector = Connector::new().with_options(ConnectOptions {
        source: Some(source),
        ..ConnectOptions::default()
    });
    let conn = connector.connect(&ep.to_string()).await.expect("connect");
    assert_eq!(conn.local.ip(), source.ip());
    let (_sock, peer) = acceptor.accept().expect("accept");
    assert_eq!(peer.ip(), source.ip());
}

#[tokio::test]
async fn framed_helpers_round_trip_and_enforce_the_maximum() {
    use tokio::io::AsyncWriteExt;
    let listener = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30)
        .expect("listen")
        .into_tokio()
        .expect("tokio");
    let ep = Endpoint::from(listener.local_addr().expect("local"));
    let server = tokio::spawn(async move {
        // Client 1: line echo, then one line too long.
        let (s, _) = listener.accept().await.expect("accept");
        let mut lines = FramedClient::lines(s, 1024).expect("framed");
        let got = lines.recv().await.expect("recv").expect("line");
        lines.send(&got).await.expect("send");
        lines.send(&[b'z'; 100]).await.expect("send");
        // Client 2: frame echo, then a header announcing 1 MiB.
        let (s, _) = listener.accept().await.expect("accept");
        let mut frames = FramedClient::length_prefixed(s, 1 << 20).expect("framed");
        let got = frames.recv().await.expect("recv").expect("frame");
        frames.send(&got).await.expect("send");
        let mut raw = frames.into_inner().into_inner();
        raw.write_all(&(1u32 << 20).to_be_bytes())
            .await
            .expect("header");
        raw.flush().await.expect("flush");
    });
    let connector = Connector::new();

    let conn = connector.connect(&ep.to_string()).await.expect("connect");
    let mut lines = FramedClient::lines(conn.stream, 16).expect("framed");
    lines.send(b"hello").await.expect("send");
    let echoed = lines.recv_timeout(DEADLINE).await.expect("recv");
    assert_eq!(echoed.as_deref(), Some(&b"hello"[..]));
    let err = lines.recv_timeout(DEADLINE).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LineTooLong, "{err}");
    assert!(err.message().contains(&ep.to_string()), "{err}");

    let conn = connector.connect(&ep.to_string()).await.expect("connect");
    let mut frames = FramedClient::length_prefixed(conn.stream, 1024).expect("framed");
    let payload: Vec<u8> = (0..=255).collect();
    frames.send(&payload).await.expect("send");
    let echoed = frames.recv_timeout(DEADLINE).await.expect("recv");
    assert_eq!(echoed.as_deref(), Some(&payload[..]));
    let err = frames.recv_timeout(DEADLINE).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FrameTooLarge, "{err}");
    assert!(err.message().contains("1048576"), "{err}");
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("server in time")
        .expect("server");
}

#[tokio::test]
async fn framed_errors_keep_the_os_code_and_name_the_peer() {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 30).expect("listen");
    let ep = acceptor.local_endpoint().expect("local");
    let conn = Connector::new()
        .connect(&ep.to_string())
        .await
        .expect("connect");
    let mut lines = FramedClient::lines(conn.stream, 1024).expect("framed");
    // A reset: SO_LINGER 0 makes close(2) send RST instead of FIN.
    let (server, _) = acceptor.accept().expect("accept");
    server.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(server);
    let err = lines.recv_timeout(DEADLINE).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(err.os_code(), Some(libc::ECONNRESET), "{err}");
    assert_eq!(err.code(), libc::ECONNRESET, "{err}");
    assert!(err.message().contains(&ep.to_string()), "{err}");
}
