//! [`RedisBus`]: chat rooms across instances over Redis (`serve --mode chat
//! --bus redis://HOST:PORT[/DB]`).
//!
//! # What goes where
//!
//! * A line is delivered to this instance's members at once, then published
//!   on the room's channel `tcpkit:chat:room:<room>`, prefixed with this
//!   instance's id; every instance subscribes to `tcpkit:chat:room:*` and
//!   skips its own messages, so each member gets each line exactly once,
//!   and in its sender's order (one hub lock per room here, one publishing
//!   connection, Redis keeps a connection's order).
//! * History: a capped list per room (`tcpkit:chat:history:<room>`, RPUSH
//!   and LTRIM in one MULTI), shared by every instance and kept after the
//!   last member leaves.
//! * Names: `tcpkit:chat:nick:<lowercased>` holds `<instance>:<connection>`
//!   with an expiry of [`RedisConfig::ttl`]; one Lua script claims (set if
//!   absent or already ours) and refreshes, so of two racing `/nick`s
//!   exactly one wins. Guests (`user<N>-<tag>`) need no claim.
//! * A joiner reads the history, then joins here: a line said on another
//!   instance within that one round trip may be missed by the joiner, or
//!   shown twice (in the history and live).
//! * `/who`: a sorted set per room (`tcpkit:chat:who:<room>`) whose scores
//!   are expiry times (Unix ms, this host's clock): each instance refreshes
//!   its members every `ttl / 3`, so a crashed instance's members are gone
//!   from every `/who` within `ttl` (plus clock skew between hosts).
//!
//! # Bounded, whatever Redis does
//!
//! No session waits on Redis: the hub hands each line to a queue of
//! [`PUBLISH_QUEUE`] entries with `try_send`, and a full queue drops the
//! line (counted in `chat_bus_dropped`, logged once per episode). A sender
//! whose line left the queue over half full waits before its next line,
//! at most [`super::SLOW_DEADLINE`]. One task empties the queue in batches, each one request with a
//! deadline of [`REQUEST_TIMEOUT`]; a request that times out counts a stall
//! and drops the connection. While the bus is down, lines are delivered
//! here only and the published ones are dropped (counted); members get one
//! notice when it goes down and one when it is back. Reconnection backs off
//! from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; after Redis is back, delivery
//! across instances resumes within `BACKOFF_MAX` plus one connect.
//! `/who`, `/nick` and a joiner's history wait at most `REQUEST_TIMEOUT`.
//! Received lines are delivered with `try_send`, then paced as a local
//! sender is: the subscription waits until this instance's readers of that
//! room have half their queue free, at most [`super::STALL_WINDOW`] a line,
//! dropping as slow a reader whose socket took no bytes meanwhile; so a
//! paste on one instance reaches the readers that keep up on every
//! instance. What arrives meanwhile waits in the `redis` client's
//! subscription buffer, which is unbounded: bounded in practice by the
//! senders' rate times that wait, since senders are paced by their own
//! instance's readers.
//!
//! # Why the `redis` crate
//!
//! `redis` (redis-rs, 1.x) is the project maintained under the Redis
//! organisation, released often, with tokio support, a multiplexed
//! connection with per-request response timeouts, and a pub/sub connection;
//! `fred` is a capable client kept mostly by one maintainer, with more
//! machinery (pools, its own reconnect policy) than this needs. Latency:
//! we did not measure `fred`; with `redis` a batch is one write and one
//! reply, and 3 instances deliver 10,000 lines with fan-out within a few
//! seconds in the debug-build test (`tests/chat_bus.rs`), so the choice
//! rests on maintenance and fit. Reconnection is ours (not
//! `ConnectionManager`'s), because the subscription must be rebuilt with it
//! and members told once.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bus::{Answer, Bus, Claim};
use super::room::{Hub, notice};
use crate::error::{Error, ErrorKind, Result, code};
use crate::metrics::{BusStats, Metrics};

/// Default expiry of a member's and a name's entry: a crashed instance's
/// members leave every `/who`, and its names are free again, within this.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// The shortest `ttl` accepted (refreshes come every third of it).
pub const MIN_TTL: Duration = Duration::from_millis(300);

/// The longest `ttl` accepted.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Lines and notices waiting to be published, at most; more are dropped.
pub const PUBLISH_QUEUE: usize = 4096;

/// Most queued entries sent in one request.
const BATCH: usize = 256;

/// Deadline of one request to Redis (a batch, `/who`, `/nick`, history).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Deadline of connecting and subscribing.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// First wait before reconnecting; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest wait between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

const PREFIX: &str = "tcpkit:chat:";
const ROOM_PATTERN: &str = "tcpkit:chat:room:*";

/// Claims `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms if free or already
/// `ARGV[1]`'s: 1 if granted, 0 if someone else holds it.
const CLAIM: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] then \
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 \
    end return 0";

/// Deletes `KEYS[1]` if it holds `ARGV[1]`.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// How to reach Redis and how long entries live.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Expiry of member and name entries ([`DEFAULT_TTL`]).
    pub ttl: Duration,
    /// Lines of history kept per room (0: none).
    pub history: usize,
}

impl RedisConfig {
    /// Checks the URL's shape and the ttl, without connecting.
    pub fn validate(&self) -> Result<()> {
        client(&self.url)?;
        if !(MIN_TTL..=MAX_TTL).contains(&self.ttl) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                format!(
                    "bus ttl {:?} must be between {MIN_TTL:?} and {MAX_TTL:?}",
                    self.ttl
                ),
            ));
        }
        Ok(())
    }
}

fn client(url: &str) -> Result<redis::Client> {
    let bad = |why: String| {
        // The URL as given, cut short if long (it is echoed in an error).
        let shown: String = url.chars().take(100).collect();
        let more = if shown.len() < url.len() { "..." } else { "" };
        Error::new(
            ErrorKind::InvalidConfig,
            code::INVALID_CONFIG,
            format!("bus {shown:?}{more}: {why}"),
        )
    };
    if !url.starts_with("redis://") {
        return Err(bad("must be redis://HOST:PORT[/DB]".into()));
    }
    redis::Client::open(url).map_err(|e| bad(e.to_string()))
}

/// What the publishing task sends, in queue order.
#[derive(Debug)]
enum Out {
    Publish {
        room: String,
        msg: Bytes,
        keep: bool,
    },
    Presence {
        room: String,
        name: String,
        present: bool,
    },
    Release {
        name: String,
        owner: u64,
    },
    /// Every member and claimed name here, refreshed (and the connection
    /// checked).
    Refresh,
    /// Answered once everything queued before it was sent (dropped, if
    /// the bus is down: the answer is then the sender's drop).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The Redis bus. Start it with [`RedisBus::start`].
#[derive(Debug)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: redis::Client,
    /// 16 hex digits, the prefix of every message this instance publishes.
    id: String,
    tag: String,
    tx: mpsc::Sender<Out>,
    /// The current command connection (`None` while down).
    conn: Mutex<Option<(MultiplexedConnection, CancellationToken)>>,
    up: AtomicBool,
    /// `up`, to wait on ([`RedisBus::wait_up`]).
    up_watch: tokio::sync::watch::Sender<bool>,
    /// Whether the queue was full at the last try (to log once).
    dropping: AtomicBool,
    /// Names claimed here (lowercased) and their owners.
    claims: Mutex<HashMap<String, u64>>,
    hub: Weak<Hub>,
    stats: Arc<BusStats>,
    metrics: Arc<Metrics>,
    ttl: Duration,
    history: usize,
}

impl RedisBus {
    /// Connects `hub` to the other instances on `config.url`, in the
    /// background: the server starts even if Redis is down, and keeps
    /// reconnecting. Must be called within a tokio runtime.
    pub fn start(
        config: &RedisConfig,
        hub: &Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBus>> {
        config.validate()?;
        let client = client(&config.url)?;
        let random = std::collections::hash_map::RandomState::new();
        let mut h = random.build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let id = format!("{:016x}", h.finish());
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let stats = Arc::new(BusStats::default());
        metrics.watch_chat_bus(&stats);
        let inner = Arc::new(Inner {
            client,
            tag: id[..6].to_owned(),
            id,
            tx,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            up_watch: tokio::sync::watch::Sender::new(false),
            dropping: AtomicBool::new(false),
            claims: Mutex::default(),
            hub: Arc::downgrade(hub),
            stats,
            metrics,
            ttl: config.ttl,
            history: config.history,
        });
        tokio::spawn(supervise(inner.clone()));
        tokio::spawn(publish_loop(inner.clone(), rx));
        tokio::spawn(refresh_loop(Arc::downgrade(&inner)));
        Ok(Arc::new(RedisBus { inner }))
    }

    /// Waits up to `limit` for everything queued so far (the leaves of a
    /// server shutting down, say) to be sent; whether it was. So a cleanly
    /// stopped instance's members leave every `/who` at once, not after
    /// the ttl.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = tokio::sync::oneshot::channel();
        let flushed =
            async { self.inner.tx.send(Out::Flush(done)).await.is_ok() && wait.await.is_ok() };
        matches!(tokio::time::timeout(limit, flushed).await, Ok(true))
    }

    /// Waits up to `limit` for the bus to be connected and subscribed;
    /// whether it is.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut rx = self.inner.up_watch.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|up| *up)).await,
            Ok(Ok(_))
        )
    }
}

/// A chat whose rooms span every instance on `config.url` (its history
/// kept in Redis, `config.history` lines a room), the bus counted in
/// `metrics`, and its bus. Must be called within a tokio runtime.
pub fn chat(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<(super::Chat, Arc<RedisBus>)> {
    let chat = super::Chat::new().with_history(0);
    let bus = RedisBus::start(config, chat.hub(), metrics)?;
    chat.hub().set_bus(bus.clone());
    Ok((chat, bus))
}

fn key(kind: &str, name: &str) -> String {
    format!("{PREFIX}{kind}:{name}")
}

fn unix_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    fn connection(&self) -> Option<(MultiplexedConnection, CancellationToken)> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn enqueue(&self, out: Out) {
        match self.tx.try_send(out) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("chat bus: publish queue has room again");
                }
            }
            Err(e) => {
                if matches!(e.into_inner(), Out::Publish { .. }) {
                    BusStats::add(&self.stats.dropped, 1);
                }
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        queue = PUBLISH_QUEUE,
                        "chat bus: publish queue full, dropping lines for other instances"
                    );
                }
            }
        }
    }

    /// A request failed: count it, and drop the connection so that the
    /// supervisor reconnects.
    fn failed(
        &self,
        what: &str,
        e: &dyn std::fmt::Display,
        timed_out: bool,
        token: &CancellationToken,
    ) {
        if timed_out {
            BusStats::add(&self.stats.stalls, 1);
        }
        if !token.is_cancelled() {
            tracing::warn!(
                "chat bus: {what} failed{}: {e}; reconnecting",
                if timed_out {
                    " (no answer in time)"
                } else {
                    ""
                }
            );
            token.cancel();
        }
    }

    /// One request with the deadline; `None` (counted, connection dropped)
    /// on failure or when down.
    async fn request<T: redis::FromRedisValue>(&self, what: &str, cmd: redis::Cmd) -> Option<T> {
        let (mut conn, token) = self.connection()?;
        match tokio::time::timeout(REQUEST_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                let timed_out = e.is_timeout();
                self.failed(what, &e, timed_out, &token);
                None
            }
            Err(e) => {
                self.failed(what, &e, true, &token);
                None
            }
        }
    }

    fn set_up(&self, up: bool, why: &str) {
        let was = self.up.swap(up, Ordering::Relaxed);
        self.stats.up.store(u64::from(up), Ordering::Relaxed);
        self.up_watch.send_replace(up);
        if was == up {
            return;
        }
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if up {
            tracing::info!("chat bus up: rooms span every instance");
            hub.tell_all(&notice(format_args!(
                "chat bus is back: rooms span every server again"
            )));
        } else {
            tracing::warn!("chat bus down ({why}): delivering on this instance only; reconnecting");
            hub.tell_all(&notice(format_args!(
                "chat bus is down: lines now reach only members on this server; reconnecting"
            )));
        }
    }

    /// Delivers a message from another instance; the room, if it was a
    /// line (not a notice) that readers here may have to catch up with.
    fn receive<'m>(&self, msg: &'m redis::Msg) -> Option<&'m str> {
        let payload = msg.get_payload_bytes();
        let room = msg.get_channel_name().strip_prefix("tcpkit:chat:room:")?;
        if payload.len() < 16 || payload[..16] == *self.id.as_bytes() {
            return None;
        }
        BusStats::add(&self.stats.received, 1);
        let hub = self.hub.upgrade()?;
        let line = Bytes::copy_from_slice(&payload[16..]);
        let kicked = hub.deliver(room, &line);
        for _ in 0..kicked {
            self.metrics.slow_consumer();
        }
        (!line.starts_with(b"* ")).then_some(room)
    }

    /// As a session after its own line (`pace` in `mod.rs`): waits until
    /// every member of `room` here has half its queue free, at most
    /// [`super::STALL_WINDOW`], dropping as slow those whose socket took no
    /// bytes meanwhile ([`super::wait_for_readers`]). So a paste
    /// on another instance reaches readers here that keep up, as it does
    /// on the sender's instance. Meanwhile the subscription's messages wait
    /// in the client's buffer (at most the senders' rate times that
    /// window).
    async fn pace(&self, room: &str) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let lagging = hub.lagging(room, u64::MAX);
        for _ in 0..super::wait_for_readers(&hub, room, lagging).await {
            self.metrics.slow_consumer();
        }
    }
}

/// Connects, subscribes, and reads the subscription until it ends or a
/// request fails; then waits (backing off) and does it again, for ever.
async fn supervise(inner: Arc<Inner>) {
    let mut backoff = BACKOFF_MIN;
    let mut connected_before = false;
    let mut logged_failure = false;
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connect(&inner)).await {
            Ok(Ok((conn, pubsub))) => {
                backoff = BACKOFF_MIN;
                logged_failure = false;
                if connected_before {
                    BusStats::add(&inner.stats.reconnects, 1);
                }
                connected_before = true;
                let token = CancellationToken::new();
                *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some((conn, token.clone()));
                inner.set_up(true, "");
                // Names and members again at once: a restarted Redis has none.
                let _ = inner.tx.try_send(Out::Refresh);
                let mut stream = pubsub.into_on_message();
                let why = loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                if let Some(room) = inner.receive(&msg) {
                                    inner.pace(room).await;
                                }
                            }
                            None => break "subscription closed",
                        },
                        _ = token.cancelled() => break "a request failed",
                    }
                };
                *inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                token.cancel();
                inner.set_up(false, why);
            }
            Ok(Err(e)) => {
                if !logged_failure {
                    tracing::warn!(
                        "chat bus: cannot connect: {e}; retrying with back-off up to {BACKOFF_MAX:?}"
                    );
                    logged_failure = true;
                }
                inner.set_up(false, "cannot connect");
            }
            Err(_) => {
                BusStats::add(&inner.stats.stalls, 1);
                if !logged_failure {
                    tracing::warn!(
                        "chat bus: no answer connecting within {:?}; retrying",
                        CONNECT_TIMEOUT * 2
                    );
                    logged_failure = true;
                }
                inner.set_up(false, "connect timed out");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(inner: &Inner) -> redis::RedisResult<(MultiplexedConnection, redis::aio::PubSub)> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(REQUEST_TIMEOUT));
    let conn = inner
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut pubsub = inner.client.get_async_pubsub().await?;
    pubsub.psubscribe(ROOM_PATTERN).await?;
    Ok((conn, pubsub))
}

/// Empties the queue in batches, one request each, in order.
async fn publish_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<Out>) {
    let mut batch = Vec::with_capacity(BATCH);
    let history = isize::try_from(inner.history).unwrap_or(isize::MAX);
    let ttl_ms = ms(inner.ttl);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let lines = batch
            .iter()
            .filter(|o| matches!(o, Out::Publish { .. }))
            .count() as u64;
        let mut flushes = Vec::new();
        let Some((mut conn, token)) = inner.connection() else {
            BusStats::add(&inner.stats.dropped, lines);
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        let expiry = unix_ms() + ttl_ms;
        for out in batch.drain(..) {
            match out {
                Out::Publish { room, msg, keep } => {
                    let mut payload = Vec::with_capacity(16 + msg.len());
                    payload.extend_from_slice(inner.id.as_bytes());
                    payload.extend_from_slice(&msg);
                    if keep && history > 0 {
                        let list = key("history", &room);
                        pipe.cmd("RPUSH").arg(&list).arg(&msg[..]).ignore();
                        pipe.cmd("LTRIM").arg(&list).arg(-history).arg(-1).ignore();
                    }
                    pipe.cmd("PUBLISH")
                        .arg(key("room", &room))
                        .arg(payload)
                        .ignore();
                }
                Out::Presence {
                    room,
                    name,
                    present,
                } => {
                    let set = key("who", &room);
                    if present {
                        pipe.cmd("ZADD").arg(&set).arg(expiry).arg(&name).ignore();
                        pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms).ignore();
                    } else {
                        pipe.cmd("ZREM").arg(&set).arg(&name).ignore();
                    }
                }
                Out::Release { name, owner } => {
                    pipe.cmd("EVAL")
                        .arg(RELEASE)
                        .arg(1)
                        .arg(key("nick", &name.to_ascii_lowercase()))
                        .arg(format!("{}:{owner}", inner.id))
                        .ignore();
                }
                Out::Refresh => refresh(&inner, &mut pipe, expiry, ttl_ms),
                Out::Flush(done) => flushes.push(done),
            }
        }
        pipe.cmd("PING").ignore();
        match tokio::time::timeout(REQUEST_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => BusStats::add(&inner.stats.published, lines),
            Ok(Err(e)) => {
                BusStats::add(&inner.stats.dropped, lines);
                inner.failed("publish", &e, e.is_timeout(), &token);
            }
            Err(e) => {
                BusStats::add(&inner.stats.dropped, lines);
                inner.failed("publish", &e, true, &token);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Adds every member here (with a fresh expiry) and every claimed name to
/// `pipe`, and drops expired members of those rooms.
fn refresh(inner: &Inner, pipe: &mut redis::Pipeline, expiry: u64, ttl_ms: u64) {
    let now = unix_ms();
    if let Some(hub) = inner.hub.upgrade() {
        for (room, names) in hub.local_members() {
            let set = key("who", &room);
            for name in names {
                pipe.cmd("ZADD").arg(&set).arg(expiry).arg(name).ignore();
            }
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&set)
                .arg("-inf")
                .arg(now)
                .ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms).ignore();
        }
    }
    let claims = inner.claims.lock().unwrap_or_else(|p| p.into_inner());
    for (name, owner) in claims.iter() {
        pipe.cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(key("nick", name))
            .arg(format!("{}:{owner}", inner.id))
            .arg(ttl_ms)
            .ignore();
    }
}

/// Every `ttl / 3`, a refresh through the queue (in order with the
/// presence changes, so a member who left is never added back).
async fn refresh_loop(inner: Weak<Inner>) {
    let Some(period) = inner.upgrade().map(|i| i.ttl / 3) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.up.load(Ordering::Relaxed) {
            // Not a client task: waiting for room in the queue is fine.
            let tx = inner.tx.clone();
            drop(inner);
            if tx.send(Out::Refresh).await.is_err() {
                return;
            }
        }
    }
}

impl Bus for RedisBus {
    fn tag(&self) -> &str {
        &self.inner.tag
    }

    fn publish(&self, room: &str, msg: &Bytes, keep: bool) {
        if !self.inner.up.load(Ordering::Relaxed) {
            BusStats::add(&self.inner.stats.dropped, 1);
            return;
        }
        self.inner.enqueue(Out::Publish {
            room: room.to_owned(),
            msg: msg.clone(),
            keep,
        });
    }

    fn presence(&self, room: &str, name: &str, present: bool) {
        self.inner.enqueue(Out::Presence {
            room: room.to_owned(),
            name: name.to_owned(),
            present,
        });
    }

    fn history(&self, room: &str) -> Answer<Option<Vec<Bytes>>> {
        let inner = self.inner.clone();
        let list = key("history", room);
        Box::pin(async move {
            if inner.history == 0 {
                return Some(Vec::new());
            }
            let mut cmd = redis::cmd("LRANGE");
            cmd.arg(list).arg(0).arg(-1);
            let lines: Vec<Vec<u8>> = inner.request("history", cmd).await?;
            Some(lines.into_iter().map(Bytes::from).collect())
        })
    }

    fn who(&self, room: &str) -> Answer<Option<Vec<String>>> {
        let inner = self.inner.clone();
        let set = key("who", room);
        Box::pin(async move {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(set).arg(unix_ms()).arg("+inf");
            inner.request("who", cmd).await
        })
    }

    fn claim(&self, name: &str, owner: u64) -> Answer<Claim> {
        let inner = self.inner.clone();
        let lower = name.to_ascii_lowercase();
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(CLAIM)
                .arg(1)
                .arg(key("nick", &lower))
                .arg(format!("{}:{owner}", inner.id))
                .arg(ms(inner.ttl));
            match inner.request::<i64>("nick", cmd).await {
                Some(1) => {
                    inner
                        .claims
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(lower, owner);
                    Claim::Granted
                }
                Some(_) => Claim::Taken,
                None => Claim::Unavailable,
            }
        })
    }

    fn release(&self, name: &str, owner: u64) {
        let lower = name.to_ascii_lowercase();
        {
            let mut claims = self.inner.claims.lock().unwrap_or_else(|p| p.into_inner());
            if claims.get(&lower) == Some(&owner) {
                claims.remove(&lower);
            }
        }
        self.inner.enqueue(Out::Release { name: lower, owner });
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    fn congested(&self) -> bool {
        let tx = &self.inner.tx;
        self.inner.up.load(Ordering::Relaxed) && tx.capacity() * 2 < tx.max_capacity()
    }
}
