//! `tcpkit serve --metrics`: the Prometheus endpoint after known traffic
//! shows exactly that traffic, and `promtool check metrics` accepts it.
#![cfg(all(feature = "cli", feature = "metrics"))]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// The server process, killed by PID on drop.
struct Proc(Child);

impl Proc {
    /// SIGTERM (a graceful drain) and the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for serve") {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "serve did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` with `--metrics 127.0.0.1:0`; returns the process, the
/// service address and the metrics address.
fn start(extra: &[&str]) -> (Proc, String, String) {
    let (proc, service, metrics, _) = start_keeping_stdout(extra);
    (proc, service, metrics)
}

/// [`start`], also giving back the server's stdout (after its `listening
/// on` line) for its exit summary.
fn start_keeping_stdout(extra: &[&str]) -> (Proc, String, String, BufReader<ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpkit serve");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let proc = Proc(child);
    let mut first = String::new();
    let mut stdout = BufReader::new(stdout);
    stdout.read_line(&mut first).expect("read stdout");
    let service = first
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no listening line: {first:?}"))
        .to_string();
    // stderr is read to its end on a thread, so the server never writes
    // to a closed pipe; the `metrics on` line comes back over a channel.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("metrics on http://") {
                let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
            }
        }
    });
    let metrics = rx
        .recv_timeout(DEADLINE)
        .expect("no `metrics on` line on stderr");
    (proc, service, metrics, stdout)
}

/// One HTTP GET; the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n"
    )
    .expect("send request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

fn scrape(addr: &str) -> String {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

/// The value of the sample named exactly `series` (with its labels).
fn value(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// The sum of every sample of `family` (all its label values).
fn total(body: &str, family: &str) -> u64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| {
            let v = l.rsplit(' ').next().unwrap_or_default();
            v.parse::<u64>().unwrap_or_else(|e| panic!("{l}: {e}"))
        })
        .sum()
}

fn echo_round(addr: &str, n: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let data = vec![b'x'; n];
    s.write_all(&data).expect("send");
    let mut back = vec![0; n];
    s.read_exact(&mut back).expect("echo back");
    assert_eq!(back, data);
    s
}

#[test]
fn counts_known_traffic_exactly() {
    const N: usize = 1000;
    let (_server, service, metrics) = start(&["--max-connections", "3"]);
    let before = scrape(&metrics);
    assert_eq!(value(&before, "tcpkit_connections_accepted_total"), 0);
    let open: Vec<TcpStream> = (0..3).map(|_| echo_round(&service, N)).collect();
    // A fourth is over the limit: accepted by the kernel, closed by the server.
    let mut over = TcpStream::connect(&service).expect("connect over the limit");
    over.set_read_timeout(Some(DEADLINE)).expect("timeout");
    over.write_all(b"y").expect("send");
    let mut rest = Vec::new();
    let _ = over.read_to_end(&mut rest);
    let during = scrape(&metrics);
    assert_eq!(value(&during, "tcpkit_connections_active"), 3, "{during}");
    for s in &open {
        s.shutdown(Shutdown::Write).expect("shutdown");
    }
    for mut s in open {
        let mut tail = Vec::new();
        s.read_to_end(&mut tail).expect("read to EOF");
    }
    // The server counts a connection as it finishes: wait for it to show.
    let start = Instant::now();
    let after = loop {
        let body = scrape(&metrics);
        if total(&body, "tcpkit_connections_closed_total") == 3 {
            break body;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "connections never closed:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(value(&after, "tcpkit_connections_accepted_total"), 3);
    assert_eq!(value(&after, "tcpkit_connections_active"), 0);
    assert_eq!(
        value(
            &after,
            "tcpkit_connections_rejected_total{reason=\"max_connections\"}"
        ),
        1
    );
    assert_eq!(value(&after, "tcpkit_received_bytes_total"), 3 * N as u64);
    assert_eq!(value(&after, "tcpkit_sent_bytes_total"), 3 * N as u64);
    assert_eq!(value(&after, "tcpkit_lingering_closes_total"), 1);
    assert_eq!(
        value(
            &after,
            "tcpkit_connections_closed_total{reason=\"peer_closed\"}"
        ),
        3
    );
    assert_eq!(
        value(
            &after,
            "tcpkit_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        0
    );
    assert_eq!(value(&after, "tcpkit_connection_duration_seconds_count"), 3);
    assert_eq!(value(&after, "tcpkit_chat_slow_consumer_drops_total"), 0);
    assert_eq!(value(&after, "tcpkit_tls_handshakes_total"), 0);
    for reason in ["access_list", "proxy_untrusted", "tls_timeout"] {
        let series = format!("tcpkit_connections_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&after, &series), 0, "{after}");
    }
    assert_eq!(
        value(
            &after,
            &format!(
                "tcpkit_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1
    );
    // Only /metrics is served.
    assert_eq!(get(&metrics, "/").0, "HTTP/1.1 404 Not Found");
}

#[test]
fn promtool_accepts_the_output() {
    if !common::have_program("promtool") {
        return;
    }
    // Samples in every shape: a timed close in the histogram, a refusal,
    // labelled counters above zero.
    let (_server, service, metrics) = start(&["--max-connections", "1"]);
    let held = echo_round(&service, 10);
    let mut over = TcpStream::connect(&service).expect("connect over the limit");
    over.set_read_timeout(Some(DEADLINE)).expect("timeout");
    read_until_closed(&mut over);
    held.shutdown(Shutdown::Write).expect("shutdown");
    let body = scrape_until_total(&metrics, "tcpkit_connections_closed_total", 1);
    assert_eq!(value(&body, "tcpkit_connection_duration_seconds_count"), 1);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls the endpoint until `series` reads `want`; the last body.
fn scrape_until(addr: &str, series: &str, want: u64) -> String {
    let start = Instant::now();
    loop {
        let body = scrape(addr);
        if value(&body, series) == want {
            return body;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{series} never reached {want}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(feature = "tls")]
#[test]
fn counts_a_failed_tls_handshake_by_reason() {
    let (_server, service, metrics) = start(&["--tls"]);
    // Plain text to a TLS server: a protocol failure, then the close.
    let mut s = TcpStream::connect(&service).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let body = scrape_until(
        &metrics,
        "tcpkit_connections_closed_total{reason=\"rejected\"}",
        1,
    );
    assert_eq!(total(&body, "tcpkit_connections_closed_total"), 1);
    assert_eq!(
        value(
            &body,
            "tcpkit_connections_rejected_total{reason=\"tls_protocol\"}"
        ),
        1
    );
    assert_eq!(value(&body, "tcpkit_tls_handshakes_total"), 0);
    for reason in [
        "tls_timeout",
        "tls_certificate",
        "tls_io",
        "max_connections",
    ] {
        let series = format!("tcpkit_connections_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&body, &series), 0, "{body}");
    }
}

/// Polls the endpoint until the sum of `family` reads `want`; the last body.
fn scrape_until_total(addr: &str, family: &str, want: u64) -> String {
    let start = Instant::now();
    loop {
        let body = scrape(addr);
        if total(&body, family) == want {
            return body;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{family} never reached {want}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn closed(body: &str, reason: &str) -> u64 {
    value(
        body,
        &format!("tcpkit_connections_closed_total{{reason=\"{reason}\"}}"),
    )
}

/// Reads until the server closes (EOF), or a reset ends it.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    rest
}

/// Echo with a 1 s idle timeout: 3 clients idle out, 2 close, 1 resets;
/// each shows under its reason, and the lifetimes in the histogram.
#[test]
fn counts_closes_by_reason_and_times_them() {
    let (_server, service, metrics) = start(&["--idle-timeout", "1s"]);
    let idle: Vec<TcpStream> = (0..3).map(|_| echo_round(&service, 1)).collect();
    for _ in 0..2 {
        let mut s = echo_round(&service, 10);
        s.shutdown(Shutdown::Write).expect("shutdown");
        read_until_closed(&mut s);
    }
    let reset = echo_round(&service, 10);
    socket2::SockRef::from(&reset)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(reset);
    // The server closes each idle client: EOF here.
    for mut s in idle {
        assert!(read_until_closed(&mut s).is_empty());
    }
    let body = scrape_until_total(&metrics, "tcpkit_connections_closed_total", 6);
    assert_eq!(closed(&body, "idle_timeout"), 3, "{body}");
    assert_eq!(closed(&body, "peer_closed"), 2, "{body}");
    assert_eq!(closed(&body, "error"), 1, "{body}");
    assert_eq!(
        value(
            &body,
            "tcpkit_connection_errors_total{kind=\"connection_reset\"}"
        ),
        1,
        "{body}"
    );
    for reason in ["done", "shutdown", "rejected", "line_too_long"] {
        assert_eq!(closed(&body, reason), 0, "{reason}: {body}");
    }
    assert_eq!(value(&body, "tcpkit_connection_duration_seconds_count"), 6);
    assert_eq!(
        value(
            &body,
            "tcpkit_connection_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        6
    );
    // The idle ones lived over the 1 s timeout; the others far less.
    assert!(
        value(&body, "tcpkit_connection_duration_seconds_bucket{le=\"1\"}") <= 3,
        "{body}"
    );
    let sum: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("tcpkit_connection_duration_seconds_sum "))
        .expect("a _sum sample")
        .parse()
        .expect("a number");
    assert!(sum >= 3.0, "{sum}: {body}");
    assert_eq!(value(&body, "tcpkit_connections_active"), 0);
}

fn chat_client(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut lines = BufReader::new(s.try_clone().expect("clone"));
    let mut welcome = String::new();
    lines.read_line(&mut welcome).expect("welcome");
    assert!(welcome.starts_with("* welcome"), "{welcome:?}");
    (s, lines)
}

/// Chat: one member stays in one room while others quit, send a line
/// over the limit or hang up; at SIGTERM the one left closes for shutdown
/// (in the exit summary, the endpoint being gone by then).
#[test]
fn counts_chat_rooms_members_and_closes() {
    let (mut server, service, metrics, mut stdout) = start_keeping_stdout(&[
        "--mode",
        "chat",
        "--max-line",
        "64",
        "--idle-timeout",
        "0",
        "--json",
    ]);
    let (_stays, _stays_lines) = chat_client(&service);
    let (mut quits, mut quits_lines) = chat_client(&service);
    quits.write_all(b"/join attic\n").expect("send /join");
    let mut line = String::new();
    while !line.starts_with("* you joined attic") {
        line.clear();
        assert_ne!(quits_lines.read_line(&mut line).expect("read"), 0);
    }
    let during = scrape(&metrics);
    assert_eq!(value(&during, "tcpkit_chat_rooms"), 2, "{during}");
    assert_eq!(value(&during, "tcpkit_chat_members"), 2, "{during}");
    quits.write_all(b"/quit\n").expect("send /quit");
    read_until_closed(&mut quits);
    let (mut long, _) = chat_client(&service);
    long.write_all(&[b'z'; 100]).expect("send a long line");
    long.write_all(b"\n").expect("send");
    read_until_closed(&mut long);
    let (hangs_up, mut hangs_up_lines) = chat_client(&service);
    hangs_up.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = String::new();
    let _ = hangs_up_lines.read_to_string(&mut rest);
    let body = scrape_until_total(&metrics, "tcpkit_connections_closed_total", 3);
    assert_eq!(closed(&body, "done"), 1, "{body}");
    assert_eq!(closed(&body, "line_too_long"), 1, "{body}");
    assert_eq!(closed(&body, "peer_closed"), 1, "{body}");
    assert_eq!(value(&body, "tcpkit_chat_rooms"), 1, "{body}");
    assert_eq!(value(&body, "tcpkit_chat_members"), 1, "{body}");
    assert_eq!(value(&body, "tcpkit_chat_slow_consumer_drops_total"), 0);
    assert_eq!(value(&body, "tcpkit_connections_active"), 1);

    assert!(server.terminate().success());
    let mut summary = String::new();
    stdout.read_line(&mut summary).expect("summary");
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("JSON summary");
    let closes = &summary["closes"];
    assert_eq!(closes["shutdown"], 1, "{summary}");
    assert_eq!(closes["done"], 1, "{summary}");
    assert_eq!(summary["connections_closed"], 4, "{summary}");
    assert_eq!(summary["chat_members"], 0, "{summary}");
    assert_eq!(summary["chat_rooms"], 0, "{summary}");
}
