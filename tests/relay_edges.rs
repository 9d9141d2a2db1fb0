//! The relay's edges and the UNIX-socket forms of `connect`/`listen`,
//! through the CLI: `relay --to unix:PATH` (byte-exact, half-close each
//! way), `relay --send-proxy v2` (a `serve --proxy-protocol` upstream logs
//! the real client's address), `relay --to-tls` (byte-exact echo through a
//! TLS upstream; a CA that does not sign it fails the pair, logged, client
//! closed), and `connect unix:PATH` / `listen unix:PATH` carrying bytes and
//! half-close like TCP.
//!
//! Every TCP listener binds port 0, UNIX sockets live in a temp dir, every
//! child is killed by PID when its guard drops, every wait has a deadline
//! and waits on an event (a line, an EOF, an exit), never a sleep.
#![cfg(all(feature = "cli", feature = "tls"))]

mod tls_util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use tls_util::{IO_DEADLINE, Lines, Pki, Proc, Server, assert_same, binary, random_bytes};

const DEADLINE: Duration = Duration::from_secs(30);

/// `tcpkit relay --listen 127.0.0.1:0 ARGS...`, its stderr gathered.
struct Relay {
    _proc: Proc,
    addr: SocketAddr,
    stderr: Lines,
}

fn relay(args: &[&str]) -> Relay {
    let mut cmd = Command::new(binary());
    cmd.args(["relay", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn("tcpkit relay", &mut cmd);
    let stdout = Lines::gather(proc.child.stdout.take().expect("stdout"));
    let stderr = Lines::gather(proc.child.stderr.take().expect("stderr"));
    let line = stdout
        .wait_for(DEADLINE, |l| l.starts_with("listening on "))
        .unwrap_or_else(|| {
            panic!(
                "relay {args:?}: no `listening on` line; stderr {}",
                stderr.text()
            )
        });
    let addr = line["listening on ".len()..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("address in {line:?}"));
    Relay {
        _proc: proc,
        addr,
        stderr,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect relay");
    s.set_read_timeout(Some(IO_DEADLINE)).expect("timeout");
    s.set_write_timeout(Some(IO_DEADLINE)).expect("timeout");
    s
}

/// Writes `data` then half-closes, on a thread; reads to EOF meanwhile.
fn send_and_read_all(mut s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut wr = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        wr.write_all(&data).expect("send");
        wr.shutdown(Shutdown::Write).expect("shutdown write");
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to EOF");
    writer.join().expect("writer");
    got
}

/// `--to unix:PATH`: 1 MiB up, the upstream reads it all to the client's
/// FIN (half-close up), then answers 1 MiB and closes (half-close down,
/// after the client had stopped sending): byte-exact both ways.
#[test]
fn unix_upstream_is_byte_exact_with_half_close_each_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("up.sock");
    let listener = UnixListener::bind(&path).expect("bind unix");
    let up_data = random_bytes(1 << 20, 1);
    let down_data = random_bytes(1 << 20, 2);
    let (want_up, reply) = (up_data.clone(), down_data.clone());
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(IO_DEADLINE)).expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("upstream reads to the client's FIN");
        assert_same("upstream received", &got, &want_up);
        // Only after the client's FIN: the other direction still flows.
        s.write_all(&reply).expect("upstream replies");
    });
    let to = format!("unix:{}", path.display());
    let r = relay(&["--to", &to]);
    let got = send_and_read_all(connect(r.addr), up_data);
    assert_same("client received", &got, &down_data);
    upstream.join().expect("upstream");
}

/// `--send-proxy v2` to `serve --proxy-protocol`: the client's own
/// address (not the relay's) is the peer serve logs, and bytes still flow.
#[test]
fn send_proxy_v2_gives_the_upstream_the_real_client_address() {
    let serve = Server::start(&["--proxy-protocol", "--proxy-trusted", "127.0.0.0/8", "-v"]);
    let r = relay(&["--to", &serve.target(), "--send-proxy", "v2"]);
    client_is_logged_by(&serve, &r);
}

/// With `--to-tls` too, the header goes first, in the clear, then the
/// handshake (as HAProxy sends it and `serve` reads it): the other order
/// would be refused as a missing header.
#[test]
fn send_proxy_goes_before_to_tls() {
    let pki = Pki::new();
    let serve = Server::start(&[
        "--proxy-protocol",
        "--proxy-trusted",
        "127.0.0.0/8",
        "-v",
        "--tls-cert",
        pki.server.cert_arg(),
        "--tls-key",
        pki.server.key_arg(),
    ]);
    let r = relay(&[
        "--to",
        &serve.target(),
        "--send-proxy",
        "v2",
        "--to-ca",
        pki.ca_arg(),
        "--to-sni",
        "localhost",
    ]);
    client_is_logged_by(&serve, &r);
}

/// A line through relay `r` to `serve`, which must log this client's own
/// address at the close.
fn client_is_logged_by(serve: &Server, r: &Relay) {
    let s = connect(r.addr);
    let client = s.local_addr().expect("client address");
    let got = send_and_read_all(s, b"who am I\n".to_vec());
    assert_eq!(got, b"who am I\n");
    let want = format!("peer={client} ");
    let line = serve
        .stderr
        .wait_for(DEADLINE, |l| l.contains("connection closed"))
        .unwrap_or_else(|| panic!("no close line; serve stderr {}", serve.stderr.text()));
    assert!(
        line.contains(&want),
        "serve logged {line:?}, want the client's {client}"
    );
}

/// `--to-tls` with the CA that signed the upstream's certificate: 256 KiB
/// through a TLS echo, byte-exact, ended by the client's half-close.
#[test]
fn to_tls_carries_an_echo_byte_exact() {
    let pki = Pki::new();
    let serve = Server::start(&[
        "--tls-cert",
        pki.server.cert_arg(),
        "--tls-key",
        pki.server.key_arg(),
    ]);
    let r = relay(&[
        "--to",
        &serve.target(),
        "--to-ca",
        pki.ca_arg(),
        "--to-sni",
        "localhost",
    ]);
    let data = random_bytes(256 * 1024, 3);
    let got = send_and_read_all(connect(r.addr), data.clone());
    assert_same("echo through --to-tls", &got, &data);
}

/// `--to-tls` with a CA that did not sign the upstream's certificate: the
/// handshake fails, the relay says why, and the client is closed without
/// a byte.
#[test]
fn to_tls_with_the_wrong_ca_closes_the_client_and_says_why() {
    let pki = Pki::new();
    let serve = Server::start(&[
        "--tls-cert",
        pki.server.cert_arg(),
        "--tls-key",
        pki.server.key_arg(),
    ]);
    let r = relay(&[
        "--to",
        &serve.target(),
        "--to-tls",
        "--to-ca",
        pki.client_ca_arg(),
        "--to-sni",
        "localhost",
    ]);
    let mut s = connect(r.addr);
    let mut buf = [0u8; 64];
    // EOF (or a reset), never data, never the read deadline.
    match s.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "client got bytes: {:?}", &buf[..n]),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let line = r
        .stderr
        .wait_for(DEADLINE, |l| l.contains("upstream connect failed"))
        .unwrap_or_else(|| panic!("no failure logged; relay stderr {}", r.stderr.text()));
    assert!(
        line.contains("TLS handshake with") && line.to_lowercase().contains("certificate"),
        "{line}"
    );
}

/// `--to-tls` to a UNIX socket has no name to verify unless given one: a
/// usage error (exit 2) naming --to-sni, before anything listens.
#[test]
fn to_tls_to_a_unix_socket_needs_a_name() {
    let mut p = Proc::spawn(
        "tcpkit relay",
        Command::new(binary())
            .args(["relay", "--listen", "127.0.0.1:0"])
            .args(["--to", "unix:/nonexistent/x.sock", "--to-tls"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = Lines::gather(p.child.stderr.take().expect("stderr"));
    let status = p.wait(DEADLINE);
    assert!(stderr.wait_eof(DEADLINE));
    assert_eq!(status.code(), Some(2), "{}", stderr.text());
    assert!(stderr.text().contains("--to-sni"), "{}", stderr.text());
}

/// `tcpkit ARGS` with stdin, stdout and stderr piped.
fn cli(args: &[&str]) -> (Proc, Lines, Lines) {
    let mut p = Proc::spawn(
        "tcpkit",
        Command::new(binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = Lines::gather(p.child.stdout.take().expect("stdout"));
    let err = Lines::gather(p.child.stderr.take().expect("stderr"));
    (p, out, err)
}

/// `connect unix:PATH`: stdin's EOF reaches the server as an EOF while
/// the server's reply, sent only after it, still reaches stdout.
#[test]
fn connect_unix_carries_bytes_and_half_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("srv.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let target = format!("unix:{}", path.display());
    let (mut p, out, err) = cli(&["connect", &target]);
    let (mut s, _) = listener.accept().expect("accept");
    s.set_read_timeout(Some(IO_DEADLINE)).expect("timeout");
    let mut stdin = p.child.stdin.take().expect("stdin");
    stdin.write_all(b"hello\n").expect("stdin");
    drop(stdin);
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to connect's EOF");
    assert_eq!(got, b"hello\n");
    s.write_all(b"reply after your EOF\n").expect("reply");
    drop(s);
    let status = p.wait(DEADLINE);
    assert!(out.wait_eof(DEADLINE));
    assert!(status.success(), "connect: {status}; {}", err.text());
    assert_eq!(out.text(), "reply after your EOF");
}

/// `listen unix:PATH`: the client's EOF does not end the session, the
/// reply typed after it still arrives, then listen exits 0 and removes the
/// socket file; a second listen on a live path is refused, naming it.
#[test]
fn listen_unix_carries_bytes_and_half_close_and_removes_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("l.sock");
    let addr = format!("unix:{}", path.display());
    let (mut p, out, err) = cli(&["-v", "listen", &addr]);
    err.wait_for(DEADLINE, |l| l.starts_with("listening on unix:"))
        .unwrap_or_else(|| panic!("no listening line: {}", err.text()));

    let (mut second, _, second_err) = cli(&["listen", &addr]);
    let status = second.wait(DEADLINE);
    assert!(second_err.wait_eof(DEADLINE));
    assert!(!status.success(), "a second listen on {addr} succeeded");
    assert!(second_err.text().contains(&addr), "{}", second_err.text());

    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(IO_DEADLINE)).expect("timeout");
    s.write_all(b"from client\n").expect("send");
    s.shutdown(Shutdown::Write).expect("half-close");
    out.wait_for(DEADLINE, |l| l == "from client")
        .unwrap_or_else(|| panic!("listen printed {:?}", out.text()));
    let mut stdin = p.child.stdin.take().expect("stdin");
    stdin.write_all(b"from listen\n").expect("stdin");
    drop(stdin);
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to listen's EOF");
    assert_eq!(got, b"from listen\n");
    let status = p.wait(DEADLINE);
    assert!(status.success(), "listen: {status}; {}", err.text());
    assert!(!path.exists(), "listen left {} behind", path.display());
}

/// `connect -z unix:PATH` answers as for TCP: 0 while something accepts,
/// 4 (refused) once the listener is gone but its file is left, naming it.
#[test]
fn connect_zero_io_on_a_unix_socket_tells_open_from_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("z.sock");
    let target = format!("unix:{}", path.display());
    let listener = UnixListener::bind(&path).expect("bind");
    let (mut p, _, err) = cli(&["connect", "-z", &target]);
    let status = p.wait(DEADLINE);
    assert!(status.success(), "open socket: {status}; {}", err.text());
    drop(listener);
    assert!(path.exists(), "the socket file stays after its listener");
    let (mut p, _, err) = cli(&["connect", "-z", &target]);
    let status = p.wait(DEADLINE);
    assert!(err.wait_eof(DEADLINE));
    assert_eq!(status.code(), Some(4), "{}", err.text());
    assert!(err.text().contains(&target), "{}", err.text());
}

/// `relay --help`: the edge flags sit under their own headings, and
/// serve's flags (`--listen`, `--tls-cert`) under none of them.
#[test]
fn relay_help_keeps_serve_flags_out_of_the_edge_headings() {
    let out = Command::new(binary())
        .args(["relay", "--help"])
        .output()
        .expect("relay --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let at = |what: &str| {
        help.find(what)
            .unwrap_or_else(|| panic!("{what:?} not in relay --help:\n{help}"))
    };
    let edges = at("To the upstream:");
    assert!(at("TLS to the upstream:") > edges);
    for serve_flag in ["--listen <ADDR>", "--tls-cert <FILE>", "--deny-file <FILE>"] {
        assert!(at(serve_flag) < edges, "{serve_flag} under an edge heading");
    }
    for edge_flag in ["--send-proxy <VERSION>", "--to-ca <FILE>", "--to-insecure"] {
        assert!(
            at(edge_flag) > edges,
            "{edge_flag} outside the edge headings"
        );
    }
}
