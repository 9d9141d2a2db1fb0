//! The seed's whole lifecycle on loopback: open, bind, listen, connect,
//! accept, read/write both ways, close; and the errors each step can give.
//!
//! Every test binds port 0 (never a fixed port) and bounds every blocking
//! call: sockets get read/write timeouts, and `accept` is only called once the
//! kernel has already completed the client's handshake into the backlog.
// Runs the `tcpkit` binary, which the `cli` feature builds.
#![cfg(feature = "cli")]

use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use tcpkit::net::Protocol;
use tcpkit::{Acceptor, DEFAULT_BACKLOG, Endpoint, ErrorKind, Socket};

mod common;

/// Generous per-call deadline: long enough for a loaded CI box, short enough
/// that a hang fails the test instead of the whole run.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn bounded(socket: Socket) -> tcpkit::Result<Socket> {
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(socket)
}

/// A listening acceptor on `127.0.0.1:0` and the endpoint the kernel chose.
fn listener() -> tcpkit::Result<(Acceptor, Endpoint)> {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), DEFAULT_BACKLOG)?;
    let ep = acceptor.local_endpoint()?;
    Ok((acceptor, ep))
}

/// A connected pair: (client, server side of the same connection).
fn pair() -> tcpkit::Result<(Socket, Socket)> {
    let (acceptor, ep) = listener()?;
    let mut client = Socket::open(Protocol::V4)?;
    client.connect_timeout(&ep, IO_TIMEOUT)?;
    let (conn, _) = acceptor.accept()?;
    Ok((bounded(client)?, bounded(conn)?))
}

/// A port on loopback with nothing listening: bound by the kernel, then freed.
fn closed_port() -> tcpkit::Result<Endpoint> {
    let probe = Acceptor::open(Protocol::V4)?;
    probe.bind(&Endpoint::loopback_v4(0))?;
    probe.local_endpoint()
}

#[test]
fn accept_yields_the_clients_endpoint() -> TestResult {
    let (acceptor, ep) = listener()?;
    assert!(ep.ip().is_loopback());
    assert_ne!(ep.port(), 0, "the kernel picks a port for port 0");

    let client = Socket::connect_to(&ep)?;
    let (conn, peer) = acceptor.accept()?;
    assert_eq!(peer, client.local_endpoint()?);
    assert_eq!(conn.peer_endpoint()?, peer);
    assert_eq!(conn.local_endpoint()?, ep);
    assert_eq!(client.peer_endpoint()?, ep);

    // The acceptor keeps listening: a second client gets its own socket.
    let second = Socket::connect_to(&ep)?;
    let (_, peer2) = acceptor.accept()?;
    assert_eq!(peer2, second.local_endpoint()?);
    assert_ne!(peer2, peer);
    Ok(())
}

#[test]
fn one_mib_crosses_each_way_intact() -> TestResult {
    const LEN: usize = 1 << 20;
    let (mut client, mut conn) = pair()?;
    let pattern = |seed: u32| -> Vec<u8> {
        (0..LEN as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8)
            .collect()
    };
    let up = pattern(1);
    let down = pattern(7);

    // The server reads all of `up` and then writes `down`, on its own thread,
    // so neither side can deadlock on full socket buffers.
    let expected_up = up.clone();
    let reply = down.clone();
    let server = thread::spawn(move || -> tcpkit::Result<bool> {
        let mut got = vec![0u8; LEN];
        conn.read_exact(&mut got)?;
        conn.write_all(&reply)?;
        conn.shutdown(Shutdown::Write)?;
        Ok(got == expected_up)
    });

    client.write_all(&up)?;
    let mut got = vec![0u8; LEN];
    client.read_exact(&mut got)?;
    assert!(got == down, "server -> client bytes differ");
    let mut tail = [0u8; 1];
    assert_eq!(client.read_some(&mut tail)?, 0, "EOF after the reply");
    let server_saw_same = server.join().map_err(|_| "server thread panicked")??;
    assert!(server_saw_same, "client -> server bytes differ");
    Ok(())
}

#[test]
fn dual_stack_acceptor_accepts_an_ipv4_client() -> TestResult {
    let acceptor = match Acceptor::open(Protocol::V6) {
        Ok(a) => a,
        Err(e) => {
            common::skip_or_fail(&format!("no IPv6 on this host ({e})"));
            return Ok(());
        }
    };
    acceptor.set_reuse_address(true)?;
    acceptor.set_v6_only(false)?;
    if let Err(e) = acceptor.bind(&Endpoint::any_v6(0)) {
        common::skip_or_fail(&format!("cannot bind [::]:0 ({e})"));
        return Ok(());
    }
    acceptor.listen(DEFAULT_BACKLOG)?;
    let port = acceptor.local_endpoint()?.port();

    let client = Socket::connect_to(&Endpoint::loopback_v4(port))?;
    let (conn, peer) = acceptor.accept()?;
    // The IPv4 client appears as an IPv4-mapped IPv6 address.
    assert!(peer.is_ipv6(), "{peer}");
    assert_eq!(conn.protocol(), Protocol::V6);
    let local = client.local_endpoint()?;
    assert_eq!(peer.ip().to_canonical(), local.ip());
    assert_eq!(peer.port(), local.port());

    // bind_listen_any does the same in one call.
    let any = Acceptor::bind_listen_any(0, DEFAULT_BACKLOG)?;
    let port = any.local_endpoint()?.port();
    let client = Socket::connect_to(&Endpoint::loopback_v4(port))?;
    let (_, peer) = any.accept()?;
    assert_eq!(peer.port(), client.local_endpoint()?.port());
    Ok(())
}

#[test]
fn port_in_use_is_addr_in_use_naming_the_endpoint() -> TestResult {
    let (_first, ep) = listener()?;
    // SO_REUSEADDR on both, no SO_REUSEPORT: Linux still refuses a second
    // socket on a port that has a listener.
    let second = Acceptor::open(Protocol::V4)?;
    second.set_reuse_address(true)?;
    let err = second.bind(&ep).expect_err("second bind must fail");
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    assert_eq!(err.code(), libc::EADDRINUSE);
    assert!(err.message().contains(&ep.to_string()), "{err}");

    let err = Acceptor::bind_listen(&ep, DEFAULT_BACKLOG).expect_err("bind_listen must fail");
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    Ok(())
}

#[test]
fn connect_to_a_closed_port_is_refused() -> TestResult {
    let ep = closed_port()?;
    let err = Socket::connect_to(&ep).expect_err("nothing listens there");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(err.code(), libc::ECONNREFUSED);
    assert!(err.message().contains(&ep.to_string()), "{err}");

    let mut socket = Socket::open(Protocol::V4)?;
    let err = socket
        .connect_timeout(&ep, IO_TIMEOUT)
        .expect_err("nothing listens there");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    Ok(())
}

#[test]
fn connect_timeout_fires_within_its_bound() -> TestResult {
    // Linux drops SYNs while a listener's accept queue is full, so a connect
    // to a listener nobody accepts on, once its queue is full, hangs in
    // SYN_SENT: a timeout on loopback with no outside address involved.
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), 0)?;
    let ep = acceptor.local_endpoint()?;
    let timeout = Duration::from_millis(300);
    let mut queued = Vec::new();
    for _ in 0..32 {
        let mut socket = Socket::open(Protocol::V4)?;
        let start = Instant::now();
        match socket.connect_timeout(&ep, timeout) {
            Ok(()) => queued.push(socket),
            Err(err) => {
                let elapsed = start.elapsed();
                assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
                assert!(err.message().contains(&ep.to_string()), "{err}");
                assert!(
                    elapsed >= timeout && elapsed < Duration::from_secs(3),
                    "timed out after {elapsed:?}, asked for {timeout:?}"
                );
                return Ok(());
            }
        }
    }
    Err(format!(
        "accept queue never filled after {} connections",
        queued.len()
    )
    .into())
}

#[test]
fn extreme_durations_do_not_panic() -> TestResult {
    // Duration::MAX cannot be added to the clock: it means "no deadline".
    let (acceptor, ep) = listener()?;
    let mut socket = Socket::open(Protocol::V4)?;
    socket.connect_timeout(&ep, Duration::MAX)?;
    let (_conn, peer) = acceptor.accept()?;
    assert_eq!(peer, socket.local_endpoint()?);
    // Seconds-based options clamp instead of overflowing.
    socket.set_linger(Some(Duration::MAX))?;
    assert!(socket.linger()?.is_some());
    // Linux caps TCP_KEEPIDLE (32767 s) and refuses more with EINVAL.
    if let Err(err) = socket.set_keepalive(Some(Duration::MAX)) {
        assert_eq!(err.code(), libc::EINVAL, "{err}");
    }
    Ok(())
}

#[test]
fn read_after_the_peer_closes_is_eof() -> TestResult {
    let (mut client, conn) = pair()?;
    drop(conn);
    let mut buf = [0u8; 16];
    assert_eq!(client.read_some(&mut buf)?, 0);
    assert_eq!(client.read_some(&mut buf)?, 0, "EOF is sticky");

    // Half-close: the peer still reads after we shut down our write side.
    let (mut client, mut conn) = pair()?;
    client.shutdown(Shutdown::Write)?;
    assert_eq!(conn.read_some(&mut buf)?, 0);
    conn.write_all(b"still open")?;
    client.read_exact(&mut buf[..10])?;
    assert_eq!(&buf[..10], b"still open");
    Ok(())
}

#[test]
fn read_exact_short_by_eof_is_unexpected_eof() -> TestResult {
    let (mut client, mut conn) = pair()?;
    client.write_all(b"abc")?;
    drop(client);
    let mut buf = [0u8; 8];
    let err = conn.read_exact(&mut buf).expect_err("only 3 of 8 bytes");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(err.code(), tcpkit::error::code::UNEXPECTED_EOF);
    assert!(err.message().contains("3 of 8"), "{err}");
    Ok(())
}

#[test]
fn read_timeout_is_timed_out_on_both_sides() -> TestResult {
    // The client went through connect_timeout, which switches the socket to
    // non-blocking for the handshake: it must be blocking again, or this read
    // would fail at once instead of waiting for its timeout.
    let (mut client, mut conn) = pair()?;
    for (side, socket) in [("client", &mut client), ("server", &mut conn)] {
        let timeout = Duration::from_millis(100);
        socket.set_read_timeout(Some(timeout))?;
        let start = Instant::now();
        let err = socket
            .read_some(&mut [0u8; 4])
            .expect_err("nothing was sent");
        let elapsed = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{side}: {err}");
        assert!(
            elapsed >= timeout / 2 && elapsed < IO_TIMEOUT,
            "{side}: read gave up after {elapsed:?}"
        );
    }
    Ok(())
}

#[test]
fn ipv6_loopback_lifecycle() -> TestResult {
    let acceptor = match Acceptor::bind_listen(&Endpoint::loopback_v6(0), DEFAULT_BACKLOG) {
        Ok(a) => a,
        Err(e) => {
            common::skip_or_fail(&format!("no IPv6 loopback on this host ({e})"));
            return Ok(());
        }
    };
    let ep = acceptor.local_endpoint()?;
    assert_eq!(ep.ip(), Endpoint::loopback_v6(0).ip());
    let mut client = Socket::open(Protocol::V6)?;
    client.connect_timeout(&ep, IO_TIMEOUT)?;
    let (conn, peer) = acceptor.accept()?;
    assert_eq!(peer, client.local_endpoint()?);
    let (mut client, mut conn) = (bounded(client)?, bounded(conn)?);
    client.write_all(b"v6")?;
    let mut buf = [0u8; 2];
    conn.read_exact(&mut buf)?;
    assert_eq!(&buf, b"v6");
    Ok(())
}

#[test]
fn options_read_back_what_the_kernel_granted() -> TestResult {
    let (client, _conn) = pair()?;
    client.set_nodelay(true)?;
    assert!(client.nodelay()?);
    client.set_nodelay(false)?;
    assert!(!client.nodelay()?);

    client.set_keepalive(Some(Duration::from_secs(30)))?;
    assert!(client.keepalive()?);
    assert_eq!(
        client.as_socket2().tcp_keepalive_time()?,
        Duration::from_secs(30)
    );
    client.set_keepalive(None)?;
    assert!(!client.keepalive()?);

    const WANT: usize = 64 * 1024;
    client.set_recv_buffer_size(WANT)?;
    client.set_send_buffer_size(WANT)?;
    assert!(client.recv_buffer_size()? >= WANT);
    assert!(client.send_buffer_size()? >= WANT);

    client.set_linger(Some(Duration::from_secs(5)))?;
    assert_eq!(client.linger()?, Some(Duration::from_secs(5)));
    client.set_linger(None)?;
    assert_eq!(client.linger()?, None);
    Ok(())
}

#[test]
fn sub_second_linger_and_keepalive_round_up_instead_of_misbehaving() -> TestResult {
    let (client, _conn) = pair()?;
    // SO_LINGER counts whole seconds: 500 ms truncated to 0 would turn a
    // graceful close into a reset.
    client.set_linger(Some(Duration::from_millis(500)))?;
    assert_eq!(client.linger()?, Some(Duration::from_secs(1)));
    client.set_linger(Some(Duration::ZERO))?;
    assert_eq!(client.linger()?, Some(Duration::ZERO));
    // TCP_KEEPIDLE counts whole seconds, minimum 1: 0 would be EINVAL.
    client.set_keepalive(Some(Duration::from_millis(500)))?;
    assert!(client.keepalive()?);
    assert_eq!(
        client.as_socket2().tcp_keepalive_time()?,
        Duration::from_secs(1)
    );
    Ok(())
}

#[test]
fn into_tokio_works_for_both_types() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::time::timeout(IO_TIMEOUT, async {
            let (acceptor, ep) = listener()?;
            let tokio_listener = acceptor.into_tokio()?;
            // The blocking connect completes against the backlog, before
            // the async accept below runs.
            let client = Socket::connect_to(&ep)?;
            let mut client = client.into_tokio()?;
            let (conn, peer) = tokio_listener.accept().await?;
            assert_eq!(peer, client.local_addr()?);
            let mut conn = conn;

            client.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await?;
            conn.write_all(&buf).await?;
            client.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");

            // An accepted blocking Socket hands over too.
            let (acceptor, ep) = listener()?;
            let mut client = tokio::net::TcpStream::connect(ep.socket_addr()).await?;
            let (conn, _) = acceptor.accept()?;
            let mut conn = conn.into_tokio()?;
            client.write_all(b"pong").await?;
            conn.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"pong");
            Ok::<(), Box<dyn std::error::Error>>(())
        })
        .await?
    })
}

#[test]
fn into_tokio_outside_a_runtime_is_an_error_not_a_panic() -> TestResult {
    let (acceptor, ep) = listener()?;
    let client = Socket::connect_to(&ep)?;
    let err = client.into_tokio().expect_err("no runtime");
    assert!(err.message().contains("runtime"), "{err}");
    let err = acceptor.into_tokio().expect_err("no runtime");
    assert!(err.message().contains("runtime"), "{err}");
    Ok(())
}

#[test]
fn effective_backlog_never_exceeds_the_request() {
    // Where the kernel publishes its cap, a request is cut down to it and
    // no further; elsewhere the request stands. (A `min` is always at most
    // its bound: the exact value is what can be wrong.)
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .map(|text| text.trim().parse::<u32>().expect("somaxconn is a number"));
    for requested in [1, 30, DEFAULT_BACKLOG, 4096, u32::MAX] {
        let want = cap.map_or(requested, |cap| requested.min(cap));
        assert_eq!(
            Acceptor::effective_backlog(requested),
            want,
            "requested {requested}, somaxconn {cap:?}"
        );
    }
}

/// Binding port 1 without the privilege fails with EACCES, reported as
/// `PermissionDenied` naming the endpoint. CI runs as root, which may bind
/// any port, so the bind is made on a thread of its own that first gives up
/// root: Linux credentials belong to each thread, and the raw `setresuid`
/// syscall (unlike libc's wrapper, which changes every thread) leaves the
/// rest of this test binary as it was.
#[test]
fn binding_port_1_without_privilege_is_permission_denied() -> TestResult {
    thread::spawn(bind_port_1_unprivileged)
        .join()
        .map_err(|_| "the unprivileged bind thread panicked")??;
    Ok(())
}

/// The first port anyone may bind in this thread's network namespace.
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024)
}

fn bind_port_1_unprivileged() -> Result<(), String> {
    // Only Linux may move to a new namespace, where the wildcard is bound.
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    let mut ep = Endpoint::loopback_v4(1);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        #[cfg(target_os = "linux")]
        {
            if unprivileged_port_start() <= 1 {
                // This namespace lets anyone bind low ports; a new one
                // starts at the kernel's default, 1024.
                // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a
                // new network namespace; no memory is touched.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    common::skip_or_fail(&format!(
                        "running as root where anyone may bind port 1, and no new network namespace ({e})"
                    ));
                    return Ok(());
                }
                // Loopback is down in a new namespace: bind the wildcard.
                ep = Endpoint::any_v4(1);
            }
            // SAFETY: the raw syscall sets this thread's user ids (and so
            // drops its capabilities); no memory is touched.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                return Err(format!("setresuid(nobody) on this thread: {e}"));
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            common::skip_or_fail("running as root: dropping root for one thread needs Linux");
            return Ok(());
        }
    }
    let start = unprivileged_port_start();
    if start <= 1 {
        common::skip_or_fail(&format!("net.ipv4.ip_unprivileged_port_start is {start}"));
        return Ok(());
    }
    let acceptor = Acceptor::open(Protocol::V4).map_err(|e| e.to_string())?;
    match acceptor.bind(&ep) {
        Ok(()) => common::skip_or_fail("this process may bind privileged ports (capability)"),
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
            assert_eq!(err.code(), libc::EACCES, "{err}");
            assert!(err.message().contains(&ep.to_string()), "{err}");
        }
    }
    Ok(())
}

/// Run in a child process by `write_after_shutdown_is_an_error_not_sigpipe`,
/// because it restores SIGPIPE's default action (terminate), which the Rust
/// runtime normally ignores, and a CLI may restore for quiet broken pipes.
#[test]
#[ignore = "run in a child process by write_after_shutdown_is_an_error_not_sigpipe"]
fn sigpipe_child() -> TestResult {
    if std::env::var_os("TCPKIT_SIGPIPE_CHILD").is_none() {
        return Ok(());
    }
    // SAFETY: installs the default disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let (mut client, _conn) = pair()?;
    client.shutdown(Shutdown::Write)?;
    let err = client.write_some(b"x").expect_err("write after shutdown");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(err.code(), libc::EPIPE);
    Ok(())
}

#[test]
fn write_after_shutdown_is_an_error_not_sigpipe() -> TestResult {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "sigpipe_child", "--ignored", "--test-threads=1"])
        .env("TCPKIT_SIGPIPE_CHILD", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            return Err("child test did not finish in time".into());
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(
        status.signal(),
        Some(libc::SIGPIPE),
        "a write to a shut-down socket killed the process with SIGPIPE"
    );
    assert!(status.success(), "child test failed: {status}");
    Ok(())
}

/// Runs the `tcpkit` binary with `args`, killing it after [`IO_TIMEOUT`]:
/// (exit code, stdout, stderr).
fn run_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tcpkit");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > IO_TIMEOUT {
            let _ = child.kill();
            panic!("tcpkit {args:?} still running after {IO_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Quick start's main job: `tcpkit demo` walks the seed's steps in
/// order, echoes the messages it is given, and exits 0.
#[test]
fn demo_walks_the_seed_lifecycle_in_order() {
    let (code, out, err) = run_binary(&["demo", "-m", "ping", "-m", "pong pong"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let steps = [
        "server endpoint",
        "open acceptor",
        "bind",
        "listen",
        "client endpoint",
        "open client socket",
        "connect",
        "accept",
        "client write, echo     \"ping\" round trip (4 B)",
        "client write, echo     \"pong pong\" round trip (9 B)",
        "close",
    ];
    let mut lines = out.lines();
    for step in steps {
        assert!(
            lines.any(|l| l.contains(step)),
            "step {step:?} missing or out of order in:\n{out}"
        );
    }
    assert!(out.contains("backlog 30"), "{out}");
}

/// A port already taken: the demo stops at `bind`, names the endpoint, and
/// exits with the bind status (7).
#[test]
fn demo_on_a_taken_port_fails_at_bind_with_status_7() -> TestResult {
    // Listening on the wildcard the demo binds: SO_REUSEADDR does not let
    // a second listener share it.
    let taken = Acceptor::bind_listen_any(0, DEFAULT_BACKLOG)?;
    let port = taken.local_endpoint()?.port();
    let (code, out, err) = run_binary(&["demo", "--port", &port.to_string()]);
    drop(taken);
    assert_eq!(code, Some(7), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&format!(":{port}")), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
    Ok(())
}
