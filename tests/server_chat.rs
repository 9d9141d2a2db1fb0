//! Chat over loopback: fan-out, /nick, /join, join/leave notices, over-long
//! lines, slow consumers and non-UTF-8 input.

mod server_util;

use std::time::Duration;

use server_util::{DEADLINE, LineClient, start, within};
use tcpkit::server::{Engine, ServerBuilder};
use tcpkit::service::Chat;
use tokio::net::TcpSocket;

/// Connects and reads the welcome line, returning the client and its name.
async fn join(addr: std::net::SocketAddr) -> (LineClient, String) {
    let mut c = LineClient::connect(addr).await;
    let welcome = c.recv().await.expect("welcome line");
    let name = welcome
        .strip_prefix("* welcome ")
        .and_then(|r| r.split(',').next())
        .expect("welcome names the client")
        .to_owned();
    (c, name)
}

#[tokio::test]
async fn fan_out_nick_and_join_leave_notices() {
    let server = start(ServerBuilder::new(), Chat::new());
    let (mut a, a_name) = join(server.addr).await;
    let (mut b, b_name) = join(server.addr).await;
    a.expect(&format!("* {b_name} joined lobby")).await;
    let (mut c, c_name) = join(server.addr).await;
    a.expect(&format!("* {c_name} joined lobby")).await;
    b.expect(&format!("* {c_name} joined lobby")).await;

    a.send("/nick ana").await;
    a.expect("* you are now ana").await;
    b.expect(&format!("* {a_name} is now known as ana")).await;
    c.expect(&format!("* {a_name} is now known as ana")).await;

    // CRLF and LF both end lines; the sender does not hear itself.
    a.send_bytes(b"hello everyone\r\n").await;
    b.expect("ana: hello everyone").await;
    c.expect("ana: hello everyone").await;
    a.send("/who").await;
    a.expect(&format!("* in lobby: ana, {b_name}, {c_name}"))
        .await;

    // Rooms: c moves away and stops hearing the lobby.
    c.send("/join attic").await;
    c.expect("* you joined attic").await;
    b.expect(&format!("* {c_name} left lobby")).await;
    b.send("lobby only").await;
    a.expect(&format!("{b_name}: lobby only")).await;
    c.send("/who").await;
    c.expect(&format!("* in attic: {c_name}")).await;

    b.send("/quit").await;
    b.expect("* bye").await;
    assert_eq!(b.recv().await, None, "closed after /quit");
    a.expect(&format!("* {b_name} left lobby")).await;
    drop((a, c));
    server.stop().await;
}

#[tokio::test]
async fn nicks_are_unique_and_guest_names_reserved() {
    let server = start(ServerBuilder::new(), Chat::new());
    let (mut a, _) = join(server.addr).await;
    let (mut b, b_name) = join(server.addr).await;
    a.send("/nick ana").await;
    a.expect("* you are now ana").await;

    // Taken in another room too, and regardless of ASCII case.
    b.send("/join attic").await;
    b.expect("* you joined attic").await;
    b.send("/nick ANA").await;
    b.expect("* error: /nick ANA is taken").await;
    // A name of the guest shape, other than one's own, is refused: it could
    // belong to a guest who connects later.
    b.send("/nick user99999").await;
    b.expect("* error: /nick user99999: user<N> names are reserved for guests")
        .await;
    b.send("/who").await;
    b.expect(&format!("* in attic: {b_name}")).await;

    // Once ana leaves, the name is free.
    a.send("/quit").await;
    a.expect("* bye").await;
    assert_eq!(a.recv().await, None);
    let freed = async {
        loop {
            b.send("/nick ana").await;
            let reply = b.recv().await.expect("reply");
            if reply == "* you are now ana" {
                break;
            }
            assert_eq!(reply, "* error: /nick ana is taken");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within(DEADLINE, "the freed name", freed).await;
    drop(b);
    server.stop().await;
}

#[tokio::test]
async fn newcomers_hear_the_rooms_last_lines_first() {
    let server = start(ServerBuilder::new(), Chat::new().with_history(3));
    let (mut a, a_name) = join(server.addr).await;
    for i in 0..5 {
        a.send(&format!("line {i}")).await;
    }
    // `/who` answers after the lines above were handled: they are said.
    a.send("/who").await;
    a.expect(&format!("* in lobby: {a_name}")).await;

    let (mut b, b_name) = join(server.addr).await;
    b.expect("* last 3 lines in lobby:").await;
    for i in 2..5 {
        assert_eq!(b.recv().await, Some(format!("{a_name}: line {i}")));
    }
    // Live lines follow the replay.
    a.expect(&format!("* {b_name} joined lobby")).await;
    a.send("live").await;
    assert_eq!(b.recv().await, Some(format!("{a_name}: live")));

    // Another room: "you joined" comes before that room's replay, and a
    // room with nothing said replays nothing.
    b.send("/join attic").await;
    assert_eq!(b.recv().await.as_deref(), Some("* you joined attic"));
    b.send("upstairs").await;
    b.send("/who").await;
    b.expect(&format!("* in attic: {b_name}")).await;
    a.send("/join attic").await;
    let skipped = a.expect(&format!("* {b_name} left lobby")).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(a.recv().await.as_deref(), Some("* you joined attic"));
    assert_eq!(a.recv().await.as_deref(), Some("* last 1 line in attic:"));
    assert_eq!(a.recv().await, Some(format!("{b_name}: upstairs")));
    drop((a, b));
    server.stop().await;
}

/// Per-core lanes number connections i+1, i+1+lanes, ...: guests get
/// distinct names whichever lane the kernel picks, and the kernel does use
/// both (40 clients all hashed to one of two lanes: odds 2^-39). Rooms span
/// lanes.
#[tokio::test]
async fn per_core_lanes_share_rooms_and_never_reuse_an_id() {
    let server = start(
        ServerBuilder::new().workers(2).engine(Engine::PerCore),
        Chat::new(),
    );
    let mut clients = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (c, name) = join(server.addr).await;
        let id: u64 = name
            .strip_prefix("user")
            .and_then(|n| n.parse().ok())
            .expect("a guest name");
        assert!(ids.insert(id), "id {id} given twice: {ids:?}");
        clients.push((c, id));
    }
    assert!(
        ids.iter().any(|id| id % 2 == 1),
        "lane 0 took none: {ids:?}"
    );
    assert!(
        ids.iter().any(|id| id % 2 == 0),
        "lane 1 took none: {ids:?}"
    );
    // One room across both lanes: everyone hears a line, whichever lane
    // its speaker and its listener are on.
    let speaker = clients[0].1;
    clients[0].0.send("across lanes").await;
    for (c, id) in &mut clients[1..] {
        let skipped = c.expect(&format!("user{speaker}: across lanes")).await;
        assert!(
            skipped.iter().all(|l| l.starts_with('*')),
            "user{id} heard {skipped:?}"
        );
    }
    drop(clients);
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.connections_accepted, 40);
}

/// The idle timeout counts bytes out as well as lines in: a member who only
/// reads stays while the room talks to it, and goes once the room is quiet.
#[tokio::test]
async fn a_member_who_only_reads_stays_while_the_room_talks() {
    // Long enough that a stalled test machine does not close the lurker
    // between two lines on its own.
    let limit = Duration::from_secs(1);
    let server = start(ServerBuilder::new().idle_timeout(Some(limit)), Chat::new());
    let (mut talker, talker_name) = join(server.addr).await;
    let (mut lurker, _) = join(server.addr).await;
    talker.recv().await.expect("the lurker's join notice");
    // Three idle timeouts of talk: the lurker hears every line.
    for i in 0..12 {
        talker.send(&format!("line {i}")).await;
        let heard = within(DEADLINE, "a line", lurker.recv()).await;
        assert_eq!(heard.as_deref(), Some(&*format!("{talker_name}: line {i}")));
        tokio::time::sleep(limit / 4).await;
    }
    // Then silence: the lurker (who never sent a byte) is closed, with the
    // reason, after about one limit.
    let quiet = std::time::Instant::now();
    lurker.expect("* idle for too long; closing").await;
    assert_eq!(lurker.recv().await, None);
    let waited = quiet.elapsed();
    assert!(
        waited >= limit / 2 && waited < limit * 5,
        "closed {waited:?} after the room went quiet (limit {limit:?})"
    );
    drop(talker);
    server.stop().await;
}

#[tokio::test]
async fn over_long_line_closes_only_its_sender() {
    let server = start(ServerBuilder::new().max_line(64), Chat::new());
    let (mut a, a_name) = join(server.addr).await;
    let (mut b, b_name) = join(server.addr).await;
    let (mut c, c_name) = join(server.addr).await;
    a.expect(&format!("* {c_name} joined lobby")).await;
    b.expect(&format!("* {c_name} joined lobby")).await;

    a.send(&"x".repeat(100)).await;
    a.expect("* error: line longer than 64 bytes; closing")
        .await;
    assert_eq!(a.recv().await, None);

    // The others see the departure, nothing of the line, and carry on.
    let skipped = b.expect(&format!("* {a_name} left lobby")).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    let skipped = c.expect(&format!("* {a_name} left lobby")).await;
    assert!(skipped.is_empty(), "{skipped:?}");
    b.send("still here").await;
    c.expect(&format!("{b_name}: still here")).await;
    drop((b, c));
    server.stop().await;
}

#[tokio::test]
async fn non_utf8_is_passed_on_as_bytes() {
    let server = start(ServerBuilder::new(), Chat::new());
    let (mut a, a_name) = join(server.addr).await;
    let (mut b, b_name) = join(server.addr).await;
    a.expect(&format!("* {b_name} joined lobby")).await;
    a.send_bytes(b"caf\xe9 \xff\x00!\n").await;
    let line = b.recv().await.expect("line");
    assert_eq!(
        line,
        String::from_utf8_lossy(format!("{a_name}: caf\u{0}").as_bytes())
            .replace('\u{0}', "\u{FFFD} \u{FFFD}\u{0}!")
    );
    a.send_bytes(b"/nick \xff\n").await;
    let reply = a.recv().await.expect("reply");
    assert!(reply.starts_with("* error: /nick"), "{reply}");
    drop((a, b));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_while_others_keep_receiving() {
    let server = start(ServerBuilder::new(), Chat::new().with_queue(32));
    // The slow one: a small receive window so its socket fills quickly.
    let mut slow = slow_client(server.addr).await;
    let slow_name = slow.recv().await.unwrap()["* welcome ".len()..]
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let (mut sender, sender_name) = join(server.addr).await;
    let (mut reader, _) = join(server.addr).await;
    sender
        .expect(&{
            let r = server.metrics.snapshot().connections_accepted;
            format!("* user{r} joined lobby")
        })
        .await;

    // Well under the queue, so the reader (which takes each batch before
    // the next is sent) can never be the one that falls behind.
    const BATCH: usize = 8;
    let payload = "y".repeat(1000);
    let mut batches = 0;
    let mut notices = Vec::new();
    within(
        Duration::from_secs(30),
        "slow consumer disconnected",
        async {
            while server.metrics.snapshot().slow_consumers == 0 {
                for _ in 0..BATCH {
                    sender.send(&payload).await;
                }
                let mut got = 0;
                while got < BATCH {
                    let line = reader.recv().await.expect("reader kept up");
                    if line.starts_with(&format!("{sender_name}: ")) {
                        got += 1;
                    } else {
                        notices.push(line);
                    }
                }
                batches += 1;
            }
        },
    )
    .await;
    // Not disconnected before its queue (32) was past half full: more lines
    // were sent than that (a `while` that ran at least once proved nothing).
    assert!(
        batches * BATCH > 32 / 2,
        "disconnected after {batches} batches"
    );
    sender.send("after the slow one left").await;
    notices.extend(
        reader
            .expect(&format!("{sender_name}: after the slow one left"))
            .await,
    );
    assert!(
        notices.contains(&format!("* {slow_name} left lobby (too slow)")),
        "{notices:?}"
    );
    drop(slow);
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.slow_consumers, 1);
}

/// Several senders paste at once into a room whose readers are slow to
/// start reading, so the server's write loop finds many lines queued per
/// member and writes them in batches (one `writev` each): every reader
/// still gets every line exactly once, in each sender's order, uncut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_every_reader_once_in_order_when_writes_are_batched() {
    const SENDERS: usize = 4;
    const LINES: usize = 300;
    let server = start(ServerBuilder::new(), Chat::new().with_queue(1024));
    let mut readers = Vec::new();
    for _ in 0..2 {
        readers.push(join(server.addr).await.0);
    }
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        senders.push(join(server.addr).await);
    }
    // Everyone is in the room once the first reader hears the last joiner.
    let last = &senders[SENDERS - 1].1;
    for r in &mut readers {
        r.expect(&format!("* {last} joined lobby")).await;
    }
    let reading = readers
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let names: Vec<String> = senders.iter().map(|(_, n)| n.clone()).collect();
            tokio::spawn(async move {
                // The second reader starts late: its lines pile up.
                if i == 1 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let mut next = [0usize; SENDERS];
                while next.iter().any(|&n| n < LINES) {
                    let line = r.recv().await.expect("reader gets every line");
                    let Some(k) = names
                        .iter()
                        .position(|n| line.starts_with(&format!("{n}: ")))
                    else {
                        continue; // a notice
                    };
                    let want = format!(
                        "{}: line {} of sender {k} {}",
                        names[k],
                        next[k],
                        "z".repeat(next[k] % 50)
                    );
                    assert_eq!(line, want, "reader {i}");
                    next[k] += 1;
                }
            })
        })
        .collect::<Vec<_>>();
    let sending = senders
        .into_iter()
        .enumerate()
        .map(|(k, (mut s, _))| {
            tokio::spawn(async move {
                let paste: String = (0..LINES)
                    .map(|i| format!("line {i} of sender {k} {}\n", "z".repeat(i % 50)))
                    .collect();
                s.send_bytes(paste.as_bytes()).await;
                s
            })
        })
        .collect::<Vec<_>>();
    let mut keep = Vec::new();
    for s in sending {
        keep.push(within(DEADLINE, "paste", s).await.expect("sender"));
    }
    for r in reading {
        within(Duration::from_secs(30), "readers", r)
            .await
            .expect("reader saw every line once, in order");
    }
    drop(keep);
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.slow_consumers, 0);
}

/// A member that never reads, in a room with a steady sender: it is dropped
/// as a slow consumer once its socket takes no more bytes for
/// `STALL_WINDOW` (250 ms), and meanwhile the other member's lines keep
/// arriving: the largest gap it sees stays far below the old 2 s wait per
/// line (the bound here is generous for a loaded host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_dropped_without_stalling_the_room() {
    let server = start(ServerBuilder::new(), Chat::new().with_queue(32));
    let mut slow = slow_client(server.addr).await;
    slow.recv().await.expect("welcome");
    let (mut reader, _) = join(server.addr).await;
    let (mut sender, sender_name) = join(server.addr).await;
    reader
        .expect(&format!("* {sender_name} joined lobby"))
        .await;

    let prefix = format!("{sender_name}: ");
    let receiving = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        let mut n = 0usize;
        loop {
            let line = reader.recv().await.expect("reader gets every line");
            let Some(text) = line.strip_prefix(&prefix) else {
                continue; // a notice
            };
            if text == "done" {
                return arrivals;
            }
            assert!(text.starts_with(&format!("{n} ")), "line {n}: {text:.20}");
            n += 1;
            arrivals.push(tokio::time::Instant::now());
        }
    });
    // 7,000-byte lines every 5 ms (1.4 MB/s): the kernel's send buffer
    // toward the slow member (up to 4 MiB) fills within a few seconds.
    let filler = "s".repeat(7000);
    let mut i = 0usize;
    let mut dropped_at = None;
    within(Duration::from_secs(40), "slow member dropped", async {
        loop {
            sender.send(&format!("{i} {filler}")).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            if dropped_at.is_none() && server.metrics.snapshot().slow_consumers == 1 {
                dropped_at = Some(i);
            }
            // A little more after the drop, to see the room flow again.
            if dropped_at.is_some_and(|at| i >= at + 50) {
                break;
            }
        }
    })
    .await;
    sender.send("done").await;
    let arrivals = within(Duration::from_secs(30), "reader", receiving)
        .await
        .expect("reader task");
    assert_eq!(arrivals.len(), i, "the reader got every line");
    let gap = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .expect("lines");
    eprintln!("largest gap between the reader's lines: {gap:?}");
    assert!(
        gap < Duration::from_millis(1500),
        "the others waited {gap:?} for the slow member"
    );
    drop(slow);
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.slow_consumers, 1);
}

/// A client with a 4 KiB receive buffer, so that its socket fills quickly
/// when it stops reading.
async fn slow_client(addr: std::net::SocketAddr) -> LineClient {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = within(DEADLINE, "connect", sock.connect(addr))
        .await
        .unwrap();
    LineClient::from_stream(stream)
}
