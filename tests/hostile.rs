//! Hostile clients against the real `tcpkit serve` binary (127.0.0.1, port
//! 0). Each case asserts two things: the offender is dealt with (closed,
//! bounded, rejected), AND a well-behaved canary client running alongside is
//! served correctly, promptly, throughout. Memory figures are the server's
//! VmRSS from /proc/PID/status; descriptor counts come from /proc/PID/fd.
//!
//! Length-prefixed framing has no CLI mode, so its cases run the library's
//! [`LengthPrefixedCodec`] on real sockets in this process.

// Runs the `tcpkit` binary, which the `cli` feature builds.
#![cfg(feature = "cli")]

mod common;
mod hostile_util;

use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hostile_util::{Canary, connect, read_until_closed};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------- slowloris

#[test]
fn silent_client_is_closed_by_idle_timeout_while_others_are_served() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "echo", "--idle-timeout", "1s"]);
    let canary = Canary::echo(server.addr);
    let mut silent = connect(server.addr);
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    assert!(
        closed,
        "a client that sends nothing was not closed within 5s"
    );
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the 1s idle timeout"
    );
    canary.wait_for_more(10, "after the idle close");
    canary.stop("echo slowloris");
    server.stop();
}

#[test]
fn chat_slowloris_one_byte_at_a_time_is_closed_by_idle_timeout() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "chat", "--idle-timeout", "1s"]);
    let canary = Canary::chat(server.addr);
    let mut slow = connect(server.addr);
    let start = Instant::now();
    // A byte every 300 ms never completes a line: the line, not the byte,
    // is what resets a chat client's idle clock.
    let mut sent = 0;
    let closed_at = loop {
        if slow.write_all(b"x").is_err() {
            break start.elapsed();
        }
        sent += 1;
        let (_, closed) = read_until_closed(&mut slow, Duration::from_millis(300));
        if closed {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "one byte per 300 ms kept a chat connection open for 6s ({sent} bytes)"
        );
    };
    assert!(
        closed_at >= Duration::from_millis(900),
        "closed after {closed_at:?}"
    );
    canary.wait_for_more(20, "after the slowloris close");
    canary.stop("chat slowloris");
    server.stop();
}

// --------------------------------------------------------------- chat lines

#[test]
fn chat_over_max_line_closes_only_the_sender_with_a_reason() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "chat", "--max-line", "1024"]);
    let canary = Canary::chat(server.addr);
    let mut long = connect(server.addr);
    let mut line = vec![b'a'; 2000];
    line.push(b'\n');
    long.write_all(&line).unwrap();
    let (got, closed) = read_until_closed(&mut long, Duration::from_secs(5));
    assert!(closed, "over-long line: sender not closed");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("line longer than 1024 bytes"),
        "no reason given: {text:?}"
    );
    canary.wait_for_more(20, "after the over-long line");
    canary.stop("over-max line");
    server.stop();
}

#[test]
fn chat_100_mib_line_without_newline_is_cut_off_with_bounded_memory() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "chat", "--max-line", "8192"]);
    let canary = Canary::chat(server.addr);
    let rss_before = server.rss_kib();
    let mut flood = connect(server.addr);
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let chunk = vec![b'y'; 64 * 1024];
    let mut sent = 0usize;
    let mut peak_rss = rss_before;
    let start = Instant::now();
    while sent < 100 * MIB {
        match flood.write(&chunk) {
            Ok(n) => sent += n,
            // Reset or broken pipe: the server closed it.
            Err(_) => break,
        }
        if sent % (4 * MIB) < chunk.len() {
            peak_rss = peak_rss.max(server.rss_kib());
        }
        assert!(start.elapsed() < Duration::from_secs(30), "flood ran 30s");
    }
    peak_rss = peak_rss.max(server.rss_kib());
    assert!(
        sent < 100 * MIB,
        "the server took all 100 MiB of a line with no newline"
    );
    let growth_kib = peak_rss.saturating_sub(rss_before);
    assert!(
        growth_kib < 16 * 1024,
        "server RSS grew {growth_kib} KiB while a client sent a {sent}-byte line"
    );
    eprintln!("100 MiB line: cut off after {sent} bytes sent; server RSS +{growth_kib} KiB");
    canary.wait_for_more(20, "after the endless line");
    canary.stop("endless line");
    server.stop();
}

#[test]
fn chat_passes_nul_invalid_utf8_and_both_line_endings_through_as_bytes() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "chat"]);
    let canary = Canary::chat(server.addr);
    let mut odd = connect(server.addr);
    odd.write_all(b"/nick oddbytes\n").unwrap();
    let mut watcher = connect(server.addr);
    // Both joined, and odd renamed, once the watcher's `/who` lists
    // oddbytes: odd's next lines reach the watcher.
    let start = Instant::now();
    loop {
        watcher.write_all(b"/who\n").unwrap();
        let mut heard = String::new();
        let reply = loop {
            let mut buf = [0u8; 4096];
            let n = watcher.read(&mut buf).expect("watcher: /who reply");
            assert!(n > 0, "watcher closed: {heard:?}");
            heard.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(at) = heard.find("in lobby:")
                && let Some(end) = heard[at..].find('\n')
            {
                break heard[at..at + end].to_owned();
            }
        };
        if reply.contains("oddbytes") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "oddbytes never listed: {reply:?}"
        );
    }
    odd.write_all(b"nul\0in\0the\0middle\n").unwrap();
    odd.write_all(b"bad utf8 \xff\xfe\xc0\n").unwrap();
    odd.write_all(b"crlf ending\r\n").unwrap();
    odd.write_all(b"lf ending\n").unwrap();
    odd.write_all(b"last\n").unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    while !got.windows(16).any(|w| w == b"oddbytes: last\r\n") {
        let (more, closed) = read_until_closed(&mut watcher, Duration::from_millis(200));
        got.extend_from_slice(&more);
        assert!(!closed, "watcher closed");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "lines not relayed: {got:?}"
        );
    }
    for want in [
        &b"oddbytes: nul\0in\0the\0middle\r\n"[..],
        b"oddbytes: bad utf8 \xff\xfe\xc0\r\n",
        b"oddbytes: crlf ending\r\n",
        b"oddbytes: lf ending\r\n",
    ] {
        assert!(
            got.windows(want.len()).any(|w| w == want),
            "{:?} not relayed intact in {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got)
        );
    }
    // The odd client is still welcome.
    odd.write_all(b"/who\n").unwrap();
    let (reply, closed) = read_until_closed(&mut odd, Duration::from_millis(500));
    assert!(!closed, "odd-bytes client was closed");
    assert!(String::from_utf8_lossy(&reply).contains("oddbytes"));
    canary.wait_for_more(20, "after odd bytes");
    canary.stop("odd bytes");
    server.stop();
}

/// Each `/nick` fans a notice out to the room; a burst of them used to fill
/// every member's 256-message queue before their write loops ran (see
/// `chat_burst_of_lines_does_not_kick_readers`). Senders now pace
/// themselves, so only the flooder itself, which never reads, may be dropped.
#[test]
fn chat_nick_flood_from_a_client_that_never_reads_stays_bounded() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "chat"]);
    let canary = Canary::chat(server.addr);
    let rss_before = server.rss_kib();
    let mut flood = connect(server.addr);
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut renames = 0;
    let start = Instant::now();
    for i in 0..20_000 {
        if flood
            .write_all(format!("/nick flood{i}\n").as_bytes())
            .is_err()
        {
            break; // closed, or so far behind its writes block: either is fine
        }
        renames += 1;
        if start.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let growth_kib = server.rss_kib().saturating_sub(rss_before);
    eprintln!("nick flood: {renames} renames sent; server RSS +{growth_kib} KiB");
    assert!(
        growth_kib < 32 * 1024,
        "server RSS grew {growth_kib} KiB under a /nick flood"
    );
    canary.wait_for_more(20, "after the nick flood");
    canary.stop("nick flood");
    drop(flood);
    server.stop();
}

/// One client pastes 1,000 lines in a single write (`cat file | nc`). Every
/// other member is reading as fast as it can, so none may be dropped as
/// "slow". This found a bug: the sender's read loop fanned the whole burst
/// out before any receiver's write loop ran, filling their 256-message
/// queues; the fix is sender pacing (`service::chat::pace`).
#[test]
fn chat_burst_of_lines_does_not_kick_readers() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "chat"]);
    let canary = Canary::chat(server.addr);
    let mut paster = connect(server.addr);
    let burst: Vec<u8> = (0..1000)
        .flat_map(|i| format!("pasted line {i}\n").into_bytes())
        .collect();
    paster.write_all(&burst).unwrap();
    canary.wait_for_more(50, "after a 1000-line paste");
    canary.stop("line burst");
    drop(paster);
    server.stop();
}

// ------------------------------------------------------- resets, half-close

#[test]
fn resets_mid_transfer_half_closes_and_vanishing_clients_leak_nothing() {
    let _serial = hostile_util::serial();
    let server = hostile_util::Served::start(&["--mode", "echo"]);
    let canary = Canary::echo(server.addr);
    canary.wait_for_more(5, "warm-up");
    let baseline_fds = server.fd_count();

    // Reset mid-transfer: SO_LINGER 0 turns close into an RST while the
    // server is still echoing.
    for _ in 0..50 {
        let mut s = connect(server.addr);
        s.write_all(&vec![7u8; 256 * 1024]).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    // Connect and vanish: no byte, then close.
    for _ in 0..200 {
        drop(connect(server.addr));
    }
    // Half-close: everything sent before FIN comes back, then EOF.
    let mut half = connect(server.addr);
    let data: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    let reader = {
        let mut r = half.try_clone().unwrap();
        std::thread::spawn(move || read_until_closed(&mut r, Duration::from_secs(20)))
    };
    half.write_all(&data).unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    let (back, closed) = reader.join().unwrap();
    assert!(closed, "no EOF after half-close");
    assert!(
        back == data,
        "half-close: {} of {} bytes back",
        back.len(),
        data.len()
    );

    server.wait_fds_at_most(
        baseline_fds,
        Duration::from_secs(5),
        "after resets/vanishes",
    );
    canary.wait_for_more(10, "after resets");
    canary.stop("resets and half-close");
    server.stop();
}

// ---------------------------------------------- clients that never read

#[test]
fn thousand_clients_that_send_but_never_read_keep_server_rss_bounded() {
    let _serial = hostile_util::serial();
    hostile_util::raise_nofile();
    // A backlog for the 1000 connects: with the default 30 and echo's
    // TCP_DEFER_ACCEPT, connects that send nothing yet overflow the queue
    // and retry on SYN back-off (20 s of this test, before).
    let server = hostile_util::Served::start(&["--mode", "echo", "--backlog", "1024"]);
    let canary = Canary::echo(server.addr);
    let rss_before = server.rss_kib();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut clients = Vec::new();
    let mut sent_total = 0usize;
    for _ in 0..1000 {
        let s = connect(server.addr);
        s.set_nonblocking(true).unwrap();
        clients.push(s);
    }
    // Each writes until its socket buffers (and the server's) are full, or
    // it has sent `CAP`: a server that buffered what it read instead of
    // stopping its reads would then hold up to 1000 × CAP (512 MiB), four
    // times the RSS bound below. Without the cap the clients fill the
    // kernel's whole TCP memory first (2.3 GB here), and every other test
    // on the machine runs under memory pressure meanwhile.
    const CAP: usize = 512 * 1024;
    let mut sent = vec![0usize; clients.len()];
    let start = Instant::now();
    let mut open = clients.len();
    while open > 0 && start.elapsed() < Duration::from_secs(30) {
        open = 0;
        for (s, sent) in clients.iter_mut().zip(sent.iter_mut()) {
            if *sent >= CAP {
                continue;
            }
            match s.write(&chunk[..chunk.len().min(CAP - *sent)]) {
                Ok(n) => {
                    *sent += n;
                    sent_total += n;
                    open += 1;
                }
                Err(e) if e.kind() == IoKind::WouldBlock => {}
                Err(e) => panic!("never-reading client: {e}"),
            }
        }
    }
    // The peak over half a second, not one sample: a server still
    // buffering what it read would show it here.
    let mut rss_after = server.rss_kib();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
        rss_after = rss_after.max(server.rss_kib());
    }
    let growth_kib = rss_after.saturating_sub(rss_before);
    eprintln!(
        "1000 non-reading clients: {} MiB sent (at most 512 KiB each, or until blocked); server RSS {rss_before} -> {rss_after} KiB (+{growth_kib})",
        sent_total / MIB
    );
    // The kernel's socket buffers hold the data; the server holds at most a
    // bounded buffer per connection.
    assert!(
        growth_kib < 128 * 1024,
        "server RSS grew {growth_kib} KiB for 1000 clients that never read"
    );
    canary.wait_for_more(10, "with 1000 stuck clients");
    canary.stop("never-reading clients");
    drop(clients);
    server.stop();
}

// -------------------------------------------------- connection limits

#[test]
fn flood_past_max_connections_is_rejected_and_capacity_returns() {
    let _serial = hostile_util::serial();
    hostile_util::raise_nofile();
    let server = hostile_util::Served::start(&["--mode", "echo", "--max-connections", "20"]);
    let canary = Canary::echo(server.addr);
    canary.wait_for_more(3, "warm-up");
    // 19 more fill the limit (the canary holds one slot).
    let mut held: Vec<TcpStream> = (0..19).map(|_| connect(server.addr)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&[i as u8; 10]).unwrap();
        let mut b = [0u8; 10];
        s.read_exact(&mut b).unwrap();
        assert_eq!(b, [i as u8; 10]);
    }
    // 200 more: each is accepted and closed at once, never served.
    for _ in 0..200 {
        let mut s = connect(server.addr);
        let _ = s.write_all(b"ping");
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5));
        assert!(closed, "a connection over the limit was kept open");
        assert!(
            got.is_empty() || !got.starts_with(b"ping"),
            "over the limit but served"
        );
    }
    canary.wait_for_more(10, "during the flood");
    // Free the slots; new clients are served again.
    drop(held);
    let start = Instant::now();
    let s = loop {
        let mut s = connect(server.addr);
        let _ = s.write_all(b"again");
        let mut b = [0u8; 5];
        if s.read_exact(&mut b).is_ok() && &b == b"again" {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no capacity after slots freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    s.shutdown(Shutdown::Write).unwrap();
    canary.stop("max-connections flood");
    let summary = server.stop();
    // "served N connections (M rejected over the limit, ...": the summary
    // always has the word; the count is what was checked. Every one of the
    // 200 was rejected (and a few retries while the slots came back).
    let rejected: u64 = summary
        .split_once(" rejected over the limit")
        .and_then(|(head, _)| head.rsplit('(').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rejected count in the summary: {summary}"));
    assert!(
        (200..=300).contains(&rejected),
        "{rejected} rejected, want 200 (+ retries): {summary}"
    );
}

#[test]
fn flood_past_the_descriptor_limit_keeps_serving_and_recovers() {
    let _serial = hostile_util::serial();
    hostile_util::raise_nofile();
    // 64 descriptors in all, but a connection limit far above it: accept
    // hits EMFILE, which must back off, not spin or die.
    let server = hostile_util::Served::start_with(
        &["--mode", "echo", "--max-connections", "10000"],
        Some(64),
    );
    let canary = Canary::echo(server.addr);
    canary.wait_for_more(3, "warm-up");
    let mut held = Vec::new();
    let mut served = 0;
    for i in 0..80u32 {
        let Ok(mut s) = TcpStream::connect_timeout(&server.addr, Duration::from_millis(300)) else {
            continue; // backlog full: SYN dropped
        };
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let _ = s.write_all(&i.to_be_bytes());
        let mut b = [0u8; 4];
        if s.read_exact(&mut b).is_ok() && b == i.to_be_bytes() {
            served += 1;
        }
        held.push(s);
    }
    assert!(served < 80, "all 80 served with 64 descriptors?");
    let sockets = server.socket_count();
    assert!(
        sockets <= 64,
        "{sockets} sockets open with a limit of 64 descriptors"
    );
    canary.wait_for_more(10, "at the descriptor limit");
    drop(held);
    // Descriptors free up: accept works again.
    let start = Instant::now();
    loop {
        let mut s = connect(server.addr);
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(b"back");
        let mut b = [0u8; 4];
        if s.read_exact(&mut b).is_ok() && &b == b"back" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never accepted again"
        );
    }
    eprintln!("descriptor limit 64: {served} of 80 flood connections served while at the limit");
    canary.stop("descriptor flood");
    server.stop();
}

// ------------------------------------------------- length-prefixed framing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_prefixed_hostile_headers_truncation_and_empty_frames() {
    use tcpkit::ErrorKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let max_frame = 1024 * 1024;
    let (addr, mut ends) = hostile_util::framed::echo_server(max_frame).await;
    // A well-behaved client, round-tripping frames throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload: Vec<u8> = (0..(n % 5000)).map(|i| (i ^ n) as u8).collect();
                let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
                wire.extend_from_slice(&payload);
                s.write_all(&wire).await.unwrap();
                let mut back = vec![0u8; wire.len()];
                tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut back))
                    .await
                    .expect("good client: echo within 2s")
                    .unwrap();
                assert_eq!(back, wire, "good client: frame {n}");
                n += 1;
            }
            n
        })
    };
    // 1. A header announcing 4 GiB - 1: rejected at once, nothing reserved.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let _ = s.write_all(&[0u8; 1024]).await;
    let end = hostile_util::framed::next_end(&mut ends, "4 GiB header").await;
    assert_eq!(end.error, Some(ErrorKind::FrameTooLarge), "{end:?}");
    assert!(
        end.peak_capacity <= 16 * 1024,
        "4 GiB header: buffer grew to {}",
        end.peak_capacity
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;

    // 2. A legal 1 MiB header, 100 bytes, then EOF: a clear error, and the
    //    buffer held what arrived, not the megabyte announced.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&(max_frame as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&[1u8; 100]).await.unwrap();
    s.shutdown().await.unwrap();
    let end = hostile_util::framed::next_end(&mut ends, "truncated frame").await;
    assert_eq!(end.error, Some(ErrorKind::UnexpectedEof), "{end:?}");
    assert!(
        end.peak_capacity <= 16 * 1024,
        "truncated: buffer grew to {}",
        end.peak_capacity
    );

    // 3. Zero-length frames are messages, echoed as such.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, b'o', b'k'])
        .await
        .unwrap();
    let mut back = [0u8; 14];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, b'o', b'k']);
    drop(s);
    let end = hostile_util::framed::next_end(&mut ends, "empty frames").await;
    assert_eq!((end.error, end.frames), (None, 3), "{end:?}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let round_trips = tokio::time::timeout(Duration::from_secs(10), good)
        .await
        .expect("good client stops")
        .expect("good client task");
    assert!(round_trips > 0, "the good client made no round trip");
}

// ------------------------------------------------------------------- scale

/// Concurrent verified echo connections held open at once.
const SCALE_CONNECTIONS: usize = 10_000;

#[test]
fn ten_thousand_concurrent_echo_connections_are_all_verified() {
    ten_thousand_concurrent_echo_connections(&[]);
}

/// The same on two per-core lanes: each lane holds its hash share.
#[test]
fn ten_thousand_concurrent_connections_on_the_per_core_engine() {
    ten_thousand_concurrent_echo_connections(&["--engine", "per-core", "--workers", "2"]);
}

fn ten_thousand_concurrent_echo_connections(extra: &[&str]) {
    let _serial = hostile_util::serial();
    let limit = hostile_util::raise_nofile();
    if limit < SCALE_CONNECTIONS as u64 + 200 {
        return common::skip_or_fail(&format!(
            "open-file hard limit {limit} is below {SCALE_CONNECTIONS} + 200"
        ));
    }
    let mut args = vec!["--mode", "echo", "--backlog", "4096"];
    args.extend_from_slice(extra);
    let server = hostile_util::Served::start(&args);
    let addr = server.addr;
    let start = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (verified, peak_fds, rss_kib) = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Every connection opens, proves one round trip, then waits until
        // all are open, and proves a second one: 10k held at once.
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(SCALE_CONNECTIONS + 1));
        let connects = std::sync::Arc::new(tokio::sync::Semaphore::new(512));
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..SCALE_CONNECTIONS {
            let (barrier, connects) = (barrier.clone(), connects.clone());
            tasks.spawn(async move {
                let mut s = {
                    let _permit = connects.acquire().await.unwrap();
                    connect_async(addr, id).await
                };
                for round in 0..2u32 {
                    let msg = format!("conn {id} round {round}\n");
                    s.write_all(msg.as_bytes()).await.expect("write");
                    let mut back = vec![0u8; msg.len()];
                    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut back))
                        .await
                        .unwrap_or_else(|_| panic!("conn {id}: echo timed out"))
                        .expect("read");
                    assert_eq!(back, msg.as_bytes(), "conn {id}");
                    if round == 0 {
                        barrier.wait().await;
                    }
                }
                s
            });
        }
        tokio::time::timeout(Duration::from_secs(90), barrier.wait())
            .await
            .expect("all connections open within 90s");
        let peak_fds = server.fd_count();
        let rss_kib = server.rss_kib();
        let mut streams = Vec::new();
        while let Some(done) = tasks.join_next().await {
            streams.push(done.expect("connection task"));
        }
        (streams.len(), peak_fds, rss_kib)
    });
    eprintln!(
        "scale {extra:?}: {verified} concurrent echo connections verified in {:?}; server held {peak_fds} fds, RSS {rss_kib} KiB",
        start.elapsed()
    );
    assert_eq!(verified, SCALE_CONNECTIONS);
    assert!(
        peak_fds >= SCALE_CONNECTIONS,
        "server held only {peak_fds} descriptors"
    );
    drop(runtime);
    server.stop();
}

/// Connects from 127.0.0.x, spreading source addresses so ephemeral ports
/// never run short.
async fn connect_async(addr: SocketAddr, id: usize) -> tokio::net::TcpStream {
    let local: SocketAddr = format!("127.0.0.{}:0", 2 + id % 200).parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(local).unwrap();
    tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .unwrap_or_else(|_| panic!("conn {id}: connect timed out"))
        .unwrap_or_else(|e| panic!("conn {id}: connect: {e}"))
}
