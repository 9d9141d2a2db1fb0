//! [`Chat`]: line-based rooms usable from plain `nc` or telnet.
//!
//! Each line a client sends goes to every *other* client in its room as
//! `name: line`. Commands: `/nick NAME` (unique on the server, ignoring
//! ASCII case; `user<N>` is reserved for guests), `/join ROOM` (everyone starts in
//! `lobby`), `/who`, `/quit`. Server notices start with `* `. Lines end in
//! `\n` or `\r\n` and are passed on as bytes (UTF-8 or not); a line over the
//! maximum gets an error line and closes its sender only. Each client has a
//! bounded queue; one that falls behind is disconnected with a reason.
//!
//! Slow consumers: after each line, its sender waits for every other member
//! of the room whose queue is more than half full until it is below half
//! again, at most [`STALL_WINDOW`] (250 ms) per line in all. A member whose
//! socket accepted no bytes during such a whole wait is dropped as a slow
//! consumer, as is one whose queue fills. So a reader that keeps up with a paste (its
//! socket takes bytes) is never dropped, the paster is held back by TCP, and
//! a reader that stops reading costs the others about `STALL_WINDOW` once.
//! Queued lines go out in batches: one `writev` (or one copied write on
//! TLS) per wake-up, up to 64 lines or 64 KiB; see `outbox`. A
//! room replays its last [`DEFAULT_HISTORY`] lines to whoever joins. The
//! idle timeout counts lines in and bytes out, so a member who only reads
//! stays while the room talks (see `Idle`).
//!
//! A session owes its member every line queued for it: one that
//! half-closes, quits, is cut off or idles out, and everyone at shutdown,
//! first gets what is queued (the welcome, replies, room lines said before
//! it left; within [`FLUSH_DEADLINE`]), then the reason it is closed, then
//! a lingering close ([`crate::service::linger`]) so that a client still
//! sending reads that reason instead of a reset.
//!
//! With a [`bus::Bus`] (`serve --bus`), rooms span instances: see
//! [`bus`], and [`redis_bus`] for the Redis implementation (feature `redis`).
//!
//! * `room`: [`Room`], the [`Hub`] of rooms, and the non-blocking fan-out.
//! * `bus`: the trait between a hub and other instances.
//! * `outbox`: a member's queue and the write side, cancel-safe, flushed at close.
//! * this file: one client's session (read loop, commands, closing).

pub mod bus;
mod outbox;
#[cfg(feature = "redis")]
pub mod redis_bus;
mod room;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use outbox::Outbox;
use room::notice;
pub use room::{Hub, Member, NameTaken, Room};

use super::{CloseReason, Connection, ReadHalf, Served, Service, linger};
use crate::codec::LineCodec;
use crate::metrics::Metrics;

/// The room everyone starts in.
pub const DEFAULT_ROOM: &str = "lobby";

/// Default per-client queue, in messages: a client this far behind is
/// disconnected rather than let the server buffer without bound.
pub const DEFAULT_QUEUE: usize = 256;

/// Default lines of history a room replays to whoever joins it.
pub const DEFAULT_HISTORY: usize = 20;

/// Longest `/nick` or `/join` argument, in bytes.
pub const MAX_NAME: usize = 32;

/// How long a sender waits, at most, for the bus's publish queue to drain
/// below half (`serve --bus`) before its next line; past it, lines for other
/// instances are dropped (counted) rather than the sender held longer.
/// Lagging *readers* are judged by [`STALL_WINDOW`] instead.
pub const SLOW_DEADLINE: Duration = Duration::from_secs(2);

/// The slow-consumer rule's window. After each line, a sender waits for
/// every other member of the room whose queue is more than half full
/// ("lagging") until its queue is below half again, but never longer than
/// this per line (however many lag). A lagging member whose socket accepted no bytes at all
/// during such a wait of this length is dropped as a slow consumer; one
/// that made progress is not (the sender goes on; a member whose queue
/// fills is dropped at once). So one reader that stops reading costs the
/// others at most about this long once, and a reader that keeps up with
/// a paste (its socket takes bytes) is never dropped for being behind.
pub const STALL_WINDOW: Duration = Duration::from_millis(250);

/// How often a pacing sender looks at a lagging member's queue again.
const PACE_POLL: Duration = Duration::from_millis(2);

/// How long the farewell line (error, shutdown, slow) may take to write.
const FAREWELL_DEADLINE: Duration = Duration::from_secs(1);

/// How long a closing session may take to write what is already queued for
/// its member (at most the queue's length in lines). A member that reads
/// gets it in far less on any network; one that does not cannot hold the
/// session longer. With the farewell and the lingering close after it, it
/// fits in the default shutdown grace period (5 + 1 + 2 s of 10 s).
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// The chat service. Cheap to clone; clones share rooms.
#[derive(Debug, Clone)]
pub struct Chat {
    hub: Arc<Hub>,
    queue: usize,
}

impl Default for Chat {
    fn default() -> Self {
        Chat::new()
    }
}

impl Chat {
    /// A chat with no rooms yet and [`DEFAULT_QUEUE`] per client.
    pub fn new() -> Chat {
        Chat {
            hub: Arc::new(Hub::new(DEFAULT_HISTORY)),
            queue: DEFAULT_QUEUE,
        }
    }

    /// Sets the per-client queue length in messages (at least 1).
    pub fn with_queue(mut self, messages: usize) -> Chat {
        self.queue = messages.max(1);
        self
    }

    /// Sets how many recent lines each room replays to whoever joins it
    /// (0: none; default [`DEFAULT_HISTORY`]). Call before serving: it
    /// starts a fresh set of rooms.
    pub fn with_history(mut self, lines: usize) -> Chat {
        self.hub = Arc::new(Hub::new(lines));
        self
    }

    /// The rooms this chat serves (shared by its clones).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Service for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn serve(&self, conn: Connection) -> impl Future<Output = Served> + Send + 'static {
        session(self.hub.clone(), self.queue, conn)
    }

    fn reject_line(&self) -> Option<&'static [u8]> {
        Some(b"* server full: too many connections, try again later\r\n")
    }
}

/// One client's state as its session sees it.
struct Me {
    id: u64,
    name: String,
    /// The name it was born with (`user<id>`, `user<id>-<tag>` with a bus).
    guest: String,
    /// A name claimed on the bus, to give up when it changes or leaves.
    claimed: Option<String>,
    room: String,
    tx: mpsc::Sender<Bytes>,
    kick: CancellationToken,
    /// When its write loop last got bytes into the socket.
    last_write: Arc<LastWrite>,
    /// Bytes read from the client so far (taken into [`Served`] at the
    /// end; whatever is left at drop goes to `metrics`).
    bytes_in: u64,
    metrics: Arc<Metrics>,
}

impl Drop for Me {
    /// Dropped with the session cut off at the grace deadline: what the
    /// client sent still counts in the server's totals.
    fn drop(&mut self) {
        if self.bytes_in != 0 {
            self.metrics.add_bytes(self.bytes_in, 0);
        }
    }
}

impl Me {
    fn member(&self) -> Member {
        Member {
            id: self.id,
            name: self.name.clone(),
            tx: self.tx.clone(),
            kick: self.kick.clone(),
            last_write: self.last_write.clone(),
        }
    }

    /// A line for this client only; dropped if its own queue is full (a
    /// client that far behind is disconnected by the next broadcast).
    fn tell(&self, text: std::fmt::Arguments<'_>) {
        let _ = self.tx.try_send(notice(text));
    }
}

async fn session(hub: Arc<Hub>, queue: usize, conn: Connection) -> Served {
    let Connection {
        mut stream,
        peer,
        id,
        shutdown,
        idle_timeout,
        max_line,
        metrics,
        ..
    } = conn;
    metrics.watch_chat(hub.gauges());
    let (tx, rx) = mpsc::channel(queue);
    let guest = match hub.bus() {
        Some(bus) => format!("user{id}-{}", bus.tag()),
        None => format!("user{id}"),
    };
    let mut me = Me {
        id,
        name: guest.clone(),
        guest,
        claimed: None,
        room: DEFAULT_ROOM.to_owned(),
        tx,
        kick: CancellationToken::new(),
        last_write: Arc::new(LastWrite::new()),
        bytes_in: 0,
        metrics: metrics.clone(),
    };
    me.tell(format_args!(
        "welcome {}, you are in {}; commands: /nick NAME, /join ROOM, /who, /quit",
        me.name, me.room
    ));
    join(&hub, &me, &metrics, false).await;

    let mut out = Outbox::new(rx, metrics.clone());
    let last_write = me.last_write.clone();
    let (rd, mut wr) = stream.split();
    let reason = {
        let mut lines = FramedRead::new(rd, LineCodec::new(max_line));
        let kick = me.kick.clone();
        let idle = idle_timeout.map(|limit| Idle {
            limit,
            last_write: &last_write,
        });
        // Whichever branch ends first, the write loop is dropped at an
        // await: `Outbox` keeps the rest of its message and the queue, and
        // `close` below delivers them.
        tokio::select! {
            r = read_loop(&hub, &mut me, &mut lines, idle, &metrics) => r,
            r = out.write_loop(&mut wr, &last_write) => r,
            _ = kick.cancelled() => CloseReason::SlowConsumer,
            _ = shutdown.cancelled() => CloseReason::Shutdown,
        }
    };
    // Read and write errors name what failed, not whom: the close is logged
    // far from here, so the peer goes into the message.
    let reason = match reason {
        CloseReason::Error(e) => CloseReason::Error(e.context(format_args!("chat client {peer}"))),
        other => other,
    };
    // Out of the room first, so that what is queued from here on is all
    // there is to flush. A slow consumer was already removed (and counted)
    // by whoever found its queue full.
    if !matches!(reason, CloseReason::SlowConsumer) {
        hub.leave(&me.room, me.id);
    }
    if let (Some(bus), Some(name)) = (hub.bus(), me.claimed.take()) {
        bus.release(&name, me.id);
    }
    let text = farewell(&reason, max_line, queue);
    out.close(&mut wr, &reason, text, &last_write).await;
    if lingers(&reason) {
        linger::lingering_close(&mut stream, &metrics).await;
    }
    Served {
        bytes_in: std::mem::take(&mut me.bytes_in),
        bytes_out: out.take_bytes_out(),
        reason,
    }
}

/// Whether the client may still be sending when the server closes it, so
/// the close must linger lest it become a reset that destroys the farewell.
/// After EOF nothing more can arrive; after an error nothing more will.
fn lingers(reason: &CloseReason) -> bool {
    !matches!(reason, CloseReason::PeerClosed | CloseReason::Error(_))
}

fn farewell(reason: &CloseReason, max_line: usize, queue: usize) -> Option<String> {
    Some(match reason {
        CloseReason::Done => "bye".to_owned(),
        CloseReason::LineTooLong => {
            format!("error: line longer than {max_line} bytes; closing")
        }
        CloseReason::SlowConsumer => {
            format!("disconnected: you fell behind by more than {queue} messages")
        }
        CloseReason::Shutdown => "server shutting down".to_owned(),
        CloseReason::IdleTimeout => "idle for too long; closing".to_owned(),
        _ => return None,
    })
}

/// Joins `me.room`: with a bus, its history comes from the bus (none if
/// the bus cannot answer in time). With `tell`, says `you joined` first
/// (ahead of the history), once nothing is left to wait for: a client that
/// reads it is in the room.
async fn join(hub: &Hub, me: &Me, metrics: &Metrics, tell: bool) {
    let history = match hub.bus() {
        Some(bus) => Some(bus.history(&me.room).await.unwrap_or_default()),
        None => None,
    };
    if tell {
        me.tell(format_args!("you joined {}", me.room));
    }
    count_slow(
        metrics,
        hub.join_with(&me.room, me.member(), history.as_deref()),
    );
}

fn count_slow(metrics: &Metrics, kicked: usize) {
    for _ in 0..kicked {
        metrics.slow_consumer();
    }
}

/// When the write loop last delivered bytes to the client, shared with the
/// read loop's idle check (both run in the session's one task) and with
/// the room ([`Member`]), whose senders judge a lagging member by it.
#[derive(Debug)]
pub(crate) struct LastWrite {
    base: Instant,
    /// Microseconds after `base`.
    us: AtomicU64,
}

impl LastWrite {
    pub(crate) fn new() -> LastWrite {
        LastWrite {
            base: Instant::now(),
            us: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let us = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.us.store(us, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.base + Duration::from_micros(self.us.load(Ordering::Relaxed))
    }
}

/// A chat client's idle timeout. Activity is a complete line in, or bytes
/// out: a member who only reads stays while the room talks to it, as on
/// IRC. But while part of a line is pending, only a complete line counts,
/// so a client dribbling a line a byte at a time (slowloris) is closed
/// however busy its room is.
#[derive(Clone, Copy)]
struct Idle<'a> {
    limit: Duration,
    last_write: &'a LastWrite,
}

impl Idle<'_> {
    /// When the client will have been idle for the limit.
    fn deadline(&self, last_line: Instant, partial_line: bool) -> Instant {
        let since = if partial_line {
            last_line
        } else {
            last_line.max(self.last_write.at())
        };
        since + self.limit
    }
}

async fn read_loop(
    hub: &Hub,
    me: &mut Me,
    lines: &mut FramedRead<ReadHalf<'_>, LineCodec>,
    idle: Option<Idle<'_>>,
    metrics: &Metrics,
) -> CloseReason {
    let mut last_line = Instant::now();
    loop {
        let next = match idle {
            // Chat is not the hot path: a timer per line is fine here.
            // `next()` on a `FramedRead` is cancel-safe: a timeout that
            // re-arms keeps the partial line buffered.
            Some(idle) => loop {
                let deadline = idle.deadline(last_line, !lines.read_buffer().is_empty());
                if deadline <= Instant::now() {
                    return CloseReason::IdleTimeout;
                }
                if let Ok(next) = tokio::time::timeout_at(deadline, lines.next()).await {
                    break next;
                }
            },
            None => lines.next().await,
        };
        last_line = Instant::now();
        let line = match next {
            None => return CloseReason::PeerClosed,
            Some(Err(e)) if e.kind() == crate::ErrorKind::LineTooLong => {
                return CloseReason::LineTooLong;
            }
            Some(Err(e)) => return CloseReason::Error(e),
            Some(Ok(line)) => line,
        };
        // The codec strips the terminator: count it as one byte (a `\r`
        // before it goes uncounted, so chat's bytes in are approximate).
        me.bytes_in += line.len() as u64 + 1;
        let lagging = match handle_line(hub, me, line, metrics).await {
            Err(reason) => return reason,
            Ok(Some(lagging)) => lagging,
            // A command: look at the room now.
            Ok(None) => hub.lagging(&me.room, me.id),
        };
        pace(hub, lagging, &me.room, metrics).await;
    }
}

/// Waits, after a line, for `lagging` (members of `room` whose queues were
/// more than half full) by the [`STALL_WINDOW`] rule: see
/// [`wait_for_readers`]. With a bus, also until its publish queue is below
/// half (at most [`SLOW_DEADLINE`]). While it waits this session reads
/// nothing more, so a pasting client is held back by TCP, not by the
/// server's memory.
async fn pace(hub: &Hub, lagging: Vec<Member>, room: &str, metrics: &Metrics) {
    if let Some(bus) = hub.bus() {
        // The bus's publish queue is a reader too: wait (bounded) for it
        // to drain below half; if it does not, lines for other instances
        // are dropped (counted) rather than this session held longer.
        let deadline = tokio::time::Instant::now() + SLOW_DEADLINE;
        while bus.congested() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(PACE_POLL).await;
        }
    }
    count_slow(metrics, wait_for_readers(hub, room, lagging).await);
}

/// Waits until each of `lagging` (members of `room`) has its queue at most
/// half full, all together for at most [`STALL_WINDOW`]; then drops as slow
/// consumers those still behind whose socket took no bytes in that whole
/// window. Returns how many were dropped.
///
/// Polled, not `reserve_many`: a waiting reservation would take every slot
/// the member frees, so other senders' `try_send` would find the queue full
/// and drop a reader that is keeping up.
pub(super) async fn wait_for_readers(hub: &Hub, room: &str, mut lagging: Vec<Member>) -> usize {
    let start = Instant::now();
    let mut kicked = 0;
    loop {
        lagging.retain(|m| {
            m.tx.capacity() * 2 < m.tx.max_capacity() && !m.tx.is_closed() && !m.kick.is_cancelled()
        });
        if lagging.is_empty() {
            return kicked;
        }
        if start.elapsed() >= STALL_WINDOW {
            for m in &lagging {
                if m.last_write.at() < start {
                    kicked += hub.kick(room, m.id);
                }
            }
            // The others are behind but writing: no longer a wait for this
            // line. If one's queue fills, the next line said drops it.
            return kicked;
        }
        tokio::time::sleep(PACE_POLL).await;
    }
}

/// One line from the client: a command or a message for the room. A
/// message returns the members it left lagging (see [`Hub::say_lagging`]);
/// a command returns `None` (or the reason to close).
async fn handle_line(
    hub: &Hub,
    me: &mut Me,
    line: Bytes,
    metrics: &Metrics,
) -> Result<Option<Vec<Member>>, CloseReason> {
    if line.is_empty() {
        return Ok(Some(Vec::new()));
    }
    if line.first() != Some(&b'/') {
        let mut msg = BytesMut::with_capacity(me.name.len() + line.len() + 4);
        msg.put_slice(me.name.as_bytes());
        msg.put_slice(b": ");
        msg.put_slice(&line);
        msg.put_slice(b"\r\n");
        let (kicked, lagging) = hub.say_lagging(&me.room, me.id, &msg.freeze());
        count_slow(metrics, kicked);
        return Ok(Some(lagging));
    }
    let text = String::from_utf8_lossy(&line);
    let mut words = text.splitn(2, char::is_whitespace);
    let command = words.next().unwrap_or_default();
    let arg = words.next().map(str::trim).unwrap_or_default();
    match command {
        "/quit" => return Err(CloseReason::Done),
        "/who" => match hub.bus() {
            Some(bus) => match bus.who(&me.room).await {
                Some(names) => me.tell(format_args!("in {}: {}", me.room, names.join(", "))),
                None => {
                    let names = hub.who(&me.room).join(", ");
                    me.tell(format_args!(
                        "in {} (this server only, the chat bus is down): {names}",
                        me.room
                    ));
                }
            },
            None => {
                let names = hub.who(&me.room).join(", ");
                me.tell(format_args!("in {}: {names}", me.room));
            }
        },
        "/nick" => match valid_name(arg).and_then(|name| guest_name_free(name, &me.guest)) {
            Err(why) => me.tell(format_args!("error: /nick {why}")),
            Ok(name) => nick(hub, me, name.to_owned(), metrics).await,
        },
        "/join" => match valid_name(arg) {
            Err(why) => me.tell(format_args!("error: /join {why}")),
            Ok(room) if room == me.room => me.tell(format_args!("already in {room}")),
            Ok(room) => {
                if hub.leave(&me.room, me.id).is_none() {
                    // Dropped as slow in the meantime.
                    return Err(CloseReason::SlowConsumer);
                }
                me.room = room.to_owned();
                join(hub, me, metrics, true).await;
            }
        },
        other => me.tell(format_args!(
            "error: unknown command {other}; try /nick NAME, /join ROOM, /who, /quit"
        )),
    }
    Ok(None)
}

/// `/nick name`: with a bus, the name is first claimed on every instance.
async fn nick(hub: &Hub, me: &mut Me, name: String, metrics: &Metrics) {
    let own = name == me.guest;
    if let Some(bus) = hub.bus()
        && !own
    {
        match bus.claim(&name, me.id).await {
            bus::Claim::Granted => {}
            bus::Claim::Taken => {
                me.tell(format_args!("error: /nick {name} is taken"));
                return;
            }
            bus::Claim::Unavailable => {
                me.tell(format_args!(
                    "error: /nick {name}: names cannot be checked while the chat bus is down; try again later"
                ));
                return;
            }
        }
    }
    match hub.rename(&me.room, me.id, &name) {
        Err(room::NameTaken) => {
            if let Some(bus) = hub.bus()
                && !own
                && me.claimed.as_deref() != Some(name.as_str())
            {
                bus.release(&name, me.id);
            }
            me.tell(format_args!("error: /nick {name} is taken"));
        }
        Ok(kicked) => {
            count_slow(metrics, kicked);
            if let Some(bus) = hub.bus() {
                let old = me.claimed.take();
                if let Some(old) = old
                    && !old.eq_ignore_ascii_case(&name)
                {
                    bus.release(&old, me.id);
                }
                if !own {
                    me.claimed = Some(name.clone());
                }
            }
            me.tell(format_args!("you are now {name}"));
            me.name = name;
        }
    }
}

/// A nick or room name: 1 to [`MAX_NAME`] bytes, no spaces or control
/// characters (a lossy-decoded `\u{FFFD}` counts as invalid too).
fn valid_name(arg: &str) -> Result<&str, String> {
    if arg.is_empty() {
        return Err("needs a name".to_owned());
    }
    if arg.len() > MAX_NAME {
        return Err(format!("name longer than {MAX_NAME} bytes"));
    }
    if arg
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\u{FFFD}')
    {
        return Err("name must be printable UTF-8 without spaces".to_owned());
    }
    Ok(arg)
}

/// Guests are named `user<connection id>` (`user<id>-<instance tag>` with
/// a bus): a `/nick` of that shape is refused unless it is the client's
/// own guest name, so a later guest can never be born with a name someone
/// else took.
fn guest_name_free<'a>(name: &'a str, guest: &str) -> Result<&'a str, String> {
    let (prefix, rest) = match (name.get(..4), name.get(4..)) {
        (Some(prefix), Some(rest)) => (prefix, rest),
        _ => return Ok(name),
    };
    let digits = rest.find('-').map_or(rest, |at| &rest[..at]);
    let guest_shaped = prefix.eq_ignore_ascii_case("user")
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit());
    if guest_shaped && name != guest {
        return Err(format!("{name}: user<N> names are reserved for guests"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_error_names_the_peer() {
        let (conn, client) = crate::service::loopback_connection().await;
        let peer = conn.peer;
        let serving = tokio::spawn(session(Arc::new(Hub::new(0)), 8, conn));
        // Half a line, then a reset (SO_LINGER 0): the session fails with
        // ECONNRESET.
        let client = client.into_std().expect("std stream");
        let client = socket2::Socket::from(client);
        client.set_linger(Some(Duration::ZERO)).expect("linger 0");
        std::io::Write::write_all(&mut &client, b"half a li").expect("write");
        drop(client);
        let served = tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("session ends")
            .expect("session task");
        match served.reason {
            CloseReason::Error(e) => {
                // The read sees the reset, or the welcome's write does.
                assert!(
                    matches!(e.os_code(), Some(libc::ECONNRESET | libc::EPIPE)),
                    "{e}"
                );
                assert!(e.message().contains(&peer.to_string()), "{e}");
            }
            other => panic!("expected a reset, got {other}"),
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(valid_name("ana"), Ok("ana"));
        assert!(valid_name("").is_err());
        assert!(valid_name("a b").is_err());
        assert!(valid_name(&"x".repeat(MAX_NAME + 1)).is_err());
        assert!(valid_name("bad\u{FFFD}").is_err());
    }

    #[test]
    fn guest_names_are_reserved() {
        assert_eq!(guest_name_free("user7", "user7"), Ok("user7"));
        assert!(guest_name_free("user8", "user7").is_err());
        assert!(guest_name_free("USER8", "user7").is_err());
        assert_eq!(guest_name_free("user", "user7"), Ok("user"));
        assert_eq!(guest_name_free("users", "user7"), Ok("users"));
        assert_eq!(guest_name_free("user8x", "user7"), Ok("user8x"));
        assert_eq!(guest_name_free("ûser8", "user7"), Ok("ûser8"));
        assert_eq!(guest_name_free("abcé", "user7"), Ok("abcé"));
        // With a bus, guests carry the instance's tag: reserved too.
        assert_eq!(
            guest_name_free("user7-ab12", "user7-ab12"),
            Ok("user7-ab12")
        );
        assert!(guest_name_free("user7-cd34", "user7-ab12").is_err());
        assert!(guest_name_free("user8-", "user7-ab12").is_err());
    }
}
