//! The relay over several upstreams (`tcpkit::relay::Balanced`): the spread
//! per policy measured over 3 upstreams, `hash-source` stickiness and
//! what moves when an upstream dies, passive health (a dead upstream
//! skipped during its back-off, seen in the failure count), the retry on
//! another upstream, all upstreams down, and active health checks bringing
//! a revived upstream back.
//!
//! Each upstream is a loopback listener on port 0 that writes its one-byte
//! name to every client and holds the connection until the client closes,
//! so a client learns where it landed from the first byte. A dead upstream
//! is a closed port (`common::closed_port()`), or a socket bound but not
//! listening (refused until it listens, on the same port). Back-offs are
//! set to a minute where a test must not see one run out, so nothing here
//! depends on timing except deadlines.

mod common;
mod server_util;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use server_util::{DEADLINE, TestServer, start, within};
use tcpkit::endpoint::HostPort;
use tcpkit::relay::{BalanceOptions, Balanced, Fixed, Policy, Relay};
use tcpkit::server::ServerBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A back-off no test outlives: a down upstream stays down.
const LONG_BACKOFF: Duration = Duration::from_secs(60);

/// An upstream named by one byte.
struct Up {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Up {
    async fn start(name: u8) -> Up {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Up::serve(listener, name)
    }

    /// Writes `name` to each client, then reads until it closes.
    fn serve(listener: TcpListener, name: u8) -> Up {
        let addr = listener.local_addr().expect("upstream addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    if s.write_all(&[name]).await.is_ok() {
                        let mut sink = [0u8; 64];
                        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                });
            }
        });
        Up {
            addr,
            accepted,
            task,
        }
    }

    /// Closes the listener: new connects to it are refused.
    fn kill(&self) {
        self.task.abort();
    }
}

fn closed() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, common::closed_port()))
}

fn balancer(targets: &[SocketAddr], options: BalanceOptions) -> Balanced<Fixed> {
    let fixed = targets
        .iter()
        .map(|a| {
            Fixed::new(
                HostPort::parse(&a.to_string()).expect("target"),
                Duration::from_secs(10),
            )
        })
        .collect();
    Balanced::with_options(fixed, options).expect("balancer")
}

fn options(policy: Policy) -> BalanceOptions {
    BalanceOptions {
        policy,
        first_backoff: LONG_BACKOFF,
        max_backoff: LONG_BACKOFF,
        ..BalanceOptions::default()
    }
}

fn relay(balanced: &Balanced<Fixed>) -> TestServer {
    start(ServerBuilder::new(), Relay::new(balanced.clone()))
}

/// Connects (from `source`, if given) and reads the upstream's name:
/// `None` if the relay closed the client instead.
async fn land(relay: SocketAddr, source: Option<Ipv4Addr>) -> (Option<u8>, TcpStream) {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .expect("bind the source address");
    }
    let mut s = within(DEADLINE, "connect to the relay", socket.connect(relay))
        .await
        .expect("connect");
    let mut name = [0u8; 1];
    let got = within(DEADLINE, "the upstream's name", s.read(&mut name)).await;
    (matches!(got, Ok(1)).then_some(name[0]), s)
}

/// `land`, then close.
async fn land_once(relay: SocketAddr, source: Option<Ipv4Addr>) -> Option<u8> {
    land(relay, source).await.0
}

fn counts(names: &[u8]) -> [usize; 3] {
    let mut per = [0; 3];
    for &n in names {
        per[usize::from(n)] += 1;
    }
    per
}

/// Round-robin: 30 clients one after another land 10 on each upstream,
/// in turn.
#[tokio::test]
async fn round_robin_spreads_exactly_evenly() {
    let ups = [Up::start(0).await, Up::start(1).await, Up::start(2).await];
    let bal = balancer(&ups.each_ref().map(|u| u.addr), options(Policy::RoundRobin));
    let relay = relay(&bal);
    let mut names = Vec::new();
    for _ in 0..30 {
        names.push(land_once(relay.addr, None).await.expect("served"));
    }
    assert_eq!(counts(&names), [10, 10, 10], "{names:?}");
    for (i, w) in names.windows(2).enumerate() {
        assert_eq!((w[0] + 1) % 3, w[1], "not in turn at {i}: {names:?}");
    }
    let accepted: Vec<usize> = ups.iter().map(|u| u.accepted.load(Relaxed)).collect();
    assert_eq!(accepted, [10, 10, 10]);
    relay.stop().await;
}

/// Least-conn with long-lived pairs: 6 pairs spread 2, 2, 2; the two on
/// one upstream end; the next two new pairs both go to that upstream
/// (round-robin would send them to two different ones).
#[tokio::test]
async fn least_conn_gives_new_pairs_to_the_least_loaded() {
    let ups = [Up::start(0).await, Up::start(1).await, Up::start(2).await];
    let bal = balancer(&ups.each_ref().map(|u| u.addr), options(Policy::LeastConn));
    let relay = relay(&bal);
    let mut held = Vec::new();
    for _ in 0..6 {
        let (name, s) = land(relay.addr, None).await;
        held.push((name.expect("served"), s));
    }
    let names: Vec<u8> = held.iter().map(|(n, _)| *n).collect();
    assert_eq!(counts(&names), [2, 2, 2], "{names:?}");
    let active: Vec<usize> = bal.status().iter().map(|s| s.active).collect();
    assert_eq!(active, [2, 2, 2]);
    // End both pairs on the upstream of the last client.
    let emptied = names[5];
    held.retain(|(n, _)| *n != emptied);
    within(DEADLINE, "both pairs end", async {
        while bal.status()[usize::from(emptied)].active != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    for _ in 0..2 {
        let (name, s) = land(relay.addr, None).await;
        assert_eq!(name, Some(emptied), "not the least loaded");
        held.push((emptied, s));
    }
    let active: Vec<usize> = bal.status().iter().map(|s| s.active).collect();
    assert_eq!(active, [2, 2, 2]);
    drop(held);
    relay
        .wait_for("all pairs closed", |s| s.connections_closed == 8)
        .await;
    relay.stop().await;
}

/// Hash-source: 30 clients, each from its own address 127.0.0.x, keep
/// their upstream over 3 connects each (new source ports every time), and
/// every upstream has some. When one upstream dies, its clients move (and
/// stay where they moved) and every other client keeps its upstream.
#[tokio::test]
async fn hash_source_keeps_clients_and_moves_only_the_dead_upstreams() {
    let ups = [Up::start(0).await, Up::start(1).await, Up::start(2).await];
    let bal = balancer(&ups.each_ref().map(|u| u.addr), options(Policy::HashSource));
    let relay = relay(&bal);
    let sources: Vec<Ipv4Addr> = (10..40).map(|x| Ipv4Addr::new(127, 0, 0, x)).collect();
    let mut home = Vec::new();
    for &ip in &sources {
        let first = land_once(relay.addr, Some(ip)).await.expect("served");
        for _ in 0..2 {
            let again = land_once(relay.addr, Some(ip)).await;
            assert_eq!(again, Some(first), "{ip} moved while the set was stable");
        }
        home.push(first);
    }
    let per = counts(&home);
    assert!(
        per.iter().all(|&n| n > 0),
        "an upstream got no client: {per:?}"
    );
    let dead = (0..3u8).max_by_key(|&u| per[usize::from(u)]).expect("3");
    ups[usize::from(dead)].kill();
    for (&ip, &was) in sources.iter().zip(&home) {
        let now = land_once(relay.addr, Some(ip))
            .await
            .expect("served after the kill");
        if was == dead {
            assert_ne!(now, dead);
            let again = land_once(relay.addr, Some(ip)).await;
            assert_eq!(again, Some(now), "{ip} did not stay where it moved");
        } else {
            assert_eq!(now, was, "{ip} moved though its upstream is up");
        }
    }
    let s = relay.metrics.snapshot();
    assert!(s.upstream_connect_failures >= 1, "{s:?}");
    assert_eq!(s.no_upstream, 0);
    relay.stop().await;
}

/// Every upstream refuses: the first client is tried on each once (3
/// failed connects) and closed at once; the next finds all three down and
/// is closed without a connect. Both are counted as `no_upstream`.
#[tokio::test]
async fn all_upstreams_down_closes_the_client_at_once_and_counts_it() {
    let bal = balancer(&[closed(), closed(), closed()], options(Policy::RoundRobin));
    let relay = relay(&bal);
    for (client, failures) in [(1, 3), (2, 3)] {
        let started = Instant::now();
        let name = land_once(relay.addr, None).await;
        assert_eq!(name, None, "client {client} was served by a closed port");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "client {client} closed after {:?}",
            started.elapsed()
        );
        relay.wait_for("counted", |s| s.no_upstream == client).await;
        assert_eq!(
            relay.metrics.snapshot().upstream_connect_failures,
            failures,
            "client {client}: each upstream tried at most once, none while down"
        );
    }
    assert!(bal.status().iter().all(|s| !s.up && s.failures == 1));
    relay
        .wait_for("both closed", |s| s.connections_closed == 2)
        .await;
    relay.stop().await;
}

/// A failed connect is retried on another upstream: the first pick
/// (round-robin starts at the first) refuses, and the client is still
/// served, by the second.
#[tokio::test]
async fn a_refused_connect_is_retried_on_another_upstream() {
    let live = Up::start(1).await;
    let bal = balancer(&[closed(), live.addr], options(Policy::RoundRobin));
    let relay = relay(&bal);
    assert_eq!(land_once(relay.addr, None).await, Some(1));
    let s = relay.metrics.snapshot();
    assert_eq!((s.upstream_connect_failures, s.no_upstream), (1, 0));
    relay.stop().await;
}

/// Passive health: with one of 3 upstreams dead and a long back-off, 30
/// clients are all served, 15 by each live one, and the dead one is tried
/// once (without the back-off it would be tried for every third client:
/// 10 failures).
#[tokio::test]
async fn a_dead_upstream_is_skipped_during_its_backoff() {
    let a = Up::start(0).await;
    let b = Up::start(1).await;
    let bal = balancer(&[a.addr, closed(), b.addr], options(Policy::RoundRobin));
    let relay = relay(&bal);
    for i in 0..30 {
        assert!(
            land_once(relay.addr, None).await.is_some(),
            "client {i} not served"
        );
    }
    let s = relay.metrics.snapshot();
    assert_eq!(s.upstream_connect_failures, 1, "{s:?}");
    assert_eq!(s.no_upstream, 0);
    // In turn over the two that are up: the dead one's share is split,
    // not all given to its neighbour.
    let served = (a.accepted.load(Relaxed), b.accepted.load(Relaxed));
    assert_eq!(served, (15, 15));
    let status = bal.status();
    assert!(!status[1].up && status[1].failures == 1, "{status:?}");
    relay.stop().await;
}

/// Active health: an upstream refusing (bound, not listening) is marked
/// down by the checks before any client comes; once it listens on the same
/// port, a check brings it back long before its one-minute back-off would,
/// and clients reach it again.
#[tokio::test]
async fn active_checks_mark_down_and_bring_back_a_revived_upstream() {
    let a = Up::start(0).await;
    let revived = TcpSocket::new_v4().expect("socket");
    revived
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind");
    let b_addr = revived.local_addr().expect("addr");
    let bal = balancer(
        &[a.addr, b_addr],
        BalanceOptions {
            health_interval: Some(Duration::from_millis(100)),
            ..options(Policy::RoundRobin)
        },
    );
    let checks = tokio::spawn(bal.health_checks().expect("checks configured"));
    let relay = relay(&bal);
    let wait_b = |up: bool| {
        let bal = bal.clone();
        within(DEADLINE, "the checks see the change", async move {
            while bal.status()[1].up != up {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    wait_b(false).await;
    for _ in 0..4 {
        assert_eq!(
            land_once(relay.addr, None).await,
            Some(0),
            "sent to a down upstream"
        );
    }
    let _b = Up::serve(revived.listen(128).expect("listen"), 1);
    wait_b(true).await;
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(land_once(relay.addr, None).await.expect("served"));
    }
    names.sort_unstable();
    assert_eq!(names, [0, 1], "the revived upstream gets clients again");
    assert_eq!(relay.metrics.snapshot().upstream_connect_failures, 0);
    checks.abort();
    relay.stop().await;
}

/// Reads `lines` until one contains `want`; panics at EOF or the deadline.
#[cfg(feature = "cli")]
async fn wait_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    want: &str,
) -> String {
    within(DEADLINE, want, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line.contains(want) => return line,
                Ok(Some(_)) => continue,
                other => panic!("stderr ended waiting for {want:?}: {other:?}"),
            }
        }
    })
    .await
}

/// `tcpkit relay` with two `--to` and `--health-interval`: the checks mark
/// the refusing upstream down before any client comes (its log line), the
/// clients all go to the other; once it listens, a check brings it back
/// (its log line) and clients reach it again, in turn.
#[cfg(feature = "cli")]
#[tokio::test]
async fn cli_relay_balances_and_its_checks_bring_an_upstream_back() {
    use tokio::io::AsyncBufReadExt;
    let a = Up::start(0).await;
    let revived = TcpSocket::new_v4().expect("socket");
    revived
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind");
    let b_addr = revived.local_addr().expect("addr");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(["-v", "relay", "--listen", "127.0.0.1:0", "--balance"])
        .arg("round-robin")
        .args(["--to", &a.addr.to_string(), "--to", &b_addr.to_string()])
        .args(["--health-interval", "100ms"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tcpkit relay");
    let stdout = child.stdout.take().expect("stdout");
    let first = within(
        DEADLINE,
        "listening line",
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("read stdout")
    .expect("a listening line");
    let relay: SocketAddr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let down = wait_line(&mut err, "upstream down for").await;
    assert!(down.contains(&b_addr.to_string()), "{down}");
    for _ in 0..3 {
        assert_eq!(
            land_once(relay, None).await,
            Some(0),
            "sent to a down upstream"
        );
    }
    let _b = Up::serve(revived.listen(128).expect("listen"), 1);
    wait_line(&mut err, "upstream back up (health check").await;
    let mut names = Vec::new();
    for _ in 0..2 {
        names.push(land_once(relay, None).await.expect("served"));
    }
    names.sort_unstable();
    assert_eq!(names, [0, 1], "the revived upstream gets clients again");
    child.kill().await.expect("kill tcpkit relay");
}

/// An upstream that does not answer in time (its accept queue full, so
/// its SYNs are dropped) counts as down like one that refuses: the client
/// waits one connect deadline, is served by the other upstream, and the
/// next client goes straight to the other (still one failure).
#[tokio::test]
async fn a_connect_timeout_marks_the_upstream_down_and_the_client_is_retried() {
    let full = TcpSocket::new_v4().expect("socket");
    full.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind");
    let full = full.listen(0).expect("listen with backlog 0");
    let full_addr = full.local_addr().expect("addr");
    // Fill the accept queue (never accepted): later SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let c =
            tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(full_addr)).await;
        fillers.push(c);
    }
    let live = Up::start(1).await;
    let fixed = [full_addr, live.addr]
        .iter()
        .map(|a| {
            Fixed::new(
                HostPort::parse(&a.to_string()).expect("target"),
                Duration::from_millis(300),
            )
        })
        .collect();
    let bal = Balanced::with_options(fixed, options(Policy::RoundRobin)).expect("balancer");
    let relay = relay(&bal);
    let started = Instant::now();
    assert_eq!(land_once(relay.addr, None).await, Some(1));
    // Not a refusal: the first try ran to its deadline.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let s = relay.metrics.snapshot();
    assert_eq!((s.upstream_connect_failures, s.no_upstream), (1, 0));
    assert!(!bal.status()[0].up, "{:?}", bal.status());
    assert_eq!(land_once(relay.addr, None).await, Some(1));
    assert_eq!(relay.metrics.snapshot().upstream_connect_failures, 1);
    drop(fillers);
    relay.stop().await;
}
