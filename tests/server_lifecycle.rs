//! Limits and lifecycle: max connections, idle timeout, graceful shutdown
//! (library handle and the real binary under SIGTERM), startup errors.
// Runs the `tcpkit` binary, which the `cli` feature builds.
#![cfg(feature = "cli")]

mod server_util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server_util::{DEADLINE, LineClient, start, within};
use tcpkit::server::{Engine, ServerBuilder};
use tcpkit::service::{Chat, Echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn echo_round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    within(DEADLINE, "echo", stream.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back, msg);
}

/// Reads until EOF or reset; returns what arrived first.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = within(DEADLINE, "server closes", stream.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn max_connections_rejects_the_extra_client_and_counts_it() {
    let server = start(ServerBuilder::new().max_connections(2), Echo);
    let mut a = TcpStream::connect(server.addr).await.unwrap();
    let mut b = TcpStream::connect(server.addr).await.unwrap();
    echo_round_trip(&mut a, b"a").await;
    echo_round_trip(&mut b, b"b").await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    assert!(read_until_closed(&mut c).await.is_empty());
    server
        .wait_for("rejection counted", |s| s.connections_rejected == 1)
        .await;
    // Existing clients are unaffected; a freed slot is usable again.
    echo_round_trip(&mut a, b"still").await;
    drop(b);
    server
        .wait_for("b closed", |s| s.connections_active == 1)
        .await;
    let mut d = TcpStream::connect(server.addr).await.unwrap();
    echo_round_trip(&mut d, b"d").await;
    drop((a, d));
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.connections_accepted, 3);
    assert_eq!(summary.snapshot.connections_rejected, 1);
    assert!(summary.to_string().contains("1 rejected"), "{summary}");
}

/// On the per-core engine the limit is the server's, not each lane's: of
/// 12 clients spread over 2 lanes by the kernel's hash, exactly 4 are
/// served (a per-lane limit would serve up to 8).
#[tokio::test]
async fn per_core_lanes_share_one_connection_limit() {
    let server = start(
        ServerBuilder::new()
            .max_connections(4)
            .workers(2)
            .engine(Engine::PerCore),
        Echo,
    );
    let mut served = Vec::new();
    let mut rejected = 0;
    for i in 0..12u8 {
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        c.write_all(&[i]).await.unwrap();
        let mut back = [0u8; 1];
        match within(DEADLINE, "echo or close", c.read(&mut back)).await {
            Ok(1) => {
                assert_eq!(back[0], i);
                served.push(c);
            }
            // Closed at once (EOF, or a reset because our byte was unread).
            Ok(_) | Err(_) => rejected += 1,
        }
    }
    assert_eq!((served.len(), rejected), (4, 8));
    server
        .wait_for("rejections counted", |s| s.connections_rejected == 8)
        .await;
    drop(served);
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.connections_accepted, 4);
}

#[tokio::test]
async fn chat_tells_a_rejected_client_why() {
    let server = start(ServerBuilder::new().max_connections(1), Chat::new());
    let mut first = LineClient::connect(server.addr).await;
    first.recv().await.expect("welcome");
    let mut second = LineClient::connect(server.addr).await;
    let line = second.recv().await.expect("reason line");
    assert!(line.starts_with("* server full"), "{line}");
    assert_eq!(second.recv().await, None);
    drop(first);
    server.stop().await;
}

#[tokio::test]
async fn idle_timeout_closes_silent_connections_only() {
    // Generous against a loaded CI machine: a ping every 100 ms must never
    // look like a second of silence.
    let idle = Duration::from_secs(1);
    let server = start(ServerBuilder::new().idle_timeout(Some(idle)), Echo);
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut chatty = TcpStream::connect(server.addr).await.unwrap();
    echo_round_trip(&mut silent, b"x").await;
    let started = Instant::now();
    // The silent one's close is timed while the chatty one talks.
    let silent_closed = tokio::spawn(async move {
        let got = read_until_closed(&mut silent).await;
        (got, started.elapsed())
    });
    // The chatty one talks every 100 ms for 2.5 idle periods and stays open.
    while started.elapsed() < idle * 5 / 2 {
        echo_round_trip(&mut chatty, b"ping").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (got, closed_after) = silent_closed.await.expect("silent reader");
    assert!(got.is_empty(), "{got:?}");
    // About one idle period after its last byte: not at once, and while the
    // chatty one was still talking (its traffic kept no one else alive).
    assert!(
        closed_after >= idle / 2 && closed_after < idle * 5 / 2,
        "silent closed {closed_after:?} after its last byte (idle {idle:?})"
    );
    echo_round_trip(&mut chatty, b"alive").await;
    server
        .wait_for("idle timeout counted", |s| s.idle_timeouts == 1)
        .await;
    drop(chatty);
    server.stop().await;
}

#[tokio::test]
async fn deferred_accept_still_times_out_a_silent_client() {
    // With TCP_DEFER_ACCEPT (the CLI's default for echo) a client that never
    // sends is handed over by the kernel after about a second: it is then
    // served by the idle timeout like any other, not left in the backlog.
    let idle = Duration::from_millis(300);
    let server = start(
        ServerBuilder::new()
            .idle_timeout(Some(idle))
            .defer_accept(true),
        Echo,
    );
    let mut talker = TcpStream::connect(server.addr).await.unwrap();
    echo_round_trip(&mut talker, b"first bytes complete the accept").await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    assert!(read_until_closed(&mut silent).await.is_empty());
    let waited = started.elapsed();
    assert!(waited >= idle, "{waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    server
        .wait_for("idle timeouts counted", |s| s.idle_timeouts == 2)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_echo_data() {
    let server = start(ServerBuilder::new().shutdown_grace(DEADLINE), Echo);
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Accepted, not merely queued: a client still in the backlog when the
    // listener closes is reset, by design.
    server
        .wait_for("accepted", |s| s.connections_accepted == 1)
        .await;
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    stream.write_all(&data).await.unwrap();
    // Shut down with the echo still in flight, before reading any of it.
    server.handle.shutdown();
    let mut back = vec![0u8; data.len()];
    within(DEADLINE, "drained echo", stream.read_exact(&mut back))
        .await
        .unwrap();
    assert!(back == data, "echoed bytes differ");
    // The listener closed first: nobody new gets in.
    let refused = within(DEADLINE, "connect after shutdown", TcpStream::connect(addr)).await;
    assert!(refused.is_err(), "listener still accepting after shutdown");
    stream.shutdown().await.unwrap();
    let summary = server.stop().await;
    assert_eq!(summary.aborted, 0);
    assert_eq!(summary.snapshot.bytes_out, data.len() as u64);
}

#[tokio::test]
async fn shutdown_now_closes_connections_at_once() {
    let server = start(
        ServerBuilder::new().shutdown_grace(Duration::from_secs(60)),
        Chat::new(),
    );
    let mut c = LineClient::connect(server.addr).await;
    c.recv().await.expect("welcome");
    server.handle.shutdown_now();
    let started = Instant::now();
    let summary = server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(summary.snapshot.connections_active, 0);
}

#[tokio::test]
async fn wildcard_listen_is_dual_stack_or_falls_back_to_ipv4() {
    let server = ServerBuilder::new()
        .listen(tcpkit::Endpoint::any_v6(0))
        .bind()
        .expect("bind the wildcard");
    let local = server.local_endpoint();
    assert!(local.is_unspecified(), "{local}");
    let handle = server.handle();
    let task = tokio::spawn(server.run(Echo));
    // An IPv4 client reaches it either way: through the v4-mapped dual-stack
    // socket, or the 0.0.0.0 fallback on hosts without IPv6.
    let mut v4 = TcpStream::connect(("127.0.0.1", local.port()))
        .await
        .unwrap();
    echo_round_trip(&mut v4, b"over IPv4").await;
    drop(v4);
    handle.shutdown();
    within(DEADLINE, "server stops", task)
        .await
        .unwrap()
        .unwrap();
}

/// Runs the real binary, returning it and a channel of its stdout lines.
fn spawn_binary(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpkit");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the process under the deadline, killing it if it overruns.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tcpkit did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_drains_and_exits_zero_on_sigterm() {
    // Default workers (one per core): the multi-threaded runtime.
    drains_and_exits_zero_on_sigterm(&[]);
}

#[test]
fn binary_on_the_per_core_engine_drains_and_exits_zero_on_sigterm() {
    drains_and_exits_zero_on_sigterm(&["--engine", "per-core", "--workers", "2"]);
}

/// `--json`: the same contract line, then the summary as one JSON object
/// whose counters add up.
#[test]
fn binary_json_summary_is_one_object_with_the_counters() {
    let (mut child, lines) = spawn_binary(&["serve", "--listen", "127.0.0.1:0", "--json"]);
    let first = lines.recv_timeout(DEADLINE).expect("listening line");
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let mut client = std::net::TcpStream::connect(&addr).expect("connect");
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut back = [0u8; 5];
    std::io::Write::write_all(&mut client, b"hello").unwrap();
    std::io::Read::read_exact(&mut client, &mut back).expect("echo");
    drop(client);
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(wait_exit(&mut child).success());
    let rest: Vec<String> = lines.try_iter().collect();
    assert_eq!(rest.len(), 1, "one summary line: {rest:?}");
    let v: serde_json::Value = serde_json::from_str(&rest[0]).expect("JSON summary");
    assert_eq!(v["connections_accepted"], 1, "{v}");
    assert_eq!(v["bytes_in"], 5, "{v}");
    assert_eq!(v["bytes_out"], 5, "{v}");
    assert_eq!(v["aborted"], 0, "{v}");
    assert!(v["duration_s"].as_f64().is_some_and(|s| s > 0.0), "{v}");
}

fn drains_and_exits_zero_on_sigterm(extra: &[&str]) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (mut child, lines) = spawn_binary(&args);
    let first = lines.recv_timeout(DEADLINE).expect("listening line");
    let rest = first
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let (port, tail) = rest.split_once(' ').expect("port then mode");
    assert_eq!(tail, "(echo, backlog 30)");
    let addr = format!("127.0.0.1:{port}");

    let mut client = std::net::TcpStream::connect(&addr).expect("connect");
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    // One round trip first, so the connection is accepted, not just queued.
    let mut back = [0u8; 9];
    std::io::Write::write_all(&mut client, b"accepted?").unwrap();
    std::io::Read::read_exact(&mut client, &mut back).expect("first echo");
    std::io::Write::write_all(&mut client, b"in flight").unwrap();
    // SIGTERM while the client is connected: it still gets its echo.
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    std::io::Read::read_exact(&mut client, &mut back).expect("echo after SIGTERM");
    assert_eq!(&back, b"in flight");
    drop(client);

    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status:?}");
    let summary: Vec<String> = lines.try_iter().collect();
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with("served 1 connections")),
        "{summary:?}"
    );
}

#[test]
fn binary_second_sigterm_stops_at_once() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    // -v: the first signal's notice is an info line.
    let (mut child, lines) = spawn_binary(&[
        "serve",
        "-v",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--shutdown-grace",
        "60s",
    ]);
    let first = lines.recv_timeout(DEADLINE).expect("listening line");
    let addr = first
        .split_whitespace()
        .nth(2)
        .expect("endpoint")
        .to_owned();
    // Its stderr, line by line: the first signal's "draining" notice.
    let stderr = child.stderr.take().expect("stderr");
    let (err_tx, err_lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if err_tx.send(line).is_err() {
                break;
            }
        }
    });
    // A client that keeps streaming (and reading its echo) never goes quiet,
    // so only the grace period or a second signal ends it.
    let client = std::net::TcpStream::connect(&addr).expect("connect");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let echoed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut reader = client.try_clone().unwrap();
    let drain = {
        let echoed = echoed.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                echoed.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let writer = {
        let stop = stop.clone();
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && client.write_all(&[b'x'; 1024]).is_ok() {
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Waits until the echo moves past `from` bytes.
    let echo_moves_past = |from: u64, what: &str| {
        let until = Instant::now() + DEADLINE;
        while echoed.load(Ordering::Relaxed) <= from {
            assert!(Instant::now() < until, "no echo {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    echo_moves_past(0, "before the first signal");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: signals to the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = err_lines.recv_timeout(left).expect("a draining notice");
        if line.contains("draining") {
            break;
        }
    }
    // Draining, the server still serves the streaming client.
    echo_moves_past(echoed.load(Ordering::Relaxed), "while draining");
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the grace period"
    );
    let started = Instant::now();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
    stop.store(true, Ordering::Relaxed);
    let _ = client.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    drain.join().unwrap();
    let summary: Vec<String> = lines.try_iter().collect();
    assert!(
        summary
            .iter()
            .any(|l| l.contains("1 closed at the deadline")),
        "{summary:?}"
    );
}

#[test]
fn binary_startup_errors_exit_nonzero_with_the_code() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cases: [(&[&str], i32, &str); 3] = [
        (&["serve", "--listen", &addr], 7, "[code 98]"),
        (&["serve", "--listen", "999.1.1.1:0"], 2, "[code 1001]"),
        (&["serve", "--idle-timeout", "soon"], 2, "soon"),
    ];
    for (args, code, text) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(args)
            .output()
            .expect("run tcpkit");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(text), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}

#[test]
fn accept_loop_survives_running_out_of_descriptors() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;

    const FD_LIMIT: libc::rlim_t = 24;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpkit"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--max-connections", "1000", "--shutdown-grace", "1s"])
        // Silent clients must reach accept(2) at once to exhaust the
        // descriptors, as described below: no TCP_DEFER_ACCEPT hold.
        .arg("--no-defer-accept")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit (async-signal-safe) between fork and exec. Soft
    // and hard both low, so the CLI cannot raise it back.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().expect("spawn tcpkit");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("listening line");
    let addr = first
        .split_whitespace()
        .nth(2)
        .expect("endpoint in the listening line")
        .to_owned();

    // More clients than descriptors: the server accepts until EMFILE, the
    // rest wait in the backlog.
    let mut clients: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    for c in &clients {
        c.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    // The first client was accepted before the limit and is still served.
    clients[0].write_all(b"first").unwrap();
    let mut back = [0u8; 5];
    clients[0]
        .read_exact(&mut back)
        .expect("echo while out of fds");
    assert_eq!(&back, b"first");
    // Freeing descriptors lets the loop, which kept going, serve new clients.
    clients.clear();
    let mut late = std::net::TcpStream::connect(&addr).expect("connect late");
    late.set_read_timeout(Some(DEADLINE)).unwrap();
    late.write_all(b"late").unwrap();
    let mut back = [0u8; 4];
    late.read_exact(&mut back).expect("echo after recovering");
    assert_eq!(&back, b"late");
    drop(late);

    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: sending a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("too many open files"), "{stderr}");
    let warnings = stderr.matches("too many open files").count();
    assert!(warnings <= 5, "accept errors not rate limited: {stderr}");
}
