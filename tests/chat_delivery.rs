//! Chat delivers what it owes before it closes, and closes with a reason
//! instead of a reset.
//!
//! * Scripted runs of real clients (`printf '/who\n' | nc.openbsd -N`, `ncat`,
//!   `socat`, `tcpkit connect`) against the `tcpkit serve --mode chat`
//!   binary: every run gets the welcome and the whole `/who` reply, and
//!   with `/quit` the `* bye` too. A missing program fails the test under
//!   `TCPKIT_REQUIRE_INTEROP=1` (set by `.ci/run`), else skips it saying so.
//! * Library server: room lines queued for a member that then quits,
//!   half-closes, or is shut down reach it before the close; a 1 MiB paste
//!   without a newline reads its "line longer than" reason every time; a
//!   client that never stops sending is closed within the lingering bound;
//!   a client turned away at the connection limit while sending reads why.
// Runs the `tcpkit` binary, which the `cli` feature builds.
#![cfg(feature = "cli")]

mod common;
mod server_util;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use server_util::{DEADLINE, LineClient, start, within};
use tcpkit::codec::LineCodec;
use tcpkit::server::ServerBuilder;
use tcpkit::service::Chat;
use tcpkit::service::linger::LINGER_TIME;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::FramedRead;

// ---- real clients against the binary ----

/// `/who` runs per client program (4 programs: 200 runs).
const WHO_RUNS: usize = 50;
/// `/who` then `/quit` runs per client program.
const QUIT_RUNS: usize = 10;

/// A child killed by PID and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `tcpkit serve --mode chat --json` on 127.0.0.1 port 0, its port, and
/// (once it exits) the rest of its stdout: the summary.
fn serve_chat() -> (Proc, u16, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(["serve", "--listen", "127.0.0.1:0", "--mode", "chat", "-q"])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tcpkit serve");
    let out = child.stdout.take().expect("stdout");
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = std::io::BufReader::new(out);
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut reader, &mut line);
        let _ = tx.send(line);
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        let _ = tx.send(rest);
    });
    let line = rx.recv_timeout(DEADLINE).expect("serve's first line");
    // `listening on 127.0.0.1:PORT (chat, backlog N)`
    let port = line
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("serve's first line: {line:?}"));
    (proc, port, rx)
}

/// The number after `"key":` in a one-line JSON object.
fn json_count(json: &str, key: &str) -> u64 {
    json.split_once(&format!("\"{key}\":"))
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {key} in {json:?}"))
}

/// The command line of one client program, connecting to `port`.
fn client(program: &str, port: u16) -> Command {
    let target = format!("127.0.0.1:{port}");
    let port = port.to_string();
    let mut cmd;
    match program {
        "nc.openbsd" => {
            // -N: shutdown(SHUT_WR) at stdin EOF, as in the report. Named
            // in full: `nc` may be another netcat without -N.
            cmd = Command::new("nc.openbsd");
            cmd.args(["-N", "127.0.0.1", &port]);
        }
        "ncat" => {
            cmd = Command::new("ncat");
            cmd.args(["127.0.0.1", &port]);
        }
        "socat" => {
            // -t 10: after stdin EOF wait up to 10 s (not 0.5) for the
            // server's side, so a loaded machine does not cut the reply.
            cmd = Command::new("socat");
            cmd.args(["-t", "10", "-", &format!("TCP:{target}")]);
        }
        "tcpkit" => {
            cmd = Command::new(env!("CARGO_BIN_EXE_tcpkit"));
            cmd.args(["connect", &target]);
        }
        other => unreachable!("no client {other}"),
    }
    cmd
}

/// Runs `program` with `script` on stdin, returns what it printed.
fn run_client(program: &str, port: u16, script: &'static [u8]) -> String {
    let mut child = client(program, port)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut proc = Proc(child);
    // As `printf ... |`: the script, then EOF.
    stdin.write_all(script).expect("client stdin");
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err);
        let _ = tx.send((out, err));
    });
    let (out, err) = rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{program} still running after {DEADLINE:?}"));
    let status = proc.0.wait().expect("wait");
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(
        status.success(),
        "{program}: {status:?}; stdout {out:?}; stderr {:?}",
        String::from_utf8_lossy(&err)
    );
    out
}

/// Checks one run's output: the welcome, the `/who` reply naming the
/// client, and (after `/quit`) `* bye` last. Returns what is missing.
fn check_run(out: &str, quit: bool) -> Result<(), String> {
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    let name = lines
        .first()
        .and_then(|l| l.strip_prefix("* welcome "))
        .and_then(|r| r.split(',').next())
        .ok_or("no welcome")?;
    let who = lines
        .iter()
        .find_map(|l| l.strip_prefix("* in lobby: "))
        .ok_or("no /who reply")?;
    if !who.split(", ").any(|n| n == name) {
        return Err(format!("/who reply without {name}: {who:?}"));
    }
    if quit && lines.last() != Some(&"* bye") {
        return Err("no `* bye` at the end".to_owned());
    }
    Ok(())
}

#[test]
fn every_scripted_client_gets_the_welcome_and_the_whole_who_reply() {
    let programs: Vec<&str> = ["nc.openbsd", "ncat", "socat"]
        .into_iter()
        .filter(|p| common::have_program(p))
        .chain(["tcpkit"])
        .collect();
    let (mut serve, port, summary) = serve_chat();
    let started = Instant::now();
    // One thread per program: four runs at a time, in one room.
    let runs: Vec<_> = programs
        .iter()
        .map(|&program| {
            thread::spawn(move || {
                let mut failed = Vec::new();
                for i in 0..WHO_RUNS + QUIT_RUNS {
                    let quit = i >= WHO_RUNS;
                    let script: &[u8] = if quit { b"/who\n/quit\n" } else { b"/who\n" };
                    let out = run_client(program, port, script);
                    if let Err(why) = check_run(&out, quit) {
                        failed.push(format!("run {i}: {why}: {out:?}"));
                    }
                }
                (program, failed)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (program, failed) = run.join().expect("client thread");
        eprintln!(
            "{program}: {}/{} runs got everything",
            WHO_RUNS + QUIT_RUNS - failed.len(),
            WHO_RUNS + QUIT_RUNS
        );
        failures.extend(failed.into_iter().map(|f| format!("{program} {f}")));
    }
    eprintln!(
        "{} runs in {:?}",
        programs.len() * (WHO_RUNS + QUIT_RUNS),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} runs lost lines: {failures:#?}",
        failures.len()
    );
    // SIGTERM: the server drains and exits 0, and its summary counts a
    // lingering close for each `/quit` (after EOF, nothing lingers) and
    // no cut-off (every client closed its side).
    // SAFETY: kill(2) on our own child's PID, not yet reaped.
    unsafe {
        libc::kill(serve.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let summary = summary.recv_timeout(DEADLINE).expect("serve's summary");
    let status = serve.0.wait().expect("wait serve");
    assert!(status.success(), "serve after SIGTERM: {status:?}");
    let quits = (programs.len() * QUIT_RUNS) as u64;
    assert_eq!(json_count(&summary, "lingering_closes"), quits, "{summary}");
    assert_eq!(json_count(&summary, "lingering_cut_off"), 0, "{summary}");
}

// ---- library server: what is queued is delivered ----

/// A member that does not read, with a small receive buffer, so lines said
/// to it stay queued in the server.
struct Stalled {
    lines: FramedRead<OwnedReadHalf, LineCodec>,
    wr: OwnedWriteHalf,
}

impl Stalled {
    async fn connect(addr: std::net::SocketAddr) -> Stalled {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = within(DEADLINE, "connect", sock.connect(addr))
            .await
            .expect("connect");
        let (rd, wr) = stream.into_split();
        Stalled {
            lines: FramedRead::new(rd, LineCodec::new(1 << 20)),
            wr,
        }
    }

    /// The next line; `None` at EOF. A reset fails the test.
    async fn recv(&mut self) -> Option<String> {
        match within(DEADLINE, "a line", self.lines.next()).await {
            Some(Ok(line)) => Some(String::from_utf8_lossy(&line).into_owned()),
            Some(Err(e)) => panic!("read failed: {e}"),
            None => None,
        }
    }
}

/// Reads until a line starts with `prefix`.
async fn skip_to(c: &mut LineClient, prefix: &str) -> String {
    loop {
        match c.recv().await {
            Some(l) if l.starts_with(prefix) => return l,
            Some(_) => {}
            None => panic!("EOF waiting for {prefix:?}"),
        }
    }
}

/// Lines said to a member that is not reading: 8 MB, more than the
/// kernel lets sit in socket buffers (`tcp_wmem` max, 4 MiB by default),
/// fewer than half its queue (so senders never wait for it).
const QUEUED_LINES: usize = 1000;

/// The stalled member's queue, in lines.
const QUEUE: usize = 2048;

/// How the stalled member ends its session in [`queued_lines_reach`].
#[derive(Debug, Clone, Copy)]
enum Ending {
    Quit,
    HalfClose,
    Shutdown,
}

/// Has a member fall behind by [`QUEUED_LINES`] lines, ends its session
/// with `ending`, then reads: every line must arrive, then the farewell.
async fn queued_lines_reach(ending: Ending) {
    let server = start(ServerBuilder::new(), Chat::new().with_queue(QUEUE));
    let mut stalled = Stalled::connect(server.addr).await;
    let welcome = stalled.recv().await.expect("welcome");
    let mut talker = LineClient::connect(server.addr).await;
    let talker_name = talker.recv().await.expect("welcome")["* welcome ".len()..]
        .split(',')
        .next()
        .expect("name")
        .to_owned();
    let line = "z".repeat(8000);
    for _ in 0..QUEUED_LINES {
        talker.send(&line).await;
    }
    // The reply comes after every line above was queued for the others.
    talker.send("/who").await;
    skip_to(&mut talker, "* in lobby: ").await;
    let farewell = match ending {
        Ending::Quit => {
            within(DEADLINE, "send /quit", stalled.wr.write_all(b"/quit\n"))
                .await
                .expect("send /quit");
            Some("* bye")
        }
        Ending::HalfClose => {
            within(DEADLINE, "half-close", stalled.wr.shutdown())
                .await
                .expect("half-close");
            None
        }
        Ending::Shutdown => {
            server.handle.shutdown();
            Some("* server shutting down")
        }
    };
    let mut said = 0;
    let mut last = None;
    while let Some(l) = stalled.recv().await {
        if l == format!("{talker_name}: {line}") {
            said += 1;
        }
        last = Some(l);
    }
    assert_eq!(
        said, QUEUED_LINES,
        "{ending:?}: lines delivered before the close ({welcome})"
    );
    if let Some(farewell) = farewell {
        assert_eq!(last.as_deref(), Some(farewell), "{ending:?}");
    }
    drop((stalled, talker));
    server.stop().await;
}

#[tokio::test]
async fn quitting_member_gets_the_room_lines_queued_for_it_then_bye() {
    queued_lines_reach(Ending::Quit).await;
}

#[tokio::test]
async fn half_closing_member_gets_the_room_lines_queued_for_it() {
    queued_lines_reach(Ending::HalfClose).await;
}

#[tokio::test]
async fn shutdown_flushes_queued_lines_then_says_goodbye() {
    queued_lines_reach(Ending::Shutdown).await;
}

// ---- library server: closing with a reason is not a reset ----

/// Sends `bytes` (or, with `None`, sends forever at `pace` per 4 KiB)
/// on `wr`, then half-closes; returns how the sending ended and when.
async fn send_then_half_close(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    bytes: Option<usize>,
    pace: Duration,
) -> (std::io::Result<()>, Instant) {
    let chunk = vec![b'x'; 4096];
    let mut sent = 0usize;
    let result = async {
        loop {
            if bytes.is_some_and(|total| sent >= total) {
                return wr.shutdown().await;
            }
            wr.write_all(&chunk).await?;
            sent += chunk.len();
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
        }
    }
    .await;
    (result, Instant::now())
}

/// Reads until EOF: what arrived, and when the EOF did. A reset fails
/// the test: that is the bug.
async fn read_to_eof(rd: &mut tokio::net::tcp::OwnedReadHalf) -> (String, Instant) {
    let mut got = Vec::new();
    let read = within(DEADLINE, "read to EOF", rd.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    if let Err(e) = read {
        panic!("read failed after {text:?}: {e}");
    }
    (text, Instant::now())
}

/// The 1 MiB paste without a newline, 20 times: each reads the reason,
/// then a clean EOF, and its whole paste is taken (no reset on its write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_paste_without_newline_reads_its_reason_every_time() {
    let server = start(ServerBuilder::new(), Chat::new());
    let reason = "* error: line longer than 8192 bytes; closing\r\n";
    for i in 0..20 {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let (mut rd, wr) = stream.into_split();
        let paste = tokio::spawn(send_then_half_close(wr, Some(1 << 20), Duration::ZERO));
        let (text, _) = read_to_eof(&mut rd).await;
        assert!(text.ends_with(reason), "paste {i}: {text:?}");
        let (sent, _) = within(DEADLINE, "the paste", paste).await.expect("task");
        assert!(sent.is_ok(), "paste {i}: the write failed: {sent:?}");
    }
    let closes = server.metrics.snapshot().lingering_closes;
    assert!(closes >= 20, "{closes} lingering closes");
    server.stop().await;
}

/// A client that never stops sending (slowly, so the time bound applies)
/// or floods (the byte bound) reads its reason, and is closed within the
/// lingering bound of its EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_is_closed_within_the_lingering_bound() {
    let server = start(ServerBuilder::new(), Chat::new());
    // 4 KiB per 10 ms: 400 KiB/s, far under the byte bound in 2 s.
    for (what, pace, cut_off) in [
        ("slow", Duration::from_millis(10), 1),
        ("flood", Duration::ZERO, 2),
    ] {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let (mut rd, wr) = stream.into_split();
        let sender = tokio::spawn(send_then_half_close(wr, None, pace));
        let (text, eof_at) = read_to_eof(&mut rd).await;
        assert!(
            text.contains("* error: line longer than"),
            "{what}: {text:?}"
        );
        let (sent, closed_at) = within(DEADLINE, "the server's close", sender)
            .await
            .expect("task");
        assert!(sent.is_err(), "{what}: sending never failed");
        let lingered = closed_at.duration_since(eof_at);
        // Slack for a loaded machine; the bound is what it must not reach.
        assert!(
            lingered < LINGER_TIME + Duration::from_secs(3),
            "{what}: closed {lingered:?} after the reason"
        );
        eprintln!("{what}: closed {lingered:?} after the reason");
        server
            .wait_for("the cut-off counted", |s| s.lingering_cut_off == cut_off)
            .await;
    }
    server.stop().await;
}

/// Over the connection limit: a client that is already sending reads the
/// refusal line and a clean EOF, and its data is taken, not reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_turned_away_while_sending_reads_why() {
    let server = start(ServerBuilder::new().max_connections(1), Chat::new());
    let mut first = LineClient::connect(server.addr).await;
    first.recv().await.expect("welcome");
    for i in 0..20 {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let (mut rd, wr) = stream.into_split();
        let sender = tokio::spawn(send_then_half_close(wr, Some(256 * 1024), Duration::ZERO));
        let (text, _) = read_to_eof(&mut rd).await;
        assert_eq!(
            text, "* server full: too many connections, try again later\r\n",
            "client {i}"
        );
        let (sent, _) = within(DEADLINE, "the send", sender).await.expect("task");
        assert!(sent.is_ok(), "client {i}: the write failed: {sent:?}");
    }
    let s = server.metrics.snapshot();
    assert_eq!(s.connections_rejected, 20);
    assert!(s.lingering_closes >= 20, "{s:?}");
    drop(first);
    server.stop().await;
}

/// Shutdown while a member is sending lines as fast as it can: it reads
/// the farewell and a clean EOF, and the close lingers. (Whether a plain
/// close resets this reader depends on whether bytes sit unread at that
/// instant; here it mostly does not, so the lingering count is what tells
/// the two apart. In the paste and reject tests above a plain close
/// resets the client: its read or its write fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_at_shutdown_reads_the_farewell() {
    let server = start(ServerBuilder::new(), Chat::new());
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (rd, mut wr) = stream.into_split();
    let mut lines = FramedRead::new(rd, LineCodec::new(1 << 20));
    let welcome = within(DEADLINE, "welcome", lines.next()).await;
    assert!(matches!(welcome, Some(Ok(_))), "{welcome:?}");
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = tokio::spawn({
        let sent = sent.clone();
        async move {
            let line = format!("{}\n", "s".repeat(1000));
            while wr.write_all(line.as_bytes()).await.is_ok() {
                sent.fetch_add(line.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    // Lines are flowing: more has been sent than socket buffers start with.
    within(DEADLINE, "the sender under way", async {
        while sent.load(std::sync::atomic::Ordering::Relaxed) < 256 * 1024 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    server.handle.shutdown();
    let mut last = None;
    loop {
        match within(DEADLINE, "a line", lines.next()).await {
            Some(Ok(line)) => last = Some(String::from_utf8_lossy(&line).into_owned()),
            Some(Err(e)) => panic!("read failed after {last:?}: {e}"),
            None => break,
        }
    }
    assert_eq!(last.as_deref(), Some("* server shutting down"));
    within(DEADLINE, "the sender sees the close", sender)
        .await
        .expect("task");
    let summary = server.stop().await;
    assert_eq!(summary.snapshot.lingering_closes, 1, "{summary:?}");
}
