//! `tcpkit relay --listen unix:PATH` (and `serve --listen unix:PATH`)
//! through the CLI: byte-exact round trips both ways, half-close carried
//! through, the connection limit, graceful shutdown (socket file removed,
//! an in-flight pair finishes), the socket file's lifecycle (stale
//! replaced, live refused, a regular file refused and left intact), the
//! flags a UNIX listener refuses (exit 2 naming the flag), UNIX on both
//! sides, `--send-proxy` for a client with no address, and socat as the
//! client.
//!
//! TCP listeners bind port 0, sockets live in a temp dir, every child is
//! killed by PID when its guard drops, every wait has a deadline.
#![cfg(feature = "cli")]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::serve::Serve;

const DEADLINE: Duration = Duration::from_secs(30);

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tcpkit")
}

/// A `tcpkit` child: its output lines on channels, killed on drop
/// ([`Serve`]'s), with the waits these tests need.
struct Proc(Serve);

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        Proc(Serve::tcpkit(args))
    }

    /// Waits for the `listening on` line and returns it.
    fn listening(&self) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with("listening on ") => return line,
                Ok(_) => {}
                Err(e) => panic!("no `listening on` line ({e}): {:?}", drain(&self.0.stderr)),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Waits for the exit (no signal sent), then every line not read yet.
    fn wait(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.0.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "tcpkit did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, drain(&self.0.stdout), drain(&self.0.stderr))
    }

    /// SIGTERM, then [`Proc::wait`].
    fn stop(self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.signal(libc::SIGTERM);
        self.wait()
    }
}

fn drain(rx: &Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(DEADLINE) {
        lines.push(line);
    }
    lines
}

/// `tcpkit -v relay --listen unix:PATH --workers 1 ARGS...`, listening.
fn relay(path: &Path, args: &[&str]) -> Proc {
    let listen = format!("unix:{}", path.display());
    let mut argv = vec!["-v", "relay", "--listen", &listen, "--workers", "1"];
    argv.extend_from_slice(args);
    let proc = Proc::spawn(&argv);
    let line = proc.listening();
    assert!(
        line.starts_with(&format!("listening on {listen} (relay")),
        "{line}"
    );
    proc
}

/// A `tcpkit serve` echo upstream on 127.0.0.1:0 and its `--to` text.
fn echo_upstream() -> (Serve, String) {
    let serve = Serve::spawn(&[]);
    let to = serve.addr().to_string();
    (serve, to)
}

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect the relay's socket");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.set_write_timeout(Some(DEADLINE)).expect("timeout");
    s
}

/// Deterministic bytes that differ per offset and per seed.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` then half-closes, on a thread; reads to EOF meanwhile.
fn send_and_read_all(s: UnixStream, data: Vec<u8>) -> Vec<u8> {
    let mut wr = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        wr.write_all(&data).expect("send");
        wr.shutdown(Shutdown::Write).expect("shutdown write");
    });
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).expect("read to EOF");
    writer.join().expect("writer");
    got
}

fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("first difference at byte {at}");
    }
}

/// Runs `tcpkit ARGS` to its end: status and stderr.
fn run(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tcpkit");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mebibytes_go_through_byte_exact_and_the_client_is_logged_as_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.sock");
    let (_up, to) = echo_upstream();
    let relay = relay(&path, &["--to", &to]);
    let data = pattern(1, 4 << 20);
    let got = send_and_read_all(connect(&path), data.clone());
    assert_same(&got, &data);
    let (status, stdout, stderr) = relay.stop();
    assert!(status.success(), "{status:?} {stderr:?}");
    let summary = stdout.join("\n");
    assert!(summary.contains("served 1 connections"), "{summary}");
    assert!(
        summary.contains(&format!("{} bytes in", 4 << 20)),
        "{summary}"
    );
    let close = stderr
        .iter()
        .find(|l| l.contains("connection closed"))
        .unwrap_or_else(|| panic!("no close line: {stderr:?}"));
    assert!(close.contains("peer=unix:"), "{close}");
    // No made-up IP address stands for a UNIX client.
    assert!(!stderr.iter().any(|l| l.contains("0.0.0.0")), "{stderr:?}");
    assert!(!path.exists(), "the socket file is removed at exit");
}

#[test]
fn a_half_close_reaches_the_upstream_and_the_reply_still_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.sock");
    // A TCP upstream that answers only after the client's EOF.
    let up = TcpListener::bind("127.0.0.1:0").expect("bind");
    let to = up.local_addr().expect("addr").to_string();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = up.accept().expect("accept");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut asked = Vec::new();
        s.read_to_end(&mut asked).expect("read to the client's EOF");
        s.write_all(&pattern(2, 1 << 20)).expect("reply");
        asked
    });
    let relay = relay(&path, &["--to", &to]);
    let client = connect(&path);
    (&client).write_all(b"question").expect("write");
    client.shutdown(Shutdown::Write).expect("half-close");
    let mut reply = Vec::new();
    (&client).read_to_end(&mut reply).expect("read the reply");
    assert_same(&reply, &pattern(2, 1 << 20));
    assert_eq!(upstream.join().expect("upstream"), b"question");
    drop(relay);
}

#[test]
fn max_connections_one_refuses_a_second_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.sock");
    let (_up, to) = echo_upstream();
    let relay = relay(&path, &["--to", &to, "--max-connections", "1"]);
    let first = connect(&path);
    (&first).write_all(b"1").expect("write");
    let mut byte = [0u8; 1];
    (&first).read_exact(&mut byte).expect("first pair echoes");
    let second = connect(&path);
    let mut buf = [0u8; 16];
    let end = (&second).read(&mut buf);
    assert!(matches!(end, Ok(0) | Err(_)), "second client: {end:?}");
    // The first pair is untouched.
    (&first).write_all(b"2").expect("write");
    (&first).read_exact(&mut byte).expect("still echoes");
    assert_eq!(&byte, b"2");
    drop((first, second));
    let (status, stdout, _) = relay.stop();
    assert!(status.success());
    let summary = stdout.join("\n");
    assert!(summary.contains("(1 rejected over the limit"), "{summary}");
}

#[test]
fn the_idle_timeout_closes_a_quiet_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("i.sock");
    let (_up, to) = echo_upstream();
    let relay = relay(&path, &["--to", &to, "--idle-timeout", "300ms"]);
    let client = connect(&path);
    (&client).write_all(b"x").expect("write");
    let mut got = Vec::new();
    (&client)
        .read_to_end(&mut got)
        .expect("closed after the idle timeout");
    assert_eq!(got, b"x");
    let (status, stdout, stderr) = relay.stop();
    assert!(status.success());
    let summary = stdout.join("\n");
    assert!(summary.contains("1 idle timeouts"), "{summary}");
    assert!(
        stderr.iter().any(|l| l.contains("close=\"idle_timeout\"")),
        "{stderr:?}"
    );
}

#[test]
fn sigterm_removes_the_socket_file_and_lets_a_pair_in_flight_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("g.sock");
    let (_up, to) = echo_upstream();
    let relay = relay(&path, &["--to", &to, "--shutdown-grace", "20s"]);
    let client = connect(&path);
    // 20 × 64 KiB, 50 ms apart: the pair is never quiet long enough to
    // count as drained while the shutdown goes on.
    let chunk = 64 * 1024;
    let data = pattern(3, 20 * chunk);
    let mut wr = client.try_clone().expect("clone");
    let (started_tx, started) = std::sync::mpsc::channel();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        for (i, part) in sent.chunks(chunk).enumerate() {
            wr.write_all(part).expect("send");
            if i == 0 {
                started_tx.send(()).expect("signal");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        wr.shutdown(Shutdown::Write).expect("half-close");
    });
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        (&client).read_to_end(&mut got).expect("read to EOF");
        got
    });
    started.recv_timeout(DEADLINE).expect("first chunk sent");
    relay.signal(libc::SIGTERM);
    let deadline = Instant::now() + DEADLINE;
    while path.exists() {
        assert!(Instant::now() < deadline, "socket file still there");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The listener is gone: a new client cannot connect.
    assert!(UnixStream::connect(&path).is_err());
    writer.join().expect("writer");
    let got = reader.join().expect("reader");
    assert_same(&got, &data);
    let (status, stdout, stderr) = relay.wait();
    assert!(status.success(), "{status:?} {stderr:?}");
    let summary = stdout.join("\n");
    assert!(summary.contains("0 closed at the deadline"), "{summary}");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    // Bound, then closed: the file stays and nobody answers on it.
    drop(UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let (_up, to) = echo_upstream();
    let relay = relay(&path, &["--to", &to]);
    let got = send_and_read_all(connect(&path), b"fresh".to_vec());
    assert_eq!(got, b"fresh");
    drop(relay);
}

#[test]
fn a_live_socket_is_refused_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.sock");
    let live = UnixListener::bind(&path).expect("bind");
    let listen = format!("unix:{}", path.display());
    let to = format!("127.0.0.1:{}", common::closed_port());
    let (status, stderr) = run(&["relay", "--listen", &listen, "--to", &to]);
    assert_eq!(status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(stderr.contains(&listen), "{stderr}");
    // The other server's socket still answers.
    assert!(UnixStream::connect(&path).is_ok());
    drop(live);
}

#[test]
fn a_regular_file_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.txt");
    std::fs::write(&path, b"precious").expect("write");
    let listen = format!("unix:{}", path.display());
    let to = format!("127.0.0.1:{}", common::closed_port());
    let (status, stderr) = run(&["relay", "--listen", &listen, "--to", &to]);
    assert_eq!(status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&path).expect("read"), b"precious");
}

#[test]
fn flags_that_need_a_client_address_or_tcp_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.sock");
    let listen = format!("unix:{}", path.display());
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--allow", "127.0.0.1"], "--allow"),
        (vec!["--deny", "10.0.0.0/8"], "--deny"),
        (
            vec!["--proxy-protocol", "--proxy-trusted", "127.0.0.1"],
            "--proxy-protocol",
        ),
        (vec!["--balance", "hash-source"], "--balance hash-source"),
        (vec!["--engine", "per-core"], "--engine per-core"),
    ];
    if cfg!(feature = "tls") {
        cases.push((vec!["--tls"], "--tls"));
    }
    let to = format!("127.0.0.1:{}", common::closed_port());
    for (extra, flag) in cases {
        let mut args = vec!["relay", "--listen", &listen, "--to", &to];
        args.extend(extra.iter().copied());
        let (status, stderr) = run(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!path.exists(), "{args:?} left a socket file");
    }
    let (status, stderr) = run(&["serve", "--listen", &listen, "--mode", "chat"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--mode chat"), "{stderr}");
}

#[test]
fn unix_on_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let front = dir.path().join("a.sock");
    let back = dir.path().join("b.sock");
    // An echo upstream on a UNIX socket: one client, echoed to its EOF.
    let up = UnixListener::bind(&back).expect("bind upstream");
    let upstream = std::thread::spawn(move || {
        let (s, _) = up.accept().expect("accept");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = (&s).read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            (&s).write_all(&buf[..n]).expect("echo");
        }
        s.shutdown(Shutdown::Write).expect("half-close");
    });
    let to = format!("unix:{}", back.display());
    let relay = relay(&front, &["--to", &to]);
    let data = pattern(4, 2 << 20);
    let got = send_and_read_all(connect(&front), data.clone());
    assert_same(&got, &data);
    upstream.join().expect("upstream");
    drop(relay);
}

#[test]
fn send_proxy_tells_the_upstream_there_is_no_client_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.sock");
    let up = TcpListener::bind("127.0.0.1:0").expect("bind");
    let to = up.local_addr().expect("addr").to_string();
    let relay = relay(&path, &["--to", &to, "--send-proxy", "v1"]);
    let client = connect(&path);
    (&client).write_all(b"after").expect("write");
    client.shutdown(Shutdown::Write).expect("half-close");
    let (mut s, _) = up.accept().expect("accept");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"PROXY UNKNOWN\r\nafter");
    drop(relay);
}

#[test]
fn serve_echoes_on_a_unix_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("e.sock");
    let listen = format!("unix:{}", path.display());
    let serve = Proc::spawn(&["serve", "--listen", &listen, "--workers", "1"]);
    let line = serve.listening();
    assert!(
        line.starts_with(&format!("listening on {listen} (echo")),
        "{line}"
    );
    let data = pattern(5, 1 << 20);
    assert_same(&send_and_read_all(connect(&path), data.clone()), &data);
    let (status, _, _) = serve.stop();
    assert!(status.success());
    assert!(!path.exists());
}

#[test]
fn socat_as_the_client() {
    if !common::have_program("socat") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.sock");
    let (_up, to) = echo_upstream();
    let relay = relay(&path, &["--to", &to]);
    let mut socat = Command::new("socat")
        .args(["-t", "10", "-", &format!("UNIX-CONNECT:{}", path.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socat");
    let data = pattern(6, 256 * 1024);
    let mut stdin = socat.stdin.take().expect("stdin");
    let sent = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&sent).expect("to socat"));
    let mut stdout = socat.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).expect("from socat");
        got
    });
    writer.join().expect("writer");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = socat.try_wait().expect("wait socat") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = socat.kill();
            let _ = socat.wait();
            panic!("socat did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "socat {status:?}");
    assert_same(&reader.join().expect("reader"), &data);
    drop(relay);
}
