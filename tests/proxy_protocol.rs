//! The PROXY protocol on accept (`ServerBuilder::proxy_protocol`, `serve
//! --proxy-protocol`): v1 and v2 headers, hand-written and from `tcpkit
//! connect --send-proxy`, put the carried client in the service's
//! `Connection::peer`, the log and the access-list check, with the TCP
//! peer kept in `tcp_peer`; no client byte after the header is lost,
//! however the header is segmented; every kind of refusal closes the
//! connection and is counted by reason while others are served; TLS comes
//! after the header; `tcpkit bench --send-proxy v2` verifies every byte.
#![cfg(feature = "cli")]

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcpkit::metrics::Metrics;
use tcpkit::proxy::{self, Version};
use tcpkit::server::{ProxyProtocol, ServerBuilder, ShutdownHandle};
use tcpkit::service::{CloseReason, Connection, Echo, Served, Service};
use tcpkit::{Endpoint, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

/// Writes `<peer> <tcp_peer>\n`, then echoes until EOF: what the service
/// was told about its client.
struct WhoAmI;

impl Service for WhoAmI {
    fn name(&self) -> &'static str {
        "whoami"
    }

    // Not an `async fn`: that would borrow `self`, and the future must be
    // 'static.
    #[allow(clippy::manual_async_fn)]
    fn serve(&self, conn: Connection) -> impl Future<Output = Served> + Send + 'static {
        async move {
            let line = format!("{} {}\n", conn.peer, conn.tcp_peer);
            let mut stream = conn.stream;
            let (mut bytes_in, mut bytes_out) = (0, 0);
            let reason = async {
                stream.write_all(line.as_bytes()).await?;
                bytes_out += line.len() as u64;
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    bytes_in += n as u64;
                    stream.write_all(&buf[..n]).await?;
                    bytes_out += n as u64;
                }
            }
            .await
            .map_or_else(
                |e| CloseReason::Error(Error::io(e, "whoami")),
                |()| CloseReason::PeerClosed,
            );
            Served {
                bytes_in,
                bytes_out,
                reason,
            }
        }
    }
}

/// A library server on its own runtime, stopped when dropped.
struct Running {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    handle: ShutdownHandle,
    rt: tokio::runtime::Runtime,
    done: Option<tokio::task::JoinHandle<tcpkit::Result<tcpkit::server::Summary>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown_now();
        if let Some(done) = self.done.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(DEADLINE, done).await });
        }
    }
}

fn start<S: Service>(builder: ServerBuilder, service: S) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = builder
        .listen(Endpoint::loopback_v4(0))
        .workers(2)
        .bind()
        .expect("bind");
    let addr = server.local_endpoint().socket_addr();
    let metrics = server.metrics();
    let handle = server.handle();
    let done = rt.spawn(server.run(service));
    Running {
        addr,
        metrics,
        handle,
        rt,
        done: Some(done),
    }
}

fn trusting(nets: &[&str]) -> ServerBuilder {
    let nets = nets.iter().map(|n| n.parse().expect("network"));
    ServerBuilder::new().proxy_protocol(ProxyProtocol::new(nets))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    s.set_write_timeout(Some(DEADLINE)).expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// A connection from another loopback source address (127.0.0.2).
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let source: SocketAddr = format!("{source}:0").parse().expect("source");
    sock.bind(&source.into()).expect("bind source");
    sock.connect_timeout(&addr.into(), DEADLINE)
        .expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    s
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!("reading a line: {other:?} after {line:?}"),
        }
    }
    String::from_utf8(line).expect("utf-8")
}

/// The server closed the connection (EOF or a reset), within the deadline.
fn assert_closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) if start.elapsed() < DEADLINE && e.kind() == std::io::ErrorKind::Interrupted => {
            }
            Ok(n) => panic!("{what}: the server sent {n} bytes instead of closing"),
            Err(e) => panic!("{what}: {e} instead of a close"),
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// One echo round trip of `msg`.
fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

#[test]
fn v1_and_v2_headers_carry_the_client_to_the_service_and_keep_the_first_bytes() {
    let server = start(trusting(&["127.0.0.0/8"]), WhoAmI);
    let dst = addr("192.0.2.1:3333");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "v1 by hand",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 3333\r\n".to_vec(),
            "203.0.113.7:4242",
        ),
        (
            "v1 IPv6",
            b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 3333\r\n".to_vec(),
            "[2001:db8::7]:4242",
        ),
        (
            "v2 IPv4",
            proxy::encode(Version::V2, addr("203.0.113.8:1"), dst),
            "203.0.113.8:1",
        ),
        (
            "v2 IPv6",
            proxy::encode(
                Version::V2,
                addr("[2001:db8::9]:65535"),
                addr("[2001:db8::1]:1"),
            ),
            "[2001:db8::9]:65535",
        ),
    ];
    for (what, header, want) in cases {
        let mut s = connect(server.addr);
        let tcp_peer = s.local_addr().expect("local").to_string();
        // The header and the client's first bytes in one segment.
        let mut bytes = header;
        bytes.extend_from_slice(b"first\n");
        s.write_all(&bytes).expect("write");
        assert_eq!(read_line(&mut s), format!("{want} {tcp_peer}\n"), "{what}");
        assert_eq!(
            read_line(&mut s),
            "first\n",
            "{what}: the bytes after the header"
        );
        echo(&mut s, b"more");
    }
    let snap = server.metrics.snapshot();
    assert_eq!(snap.connections_accepted, 4);
    assert_eq!(
        snap.rejected_proxy_malformed + snap.rejected_proxy_missing,
        0
    );
}

#[test]
fn a_header_split_byte_by_byte_is_read_whole() {
    let server = start(trusting(&["127.0.0.1/32"]), WhoAmI);
    for version in [Version::V1, Version::V2] {
        let mut s = connect(server.addr);
        let tcp_peer = s.local_addr().expect("local").to_string();
        let header = proxy::encode(version, addr("[2001:db8::5]:5"), addr("[2001:db8::1]:1"));
        for b in &header {
            // One segment each (TCP_NODELAY); the pause gives the server
            // the chance to read each alone.
            s.write_all(&[*b]).expect("write");
            std::thread::sleep(Duration::from_millis(2));
        }
        s.write_all(b"x\n").expect("write");
        assert_eq!(
            read_line(&mut s),
            format!("[2001:db8::5]:5 {tcp_peer}\n"),
            "{version}"
        );
        assert_eq!(read_line(&mut s), "x\n", "{version}");
    }
}

#[test]
fn a_local_header_keeps_the_tcp_peer() {
    let server = start(trusting(&["127.0.0.1/32"]), WhoAmI);
    for header in [proxy::encode_local(), b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut s = connect(server.addr);
        let me = s.local_addr().expect("local").to_string();
        s.write_all(&header).expect("write");
        assert_eq!(read_line(&mut s), format!("{me} {me}\n"));
        echo(&mut s, b"health check");
    }
}

#[test]
fn untrusted_sources_are_closed_at_accept_and_counted() {
    let server = start(trusting(&["127.0.0.1/32"]), Echo);
    let mut s = connect_from("127.0.0.2", server.addr);
    s.write_all(&proxy::encode(
        Version::V2,
        addr("203.0.113.7:1"),
        server.addr,
    ))
    .expect("write");
    assert_closed(&mut s, "untrusted with a header");
    let snap = server.metrics.snapshot();
    assert_eq!(snap.rejected_proxy_untrusted, 1);
    assert_eq!(snap.connections_accepted, 0, "no task, no slot");
    // A trusted one is still served.
    let mut ok = connect(server.addr);
    ok.write_all(&proxy::encode(
        Version::V1,
        addr("203.0.113.7:1"),
        server.addr,
    ))
    .expect("write");
    echo(&mut ok, b"hello");
}

#[test]
fn bad_headers_are_closed_by_reason_while_others_are_served() {
    let proxy = ProxyProtocol::new(["127.0.0.0/8".parse().expect("net")])
        .header_timeout(Duration::from_millis(500));
    let server = start(ServerBuilder::new().proxy_protocol(proxy), Echo);
    // A slow header first: it must not hold anyone else up.
    let mut slow = connect(server.addr);
    slow.write_all(b"PROXY TCP4 1.2.").expect("write");
    let slow_since = Instant::now();

    let mut oversized = b"PROXY TCP4 ".to_vec();
    oversized.resize(300, b'1');
    let mut v2_oversized = proxy::encode_local();
    v2_oversized[14..16].copy_from_slice(&1000u16.to_be_bytes());
    v2_oversized.resize(1100, 0);
    let cases: [(&str, &[u8]); 5] = [
        ("no header", b"hello\n"),
        ("malformed v1", b"PROXY TCP4 a.b.c.d 1.2.3.4 1 2\r\n"),
        ("malformed v2", b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x00"),
        ("oversized v1", &oversized),
        ("oversized v2", &v2_oversized),
    ];
    for (what, bytes) in cases {
        let mut s = connect(server.addr);
        // The server may close (and reset) while the write is in flight.
        let _ = s.write_all(bytes);
        assert_closed(&mut s, what);
        let mut ok = connect(server.addr);
        ok.write_all(&proxy::encode(
            Version::V2,
            addr("203.0.113.1:1"),
            server.addr,
        ))
        .expect("write");
        echo(&mut ok, what.as_bytes());
    }
    assert_closed(&mut slow, "slow header");
    let waited = slow_since.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}"
    );
    let snap = server.metrics.snapshot();
    assert_eq!(snap.rejected_proxy_missing, 1, "{snap:?}");
    assert_eq!(snap.rejected_proxy_malformed, 2, "{snap:?}");
    assert_eq!(snap.rejected_proxy_too_large, 2, "{snap:?}");
    assert_eq!(snap.rejected_proxy_timeout, 1, "{snap:?}");
    assert_eq!(snap.rejected_proxy_untrusted, 0, "{snap:?}");
}

#[test]
fn the_access_list_judges_the_carried_client_not_the_balancer() {
    let list =
        tcpkit::server::access::AccessList::new(&[], &["203.0.113.0/24".parse().expect("net")]);
    let server = start(trusting(&["127.0.0.1/32"]).access_list(list), Echo);
    let mut denied = connect(server.addr);
    denied
        .write_all(&proxy::encode(
            Version::V2,
            addr("203.0.113.7:1"),
            server.addr,
        ))
        .expect("write");
    let _ = denied.write_all(b"never echoed");
    assert_closed(&mut denied, "a denied client behind the balancer");
    let mut allowed = connect(server.addr);
    allowed
        .write_all(&proxy::encode(
            Version::V2,
            addr("198.51.100.7:1"),
            server.addr,
        ))
        .expect("write");
    echo(&mut allowed, b"allowed");
    assert_eq!(server.metrics.snapshot().rejected_access_list, 1);
}

// ---- the command line ----

/// `tcpkit serve` with stderr gathered; killed by PID when dropped.
struct Serve {
    child: std::process::Child,
    /// The rest of stdout: the summary comes there at exit.
    out: BufReader<std::process::ChildStdout>,
    addr: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["-vv", "serve", "--listen", "127.0.0.1:0", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpkit serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
        let mut first = String::new();
        out.read_line(&mut first).expect("read stdout");
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("no listening line: {first:?}"))
            .parse()
            .expect("address");
        Serve {
            child,
            out,
            addr,
            stderr,
        }
    }

    fn wait_log(&self, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.stderr.lock().expect("lines").iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no such log line in:\n{}",
                self.stderr.lock().expect("lines").join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the JSON summary.
    fn stop(mut self) -> serde_json::Value {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(start.elapsed() < DEADLINE, "serve did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut text = String::new();
        let _ = self.out.read_to_string(&mut text);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("summary {text:?}: {e}"))
    }
}

/// The `/metrics` text from `addr`.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn tcpkit(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpkit");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("tcpkit {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn serve_logs_and_counts_the_carried_client() {
    let serve = Serve::start(&[
        "--proxy-protocol",
        "--proxy-trusted",
        "127.0.0.1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics_at = serve.wait_log(|l| l.starts_with("metrics on http://"));
    let metrics_at = metrics_at
        .trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let target = serve.addr.to_string();
    for version in ["v1", "v2"] {
        let out = tcpkit(&[
            "connect",
            &target,
            "--send-proxy",
            version,
            "--send",
            "hello",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{version}");
    }
    // A header naming someone else: the log names them, and the balancer.
    let mut s = connect(serve.addr);
    let tcp_peer = s.local_addr().expect("local").to_string();
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 3333\r\nping")
        .expect("write");
    let mut back = [0u8; 4];
    s.read_exact(&mut back).expect("echo");
    let line = serve.wait_log(|l| l.contains("PROXY header") && l.contains("203.0.113.7:4242"));
    assert!(line.contains(&format!("tcp_peer={tcp_peer}")), "{line}");
    serve.wait_log(|l| l.contains("connection opened") && l.contains("peer=203.0.113.7:4242"));
    drop(s);
    // Refusals: untrusted (from 127.0.0.2) and a trusted source without one.
    let mut untrusted = connect_from("127.0.0.2", serve.addr);
    assert_closed(&mut untrusted, "untrusted");
    let mut missing = connect(serve.addr);
    let _ = missing.write_all(b"hello\n");
    assert_closed(&mut missing, "no header");
    let refused =
        serve.wait_log(|l| l.contains("connection refused") && l.contains("proxy_missing"));
    assert!(refused.contains("127.0.0.1"), "{refused}");
    serve.wait_log(|l| l.contains("connection refused") && l.contains("proxy_untrusted"));
    let body = scrape(&metrics_at);
    for reason in ["proxy_untrusted", "proxy_missing"] {
        let series = format!("tcpkit_connections_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(body.lines().any(|l| l == series), "no {series} in:\n{body}");
    }
    let summary = serve.stop();
    assert_eq!(summary["rejected_proxy_untrusted"], 1, "{summary}");
    assert_eq!(summary["rejected_proxy_missing"], 1, "{summary}");
    assert_eq!(summary["connections_accepted"], 4, "{summary}");
}

#[test]
fn tls_comes_after_the_header() {
    let serve = Serve::start(&[
        "--tls",
        "--proxy-protocol",
        "--proxy-trusted",
        "127.0.0.0/8",
    ]);
    let fp_line = serve.wait_log(|l| l.contains("SHA-256 fingerprint"));
    let fp = fp_line.rsplit(' ').next().expect("fingerprint").to_owned();
    let target = serve.addr.to_string();
    for version in ["v1", "v2"] {
        let out = tcpkit(&[
            "connect",
            &target,
            "--send-proxy",
            version,
            "--pin",
            &fp,
            "--send",
            "over tls",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "over tls\n",
            "{version}"
        );
    }
    // TLS without the header is refused as a missing header, before any
    // handshake.
    let out = tcpkit(&["connect", &target, "--pin", &fp, "--send", "x"]);
    assert!(!out.status.success());
    let summary = serve.stop();
    assert_eq!(summary["tls_handshakes"], 2, "{summary}");
    assert_eq!(summary["rejected_proxy_missing"], 1, "{summary}");
}

#[test]
fn bench_send_proxy_v2_verifies_every_byte() {
    // The embedded server (started with --proxy-protocol by the bench).
    let out = tcpkit(&[
        "bench",
        "--send-proxy",
        "v2",
        "-c",
        "4",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["verification_failures"], 0, "{report}");
    assert!(report["messages"].as_u64().unwrap_or(0) > 0, "{report}");
    // Connect mode against a server of ours (sources spread over 127/8).
    let serve = Serve::start(&["--proxy-protocol", "--proxy-trusted", "127.0.0.0/8"]);
    let target = serve.addr.to_string();
    let out = tcpkit(&[
        "bench",
        "--target",
        &target,
        "--send-proxy",
        "v2",
        "-m",
        "connect",
        "-c",
        "4",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["connect_failures"], 0, "{report}");
    assert!(report["messages"].as_u64().unwrap_or(0) > 0, "{report}");
    let summary = serve.stop();
    let refused: u64 = [
        "rejected_proxy_untrusted",
        "rejected_proxy_missing",
        "rejected_proxy_malformed",
        "rejected_proxy_too_large",
        "rejected_proxy_timeout",
        "rejected_proxy_io",
    ]
    .iter()
    .map(|k| summary[k].as_u64().unwrap_or(u64::MAX))
    .sum();
    assert_eq!(refused, 0, "{summary}");
}

#[test]
fn chat_greets_only_after_the_header() {
    // Chat speaks first: behind a balancer the welcome must wait for the
    // header (or the header would be read as the client's first line).
    let server = start(trusting(&["127.0.0.1/32"]), tcpkit::service::Chat::new());
    let mut s = connect(server.addr);
    s.write_all(&proxy::encode(
        Version::V1,
        addr("203.0.113.7:1"),
        server.addr,
    ))
    .expect("write");
    let welcome = read_line(&mut s);
    assert!(welcome.starts_with("* welcome user1,"), "{welcome:?}");
    s.write_all(b"/who\n").expect("write");
    let who = read_line(&mut s);
    assert!(who.contains("user1"), "{who:?}");
    assert_eq!(server.metrics.snapshot().rejected_proxy_missing, 0);
}

/// A connection the server accepted just before a shutdown (or a
/// handover, which shuts the old server down) began still gets its header
/// read and is served: its balancer already counted it as delivered, so
/// closing it would drop a client mid-restart. One that sends nothing is
/// let go once it has been quiet for `DRAIN_QUIET`, not held for the grace.
#[test]
fn a_connection_accepted_before_shutdown_is_still_served() {
    let server = start(trusting(&["127.0.0.1/32"]), WhoAmI);
    let mut late = connect(server.addr);
    let mut silent = connect(server.addr);
    let start = Instant::now();
    while server.metrics.snapshot().connections_accepted < 2 {
        assert!(
            start.elapsed() < DEADLINE,
            "the two connections were not accepted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.handle.shutdown();
    std::thread::sleep(Duration::from_millis(100));
    let tcp_peer = late.local_addr().expect("local").to_string();
    let mut bytes = proxy::encode(
        Version::V2,
        addr("203.0.113.7:4242"),
        addr("192.0.2.1:3333"),
    );
    bytes.extend_from_slice(b"first\n");
    late.write_all(&bytes).expect("write");
    assert_eq!(
        read_line(&mut late),
        format!("203.0.113.7:4242 {tcp_peer}\n"),
        "the header sent after shutdown began"
    );
    assert_eq!(read_line(&mut late), "first\n", "the bytes behind it");
    let quiet = Instant::now();
    assert_closed(&mut silent, "a connection that never sent its header");
    assert!(
        quiet.elapsed() < Duration::from_secs(5),
        "the silent connection was held {:?}, not let go after DRAIN_QUIET",
        quiet.elapsed()
    );
}
