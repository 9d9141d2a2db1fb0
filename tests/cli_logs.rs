//! `tcpkit serve` logs: each connection's close at `-v` (info) with peer,
//! duration, bytes both ways and reason, in text or as one JSON object a
//! line (`--log-format json`); nothing per connection without `-v`.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// A running `serve`: killed by PID on drop; its stderr lines arrive on
/// `lines` (read on a thread until the process closes it).
struct Serve {
    child: Child,
    service: String,
    lines: Receiver<String>,
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
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpkit serve");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut first = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut first).expect("read stdout");
        let service = first
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("no listening line: {first:?}"))
            .to_string();
        // The summary goes to stdout at exit: drain it so it never blocks.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        Serve {
            child,
            service,
            lines,
        }
    }

    /// The next stderr line that `pick` accepts (earlier ones go to
    /// `seen`); panics after the deadline.
    fn wait_for(&self, seen: &mut Vec<String>, pick: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no such line on stderr; saw:\n{}", seen.join("\n")));
            if pick(&line) {
                return line;
            }
            seen.push(line);
        }
    }

    /// SIGTERM, then every stderr line until the process exits.
    fn stop(mut self) -> Vec<String> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
        let mut rest = Vec::new();
        let start = Instant::now();
        // The reader thread ends (and the channel closes) at the process's
        // exit; a process that does not exit fails the test and is killed
        // on drop.
        let status = loop {
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                rest.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "serve did not exit: {rest:?}");
        };
        // Lines written just before the exit.
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            rest.push(line);
        }
        assert!(status.success(), "serve after SIGTERM: {status:?}");
        rest
    }
}

/// `n` bytes echoed back, then a half-close and the server's EOF: one
/// `peer_closed` close of `n` bytes each way. The client's address.
fn echo_and_close(addr: &str, n: usize) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    s.write_all(&data).expect("send");
    let mut back = vec![0; n];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, data);
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty());
    s.local_addr().expect("local addr").to_string()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn json_lines_parse_and_the_close_has_peer_duration_bytes_and_reason() {
    let serve = Serve::start(&["-v", "--log-format", "json"]);
    let peer = echo_and_close(&serve.service, 1000);
    let other = echo_and_close(&serve.service, 3);
    let mut seen = Vec::new();
    let close = serve.wait_for(&mut seen, |l| {
        json(l)["message"] == "connection closed" && json(l)["peer"] == peer.as_str()
    });
    let close = json(&close);
    assert_eq!(close["level"], "INFO", "{close}");
    assert_eq!(close["bytes_in"], 1000, "{close}");
    assert_eq!(close["bytes_out"], 1000, "{close}");
    assert_eq!(close["close"], "peer_closed", "{close}");
    assert_eq!(close["reason"], "peer closed", "{close}");
    let duration = close["duration_s"]
        .as_f64()
        .expect("duration_s is a number");
    assert!((0.0..30.0).contains(&duration), "{close}");
    assert!(close["timestamp"].is_string(), "{close}");
    let close = serve.wait_for(&mut seen, |l| json(l)["peer"] == other.as_str());
    assert_eq!(json(&close)["bytes_in"], 3, "{close}");
    // Every line, to the last one at exit, is one JSON object.
    for line in seen.iter().chain(&serve.stop()) {
        let v = json(line);
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}

#[test]
fn text_close_line_at_v_and_none_without() {
    let serve = Serve::start(&["-v"]);
    let peer = echo_and_close(&serve.service, 1000);
    let mut seen = Vec::new();
    let close = serve.wait_for(&mut seen, |l| {
        l.contains("connection closed") && l.contains(&format!("peer={peer} "))
    });
    for field in [
        " INFO ",
        "bytes_in=1000 ",
        "bytes_out=1000 ",
        "close=\"peer_closed\"",
        "duration_s=",
    ] {
        assert!(close.contains(field), "{field} missing: {close}");
    }
    drop(serve);

    // Without -v: the same traffic, and no line per connection.
    let serve = Serve::start(&[]);
    echo_and_close(&serve.service, 1000);
    let lines = serve.stop();
    assert!(
        !lines.iter().any(|l| l.contains("connection closed")),
        "{lines:?}"
    );
}

#[test]
fn a_client_over_the_limit_gets_a_close_line_too() {
    let serve = Serve::start(&["-v", "--log-format", "json", "--max-connections", "1"]);
    let mut held = TcpStream::connect(&serve.service).expect("connect");
    held.set_read_timeout(Some(DEADLINE)).expect("timeout");
    // Its echo shows the server took it (and its one slot).
    held.write_all(b"x").expect("send");
    let mut one = [0u8; 1];
    held.read_exact(&mut one).expect("echo");
    let mut over = TcpStream::connect(&serve.service).expect("connect");
    over.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let peer = over.local_addr().expect("addr").to_string();
    over.write_all(b"y").expect("send");
    let mut rest = Vec::new();
    let _ = over.read_to_end(&mut rest);
    let mut seen = Vec::new();
    let close = serve.wait_for(&mut seen, |l| {
        json(l)["message"] == "connection closed" && json(l)["peer"] == peer.as_str()
    });
    let close = json(&close);
    assert_eq!(close["close"], "rejected", "{close}");
    let reason = close["reason"].as_str().expect("reason");
    assert!(reason.starts_with("max_connections"), "{reason}");
}

#[test]
fn a_failed_start_is_one_json_error_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = taken.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(["serve", "--log-format", "json", "--listen", &at])
        .stdin(Stdio::null())
        .output()
        .expect("run tcpkit serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let v = json(lines[0]);
    assert_eq!(v["level"], "ERROR", "{v}");
    let message = v["message"].as_str().expect("message");
    assert!(message.contains(&at), "{message}");
}

/// A plain-text client to a TLS server: the refused handshake's close is
/// logged like every other, with its reason.
#[cfg(feature = "tls")]
#[test]
fn a_failed_tls_handshake_logs_its_close() {
    let serve = Serve::start(&["-v", "--tls", "--log-format", "json"]);
    let mut s = TcpStream::connect(&serve.service).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let peer = s.local_addr().expect("addr").to_string();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("send");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let mut seen = Vec::new();
    let close = serve.wait_for(&mut seen, |l| {
        json(l)["message"] == "connection closed" && json(l)["peer"] == peer.as_str()
    });
    let close = json(&close);
    assert_eq!(close["close"], "rejected", "{close}");
    assert_eq!(
        (&close["bytes_in"], &close["bytes_out"]),
        (&0.into(), &0.into())
    );
    let reason = close["reason"].as_str().expect("reason");
    assert!(reason.starts_with("tls_protocol: "), "{reason}");
}
