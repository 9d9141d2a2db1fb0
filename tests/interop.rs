//! Interop against real programs: `ncat`, `socat`, `nc.openbsd` and
//! python3's `socket` module, talking to `tcpkit connect`, `tcpkit listen`
//! and `tcpkit serve` over IPv4 and IPv6 loopback.
//!
//! A missing program skips its test with a message saying so, unless
//! `TCPKIT_REQUIRE_INTEROP=1` (set by `.ci/run`), which makes it a failure.
//! Where tcpkit listens it binds port 0 and the test reads the port from its
//! `listening on` line; where the other program listens the test picks a
//! free port, waits until the program listens on it (via `/proc/net/tcp*`),
//! and picks another if the program could not bind. Every child is killed by
//! PID and reaped in a guard's `Drop`; every wait has a deadline.
// Runs the `tcpkit` binary, which the `cli` feature builds.
#![cfg(feature = "cli")]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tcpkit::Endpoint;

mod common;

const DEADLINE: Duration = Duration::from_secs(30);
/// 16 MiB goes through a debug build of tcpkit on a shared machine.
const BULK_DEADLINE: Duration = Duration::from_secs(180);
const BULK: usize = 16 * 1024 * 1024;

// ---- harness ----

/// Whether this host has IPv6 loopback; if not, IPv6 tests skip, or fail
/// when interop is required.
fn have_ipv6() -> bool {
    let ok = TcpListener::bind("[::1]:0").is_ok();
    if !ok {
        common::skip_or_fail("no IPv6 loopback on this host");
    }
    ok
}

/// A child process killed by PID and reaped when dropped.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            child,
            name: name.to_owned(),
        }
    }

    fn tcpkit(args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpkit"));
        cmd.args(args);
        cmd
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for exit; kills the child and fails the test at the deadline.
    fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} (pid {}) did not exit within {deadline:?}",
                    self.name,
                    self.child.id()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then wait: how `tcpkit serve` is asked to stop.
    fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's PID, which is not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.wait(deadline)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
        }
        let start = Instant::now();
        while self.try_status().is_none() && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Collects a pipe's bytes on a thread.
fn collect(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Reads the first line of a pipe (then keeps draining it) under a deadline.
fn first_line(r: impl Read + Send + 'static) -> String {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    rx.recv_timeout(DEADLINE)
        .expect("first line in time")
        .trim_end()
        .to_owned()
}

/// The endpoint in a `listening on <ENDPOINT>[ (...)]` line.
fn listening_endpoint(line: &str) -> Endpoint {
    let rest = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ...`, got {line:?}"));
    let ep = rest.split(' ').next().unwrap_or(rest);
    Endpoint::parse(ep).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// Starts `tcpkit listen ADDR` (port 0) and reads the port it printed.
fn tcpkit_listen(addr: &str, stdin: Stdio) -> (Proc, Endpoint) {
    let mut proc = Proc::spawn(
        "tcpkit listen",
        Proc::tcpkit(&["listen", addr])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let err = proc.child.stderr.take().expect("stderr");
    let ep = listening_endpoint(&first_line(err));
    (proc, ep)
}

/// Starts `tcpkit serve --listen 127.0.0.1:0 --mode MODE` and parses its
/// `listening on <ENDPOINT> (<mode>, backlog <N>)` line.
fn tcpkit_serve(listen: &str, mode: &str) -> (Proc, Endpoint) {
    let mut proc = Proc::spawn(
        "tcpkit serve",
        Proc::tcpkit(&["serve", "--listen", listen, "--mode", mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let out = proc.child.stdout.take().expect("stdout");
    let line = first_line(out);
    assert!(
        line.contains(&format!("({mode}, backlog ")),
        "serve's first line: {line:?}"
    );
    (proc, listening_endpoint(&line))
}

/// A free port on loopback, found by binding port 0 and closing it.
fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).expect("bind port 0");
    l.local_addr().expect("local").port()
}

/// Whether something listens on `port` (per `/proc/net/tcp` and `tcp6`).
fn listening_on(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        std::fs::read_to_string(path)
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&hex) && f[3] == "0A"
                })
            })
            .unwrap_or(false)
    })
}

/// Starts a peer program listening on a free port: `make(port)` builds its
/// command. Retries with another port if the program exits (port taken).
fn peer_listening(name: &str, ip: &str, make: impl Fn(u16) -> Command) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port(ip);
        let mut proc = Proc::spawn(name, &mut make(port));
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if listening_on(port) {
                return (proc, port);
            }
            if proc.try_status().is_some() {
                break; // lost the port to someone else: try another
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{name} never listened");
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure reproduces.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Sends `input` through a client command to an echo server and checks the
/// echo byte for byte. The data goes through files so no pipe can deadlock.
fn bulk_echo(name: &str, mut client: Command, input: &Path, want: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("echoed");
    let mut proc = Proc::spawn(
        name,
        client
            .stdin(File::open(input).expect("input"))
            .stdout(File::create(&out_path).expect("output"))
            .stderr(Stdio::piped()),
    );
    let err = collect(proc.child.stderr.take().expect("stderr"));
    let status = proc.wait(BULK_DEADLINE);
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr")).into_owned();
    assert!(status.success(), "{name}: {status:?} {stderr}");
    let got = std::fs::read(&out_path).expect("read echo");
    assert_same(name, &got, want);
}

// ---- tcpkit connect against listening programs ----

fn connect_to_ncat_listener(ip: &str, target_ip: &str, ncat_flag: &str) {
    if !common::have_program("ncat") {
        return;
    }
    let (mut ncat, port) = peer_listening("ncat -l", ip, |port| {
        let mut cmd = Command::new("ncat");
        cmd.args([ncat_flag, "-l", ip, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    });
    let mut ncat_in = ncat.child.stdin.take().expect("stdin");
    ncat_in.write_all(b"from ncat\n").expect("ncat stdin");
    drop(ncat_in); // ncat half-closes at stdin EOF
    let ncat_out = collect(ncat.child.stdout.take().expect("stdout"));

    let target = format!("{target_ip}:{port}");
    let mut client = Proc::spawn(
        "tcpkit connect",
        Proc::tcpkit(&["connect", &target])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = client.child.stdin.take().expect("stdin");
    stdin.write_all(b"from tcpkit\n").expect("tcpkit stdin");
    drop(stdin);
    let out = collect(client.child.stdout.take().expect("stdout"));
    let err = collect(client.child.stderr.take().expect("stderr"));
    let status = client.wait(DEADLINE);
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr")).into_owned();
    assert!(status.success(), "tcpkit connect: {status:?} {stderr}");
    assert_eq!(out.join().expect("stdout"), b"from ncat\n");
    assert!(ncat.wait(DEADLINE).success(), "ncat failed");
    assert_eq!(ncat_out.join().expect("ncat stdout"), b"from tcpkit\n");
}

#[test]
fn tcpkit_connect_talks_to_ncat_listener() {
    connect_to_ncat_listener("127.0.0.1", "127.0.0.1", "-4");
}

#[test]
fn tcpkit_connect_talks_to_ncat_listener_over_ipv6() {
    if have_ipv6() {
        connect_to_ncat_listener("::1", "[::1]", "-6");
    }
}

#[test]
fn tcpkit_connect_talks_to_nc_openbsd_listener() {
    if !common::have_program("nc.openbsd") {
        return;
    }
    let data = random_bytes(1024 * 1024, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let got_path = dir.path().join("got");
    let (mut nc, port) = peer_listening("nc.openbsd -l", "127.0.0.1", |port| {
        let mut cmd = Command::new("nc.openbsd");
        cmd.args(["-l", "127.0.0.1", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(File::create(&got_path).expect("file"))
            .stderr(Stdio::null());
        cmd
    });
    let mut client = Proc::spawn(
        "tcpkit connect",
        Proc::tcpkit(&["connect", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stdin = client.child.stdin.take().expect("stdin");
    let feeder = {
        let data = data.clone();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    };
    let err = collect(client.child.stderr.take().expect("stderr"));
    // tcpkit half-closes at stdin EOF; nc.openbsd -l then closes when its
    // stdin (null) is done and the socket hit EOF.
    let status = client.wait(DEADLINE);
    let _ = feeder.join();
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr")).into_owned();
    assert!(status.success(), "tcpkit connect: {status:?} {stderr}");
    nc.wait(DEADLINE);
    assert_same(
        "nc.openbsd received",
        &std::fs::read(&got_path).expect("got"),
        &data,
    );
}

#[test]
fn tcpkit_connect_moves_16mib_through_python_echo_server() {
    if !common::have_program("python3") {
        return;
    }
    const ECHO: &str = r#"
import socket, sys
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(30)
print("listening on 127.0.0.1:%d" % srv.getsockname()[1], flush=True)
srv.settimeout(60)
conn, _ = srv.accept()
conn.settimeout(60)
while True:
    data = conn.recv(65536)
    if not data:
        break
    conn.sendall(data)
conn.close()
"#;
    let mut py = Proc::spawn(
        "python3 echo",
        Command::new("python3")
            .args(["-c", ECHO])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let ep = listening_endpoint(&first_line(py.child.stdout.take().expect("stdout")));
    let data = random_bytes(BULK, 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    std::fs::write(&input, &data).expect("write input");
    bulk_echo(
        "tcpkit connect",
        Proc::tcpkit(&["connect", &ep.to_string()]),
        &input,
        &data,
    );
    assert!(py.wait(DEADLINE).success(), "python echo failed");
}

// ---- clients against tcpkit listen ----

fn socat_client_to_tcpkit_listen(listen: &str, socat_addr: &str) {
    if !common::have_program("socat") {
        return;
    }
    let (mut listener, ep) = tcpkit_listen(listen, Stdio::piped());
    let mut l_in = listener.child.stdin.take().expect("stdin");
    l_in.write_all(b"from listener\n").expect("stdin");
    drop(l_in);
    let l_out = collect(listener.child.stdout.take().expect("stdout"));

    let address = format!("{socat_addr}:{}", ep.port());
    let mut socat = Proc::spawn(
        "socat",
        // -t: after stdin EOF, wait up to 5 s for the listener's side.
        Command::new("socat")
            .args(["-t", "5", "STDIO", &address])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut s_in = socat.child.stdin.take().expect("stdin");
    s_in.write_all(b"from socat\n").expect("stdin");
    drop(s_in);
    let s_out = collect(socat.child.stdout.take().expect("stdout"));
    let s_err = collect(socat.child.stderr.take().expect("stderr"));
    let status = socat.wait(DEADLINE);
    let s_err = String::from_utf8_lossy(&s_err.join().expect("stderr")).into_owned();
    assert!(status.success(), "socat: {status:?} {s_err}");
    assert_eq!(s_out.join().expect("socat stdout"), b"from listener\n");
    assert!(listener.wait(DEADLINE).success(), "tcpkit listen failed");
    assert_eq!(l_out.join().expect("listener stdout"), b"from socat\n");
}

#[test]
fn socat_client_talks_to_tcpkit_listen() {
    socat_client_to_tcpkit_listen("127.0.0.1:0", "TCP4:127.0.0.1");
}

#[test]
fn socat_client_talks_to_tcpkit_listen_over_ipv6() {
    if have_ipv6() {
        socat_client_to_tcpkit_listen("[::1]:0", "TCP6:[::1]");
    }
}

#[test]
fn nc_openbsd_sends_binary_to_tcpkit_listen() {
    if !common::have_program("nc.openbsd") {
        return;
    }
    let (mut listener, ep) = tcpkit_listen("127.0.0.1:0", Stdio::null());
    let l_out = collect(listener.child.stdout.take().expect("stdout"));
    let data = random_bytes(1024 * 1024, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    std::fs::write(&input, &data).expect("input");
    let mut nc = Proc::spawn(
        "nc.openbsd",
        // -N: shut down the write side at stdin EOF, as tcpkit connect does.
        Command::new("nc.openbsd")
            .args(["-N", "127.0.0.1", &ep.port().to_string()])
            .stdin(File::open(&input).expect("input"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(nc.wait(DEADLINE).success(), "nc.openbsd failed");
    assert!(listener.wait(DEADLINE).success(), "tcpkit listen failed");
    assert_same(
        "tcpkit listen stdout",
        &l_out.join().expect("stdout"),
        &data,
    );
}

#[test]
fn python_client_talks_to_tcpkit_listen_over_ipv6() {
    if !common::have_program("python3") || !have_ipv6() {
        return;
    }
    let (mut listener, ep) = tcpkit_listen("[::1]:0", Stdio::piped());
    let mut l_in = listener.child.stdin.take().expect("stdin");
    l_in.write_all(b"hello python\n").expect("stdin");
    drop(l_in);
    let l_out = collect(listener.child.stdout.take().expect("stdout"));
    let script = format!(
        r#"
import socket
s = socket.create_connection(("::1", {port}), timeout=20)
s.sendall(b"hello tcpkit\n")
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    got += d
print(got.decode(), end="")
"#,
        port = ep.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut py = Proc {
        child: out,
        name: "python3 client".into(),
    };
    let py_out = collect(py.child.stdout.take().expect("stdout"));
    assert!(py.wait(DEADLINE).success(), "python client failed");
    assert_eq!(py_out.join().expect("stdout"), b"hello python\n");
    assert!(listener.wait(DEADLINE).success(), "tcpkit listen failed");
    assert_eq!(l_out.join().expect("stdout"), b"hello tcpkit\n");
}

// ---- clients against tcpkit serve ----

#[test]
fn ncat_socat_and_nc_move_16mib_through_tcpkit_serve_echo() {
    if !common::have_program("ncat")
        || !common::have_program("socat")
        || !common::have_program("nc.openbsd")
    {
        return;
    }
    let (mut serve, ep) = tcpkit_serve("127.0.0.1:0", "echo");
    let data = random_bytes(BULK, 42);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    std::fs::write(&input, &data).expect("input");
    let port = ep.port().to_string();

    let mut ncat = Command::new("ncat");
    ncat.args(["127.0.0.1", &port]);
    bulk_echo("ncat", ncat, &input, &data);

    let mut socat = Command::new("socat");
    // -t 60: after stdin EOF keep reading the echo for up to 60 s; socat
    // exits as soon as the server closes.
    socat.args(["-t", "60", "STDIO", &format!("TCP4:127.0.0.1:{port}")]);
    bulk_echo("socat", socat, &input, &data);

    let mut nc = Command::new("nc.openbsd");
    nc.args(["-N", "127.0.0.1", &port]);
    bulk_echo("nc.openbsd", nc, &input, &data);

    let status = serve.terminate(DEADLINE);
    assert!(status.success(), "serve after SIGTERM: {status:?}");
}

/// The issue's "done when": `echo hello | tcpkit connect 127.0.0.1:PORT`
/// against `tcpkit serve` prints `hello` and exits 0; then 16 MiB through
/// the same pair, byte-exact.
#[test]
fn tcpkit_connect_echoes_through_tcpkit_serve() {
    let (mut serve, ep) = tcpkit_serve("127.0.0.1:0", "echo");
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = dir.path().join("hello");
    std::fs::write(&hello, b"hello\n").expect("input");
    bulk_echo(
        "echo hello | tcpkit connect",
        Proc::tcpkit(&["connect", &ep.to_string()]),
        &hello,
        b"hello\n",
    );
    let data = random_bytes(BULK, 7);
    let input = dir.path().join("input");
    std::fs::write(&input, &data).expect("input");
    bulk_echo(
        "tcpkit connect (16 MiB)",
        Proc::tcpkit(&["connect", &ep.to_string()]),
        &input,
        &data,
    );
    assert!(serve.terminate(DEADLINE).success());
}

#[test]
fn ipv6_clients_echo_through_tcpkit_serve() {
    if !common::have_program("ncat") || !have_ipv6() {
        return;
    }
    let (mut serve, ep) = tcpkit_serve("[::1]:0", "echo");
    assert!(ep.is_ipv6());
    let data = random_bytes(1024 * 1024, 6);
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    std::fs::write(&input, &data).expect("input");
    let mut ncat = Command::new("ncat");
    ncat.args(["-6", "::1", &ep.port().to_string()]);
    bulk_echo("ncat -6", ncat, &input, &data);
    bulk_echo(
        "tcpkit connect [::1]",
        Proc::tcpkit(&["connect", &ep.to_string()]),
        &input,
        &data,
    );
    assert!(serve.terminate(DEADLINE).success());
}

/// An interactive ncat client: lines in over stdin, lines out over a channel.
struct ChatClient {
    proc: Proc,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl ChatClient {
    fn connect(ep: &Endpoint, name: &str) -> ChatClient {
        let mut proc = Proc::spawn(
            name,
            Command::new("ncat")
                .args(["127.0.0.1", &ep.port().to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let stdin = proc.child.stdin.take().expect("stdin");
        let out: ChildStdout = proc.child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        ChatClient {
            proc,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("ncat stdin");
        self.stdin.flush().expect("flush");
    }

    /// Waits up to `within` for a line matching `pred`; returns it.
    fn expect(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let start = Instant::now();
        while let Some(left) = within.checked_sub(start.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = pred(&l);
                    self.seen.push(l.clone());
                    if hit {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }
}

#[test]
fn ncat_clients_chat_through_tcpkit_serve() {
    if !common::have_program("ncat") {
        return;
    }
    let (mut serve, ep) = tcpkit_serve("127.0.0.1:0", "chat");
    let mut a = ChatClient::connect(&ep, "ncat a");
    let mut b = ChatClient::connect(&ep, "ncat b");

    // Both joined once a line from b reaches a (b may have been registered
    // first, so b repeats until a hears it).
    let start = Instant::now();
    loop {
        b.say("ready from b");
        if a.expect(Duration::from_millis(300), |l| l.contains("ready from b"))
            .is_some()
        {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "a never heard b: {:?}", a.seen);
    }

    a.say("hello from a");
    let line = b
        .expect(DEADLINE, |l| l.contains("hello from a"))
        .unwrap_or_else(|| panic!("b never got a's line: {:?}", b.seen));
    assert!(line.contains("user"), "no sender name in {line:?}");

    a.say("/nick alice");
    a.say("again from alice");
    let line = b
        .expect(DEADLINE, |l| l.contains("again from alice"))
        .unwrap_or_else(|| panic!("b never got alice's line: {:?}", b.seen));
    assert!(line.contains("alice"), "sender not renamed: {line:?}");

    a.say("/quit");
    // The server removed alice: b hears a leave notice naming her.
    let left = b.expect(DEADLINE, |l| l.contains("alice"));
    assert!(left.is_some(), "no leave notice for alice: {:?}", b.seen);
    // Drain what a got until the server closed it (the channel ends when
    // ncat exits, which ncat 7.9x does only once its stdin is closed too).
    drop(a.stdin);
    assert!(a.proc.wait(DEADLINE).success(), "ncat a after /quit");
    while let Ok(l) = a.lines.recv_timeout(Duration::from_secs(1)) {
        a.seen.push(l);
    }
    // Every line goes to the *other* clients only.
    assert!(
        !a.seen.iter().any(|l| l.contains("hello from a")),
        "sender got its own line: {:?}",
        a.seen
    );

    drop(b);
    assert!(serve.terminate(DEADLINE).success(), "serve after SIGTERM");
}

#[test]
fn std_client_talks_to_tcpkit_listen_on_both_families() {
    let mut places = vec![("127.0.0.1:0", "127.0.0.1")];
    if have_ipv6() {
        places.push(("[::1]:0", "[::1]"));
    }
    for (listen, host) in places {
        let (mut listener, ep) = tcpkit_listen(listen, Stdio::piped());
        let mut l_in = listener.child.stdin.take().expect("stdin");
        l_in.write_all(b"ping\n").expect("stdin");
        drop(l_in);
        let l_out = collect(listener.child.stdout.take().expect("stdout"));
        let mut client = TcpStream::connect(
            format!("{host}:{}", ep.port())
                .parse::<std::net::SocketAddr>()
                .expect("addr"),
        )
        .expect("connect");
        client.set_read_timeout(Some(DEADLINE)).expect("timeout");
        client.write_all(b"pong\n").expect("write");
        client.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        client.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"ping\n");
        assert!(listener.wait(DEADLINE).success());
        assert_eq!(l_out.join().expect("stdout"), b"pong\n");
    }
}
