//! `tcpkit bench` end to end: the binary against in-test echo servers on
//! loopback port 0, some of which damage the stream on purpose.
// Runs the `tcpkit` binary, which the `cli` feature builds.
#![cfg(feature = "cli")]

mod common;
#[cfg(feature = "tls")]
mod tls_echo;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the in-test server does to the first connection it accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Flip one bit of the byte at stream offset 100.
    Corrupt,
    /// Leave out the byte at stream offset 100.
    Drop,
    /// Swap the bytes at stream offsets 100 and 101.
    Reorder,
    /// Echo up to stream offset 100, then reset the connection (`SO_LINGER`
    /// 0 and close: an RST, as from a server killed mid-run).
    Reset,
}

const FAULT_OFFSET: usize = 100;

/// A thread-per-connection echo server that stops (and joins) on drop.
struct EchoServer {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// The most connections open at once.
    peak_open: Arc<AtomicUsize>,
    /// The client address of the connection the fault hit.
    faulted_peer: Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(fault: Fault) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let peak_open = Arc::new(AtomicUsize::new(0));
        let (accepted2, peak2) = (accepted.clone(), peak_open.clone());
        let faulted_peer = Arc::new(std::sync::Mutex::new(None));
        let faulted2 = faulted_peer.clone();
        let open = Arc::new(AtomicUsize::new(0));
        let acceptor = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let n = accepted2.fetch_add(1, Ordering::Relaxed);
                        if n == 0 {
                            *faulted2.lock().unwrap() = Some(peer);
                        }
                        let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
                        peak2.fetch_max(now_open, Ordering::Relaxed);
                        let fault = if n == 0 { fault } else { Fault::None };
                        let (stop, open) = (stop2.clone(), open.clone());
                        conns.push(std::thread::spawn(move || {
                            echo(stream, fault, &stop);
                            open.fetch_sub(1, Ordering::Relaxed);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        EchoServer {
            port,
            stop,
            accepted,
            peak_open,
            faulted_peer,
            acceptor: Some(acceptor),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn echo(mut stream: TcpStream, fault: Fault, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    stream.set_nodelay(true).unwrap();
    // A short read timeout so the thread notices `stop` when the client idles.
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut offset = 0usize;
    let mut pending_swap: Option<u8> = None;
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        let mut out = Vec::with_capacity(n + 1);
        for &b in &buf[..n] {
            let at = offset;
            offset += 1;
            match fault {
                Fault::Corrupt if at == FAULT_OFFSET => out.push(b ^ 0x01),
                Fault::Drop if at == FAULT_OFFSET => {}
                Fault::Reset if at == FAULT_OFFSET => {
                    let _ = stream.write_all(&out);
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    return;
                }
                Fault::Reorder if at == FAULT_OFFSET => pending_swap = Some(b),
                Fault::Reorder if at == FAULT_OFFSET + 1 => {
                    out.push(b);
                    out.extend(pending_swap.take());
                }
                _ => out.push(b),
            }
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn bench(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run tcpkit bench");
    eprintln!(
        "tcpkit bench {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

const SHORT: [&str; 4] = ["--duration", "1s", "--warmup", "0s"];

fn assert_verification_failure(fault: Fault) {
    let server = EchoServer::start(fault);
    let addr = server.addr();
    let mut args = vec!["--target", &addr, "--connections", "2", "--threads", "1"];
    args.extend(SHORT);
    let out = bench(&args);
    assert_eq!(
        out.status.code(),
        Some(8),
        "exit code 8 on a verification failure"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[code 1009]"), "{stderr}");
    assert!(stderr.contains("byte at stream offset 100"), "{stderr}");
    assert!(stderr.contains("connection "), "{stderr}");
    // The report still reaches stdout.
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 verification"));
}

#[test]
fn a_corrupted_byte_fails_with_exit_8_naming_connection_and_offset() {
    assert_verification_failure(Fault::Corrupt);
}

#[test]
fn a_dropped_byte_fails_verification() {
    assert_verification_failure(Fault::Drop);
}

#[test]
fn reordered_bytes_fail_verification() {
    assert_verification_failure(Fault::Reorder);
}

/// One of four connections reset mid-run: the other three run to the end,
/// and the report names exactly the broken one by the local address the
/// server saw, with the bytes verified before it broke; exit 6 unless
/// `--allow-broken`.
#[test]
fn a_reset_connection_is_reported_alone_with_its_local_address() {
    let server = EchoServer::start(Fault::Reset);
    let addr = server.addr();
    let mut args = vec!["--target", &addr, "-c", "4", "--threads", "1", "--json"];
    args.extend(SHORT);
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(6), "exit 6: a connection broke");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 connection(s) broke mid-run"), "{stderr}");
    let v = json(&out);
    let peer = server
        .faulted_peer
        .lock()
        .unwrap()
        .expect("a connection was accepted");
    assert_eq!(v["broken_connections"], 1, "{v}");
    let broken = v["broken"].as_array().expect("a list");
    assert_eq!(broken.len(), 1, "{v}");
    assert_eq!(broken[0]["local"], peer.to_string(), "{v}");
    // One 64-byte message echoed whole; the next up to offset 100 at most.
    let verified = broken[0]["verified_bytes"].as_u64().unwrap();
    assert!((64..=FAULT_OFFSET as u64).contains(&verified), "{v}");
    assert!(broken[0]["error"].as_str().unwrap().contains(&addr), "{v}");
    assert_eq!(v["errors"], 1, "{v}");
    assert_eq!(v["verification_failures"], 0, "{v}");
    assert_eq!(v["connections_established"], 4, "{v}");
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
    // The table names it too; --allow-broken makes the same run exit 0.
    let server = EchoServer::start(Fault::Reset);
    let addr = server.addr();
    let mut args = vec![
        "--target",
        &addr,
        "-c",
        "4",
        "--threads",
        "1",
        "--allow-broken",
    ];
    args.extend(SHORT);
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(0));
    let peer = server.faulted_peer.lock().unwrap().expect("accepted");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("broken       1: "), "{table}");
    assert!(table.contains(&format!(" from {peer}")), "{table}");
}

#[test]
fn json_has_every_field() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    // The in-test server runs in this process, so its PID is ours.
    let pid = std::process::id().to_string();
    let mut args = vec!["--target", &addr, "-c", "4", "--json", "--server-pid", &pid];
    args.extend(SHORT);
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    for field in [
        "mode",
        "target",
        "connections",
        "size_bytes",
        "pipeline",
        "rate_per_s",
        "sends_in_window",
        "threads",
        "warmup_s",
        "duration_s",
        "messages",
        "bytes",
        "msgs_per_s",
        "mb_per_s",
        "latency_of",
        "latency_us",
        "connections_established",
        "connect_failures",
        "errors",
        "verification_failures",
        "error_samples",
        "first_verification_failure",
        "broken_connections",
        "broken",
        "server_pid",
        "server_cpu_us_per_msg",
        "server_cpu_pct",
        "server_rss_kib",
        "server_rss_per_conn_kib",
        "client_cpu_us_per_msg",
        "client_cpu_pct",
        "idle_connections",
        "idle_connections_established",
        "idle_connect_failures",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {v}");
    }
    for p in ["count", "min", "mean", "p50", "p90", "p99", "p999", "max"] {
        assert!(v["latency_us"][p].is_number(), "latency_us.{p} in {v}");
    }
    assert_eq!(v["mode"], "echo");
    assert_eq!(v["errors"], 0);
    assert!(v["messages"].as_u64().unwrap() > 0);
    assert!(v["server_cpu_us_per_msg"].is_number(), "{v}");
    assert!(v["server_rss_kib"].as_u64().unwrap() > 0);
    assert_eq!(v["latency_us"]["count"], v["messages"]);
}

#[test]
fn open_loop_hits_its_rate_within_5_percent() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let args = [
        "--target",
        &addr,
        "-c",
        "4",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--threads",
        "1",
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    let rate = v["msgs_per_s"].as_f64().unwrap();
    assert!(
        (rate - 2000.0).abs() <= 100.0,
        "msgs/s {rate} not within 5% of 2000"
    );
    // msgs/s counts echoes by their scheduled send time, so it holds even
    // for a sender that fell behind: the sends really made must keep up.
    let sent = v["sends_in_window"].as_u64().expect("sends_in_window") as f64;
    let sent_rate = sent / v["duration_s"].as_f64().unwrap();
    assert!(
        (sent_rate - 2000.0).abs() <= 100.0,
        "{sent} sends made in the window: {sent_rate}/s, not within 5% of 2000"
    );
    assert_eq!(v["rate_per_s"], 2000.0);
    assert_eq!(v["errors"], 0);
}

#[test]
fn pipelined_echo_verifies() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let mut args = vec![
        "--target",
        &addr,
        "-c",
        "2",
        "--pipeline",
        "8",
        "--size",
        "100",
        "--json",
    ];
    args.extend(SHORT);
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["pipeline"], 8);
    assert_eq!(v["verification_failures"], 0);
    assert!(v["messages"].as_u64().unwrap() > 0);
}

#[test]
fn connect_mode_counts_connections() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let args = [
        "--target",
        &addr,
        "--mode",
        "connect",
        "-c",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["latency_of"], "connect");
    assert!(v["connections_established"].as_u64().unwrap() > 10, "{v}");
}

#[test]
fn idle_mode_reports_rss_per_connection() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let pid = std::process::id().to_string();
    let args = [
        "--target",
        &addr,
        "--mode",
        "idle",
        "-c",
        "20",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--server-pid",
        &pid,
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["connections_established"], 20);
    assert!(v["server_rss_per_conn_kib"].is_number(), "{v}");
}

#[test]
fn idle_connections_are_held_beside_the_active_ones() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let args = [
        "--target",
        &addr,
        "-c",
        "4",
        "--idle-connections",
        "200",
        "--duration",
        "300ms",
        "--warmup",
        "100ms",
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["idle_connections"], 200, "{v}");
    assert_eq!(v["idle_connections_established"], 200, "{v}");
    assert_eq!(v["idle_connect_failures"], 0, "{v}");
    assert_eq!(v["connections_established"], 4, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    // Only the active connections' round trips count, not the idle bytes.
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["latency_us"]["count"], v["messages"]);
    // The server saw every connection, all open at once (idle ones held).
    assert_eq!(server.accepted.load(Ordering::Relaxed), 204);
    assert_eq!(server.peak_open.load(Ordering::Relaxed), 204);
}

#[test]
fn idle_connections_need_echo_mode() {
    let out = bench(&[
        "--mode",
        "connect",
        "--idle-connections",
        "5",
        "-t",
        // Never dialed: the flag is refused before any connection.
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--idle-connections"), "{err}");
}

#[test]
fn histogram_and_plot_files_are_written() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("h.txt");
    let plot = dir.path().join("p.svg");
    let (h, p) = (hist.to_str().unwrap(), plot.to_str().unwrap());
    let mut args = vec!["--target", &addr, "-c", "2", "--histogram", h, "--plot", p];
    args.extend(["--duration", "300ms", "--warmup", "0s"]);
    let out = bench(&args);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&hist).unwrap();
    assert!(
        text.contains("Percentile") && text.contains("#[Max"),
        "{text}"
    );
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
}

#[test]
fn a_message_smaller_than_the_header_is_a_usage_error() {
    let out = bench(&["--target", "127.0.0.1:0", "--size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 B minimum"));
}

#[test]
fn a_bad_flag_fails_before_any_server_starts() {
    // Without --target bench would start `tcpkit serve`; validation comes first.
    let out = bench(&["--pipeline", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline 0"));
}

#[test]
fn a_refused_target_fails_naming_it() {
    // Bind then drop to find a port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = bench(&[
        "--target",
        &addr,
        "-c",
        "1",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
    ]);
    assert_eq!(out.status.code(), Some(4), "exit 4: connection refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

#[test]
fn without_target_bench_starts_serve_measures_it_and_stops_it() {
    let args = [
        "-c",
        "2",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--server-workers",
        "1",
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
    assert!(v["server_cpu_us_per_msg"].is_number(), "{v}");
    let pid = v["server_pid"].as_u64().expect("embedded server pid");
    // Stopped with SIGTERM and reaped before bench exited.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// `--server-engine per-core`: the embedded server runs two lanes (serve
/// would refuse an engine name it does not know, failing the bench).
#[test]
fn the_embedded_server_can_run_the_per_core_engine() {
    let out = bench(&[
        "-c",
        "8",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--server-workers",
        "2",
        "--server-engine",
        "per-core",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"].as_u64(), Some(0), "{v}");
    let out = bench(&["--server-engine", "per-core", "-t", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "--server-engine with --target");
}

#[test]
fn throughput_mode_writes_one_way() {
    // Against an echo server the reader drains what comes back.
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let args = [
        "--target",
        &addr,
        "--mode",
        "throughput",
        "-c",
        "1",
        "-s",
        "4096",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["latency_of"], "write");
    assert!(v["mb_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn throughput_mode_starts_a_discard_server() {
    let args = [
        "--mode",
        "throughput",
        "-c",
        "1",
        "-s",
        "65536",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["server_pid"].is_number(), "{v}");
}

// ---- forking servers: CPU counted over the process tree ----

/// `socat TCP-LISTEN:0,fork EXEC:cat`: an echo server that forks a socat
/// and a `cat` per connection and does no work in its own PID. It runs in
/// a process group of its own, killed (children included) on drop.
struct ForkingEcho {
    child: std::process::Child,
    port: u16,
}

impl ForkingEcho {
    fn start() -> ForkingEcho {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("socat")
            .args(["-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,fork", "EXEC:cat"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn socat");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the port from `N listening on AF=2 127.0.0.1:PORT`, then
        // keeps draining so socat never blocks on its log.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(port) = line
                    .split("listening on AF=2 127.0.0.1:")
                    .nth(1)
                    .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(30));
        let mut server = ForkingEcho { child, port: 0 };
        server.port = port.expect("socat prints `listening on ... :PORT` within 30 s");
        server
    }
}

impl Drop for ForkingEcho {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[test]
fn a_forking_servers_cpu_is_counted_over_its_process_tree() {
    if !common::have_program("socat") {
        return;
    }
    let server = ForkingEcho::start();
    let addr = format!("127.0.0.1:{}", server.port);
    let pid = server.child.id().to_string();
    let args = [
        "--target",
        &addr,
        "-c",
        "4",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--server-pid",
        &pid,
        "--json",
    ];
    let out = bench(&args);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
    // socat and a socat child per connection at least (and each child's
    // cat, once it has echoed).
    let processes = v["server_processes"].as_u64().unwrap();
    assert!(processes > 4, "{v}");
    // All the echo work is in the children: 0 here means they were missed.
    assert!(v["server_cpu_us_per_msg"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_note"].is_null(), "{v}");
}

#[test]
fn idle_mode_reports_its_one_byte_probe_not_the_message_size() {
    let server = EchoServer::start(Fault::None);
    let addr = server.addr();
    let mut args = vec!["--target", &addr, "--mode", "idle", "-c", "3"];
    args.extend(["--duration", "200ms", "--warmup", "0s"]);
    let table = bench(&args);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("× 3 conns, each echoes 1 B once, then is held silent"),
        "{table}"
    );
    assert!(!table.contains("64 B"), "{table}");
    args.push("--json");
    let v = json(&bench(&args));
    assert_eq!(v["size_bytes"], 1, "{v}");
    assert_eq!(v["bytes"], 3, "{v}");
}

/// On a terminal, the progress bar says the warm-up is the warm-up (its
/// messages are not counted) before it shows a rate. `script(1)` gives the
/// bench a terminal.
#[test]
fn the_progress_bar_names_the_warm_up() {
    if !common::have_program("script") {
        return;
    }
    let server = EchoServer::start(Fault::None);
    let command = format!(
        "'{}' bench --target {} -c 2 --warmup 1s --duration 300ms",
        env!("CARGO_BIN_EXE_tcpkit"),
        server.addr()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let warm_up = text.find("warm-up, ").unwrap_or(usize::MAX);
    let rate = text.find(" msgs/s").unwrap_or(usize::MAX);
    assert!(
        warm_up < rate,
        "the bar shows a rate before the warm-up:\n{text}"
    );
    // The report follows the bar on the terminal.
    assert!(
        text.contains("window       0.3 s after 1.0 s warm-up"),
        "{text}"
    );
}

/// `bench --tls` against a tokio-rustls echo server in this process (its
/// certificate pinned): every mode over TLS, handshakes counted and timed.
#[cfg(feature = "tls")]
mod tls {
    use super::{SHORT, bench, json};

    use super::tls_echo::{EchoServer, Pki, ServerOpts, Validity, echo_server};

    fn server() -> (Pki, EchoServer, String) {
        let pki = Pki::new();
        let leaf = pki.leaf("server", "localhost", &["localhost"], Validity::Valid);
        let server = echo_server(&leaf, ServerOpts::default());
        let fp = tcpkit::tls::fingerprint(&leaf.chain[0]);
        (pki, server, fp)
    }

    fn run(server: &EchoServer, fp: &str, extra: &[&str]) -> serde_json::Value {
        let addr = format!("127.0.0.1:{}", server.port);
        let mut args = vec!["--target", &addr, "--pin", fp, "--json", "--threads", "1"];
        args.extend(SHORT);
        args.extend_from_slice(extra);
        let out = bench(&args);
        assert_eq!(out.status.code(), Some(0));
        json(&out)
    }

    #[test]
    fn echo_over_tls_verifies_and_shakes_hands_once_per_connection() {
        let (_pki, server, fp) = server();
        let v = run(&server, &fp, &["-c", "4", "-k", "4"]);
        assert_eq!(v["tls"], true);
        assert_eq!(v["errors"], 0, "{v}");
        assert_eq!(v["verification_failures"], 0);
        assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["handshakes"], 4, "{v}");
        assert!(v["handshake_latency_us"]["p50"].as_f64().unwrap() > 0.0);
        for p in ["p50", "p90", "p99", "max"] {
            assert!(v["handshake_latency_us"][p].is_number(), "{p}: {v}");
        }
        // Not connect mode: no rate of handshakes to speak of.
        assert!(v["handshakes_per_s"].is_null(), "{v}");
    }

    #[test]
    fn connect_mode_makes_full_handshakes_unless_resuming() {
        let (_pki, server, fp) = server();
        let v = run(&server, &fp, &["-m", "connect", "-c", "2"]);
        let full = v["handshakes"].as_u64().unwrap();
        assert!(full > 0, "{v}");
        assert_eq!(v["resumed_handshakes"], 0, "{v}");
        assert!(v["handshakes_per_s"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(v["latency_of"], "connect + TLS handshake");
        assert_eq!(v["errors"], 0, "{v}");

        let v = run(&server, &fp, &["-m", "connect", "-c", "2", "--tls-resume"]);
        let resumed = v["resumed_handshakes"].as_u64().unwrap();
        // Only the first connection of each slot needs a full handshake.
        assert!(
            resumed + 2 >= v["handshakes"].as_u64().unwrap() && resumed > 0,
            "{v}"
        );
    }

    #[test]
    fn idle_and_throughput_modes_run_over_tls() {
        let (_pki, server, fp) = server();
        let v = run(&server, &fp, &["-m", "idle", "-c", "20"]);
        assert_eq!(v["connections_established"], 20, "{v}");
        assert_eq!(v["handshakes"], 20, "{v}");
        let v = run(
            &server,
            &fp,
            &["-m", "throughput", "-c", "2", "-s", "16384"],
        );
        assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["handshakes"], 2, "{v}");
        // Echo with idle TLS connections beside the active ones.
        let v = run(&server, &fp, &["-c", "2", "--idle-connections", "10"]);
        assert_eq!(v["idle_connections_established"], 10, "{v}");
        assert_eq!(v["handshakes"], 12, "{v}");
    }

    #[test]
    fn a_wrong_pin_fails_with_the_certificate_exit_code() {
        let (pki, server, _) = server();
        let wrong = tcpkit::tls::fingerprint(&pki.ca_cert);
        let addr = format!("127.0.0.1:{}", server.port);
        let mut args = vec!["--target", &addr, "--pin", &wrong, "-c", "2"];
        args.extend(SHORT);
        let out = bench(&args);
        assert_eq!(out.status.code(), Some(9));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("not the pinned one"), "{stderr}");
    }
}

/// Without --target, `bench --tls` starts `serve --tls` and pins the
/// fingerprint it prints: handshakes counted, the server's CPU per
/// handshake measured.
#[cfg(feature = "tls")]
#[test]
fn the_embedded_server_serves_tls_and_is_pinned() {
    let mut args = vec![
        "--tls",
        "-m",
        "connect",
        "-c",
        "2",
        "--json",
        "--threads",
        "1",
    ];
    args.extend(SHORT);
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["tls"], true);
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["handshakes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["resumed_handshakes"], 0, "{v}");
    assert!(
        v["server_cpu_us_per_handshake"].as_f64().unwrap() > 0.0,
        "{v}"
    );

    let mut args = vec!["--tls", "-c", "2", "--json", "--threads", "1"];
    args.extend(SHORT);
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["verification_failures"], 0, "{v}");
    assert_eq!(v["handshakes"], 2, "{v}");
    assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
}
