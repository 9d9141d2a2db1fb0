//! `tcpkit serve --metrics`: the Prometheus endpoint after known traffic
//! shows exactly that traffic, and `promtool check metrics` accepts it.
#![cfg(all(feature = "cli", feature = "metrics"))]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// The server process, killed by PID on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` with `--metrics 127.0.0.1:0`; returns the process, the
/// service address and the metrics address.
fn start(extra: &[&str]) -> (Proc, String, String) {
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
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read stdout");
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
    (proc, service, metrics)
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
        if value(&body, "tcpkit_connections_closed_total") == 3 {
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
    assert_eq!(value(&after, "tcpkit_idle_timeouts_total"), 0);
    assert_eq!(value(&after, "tcpkit_slow_consumer_drops_total"), 0);
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
    let (_server, service, metrics) = start(&[]);
    drop(echo_round(&service, 10));
    let body = scrape(&metrics);
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
    let body = scrape_until(&metrics, "tcpkit_connections_closed_total", 1);
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
