//! Chat fan-out: N clients in R rooms of a line-based chat server (`tcpkit
//! serve --mode chat`, or anything speaking its protocol), each sending
//! stamped lines; every receiver verifies its room's lines.
//!
//! The protocol as a client sees it: the server greets with a `* welcome`
//! notice; `/join ROOM` is answered `* you joined ROOM`; a line a member
//! says reaches every *other* member of the room as `name: line`; notices
//! start with `* `; a member dropped as too slow gets `* disconnected: you
//! fell behind ...` before the close.
//!
//! Client `i` connects to `targets[i % T]` and joins room `i % R` (named
//! with a per-run nonce, so nothing from an earlier run's history is
//! replayed). With several targets that share no bus, make `T` divide `R`:
//! then each room's members all sit on one target. Every client then waits
//! at a barrier until all have joined (or failed to connect): no line is
//! sent before every receiver is in its room. Each line is
//! `c<sender> <seq> <send time in µs since the run's start>`, padded with
//! `.` to `size` bytes; when a sender stops it says `c<sender> end <count>`.
//! A receiver expects from each other member of its room the lines
//! `0..count` exactly once and in order, and classifies what differs:
//! *lost* (never arrived), *duplicated*, *reordered* (arrived after a later
//! one of the same sender), *misrouted* (from someone not in its room, or
//! not a bench line at all).
//!
//! Senders run closed loop (at most `pipeline` of their lines not yet
//! received by every other member of the room) or open loop (`rate_per_s`
//! lines per second in total, latency from each line's scheduled time).
//! With `lines_per_sender` the run is bounded: each sender says exactly
//! that many lines, and the window is from the barrier to the last
//! delivery; otherwise lines flow for `warmup + duration` and the window
//! counts lines *sent* within it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::histogram::{LatencyHistogram, LatencySummary};
use super::proc;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result, code};

/// How long receivers may take, after the last sender stopped, to get every
/// line still in flight before the run ends and what is missing is lost.
pub const DRAIN: Duration = Duration::from_secs(10);

/// A closed-loop sender whose lines nobody receives for this long, or any
/// sender whose write the server does not take for this long, gives up (a
/// receiver died or the server stalled), so a run still ends.
pub const STALL: Duration = Duration::from_secs(10);

/// Clients between connect and `* you joined` at once (see
/// `Shared::joining`).
pub const JOINING_AT_ONCE: usize = 32;

/// Clients joining at once against ncat: below its listen backlog of 10
/// (`ss -ltn` shows it), since a connect that overflows the accept queue
/// waits for the kernel's SYN-ACK retries, and ncat 7.93 quits ("getpeername
/// ... failed ... QUITTING") when it accepts one that gave up meanwhile.
pub const NCAT_JOINING_AT_ONCE: usize = 8;

/// Failures listed in the report (the counts cover all).
pub const MAX_FAILURES_LISTED: usize = 10;

/// The shortest line: `c<id> <seq> <µs>` needs at most this with small
/// numbers; longer stamps simply make a longer line.
pub const MIN_LINE_BYTES: usize = 8;

/// The dialect of the chat server under test: how a client joins its room,
/// how messages are framed, whether the sender hears its own line, and what
/// the server puts in front of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatProtocol {
    /// `tcpkit serve --mode chat`: a `* welcome` notice, `/join ROOM`
    /// answered `* you joined ROOM`; lines end in `\n` and reach the others
    /// as `name: line`; notices start with `* `; the sender does not hear
    /// itself.
    #[default]
    Tcpkit,
    /// `ncat --chat` (one room per server): no join; every connect is
    /// announced to every client (the newcomer included) as `<announce>
    /// ...` lines, so the first line a client reads proves it is in the
    /// broadcast set; lines reach the others as `<userN> line`; the sender
    /// does not hear itself.
    Ncat,
    /// The Boost.Asio chat example (one room per listening port): each
    /// message is a 4-byte header, the body length as ASCII decimal
    /// right-aligned in spaces (`sprintf("%4d")`, read back with `atoi`),
    /// then at most [`ASIO_MAX_BODY`] bytes of body with no newline; the
    /// server sends every message to every member, the sender included, and
    /// replays its last 100 messages to a newcomer. A client joins by saying
    /// `c<id> join` and waiting for its own echo.
    Asio,
}

/// The Boost.Asio chat example's `chat_message::max_body_length`.
pub const ASIO_MAX_BODY: usize = 512;

/// The Boost.Asio chat example's `chat_message::header_length`.
pub const ASIO_HEADER: usize = 4;

impl ChatProtocol {
    /// The dialect's name (`--chat-protocol`).
    pub fn name(self) -> &'static str {
        match self {
            ChatProtocol::Tcpkit => "tcpkit",
            ChatProtocol::Ncat => "ncat",
            ChatProtocol::Asio => "asio",
        }
    }

    /// Whether the server has rooms a client joins by name; otherwise each
    /// server (target) is one room.
    pub fn has_rooms(self) -> bool {
        self == ChatProtocol::Tcpkit
    }

    /// Appends one message with `body` (no newline) to `out`, framed.
    pub fn encode(self, body: &[u8], out: &mut Vec<u8>) {
        match self {
            ChatProtocol::Tcpkit | ChatProtocol::Ncat => {
                out.extend_from_slice(body);
                out.push(b'\n');
            }
            ChatProtocol::Asio => {
                let _ = std::io::Write::write_fmt(out, format_args!("{:4}", body.len()));
                out.extend_from_slice(body);
            }
        }
    }

    /// Takes the next whole message off the front of `buf`, without its
    /// framing (`\n` or `\r\n`, or the Asio header): `Ok(None)` if it is not
    /// all there yet; an error if the framing is broken.
    pub fn decode(self, buf: &mut BytesMut) -> std::result::Result<Option<BytesMut>, String> {
        match self {
            ChatProtocol::Tcpkit | ChatProtocol::Ncat => {
                let Some(at) = buf.iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let mut line = buf.split_to(at + 1);
                line.truncate(at);
                if line.ends_with(b"\r") {
                    line.truncate(at - 1);
                }
                Ok(Some(line))
            }
            ChatProtocol::Asio => {
                if buf.len() < ASIO_HEADER {
                    return Ok(None);
                }
                let len = asio_body_length(&buf[..ASIO_HEADER])?;
                if buf.len() < ASIO_HEADER + len {
                    return Ok(None);
                }
                let _ = buf.split_to(ASIO_HEADER);
                Ok(Some(buf.split_to(len)))
            }
        }
    }

    /// What a received message is, once its framing is off.
    fn classify(self, msg: &[u8]) -> Heard<'_> {
        match self {
            ChatProtocol::Tcpkit => {
                if let Some(notice) = msg.strip_prefix(b"* ") {
                    return Heard::Notice(notice);
                }
                match msg.windows(2).position(|w| w == b": ") {
                    Some(at) => Heard::Said(&msg[at + 2..]),
                    None => Heard::Said(msg),
                }
            }
            ChatProtocol::Ncat => {
                if let Some(notice) = msg.strip_prefix(b"<announce> ") {
                    return Heard::Notice(notice);
                }
                match (msg.first(), msg.windows(2).position(|w| w == b"> ")) {
                    (Some(b'<'), Some(at)) => Heard::Said(&msg[at + 2..]),
                    _ => Heard::Said(msg),
                }
            }
            ChatProtocol::Asio => Heard::Said(msg),
        }
    }
}

/// The Asio header's length, read as `atoi` does (leading spaces, digits),
/// but strictly: anything else in the 4 bytes, or more than
/// [`ASIO_MAX_BODY`], is broken framing.
fn asio_body_length(header: &[u8]) -> std::result::Result<usize, String> {
    let text = std::str::from_utf8(header).unwrap_or("");
    let digits = text.trim_start_matches(' ');
    match digits.parse::<usize>() {
        Ok(n)
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && n <= ASIO_MAX_BODY =>
        {
            Ok(n)
        }
        _ => Err(format!(
            "broken Asio chat header {:?} (want the body length, 0..={ASIO_MAX_BODY}, as 4 ASCII characters)",
            String::from_utf8_lossy(header)
        )),
    }
}

/// A received message, its server's framing and prefix off.
#[derive(Debug, PartialEq, Eq)]
enum Heard<'a> {
    /// A server notice (`* ...` from tcpkit, `<announce> ...` from ncat),
    /// without its marker.
    Notice(&'a [u8]),
    /// What a member said, its prefix (`name: `, `<userN> `) stripped.
    Said(&'a [u8]),
}

/// A validated description of one chat run.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Servers; client `i` connects to `targets[i % targets.len()]`.
    pub targets: Vec<Endpoint>,
    /// Clients, each a sender and a receiver.
    pub connections: usize,
    /// Rooms; client `i` joins room `i % rooms`.
    pub rooms: usize,
    /// Bytes per line, newline included (lines grow past it if the stamp
    /// needs more).
    pub size_bytes: usize,
    /// Closed loop: a sender's lines not yet received by every other member.
    pub pipeline: usize,
    /// Open loop: lines per second over all senders.
    pub rate_per_s: Option<f64>,
    /// Bounded run: lines each sender says (then `duration` and `warmup`
    /// are not used).
    pub lines_per_sender: Option<u64>,
    /// The measured window.
    pub duration: Duration,
    /// Lines before the window: verified, not measured.
    pub warmup: Duration,
    /// Threads of the load generator's runtime.
    pub threads: usize,
    /// Deadline for each connect, and for the welcome and join replies.
    pub connect_timeout: Duration,
    /// The server's PID, for its CPU time.
    pub server_pid: Option<u32>,
    /// The servers' dialect.
    pub protocol: ChatProtocol,
    /// Clients `0..slow_readers` join their room and then neither read
    /// nor say anything, with a small receive buffer ([`SLOW_READER_RCVBUF`]):
    /// the server must drop them, or stall the room. Nobody expects lines
    /// from or to them.
    pub slow_readers: usize,
}

/// A slow reader's `SO_RCVBUF` request (the kernel doubles it), so that the
/// server's queue for it fills within seconds even at a modest rate.
pub const SLOW_READER_RCVBUF: usize = 4096;

impl ChatConfig {
    /// Defaults: 100 clients in 1 room, 64-byte lines, 1 in flight, 10 s
    /// after 1 s of warm-up.
    pub fn new(targets: Vec<Endpoint>) -> ChatConfig {
        ChatConfig {
            targets,
            connections: 100,
            rooms: 1,
            size_bytes: 64,
            pipeline: 1,
            rate_per_s: None,
            lines_per_sender: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            threads: 1,
            connect_timeout: Duration::from_secs(5),
            server_pid: None,
            protocol: ChatProtocol::Tcpkit,
            slow_readers: 0,
        }
    }

    /// Checks ranges; the error names the offending value.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                msg,
            ))
        };
        if self.targets.is_empty() {
            return bad("chat needs at least one target".into());
        }
        if self.rooms == 0 || self.connections > u32::MAX as usize {
            return bad(format!(
                "rooms {} and connections {} must be at least 1 and at most 2^32-1",
                self.rooms, self.connections
            ));
        }
        if self.connections < 2 * self.rooms + self.slow_readers {
            return bad(format!(
                "connections {} must be at least 2 × rooms {} + slow readers {}: every room needs a sender and a receiver",
                self.connections, self.rooms, self.slow_readers
            ));
        }
        if self.size_bytes < MIN_LINE_BYTES || self.size_bytes > super::MAX_IN_FLIGHT_BYTES {
            return bad(format!(
                "size {} B must be {MIN_LINE_BYTES}..={} B for chat lines",
                self.size_bytes,
                super::MAX_IN_FLIGHT_BYTES
            ));
        }
        if self.pipeline == 0 || self.pipeline > crate::service::chat::DEFAULT_QUEUE {
            return bad(format!(
                "pipeline {} must be 1..={} lines in flight per sender (the server's per-client queue)",
                self.pipeline,
                crate::service::chat::DEFAULT_QUEUE
            ));
        }
        if let Some(rate) = self.rate_per_s
            && !(rate.is_finite() && rate > 0.0)
        {
            return bad(format!("rate {rate} must be a positive number per second"));
        }
        if self.lines_per_sender == Some(0) {
            return bad("lines per sender must be at least 1".into());
        }
        if self.lines_per_sender.is_none() && self.duration.is_zero() {
            return bad("duration must be more than 0".into());
        }
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        if !self.protocol.has_rooms() && self.targets.len() != self.rooms {
            return bad(format!(
                "a {} chat server is one room: give one target per room ({} target(s) for {} room(s))",
                self.protocol.name(),
                self.targets.len(),
                self.rooms
            ));
        }
        if self.protocol == ChatProtocol::Asio && self.size_bytes > ASIO_MAX_BODY + 1 {
            return bad(format!(
                "size {} B is more than an Asio chat body of {ASIO_MAX_BODY} B (+1, as sizes count a newline)",
                self.size_bytes
            ));
        }
        Ok(())
    }

    fn room_of(&self, client: usize) -> usize {
        client % self.rooms
    }

    /// Members of `room`.
    fn room_size(&self, room: usize) -> usize {
        (self.connections - room).div_ceil(self.rooms)
    }
}

/// What went wrong with one line, as a receiver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Never arrived.
    Lost,
    /// Arrived more than once.
    Duplicated,
    /// Arrived after a later line of the same sender.
    Reordered,
    /// From a client not in the receiver's room, or not a bench line.
    Misrouted,
}

impl FailureKind {
    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Lost => "lost",
            FailureKind::Duplicated => "duplicated",
            FailureKind::Reordered => "reordered",
            FailureKind::Misrouted => "misrouted",
        }
    }
}

/// One listed failure.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// The receiving client.
    pub receiver: u32,
    /// Words for a human: which sender, which line.
    pub detail: String,
}

/// The result of a chat run.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    /// Always `chat`.
    pub mode: &'static str,
    /// The servers' dialect (`tcpkit`, `ncat`, `asio`).
    pub protocol: ChatProtocol,
    /// The servers, as given.
    pub targets: Vec<String>,
    /// Clients that joined, per target (same order).
    pub joined_per_target: Vec<usize>,
    /// Clients.
    pub connections: usize,
    /// Rooms.
    pub rooms: usize,
    /// Bytes per line (at least).
    pub size_bytes: usize,
    /// Closed loop: lines in flight per sender.
    pub pipeline: usize,
    /// Open loop: lines per second over all senders.
    pub rate_per_s: Option<f64>,
    /// Bounded run: lines per sender.
    pub lines_per_sender: Option<u64>,
    /// Load-generator threads.
    pub threads: usize,
    /// Warm-up (zero in a bounded run).
    #[serde(rename = "warmup_s", serialize_with = "super::report::secs")]
    pub warmup: Duration,
    /// The measured window.
    #[serde(rename = "duration_s", serialize_with = "super::report::secs")]
    pub duration: Duration,
    /// Clients that joined and then stopped reading (not in the counts
    /// below).
    pub slow_readers: usize,
    /// Clients that connected and joined their room.
    pub connections_established: u64,
    /// Clients that could not connect or join.
    pub connect_failures: u64,
    /// Lines said, all of the run.
    pub lines_sent: u64,
    /// Lines said within the window.
    pub lines_sent_in_window: u64,
    /// Deliveries owed: each line said × the other members of its room
    /// that joined.
    pub expected_deliveries: u64,
    /// Deliveries received, all of the run (duplicates not counted).
    pub delivered: u64,
    /// Deliveries of lines said within the window.
    pub delivered_in_window: u64,
    /// `delivered_in_window` per second of the window.
    pub delivered_per_s: f64,
    /// What the latency measures.
    pub latency_of: &'static str,
    /// Send-to-receive latency over every receiver, µs.
    pub latency_us: LatencySummary,
    /// Receivers the server dropped as too slow (its farewell seen).
    pub slow_consumer_drops: u64,
    /// `* ... left ROOM (too slow)` notices seen by receivers.
    pub slow_drop_notices: u64,
    /// Deliveries missed by receivers the server dropped as slow, or of
    /// lines their senders said before the drop (not verification failures:
    /// the server said why).
    pub lost_to_slow_drops: u64,
    /// Deliveries missed by or from clients whose connection broke (not
    /// verification failures: the break is reported).
    pub lost_to_broken: u64,
    /// Connections that broke mid-run (not a slow-consumer drop).
    pub broken_connections: u64,
    /// Closed-loop senders that gave up after [`STALL`] without progress.
    pub stalled_senders: u64,
    /// Lines lost.
    pub lost: u64,
    /// Lines received twice or more.
    pub duplicated: u64,
    /// Lines received out of their sender's order.
    pub reordered: u64,
    /// Lines from outside the receiver's room, or not bench lines.
    pub misrouted: u64,
    /// `lost + duplicated + reordered + misrouted`.
    pub verification_failures: u64,
    /// The first few failures.
    pub failures: Vec<Failure>,
    /// The first few errors (connect, join, mid-run).
    pub error_samples: Vec<String>,
    /// The server's PID, if its CPU was measured.
    pub server_pid: Option<u32>,
    /// Server CPU time per delivered line (window), µs.
    pub server_cpu_us_per_delivered: Option<f64>,
    /// Server CPU, % of one core over the window.
    pub server_cpu_pct: Option<f64>,
    /// Server resident memory at the window's end, KiB.
    pub server_rss_kib: Option<u64>,
    /// Why the server's CPU is missing, if it is.
    pub server_note: Option<String>,
    /// The bench's own CPU per delivered line, µs.
    pub client_cpu_us_per_delivered: f64,
    /// The bench's CPU, % of one core over the window.
    pub client_cpu_pct: f64,
    /// The latency distribution (for `--histogram`).
    #[serde(skip)]
    pub histogram: LatencyHistogram,
}

impl ChatReport {
    /// The report as a table for people.
    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let load = match (self.rate_per_s, self.lines_per_sender) {
            (Some(r), _) => format!("open loop {r} lines/s"),
            (None, _) => format!("closed loop, {} in flight per sender", self.pipeline),
        };
        let _ = writeln!(
            s,
            "chat ({}): {} clients in {} room(s) on {} target(s), {} B lines, {load}",
            self.protocol.name(),
            self.connections,
            self.rooms,
            self.targets.len(),
            self.size_bytes
        );
        let span = match self.lines_per_sender {
            Some(n) => format!(
                "{n} lines per sender, window {:.3} s",
                self.duration.as_secs_f64()
            ),
            None => format!(
                "{:.3} s after {:.3} s warm-up",
                self.duration.as_secs_f64(),
                self.warmup.as_secs_f64()
            ),
        };
        let _ = writeln!(s, "  run        {span}");
        let _ = writeln!(
            s,
            "  clients    {} joined, {} failed, {} slow reader(s) ({})",
            self.connections_established,
            self.connect_failures,
            self.slow_readers,
            self.joined_per_target
                .iter()
                .zip(&self.targets)
                .map(|(n, t)| format!("{n} on {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            s,
            "  lines      {} sent ({} in window), {} of {} deliveries received",
            self.lines_sent, self.lines_sent_in_window, self.delivered, self.expected_deliveries
        );
        let _ = writeln!(
            s,
            "  delivered  {:.0} lines/s ({} in window)",
            self.delivered_per_s, self.delivered_in_window
        );
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "  latency    {} µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  (n={})",
            self.latency_of, l.p50, l.p90, l.p99, l.p999, l.max, l.count
        );
        match (self.server_cpu_us_per_delivered, self.server_cpu_pct) {
            (Some(per), Some(pct)) => {
                let _ = writeln!(
                    s,
                    "  server     {per:.2} µs CPU per delivered line, {pct:.0} % CPU (pid {})",
                    self.server_pid.unwrap_or_default()
                );
            }
            _ => {
                let _ = writeln!(s, "  server     CPU not measured (no --server-pid)");
            }
        }
        if let Some(note) = &self.server_note {
            let _ = writeln!(s, "  note       {note}");
        }
        let _ = writeln!(
            s,
            "  client     {:.2} µs CPU per delivered line, {:.0} % CPU",
            self.client_cpu_us_per_delivered, self.client_cpu_pct
        );
        let _ = writeln!(
            s,
            "  drops      {} slow consumer(s) dropped by the server ({} notices, {} deliveries missed), {} broken ({} deliveries missed), {} stalled sender(s)",
            self.slow_consumer_drops,
            self.slow_drop_notices,
            self.lost_to_slow_drops,
            self.broken_connections,
            self.lost_to_broken,
            self.stalled_senders
        );
        let _ = writeln!(
            s,
            "  verify     {} failure(s): {} lost, {} duplicated, {} reordered, {} misrouted",
            self.verification_failures, self.lost, self.duplicated, self.reordered, self.misrouted
        );
        for f in &self.failures {
            let _ = writeln!(s, "    {} at c{}: {}", f.kind.name(), f.receiver, f.detail);
        }
        for e in &self.error_samples {
            let _ = writeln!(s, "  error      {e}");
        }
        s
    }
}

/// State the clients share.
struct Shared {
    config: ChatConfig,
    /// The room names' prefix, unique to this run.
    nonce: String,
    /// Time zero of the stamps.
    base: Instant,
    /// Lines each sender said (final once it stopped).
    sent: Vec<AtomicU64>,
    /// Deliveries of each sender's lines (closed-loop pacing).
    delivered: Vec<AtomicU64>,
    wake: Vec<Notify>,
    /// Clients that never joined.
    absent: Vec<AtomicBool>,
    /// Clients the server dropped as slow, or whose connection broke:
    /// receivers stop waiting for their end line.
    gone: Vec<AtomicBool>,
    /// Clients joined or failed.
    ready: AtomicUsize,
    ready_wake: Notify,
    senders_done: AtomicUsize,
    receivers_done: AtomicUsize,
    progress_wake: Notify,
    /// Bounds clients between connect and `* you joined`: every client
    /// lands in the server's `lobby` first, where each arrival and departure
    /// is a notice to every member, so a thousand arriving at once would
    /// flood each other's queues (O(N²) notices) and get dropped as slow.
    joining: tokio::sync::Semaphore,
    /// Receivers stop at the end of the drain.
    stop: CancellationToken,
}

/// The window, decided at the barrier.
#[derive(Debug, Clone, Copy)]
struct Plan {
    go: Instant,
    measure_from: Instant,
    /// `None` in a bounded run.
    stop_at: Option<Instant>,
    /// The window in whole µs since `base`, as lines carry their stamps:
    /// senders and receivers count a line in it alike.
    from_us: u64,
    stop_us: Option<u64>,
}

impl Plan {
    fn counts(&self, us: u64) -> bool {
        us >= self.from_us && self.stop_us.is_none_or(|s| us < s)
    }
}

#[derive(Default)]
struct ClientStats {
    established: bool,
    target: usize,
    histogram: LatencyHistogram,
    delivered: u64,
    delivered_in_window: u64,
    sent_in_window: u64,
    /// Next expected sequence number per room member (index `j / rooms`).
    next: Vec<u64>,
    /// Gaps not (yet) filled: (sender, seq).
    skipped: HashSet<(u32, u64)>,
    duplicated: u64,
    reordered: u64,
    misrouted: u64,
    failures: Vec<Failure>,
    slow_dropped: bool,
    slow_notices: u64,
    broken: bool,
    stalled: bool,
    errors: Vec<String>,
}

impl ClientStats {
    fn fail(&mut self, kind: FailureKind, receiver: u32, detail: String) {
        if self.failures.len() < MAX_FAILURES_LISTED {
            self.failures.push(Failure {
                kind,
                receiver,
                detail,
            });
        }
    }
}

/// Runs the chat benchmark. Errors are configuration or runtime-start
/// failures; connection errors and verification failures are in the report.
pub fn run(config: &ChatConfig) -> Result<ChatReport> {
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
        .map_err(|e| Error::io(e, "start the bench runtime"))?;
    runtime.block_on(run_async(config.clone()))
}

async fn run_async(config: ChatConfig) -> Result<ChatReport> {
    let n = config.connections;
    let nonce = format!(
        "b{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let shared = Arc::new(Shared {
        nonce,
        base: Instant::now(),
        sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
        delivered: (0..n).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..n).map(|_| Notify::new()).collect(),
        absent: (0..n).map(|_| AtomicBool::new(false)).collect(),
        gone: (0..n).map(|_| AtomicBool::new(false)).collect(),
        ready: AtomicUsize::new(0),
        ready_wake: Notify::new(),
        senders_done: AtomicUsize::new(0),
        receivers_done: AtomicUsize::new(0),
        progress_wake: Notify::new(),
        stop: CancellationToken::new(),
        joining: tokio::sync::Semaphore::new(match config.protocol {
            ChatProtocol::Ncat => NCAT_JOINING_AT_ONCE,
            _ => JOINING_AT_ONCE,
        }),
        config,
    });
    let (plan_tx, plan_rx) = watch::channel(None::<Plan>);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(client(i, shared.clone(), plan_rx.clone())));
    }
    // The barrier: every client joined or failed.
    loop {
        let notified = shared.ready_wake.notified();
        if shared.ready.load(Acquire) >= n {
            break;
        }
        notified.await;
    }
    let go = Instant::now();
    let config = &shared.config;
    let plan = Plan {
        go,
        measure_from: match config.lines_per_sender {
            Some(_) => go,
            None => go + config.warmup,
        },
        stop_at: config
            .lines_per_sender
            .is_none()
            .then(|| go + config.warmup + config.duration),
        from_us: 0,
        stop_us: None,
    };
    let us = |at: Instant| at.duration_since(shared.base).as_micros() as u64;
    let plan = Plan {
        from_us: us(plan.measure_from),
        stop_us: plan.stop_at.map(us),
        ..plan
    };
    let _ = plan_tx.send(Some(plan));
    tokio::time::sleep_until(plan.measure_from.into()).await;
    let before = (Instant::now(), proc::self_cpu(), sample(config.server_pid));
    let present = (0..n).filter(|&i| !shared.absent[i].load(Relaxed)).count();
    let mut after = None;
    if let Some(stop_at) = plan.stop_at {
        tokio::time::sleep_until(stop_at.into()).await;
        after = Some((Instant::now(), proc::self_cpu(), sample(config.server_pid)));
    }
    // Senders stop by themselves (their count, the window's end, or a stall).
    wait_for(&shared, |s| s.senders_done.load(Acquire) >= present).await;
    let drained = tokio::time::timeout(
        DRAIN,
        wait_for(&shared, |s| s.receivers_done.load(Acquire) >= present),
    )
    .await;
    let after =
        after.unwrap_or_else(|| (Instant::now(), proc::self_cpu(), sample(config.server_pid)));
    shared.stop.cancel();
    let mut stats = Vec::with_capacity(n);
    for task in tasks {
        stats
            .push(task.await.map_err(|_| {
                Error::new(ErrorKind::Io, libc::EIO, "a chat client task panicked")
            })?);
    }
    let mut report = build_report(&shared, plan, before, after, stats);
    if drained.is_err() {
        report.error_samples.push(format!(
            "receivers still waiting {} s after the last sender stopped; what they miss counts as lost",
            DRAIN.as_secs()
        ));
    }
    Ok(report)
}

async fn wait_for(shared: &Shared, done: impl Fn(&Shared) -> bool) {
    loop {
        let notified = shared.progress_wake.notified();
        if done(shared) {
            return;
        }
        // Also polled: a notify_waiters before `notified` was created is
        // not stored.
        let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
    }
}

fn sample(pid: Option<u32>) -> Option<Result<proc::ProcSample>> {
    pid.map(proc::sample)
}

type Edge = (Instant, Duration, Option<Result<proc::ProcSample>>);

fn build_report(
    shared: &Shared,
    plan: Plan,
    before: Edge,
    after: Edge,
    stats: Vec<ClientStats>,
) -> ChatReport {
    let config = &shared.config;
    let r = config.rooms;
    let mut histogram = LatencyHistogram::new();
    let (mut lost, mut duplicated, mut reordered, mut misrouted) = (0, 0, 0, 0);
    let (mut lost_to_slow, mut lost_to_broken) = (0, 0);
    let mut failures = Vec::new();
    let mut errors = Vec::new();
    let mut joined_per_target = vec![0; config.targets.len()];
    let (mut established, mut delivered, mut in_window, mut sent_in_window) = (0, 0, 0, 0);
    let (mut slow, mut notices, mut broken, mut stalled) = (0, 0, 0, 0);
    let mut expected = 0;
    let sent: Vec<u64> = shared.sent.iter().map(|s| s.load(Acquire)).collect();
    for (i, s) in stats.iter().enumerate() {
        errors.extend(s.errors.iter().cloned());
        if !s.established || i < config.slow_readers {
            continue;
        }
        established += 1;
        joined_per_target[s.target] += 1;
        histogram.merge(&s.histogram);
        delivered += s.delivered;
        in_window += s.delivered_in_window;
        sent_in_window += s.sent_in_window;
        duplicated += s.duplicated;
        reordered += s.reordered;
        misrouted += s.misrouted;
        slow += u64::from(s.slow_dropped);
        notices += s.slow_notices;
        broken += u64::from(s.broken);
        stalled += u64::from(s.stalled);
        failures.extend(s.failures.iter().cloned());
        // What each other member said and this one never got; what went
        // with a client the server dropped, or whose connection broke, is
        // counted apart.
        let mut missing = 0;
        let mut first_missing = None;
        let (mut slow_missing, mut broken_missing) = (0, 0);
        for j in (config.room_of(i)..config.connections).step_by(r) {
            if j == i || shared.absent[j].load(Relaxed) {
                continue;
            }
            expected += sent[j];
            let got = s.next.get(j / r).copied().unwrap_or(0);
            let gaps = s
                .skipped
                .iter()
                .filter(|(from, _)| *from as usize == j)
                .count() as u64;
            let m = sent[j].saturating_sub(got) + gaps;
            if s.slow_dropped || stats[j].slow_dropped {
                slow_missing += m;
                continue;
            }
            if s.broken || stats[j].broken {
                broken_missing += m;
                continue;
            }
            if m > 0 && first_missing.is_none() {
                first_missing = Some((j, m, got));
            }
            missing += m;
        }
        lost_to_slow += slow_missing;
        lost_to_broken += broken_missing;
        if missing > 0 {
            lost += missing;
            if let Some((j, m, got)) = first_missing
                && failures.len() < MAX_FAILURES_LISTED
            {
                failures.push(Failure {
                    kind: FailureKind::Lost,
                    receiver: i as u32,
                    detail: format!(
                        "{m} line(s) of c{j} never arrived ({} said, in order up to line {got})",
                        sent[j]
                    ),
                });
            }
        }
    }
    failures.truncate(MAX_FAILURES_LISTED);
    errors.truncate(super::MAX_ERROR_SAMPLES);
    let window = match config.lines_per_sender {
        Some(_) => after.0.duration_since(plan.measure_from),
        None => config.duration,
    };
    let secs = window.as_secs_f64().max(1e-9);
    let wall = after.0.duration_since(before.0).as_secs_f64().max(1e-9);
    let server_cpu = match (&before.2, &after.2) {
        (Some(Ok(b)), Some(Ok(a))) => Some(a.cpu.saturating_sub(b.cpu)),
        _ => None,
    };
    let server_note = match (&before.2, &after.2) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => Some(format!("server CPU not measured: {e}")),
        _ => None,
    };
    let per = |cpu: Duration| {
        if in_window == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / in_window as f64
        }
    };
    let client_cpu = after.1.saturating_sub(before.1);
    ChatReport {
        mode: "chat",
        protocol: config.protocol,
        targets: config.targets.iter().map(ToString::to_string).collect(),
        joined_per_target,
        connections: config.connections,
        rooms: config.rooms,
        size_bytes: config.size_bytes,
        pipeline: config.pipeline,
        rate_per_s: config.rate_per_s,
        lines_per_sender: config.lines_per_sender,
        threads: config.threads,
        warmup: match config.lines_per_sender {
            Some(_) => Duration::ZERO,
            None => config.warmup,
        },
        duration: window,
        slow_readers: config.slow_readers,
        connections_established: established,
        connect_failures: (config.connections - config.slow_readers) as u64 - established,
        lines_sent: sent.iter().sum(),
        lines_sent_in_window: sent_in_window,
        expected_deliveries: expected,
        delivered,
        delivered_in_window: in_window,
        delivered_per_s: in_window as f64 / secs,
        latency_of: if config.rate_per_s.is_some() {
            "scheduled send to receive"
        } else {
            "send to receive"
        },
        latency_us: histogram.summary(),
        slow_consumer_drops: slow,
        slow_drop_notices: notices,
        lost_to_slow_drops: lost_to_slow,
        lost_to_broken,
        broken_connections: broken,
        stalled_senders: stalled,
        lost,
        duplicated,
        reordered,
        misrouted,
        verification_failures: lost + duplicated + reordered + misrouted,
        failures,
        error_samples: errors,
        server_pid: config.server_pid,
        server_cpu_us_per_delivered: server_cpu.map(per),
        server_cpu_pct: server_cpu.map(|c| c.as_secs_f64() / wall * 100.0),
        server_rss_kib: match &after.2 {
            Some(Ok(a)) => Some(a.rss_kib),
            _ => None,
        },
        server_note,
        client_cpu_us_per_delivered: per(client_cpu),
        client_cpu_pct: client_cpu.as_secs_f64() / wall * 100.0,
        histogram,
    }
}

/// One client: connect, join, wait at the barrier, then say and hear lines.
async fn client(
    i: usize,
    shared: Arc<Shared>,
    mut plan_rx: watch::Receiver<Option<Plan>>,
) -> ClientStats {
    let config = &shared.config;
    let target = i % config.targets.len();
    let mut stats = ClientStats {
        target,
        next: vec![0; config.room_size(config.room_of(i))],
        ..ClientStats::default()
    };
    let joined = {
        let _permit = shared.joining.acquire().await;
        join(i, &shared, target).await
    };
    let (reader, leftover, writer) = match joined {
        Ok(halves) => {
            stats.established = true;
            halves
        }
        Err(e) => {
            stats.errors.push(e);
            shared.absent[i].store(true, Relaxed);
            arrive(&shared);
            return stats;
        }
    };
    if i < config.slow_readers {
        // Joined, and counted out of every expectation; then silent until
        // the run ends (or the server closes on it).
        shared.absent[i].store(true, Relaxed);
        arrive(&shared);
        shared.stop.cancelled().await;
        drop((reader, leftover, writer));
        return stats;
    }
    arrive(&shared);
    // Keep reading while others join: ncat announces every connect to every
    // client, and a client that stops reading here would fill its buffers
    // and stall (or get dropped by) the server before the run begins.
    let (mut reader, mut buf) = (reader, leftover);
    let mut early = Vec::new();
    let mut eof = false;
    let plan = loop {
        if let Some(plan) = *plan_rx.borrow_and_update() {
            break plan;
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            changed = plan_rx.changed() => {
                if changed.is_err() {
                    return stats;
                }
            }
            read = reader.read_buf(&mut buf), if !eof => {
                if matches!(read, Ok(0) | Err(_)) {
                    // Seen again, and reported, by `hear`.
                    eof = true;
                    continue;
                }
                // Notices and joins go; a line said by a client that saw the
                // plan first stays for `hear`.
                while let Ok(Some(msg)) = config.protocol.decode(&mut buf) {
                    let keep = match config.protocol.classify(&msg) {
                        Heard::Notice(_) => false,
                        Heard::Said(text) => !matches!(parse(text), Some((_, Said::Join))),
                    };
                    if keep {
                        early.push(msg);
                    }
                }
            }
        }
    };
    let (sent_in_window, send_result) = {
        let send = say(i, &shared, plan, writer);
        let hear = hear(i, &shared, plan, reader, early, buf, &mut stats);
        let (sent, ()) = tokio::join!(send, hear);
        sent
    };
    stats.sent_in_window = sent_in_window;
    match send_result {
        Ok(()) => {}
        Err(SendEnd::Stalled) => stats.stalled = true,
        Err(SendEnd::Io(e)) => {
            shared.gone[i].store(true, Relaxed);
            if !stats.slow_dropped && !stats.broken {
                stats.broken = true;
                shared.gone[i].store(true, Relaxed);
                stats.errors.push(format!("c{i}: {e}"));
            }
        }
    }
    stats
}

fn arrive(shared: &Shared) {
    shared.ready.fetch_add(1, Release);
    shared.ready_wake.notify_one();
}

fn room_name(shared: &Shared, room: usize) -> String {
    format!("{}-{room}", shared.nonce)
}

/// Connects and joins the room as the server's dialect wants: for tcpkit,
/// reads the welcome, says `/join ROOM` and reads the reply; for ncat, reads
/// the first `<announce>` line; for Asio, says `c<id> join` and reads until
/// its own echo. Returns the halves and what was read past the join.
async fn join(
    i: usize,
    shared: &Shared,
    target: usize,
) -> std::result::Result<(OwnedReadHalf, BytesMut, OwnedWriteHalf), String> {
    let config = &shared.config;
    let protocol = config.protocol;
    let endpoint = config.targets[target];
    let deadline = config.connect_timeout;
    let connect = async {
        let addr = endpoint.socket_addr();
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if i < config.slow_readers {
            socket.set_recv_buffer_size(SLOW_READER_RCVBUF as u32)?;
        }
        socket.connect(addr).await
    };
    let stream = match tokio::time::timeout(deadline, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("c{i}: connect to {endpoint}: {e}")),
        Err(_) => {
            return Err(format!(
                "c{i}: connect to {endpoint}: timed out after {deadline:?}"
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let room = room_name(shared, config.room_of(i));
    let exchange = async {
        match protocol {
            ChatProtocol::Tcpkit => {
                let first = next_message(protocol, &mut rd, &mut buf).await?;
                if !first.starts_with(b"* welcome") {
                    return Err(format!(
                        "no `* welcome` line, got {:?}",
                        String::from_utf8_lossy(&first)
                    ));
                }
                wr.write_all(format!("/join {room}\n").as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let want = format!("* you joined {room}");
                while !next_message(protocol, &mut rd, &mut buf)
                    .await?
                    .starts_with(want.as_bytes())
                {}
                Ok(())
            }
            ChatProtocol::Ncat => {
                let first = next_message(protocol, &mut rd, &mut buf).await?;
                match protocol.classify(&first) {
                    Heard::Notice(_) => Ok(()),
                    Heard::Said(_) => Err(format!(
                        "no `<announce>` line first, got {:?}",
                        String::from_utf8_lossy(&first)
                    )),
                }
            }
            ChatProtocol::Asio => {
                let hello = format!("c{i} join");
                let mut framed = Vec::new();
                protocol.encode(hello.as_bytes(), &mut framed);
                wr.write_all(&framed).await.map_err(|e| e.to_string())?;
                while next_message(protocol, &mut rd, &mut buf).await?[..] != *hello.as_bytes() {}
                Ok(())
            }
        }
    };
    let what = if protocol.has_rooms() {
        format!("join {room}")
    } else {
        "join".to_string()
    };
    let result = tokio::time::timeout(deadline, exchange).await;
    match result {
        Ok(Ok(())) => Ok((rd, buf, wr)),
        Ok(Err(e)) => Err(format!("c{i}: {what} on {endpoint}: {e}")),
        Err(_) => Err(format!(
            "c{i}: {what} on {endpoint}: no reply within {deadline:?}"
        )),
    }
}

/// Bytes a read asks for at least.
const READ_CHUNK: usize = 16 * 1024;

/// Reads until `buf` holds a whole message and takes it.
async fn next_message(
    protocol: ChatProtocol,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> std::result::Result<BytesMut, String> {
    loop {
        if let Some(msg) = protocol.decode(buf)? {
            return Ok(msg);
        }
        buf.reserve(READ_CHUNK);
        match rd.read_buf(buf).await {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

enum SendEnd {
    Stalled,
    Io(std::io::Error),
}

/// Says lines until the count, the window's end or a stall; then the end
/// line. Returns the lines said within the window.
async fn say(
    i: usize,
    shared: &Shared,
    plan: Plan,
    mut wr: OwnedWriteHalf,
) -> (u64, std::result::Result<(), SendEnd>) {
    let config = &shared.config;
    // Members that joined (final at the barrier) receive; the rest never
    // will, so they do not count toward a line's deliveries.
    let others = (config.room_of(i)..config.connections)
        .step_by(config.rooms)
        .filter(|&j| j != i && !shared.absent[j].load(Relaxed))
        .count() as u64;
    // Open loop: this sender's share, staggered so senders do not all fire
    // at once.
    let interval = config
        .rate_per_s
        .map(|rate| Duration::from_secs_f64(config.connections as f64 / rate));
    let offset = interval.map(|iv| iv.mul_f64(i as f64 / config.connections as f64));
    let mut body = Vec::with_capacity(config.size_bytes + 32);
    let mut line = Vec::with_capacity(config.size_bytes + 32);
    let mut seq = 0u64;
    let mut in_window = 0;
    let result = loop {
        if config.lines_per_sender.is_some_and(|n| seq >= n) {
            break Ok(());
        }
        let stamp = match (interval, offset) {
            (Some(iv), Some(off)) => {
                let at = plan.go + off + iv.mul_f64(seq as f64);
                if plan.stop_at.is_some_and(|stop| at >= stop) {
                    break Ok(());
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            _ => {
                // Closed loop: wait until at most `pipeline - 1` lines are
                // still owed to some member.
                let want = (seq + 1).saturating_sub(config.pipeline as u64) * others;
                let mut last_progress = (shared.delivered[i].load(Acquire), Instant::now());
                let (mut over, mut stalled) = (false, false);
                loop {
                    let notified = shared.wake[i].notified();
                    let got = shared.delivered[i].load(Acquire);
                    if got >= want {
                        break;
                    }
                    if got != last_progress.0 {
                        last_progress = (got, Instant::now());
                    }
                    if plan.stop_at.is_some_and(|s| Instant::now() >= s) {
                        over = true;
                        break;
                    }
                    if last_progress.1.elapsed() > STALL {
                        stalled = true;
                        break;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
                }
                if over {
                    break Ok(());
                }
                if stalled {
                    break Err(SendEnd::Stalled);
                }
                let now = Instant::now();
                if plan.stop_at.is_some_and(|stop| now >= stop) {
                    break Ok(());
                }
                now
            }
        };
        body.clear();
        let us = stamp.duration_since(shared.base).as_micros() as u64;
        let _ = std::io::Write::write_fmt(&mut body, format_args!("c{i} {seq} {us}"));
        if body.len() + 1 < config.size_bytes {
            body.resize(config.size_bytes - 1, b'.');
        }
        line.clear();
        config.protocol.encode(&body, &mut line);
        // A server that stops reading (one stalled on a slow member) would
        // hold the write forever: after STALL the sender gives up.
        match tokio::time::timeout(STALL, wr.write_all(&line)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(SendEnd::Io(e)),
            Err(_) => break Err(SendEnd::Stalled),
        }
        if plan.counts(us) {
            in_window += 1;
        }
        seq += 1;
        shared.sent[i].store(seq, Release);
    };
    if !matches!(result, Err(SendEnd::Io(_))) {
        line.clear();
        config
            .protocol
            .encode(format!("c{i} end {seq}").as_bytes(), &mut line);
        let _ = tokio::time::timeout(STALL, wr.write_all(&line)).await;
    }
    shared.senders_done.fetch_add(1, Release);
    shared.progress_wake.notify_waiters();
    // Keep the write half open: dropping it would half-close, and the
    // server would end the session before the last lines reach us.
    shared.stop.cancelled().await;
    drop(wr);
    (in_window, result)
}

/// Reads the room's lines, verifying each, until every other member said
/// its end line, the server closes, or the run stops.
async fn hear(
    i: usize,
    shared: &Shared,
    plan: Plan,
    mut rd: OwnedReadHalf,
    early: Vec<BytesMut>,
    mut buf: BytesMut,
    stats: &mut ClientStats,
) {
    let config = &shared.config;
    let protocol = config.protocol;
    let r = config.rooms;
    let room = config.room_of(i);
    let mut ended = vec![false; config.room_size(room)];
    let waiting_for = |ended: &[bool]| {
        (room..config.connections)
            .step_by(r)
            .filter(|&j| {
                j != i
                    && !ended[j / r]
                    && !shared.absent[j].load(Relaxed)
                    && !shared.gone[j].load(Relaxed)
            })
            .count()
    };
    let mut ends_needed = waiting_for(&ended);
    // Now and then, see whether a member we wait for is gone.
    let mut check = tokio::time::interval(Duration::from_millis(100));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = i as u32;
    let mut early = early.into_iter();
    while ends_needed > 0 {
        let decoded = match early.next() {
            Some(msg) => Ok(Some(msg)),
            None => protocol.decode(&mut buf),
        };
        let msg = match decoded {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                buf.reserve(READ_CHUNK);
                // `read_buf` is cancel safe: a read cut short by the tick
                // loses nothing.
                let read = tokio::select! {
                    r = rd.read_buf(&mut buf) => r,
                    _ = check.tick() => {
                        ends_needed = waiting_for(&ended);
                        continue;
                    }
                    _ = shared.stop.cancelled() => break,
                };
                match read {
                    // At the run's end the bench closes its own connections.
                    Ok(0) | Err(_) if shared.stop.is_cancelled() => break,
                    Ok(0) => {
                        if !stats.slow_dropped {
                            stats.broken = true;
                            shared.gone[i].store(true, Relaxed);
                            stats
                                .errors
                                .push(format!("c{i}: the server closed the connection mid-run"));
                        }
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        if !stats.slow_dropped {
                            stats.broken = true;
                            shared.gone[i].store(true, Relaxed);
                            stats.errors.push(format!("c{i}: read: {e}"));
                        }
                        break;
                    }
                }
            }
            Err(e) => {
                // Nothing after broken framing can be trusted.
                stats.broken = true;
                shared.gone[i].store(true, Relaxed);
                stats.errors.push(format!("c{i}: {e}"));
                break;
            }
        };
        let now = Instant::now();
        let text = match protocol.classify(&msg) {
            Heard::Notice(notice) => {
                if protocol == ChatProtocol::Tcpkit {
                    if notice.starts_with(b"disconnected: you fell behind") {
                        stats.slow_dropped = true;
                        shared.gone[i].store(true, Relaxed);
                    } else if notice.ends_with(b"(too slow)") {
                        stats.slow_notices += 1;
                    }
                }
                continue;
            }
            Heard::Said(text) => text,
        };
        let Some((from, what)) = parse(text) else {
            stats.misrouted += 1;
            let detail = format!("not a bench line: {:?}", String::from_utf8_lossy(&msg));
            stats.fail(FailureKind::Misrouted, me, detail);
            continue;
        };
        // Asio sends every line to its sender too; joins are before the
        // barrier (and in Asio's replayed history).
        if matches!(what, Said::Join) || (from as usize == i && protocol == ChatProtocol::Asio) {
            continue;
        }
        let j = from as usize;
        if j >= config.connections || j % r != room || j == i {
            stats.misrouted += 1;
            let detail = format!("a line of c{j}, who is not in this client's room {room}");
            stats.fail(FailureKind::Misrouted, me, detail);
            continue;
        }
        let slot = j / r;
        match what {
            Said::Join => {}
            Said::End => {
                ended[slot] = true;
                ends_needed = waiting_for(&ended);
            }
            Said::Line(seq, us) => {
                let next = stats.next[slot];
                if seq == next {
                    stats.next[slot] = next + 1;
                } else if seq > next {
                    // Lines next..seq are missing for now.
                    if seq - next > 1 << 20 {
                        stats.misrouted += 1;
                        stats.fail(
                            FailureKind::Misrouted,
                            me,
                            format!("c{j} line {seq} is implausibly far ahead of {next}"),
                        );
                        continue;
                    }
                    stats.skipped.extend((next..seq).map(|s| (from, s)));
                    stats.next[slot] = seq + 1;
                } else if stats.skipped.remove(&(from, seq)) {
                    stats.reordered += 1;
                    stats.fail(
                        FailureKind::Reordered,
                        me,
                        format!("c{j} line {seq} arrived after line {}", next - 1),
                    );
                } else {
                    stats.duplicated += 1;
                    stats.fail(
                        FailureKind::Duplicated,
                        me,
                        format!("c{j} line {seq} arrived again"),
                    );
                    continue;
                }
                stats.delivered += 1;
                shared.delivered[j].fetch_add(1, Release);
                shared.wake[j].notify_one();
                let stamp = shared.base + Duration::from_micros(us);
                if plan.counts(us) {
                    stats.delivered_in_window += 1;
                    stats.histogram.record(now.saturating_duration_since(stamp));
                }
            }
        }
    }
    shared.receivers_done.fetch_add(1, Release);
    shared.progress_wake.notify_waiters();
}

#[derive(Debug, PartialEq, Eq)]
enum Said {
    Line(u64, u64),
    End,
    Join,
}

/// `c<id> <seq> <µs>[....]`, `c<id> end <count>` or `c<id> join` (the
/// server's prefix already off).
fn parse(text: &[u8]) -> Option<(u32, Said)> {
    let body = std::str::from_utf8(text).ok()?;
    let mut words = body.split(' ');
    let id = words.next()?.strip_prefix('c')?.parse().ok()?;
    let second = words.next()?;
    if second == "join" {
        return words.next().is_none().then_some((id, Said::Join));
    }
    let third = words.next()?.trim_end_matches('.');
    if words.next().is_some() {
        return None;
    }
    if second == "end" {
        let _count: u64 = third.parse().ok()?;
        return Some((id, Said::End));
    }
    Some((id, Said::Line(second.parse().ok()?, third.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_ends_and_refuses_the_rest() {
        assert_eq!(parse(b"c7 12 3456...."), Some((7, Said::Line(12, 3456))));
        assert_eq!(parse(b"c7 end 40"), Some((7, Said::End)));
        assert_eq!(parse(b"c7 join"), Some((7, Said::Join)));
        assert!(parse(b"c7 join now").is_none());
        assert!(parse(b"hello there").is_none());
        assert!(parse(b"user3: c7 12 3456").is_none());
        assert!(parse(b"c7 12 34 56").is_none());
    }

    #[test]
    fn asio_frames_carry_the_body_length_as_4_ascii_digits_right_aligned() {
        let mut out = Vec::new();
        ChatProtocol::Asio.encode(b"c7 12 3456", &mut out);
        ChatProtocol::Asio.encode(b"", &mut out);
        assert_eq!(out, b"  10c7 12 3456   0");
        // Split anywhere: nothing until a whole frame is there.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in out {
            buf.extend_from_slice(&[byte]);
            while let Some(msg) = ChatProtocol::Asio.decode(&mut buf).expect("framing") {
                got.push(msg.to_vec());
            }
        }
        assert_eq!(got, [b"c7 12 3456".to_vec(), Vec::new()]);
        assert!(buf.is_empty());
        for bad in [&b" 513"[..], b"512 ", b"abcd", b"  -1", b"    ", b"1 2 "] {
            let mut buf = BytesMut::from(bad);
            let err = ChatProtocol::Asio
                .decode(&mut buf)
                .expect_err("broken header");
            assert!(err.contains("broken Asio chat header"), "{err}");
        }
        let mut buf = BytesMut::from(&b" 512"[..]);
        buf.extend_from_slice(&[b'y'; 512]);
        let msg = ChatProtocol::Asio.decode(&mut buf).expect("framing");
        assert_eq!(msg.map(|m| m.len()), Some(512));
    }

    #[test]
    fn line_dialects_frame_on_newlines_and_strip_their_prefixes() {
        let mut out = Vec::new();
        ChatProtocol::Ncat.encode(b"c1 0 9", &mut out);
        assert_eq!(out, b"c1 0 9\n");
        let mut buf = BytesMut::from(
            &b"<user5> c1 0 9\r\n<announce> 127.0.0.1 is connected as <user6>.\npart"[..],
        );
        let first = ChatProtocol::Ncat
            .decode(&mut buf)
            .expect("framing")
            .expect("a line");
        assert_eq!(ChatProtocol::Ncat.classify(&first), Heard::Said(b"c1 0 9"));
        let second = ChatProtocol::Ncat
            .decode(&mut buf)
            .expect("framing")
            .expect("a line");
        assert!(
            matches!(ChatProtocol::Ncat.classify(&second), Heard::Notice(n) if n.starts_with(b"127.0.0.1"))
        );
        assert_eq!(ChatProtocol::Ncat.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"part");
        // A line without the prefix stays whole (and fails parse later).
        assert_eq!(
            ChatProtocol::Ncat.classify(b"c1 0 9"),
            Heard::Said(b"c1 0 9")
        );
        assert_eq!(
            ChatProtocol::Tcpkit.classify(b"user3: c1 0 9"),
            Heard::Said(b"c1 0 9")
        );
        assert_eq!(
            ChatProtocol::Tcpkit.classify(b"* welcome"),
            Heard::Notice(b"welcome")
        );
        // Asio has no prefix and no notices.
        assert_eq!(
            ChatProtocol::Asio.classify(b"* x: y"),
            Heard::Said(b"* x: y")
        );
    }

    #[test]
    fn anchors_are_one_room_per_target() {
        let mut c = ChatConfig::new(vec![Endpoint::loopback_v4(1)]);
        c.connections = 4;
        c.rooms = 2;
        c.validate().expect("tcpkit: 2 rooms on 1 target");
        c.protocol = ChatProtocol::Ncat;
        let err = c.validate().expect_err("ncat: 2 rooms on 1 target");
        assert!(err.message().contains("one target per room"), "{err}");
        c.targets.push(Endpoint::loopback_v4(2));
        c.validate().expect("ncat: 2 rooms on 2 targets");
        c.protocol = ChatProtocol::Asio;
        c.size_bytes = ASIO_MAX_BODY + 2;
        let err = c.validate().expect_err("a body over 512 B");
        assert!(err.message().contains("Asio chat body"), "{err}");
        c.size_bytes = ASIO_MAX_BODY + 1;
        c.validate().expect("a 512 B body");
    }

    #[test]
    fn rooms_need_two_members_each() {
        let mut c = ChatConfig::new(vec![Endpoint::loopback_v4(1)]);
        c.connections = 3;
        c.rooms = 2;
        let err = c.validate().expect_err("3 clients in 2 rooms");
        assert!(err.message().contains("at least 2 × rooms"), "{err}");
        c.connections = 4;
        c.validate().expect("4 clients in 2 rooms");
        assert_eq!((c.room_size(0), c.room_size(1)), (2, 2));
        c.connections = 5;
        assert_eq!((c.room_size(0), c.room_size(1)), (3, 2));
    }
}
