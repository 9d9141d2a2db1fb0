//! Access lists (issue 12 item 3): allow/deny CIDRs decided right after
//! accept, before any service byte; IPv4-mapped clients of a dual-stack
//! listener checked as IPv4; the list swapped while the server runs
//! (library) and reloaded from files on SIGHUP (`tcpkit serve`); refusals
//! counted and logged at most once a second.
//!
//! Clients pick their source address inside 127.0.0.0/8 (loopback has the
//! whole /8 on Linux) by binding before connecting.

mod common;
mod server_util;
#[cfg(feature = "tls")]
mod tls_util;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use server_util::{DEADLINE, within};
use tcpkit::Endpoint;
use tcpkit::server::ServerBuilder;
use tcpkit::server::access::{AccessList, parse_rule};
use tcpkit::service::{Chat, Echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn rules(text: &[&str]) -> Vec<ipnet::IpNet> {
    text.iter().map(|r| parse_rule(r).expect("rule")).collect()
}

fn src(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A connection to `to` from `from` (port chosen by the kernel).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    within(DEADLINE, "connect", socket.connect(to))
        .await
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"))
}

/// Everything the server sends until it closes (EOF or reset).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    within(DEADLINE, "the server to close", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    got
}

async fn echo_round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    within(DEADLINE, "echo", stream.read_exact(&mut back))
        .await
        .expect("echo back");
    assert_eq!(back, msg);
}

#[tokio::test]
async fn deny_refuses_and_allow_restricts_over_loopback_sources() {
    // Allow 127.0.0.0/29 but deny .3: .2 served, .3 denied, .9 not allowed.
    let builder = ServerBuilder::new()
        .access_list(AccessList::new(
            &rules(&["127.0.0.0/29"]),
            &rules(&["127.0.0.3"]),
        ))
        .workers(1);
    let server = server_util::start(builder, Echo);
    let mut ok = connect_from(src(2), server.addr).await;
    echo_round_trip(&mut ok, b"hello\n").await;
    for last in [3, 9] {
        let mut refused = connect_from(src(last), server.addr).await;
        // Sends first (echo is client-speaks-first): still nothing back.
        let _ = refused.write_all(b"hello\n").await;
        let got = read_until_closed(&mut refused).await;
        assert!(got.is_empty(), "127.0.0.{last} got {got:?}");
    }
    server
        .wait_for("two refusals counted", |s| s.rejected_access_list == 2)
        .await;
    echo_round_trip(&mut ok, b"still here\n").await;
    drop(ok);
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.rejected_access_list, 2);
    // Refused connections never reached the service.
    assert_eq!(summary.snapshot.connections_accepted, 1);
    assert!(
        summary.to_string().contains("2 refused by the access list"),
        "{summary}"
    );
}

/// A denied chat client never sees the welcome the service sends first.
#[tokio::test]
async fn denied_clients_never_receive_a_service_byte() {
    let builder = ServerBuilder::new()
        .access_list(AccessList::new(&[], &rules(&["127.0.0.3"])))
        .workers(1);
    let server = server_util::start(builder, Chat::new());
    let mut welcomed = connect_from(src(2), server.addr).await;
    let mut first = [0u8; 1];
    within(DEADLINE, "chat welcome", welcomed.read_exact(&mut first))
        .await
        .expect("the admitted client gets the welcome");
    for _ in 0..5 {
        let mut refused = connect_from(src(3), server.addr).await;
        let got = read_until_closed(&mut refused).await;
        assert!(got.is_empty(), "a denied client got {got:?}");
    }
    server
        .wait_for("five refusals", |s| s.rejected_access_list == 5)
        .await;
    drop(welcomed);
    server.stop().await;
}

/// On a dual-stack `[::]` listener an IPv4 client shows as
/// `::ffff:127.0.0.3`: the IPv4 rule still applies.
#[tokio::test]
async fn ipv4_mapped_clients_of_a_dual_stack_listener_match_ipv4_rules() {
    let server = ServerBuilder::new()
        .listen(Endpoint::any_v6(0))
        .workers(1)
        .access_list(AccessList::new(
            &rules(&["127.0.0.0/8"]),
            &rules(&["127.0.0.3"]),
        ))
        .bind()
        .expect("bind [::]:0");
    let local = server.local_endpoint();
    if !local.is_ipv6() {
        return common::skip_or_fail("no IPv6: [::] fell back to 0.0.0.0");
    }
    let metrics = server.metrics();
    let handle = server.handle();
    let task = tokio::spawn(server.run(Echo));
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port());
    let mut ok = connect_from(src(2), to).await;
    echo_round_trip(&mut ok, b"mapped\n").await;
    let mut refused = connect_from(src(3), to).await;
    let _ = refused.write_all(b"x").await;
    assert!(read_until_closed(&mut refused).await.is_empty());
    // A real IPv6 client matches no IPv4 allow rule.
    if let Ok(mut v6) = TcpStream::connect(("::1", local.port())).await {
        let _ = v6.write_all(b"x").await;
        assert!(read_until_closed(&mut v6).await.is_empty());
        within(DEADLINE, "two refusals", async {
            while metrics.snapshot().rejected_access_list < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    assert!(metrics.snapshot().rejected_access_list >= 1);
    drop(ok);
    handle.shutdown();
    within(DEADLINE, "shutdown", task)
        .await
        .expect("task")
        .expect("server");
}

/// A list stored while the server runs applies to the next connection;
/// connections already admitted are untouched.
#[tokio::test]
async fn a_stored_list_applies_to_the_next_connection_only() {
    let server = ServerBuilder::new()
        .listen(Endpoint::loopback_v4(0))
        .workers(1)
        .access_list(AccessList::open())
        .bind()
        .expect("bind");
    let control = server.access_control().expect("an access list was set");
    let addr = server.local_endpoint().socket_addr();
    let metrics = server.metrics();
    let handle = server.handle();
    let task = tokio::spawn(server.run(Echo));
    let mut before = connect_from(src(3), addr).await;
    echo_round_trip(&mut before, b"admitted\n").await;
    control.store(AccessList::new(&[], &rules(&["127.0.0.3"])));
    let mut after = connect_from(src(3), addr).await;
    let _ = after.write_all(b"x").await;
    assert!(read_until_closed(&mut after).await.is_empty());
    echo_round_trip(&mut before, b"untouched\n").await;
    assert_eq!(metrics.snapshot().rejected_access_list, 1);
    drop(before);
    handle.shutdown();
    within(DEADLINE, "shutdown", task)
        .await
        .expect("task")
        .expect("server");
}

/// The check comes before the TLS handshake: a denied client's ClientHello
/// gets no ServerHello (not a byte), an admitted one's does.
#[cfg(feature = "tls")]
#[tokio::test]
async fn denied_before_the_tls_handshake() {
    let (config, _) = tcpkit::tls::TlsConfig::self_signed(&["localhost"]).expect("certificate");
    let builder = ServerBuilder::new()
        .tls(config)
        .access_list(AccessList::new(&[], &rules(&["127.0.0.3"])))
        .workers(1);
    let server = server_util::start(builder, Echo);
    let hello = tls_util::client_hello(tls_util::Pki::new().client_config(), "localhost");
    let mut admitted = connect_from(src(2), server.addr).await;
    admitted.write_all(&hello).await.expect("write");
    let mut first = [0u8; 1];
    within(DEADLINE, "ServerHello", admitted.read_exact(&mut first))
        .await
        .expect("the admitted client gets the server's handshake");
    assert_eq!(first[0], 0x16, "a handshake record");
    let mut refused = connect_from(src(3), server.addr).await;
    let _ = refused.write_all(&hello).await;
    let got = read_until_closed(&mut refused).await;
    assert!(got.is_empty(), "a denied client got {} bytes", got.len());
    server
        .wait_for("one refusal", |s| s.rejected_access_list == 1)
        .await;
    // Still mid-handshake at shutdown (which does not wait for handshakes),
    // so the admitted client adds no failure of its own below.
    let summary = server.stop().await;
    drop(admitted);
    // The denied client cost no handshake, failed or otherwise.
    assert_eq!(
        summary.snapshot.tls_failed_protocol + summary.snapshot.tls_failed_io,
        0
    );
}

// ---- tcpkit serve ----------------------------------------------------------

#[cfg(feature = "cli")]
mod serve {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    use common::serve::Serve;

    /// A blocking client from `from`: bound, connected, with a read deadline.
    fn std_connect_from(from: Ipv4Addr, to: SocketAddr) -> std::net::TcpStream {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::new(IpAddr::V4(from), 0).into())
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        socket
            .connect_timeout(&to.into(), DEADLINE)
            .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
        let stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream
    }

    /// Whether the server echoes on `stream` (`false`: closed with nothing).
    fn std_echoes(stream: &mut std::net::TcpStream, msg: &[u8]) -> bool {
        if stream.write_all(msg).is_err() {
            return false;
        }
        let mut back = vec![0u8; msg.len()];
        match stream.read_exact(&mut back) {
            Ok(()) => {
                assert_eq!(back, msg);
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("neither an echo nor a close within {DEADLINE:?}")
            }
            Err(_) => false,
        }
    }

    /// The summary's JSON object (`--json`) from serve's stdout.
    fn summary(stdout: &[String]) -> serde_json::Value {
        let line = stdout
            .iter()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary in {stdout:?}"));
        serde_json::from_str(line).expect("summary JSON")
    }

    #[test]
    fn serve_reloads_the_files_on_sighup_and_keeps_the_list_on_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deny = dir.path().join("deny.txt");
        std::fs::write(&deny, "# nobody yet\n127.0.0.9\n").expect("write");
        let deny_arg = deny.display().to_string();
        let serve = Serve::spawn(&[
            "-v",
            "--json",
            "--no-defer-accept",
            "--deny-file",
            &deny_arg,
        ]);
        let addr = serve.addr();

        // .3 is admitted, and stays connected across both reloads.
        let mut open = std_connect_from(src(3), addr);
        assert!(std_echoes(&mut open, b"before\n"));

        std::fs::write(&deny, "127.0.0.3 # now denied\n").expect("write");
        serve.signal(libc::SIGHUP);
        Serve::wait_line(&serve.stderr, "access lists reloaded");
        let mut next = std_connect_from(src(3), addr);
        assert!(
            !std_echoes(&mut next, b"after\n"),
            "a new .3 connection was served"
        );
        assert!(std_echoes(&mut open, b"untouched\n"));
        assert!(std_echoes(&mut std_connect_from(src(2), addr), b"other\n"));

        // A bad line: the reload fails naming file:line, and .3 stays denied.
        std::fs::write(&deny, "127.0.0.2\n\nnot-a-cidr\n").expect("write");
        serve.signal(libc::SIGHUP);
        let line = Serve::wait_line(&serve.stderr, "access list reload failed");
        assert!(line.contains(&format!("{deny_arg}:3")), "{line}");
        let mut again = std_connect_from(src(3), addr);
        assert!(!std_echoes(&mut again, b"x\n"), "the old list was dropped");
        assert!(std_echoes(
            &mut std_connect_from(src(2), addr),
            b"old list\n"
        ));
        assert!(std_echoes(&mut open, b"still\n"));
        drop(open);

        let (status, stdout, _) = serve.stop();
        assert!(status.success(), "{status}");
        assert_eq!(summary(&stdout)["rejected_access_list"], 2);
    }

    #[test]
    fn serve_exits_2_naming_file_and_line_for_a_bad_file_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allow = dir.path().join("allow.txt");
        std::fs::write(&allow, "127.0.0.0/8\n# fine\n10.0.0.1/8\n").expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-file"])
            .arg(&allow)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tcpkit serve");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(out.stdout.is_empty(), "bound before failing: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}:3", allow.display())),
            "{stderr}"
        );
    }

    /// 1,000 denied connects, one after another, log a line a second at most
    /// (each saying how many more were refused), and every one is counted.
    #[test]
    fn a_flood_of_denied_connects_logs_a_bounded_number_of_lines() {
        const FLOOD: usize = 1000;
        let serve = Serve::spawn(&["-v", "--json", "--no-defer-accept", "--deny", "127.0.0.3"]);
        let addr = serve.addr();
        let started = Instant::now();
        for _ in 0..FLOOD {
            let mut denied = std_connect_from(src(3), addr);
            let mut buf = [0u8; 16];
            // The server closes: EOF (or a reset), never data.
            assert!(matches!(denied.read(&mut buf), Ok(0) | Err(_)));
        }
        let elapsed = started.elapsed();
        assert!(std_echoes(&mut std_connect_from(src(2), addr), b"ok\n"));
        let (status, stdout, stderr) = serve.stop();
        assert!(status.success(), "{status}");
        assert_eq!(summary(&stdout)["rejected_access_list"], FLOOD);
        let logged: Vec<&String> = stderr
            .iter()
            .filter(|l| l.contains("refused by the access list"))
            .collect();
        let bound = elapsed.as_secs() as usize + 2;
        assert!(
            !logged.is_empty() && logged.len() <= bound,
            "{} lines for {FLOOD} refusals in {elapsed:?} (bound {bound}), the first: {:?}",
            logged.len(),
            logged.first()
        );
        // A line after the first says how many went unlogged in between.
        if let Some(later) = logged.get(1) {
            assert!(!later.contains("more_denied=0"), "{later}");
        }
    }

    /// One SIGHUP reloads both the TLS certificates and the access lists.
    #[cfg(feature = "tls")]
    #[test]
    fn one_sighup_reloads_tls_and_the_access_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deny = dir.path().join("deny.txt");
        std::fs::write(&deny, "").expect("write");
        let serve = Serve::spawn(&["-v", "--tls", "--deny-file", &deny.display().to_string()]);
        let addr = serve.addr();
        let hello = tls_util::client_hello(tls_util::Pki::new().client_config(), "localhost");
        let mut before = std_connect_from(src(3), addr);
        before.write_all(&hello).expect("write");
        let mut first = [0u8; 1];
        // The ServerHello's first byte: .3 got past the access list.
        assert!(matches!(before.read(&mut first), Ok(1)), "admitted before");
        std::fs::write(&deny, "127.0.0.3\n").expect("write");
        serve.signal(libc::SIGHUP);
        serve.wait_all(&["TLS certificates reloaded", "access lists reloaded"]);
        let mut after = std_connect_from(src(3), addr);
        let _ = after.write_all(&hello);
        assert!(
            matches!(after.read(&mut first), Ok(0) | Err(_)),
            "denied after the reload"
        );
    }
}
