//! Counters shared by the server, the bench and progress output.
//!
//! [`Metrics`] is a set of atomics a server updates and anyone may read;
//! [`Snapshot`] is a plain, serializable copy taken at one moment. The
//! per-message path never touches these: a connection keeps its own byte
//! counts in local integers and adds them here once, when it closes, with
//! its reason ([`Close`]) and how long it lived ([`Durations`]). The one
//! exception is the backpressure gauge ([`Snapshot::buffered_bytes`]), updated
//! only when a peer stops reading and the server has to hold bytes for it.
//! Chat's room and member gauges ([`ChatGauges`]) change on joins and
//! leaves, never on a message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::error::ErrorKind;

/// Live counters. Cheap to share behind an `Arc`; every field is an atomic.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    rejected: [AtomicU64; Rejection::COUNT],
    active: AtomicU64,
    closed: [AtomicU64; Close::REASONS.len()],
    close_errors: [AtomicU64; Close::ERROR_KINDS.len()],
    durations: [AtomicU64; Durations::BUCKETS],
    durations_sum_us: AtomicU64,
    slow_consumers: AtomicU64,
    upstream_connect_failures: AtomicU64,
    accept_errors: AtomicU64,
    accept_backoffs: AtomicU64,
    lingering_closes: AtomicU64,
    lingering_cut_off: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    buffered_bytes: AtomicU64,
    buffered_bytes_max: AtomicU64,
    tls_handshakes: AtomicU64,
    chat: OnceLock<Arc<ChatGauges>>,
    chat_bus: OnceLock<Arc<BusStats>>,
}

/// Why a connection ended, as counted by [`Metrics::closed`] and exported
/// as `tcpkit_connections_closed_total{reason}` (errors also by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Close {
    /// The client closed (EOF).
    PeerClosed,
    /// The service finished on its own (chat's `/quit`).
    Done,
    /// No traffic for the idle timeout.
    IdleTimeout,
    /// Over a limit: a line over the maximum.
    LineTooLong,
    /// Over a limit: a client that fell behind (chat).
    SlowConsumer,
    /// The server was shutting down.
    Shutdown,
    /// Refused at admission (PROXY header, access list, TLS handshake)
    /// after the accept loop gave it a slot; see [`Rejection`].
    Rejected,
    /// An error, by kind (reset, write deadline, ...).
    Error(ErrorKind),
}

impl Close {
    /// The `reason` labels, in counter order.
    pub const REASONS: [&'static str; 8] = [
        "peer_closed",
        "done",
        "idle_timeout",
        "line_too_long",
        "slow_consumer",
        "shutdown",
        "rejected",
        "error",
    ];

    /// The `kind` labels of [`Close::Error`], in counter order; kinds not
    /// named here count as `other`.
    pub const ERROR_KINDS: [&'static str; 7] = [
        "connection_reset",
        "timed_out",
        "unexpected_eof",
        "tls",
        "certificate",
        "io",
        "other",
    ];

    fn index(self) -> usize {
        match self {
            Close::PeerClosed => 0,
            Close::Done => 1,
            Close::IdleTimeout => 2,
            Close::LineTooLong => 3,
            Close::SlowConsumer => 4,
            Close::Shutdown => 5,
            Close::Rejected => 6,
            Close::Error(_) => 7,
        }
    }

    fn error_index(kind: ErrorKind) -> usize {
        match kind {
            ErrorKind::ConnectionReset => 0,
            ErrorKind::TimedOut => 1,
            ErrorKind::UnexpectedEof => 2,
            ErrorKind::Tls => 3,
            ErrorKind::Certificate => 4,
            ErrorKind::Io => 5,
            _ => 6,
        }
    }

    /// The `reason` label (`error` for every error kind).
    pub fn as_str(self) -> &'static str {
        Close::REASONS[self.index()]
    }
}

/// Connection lifetimes in fixed buckets (a Prometheus histogram,
/// `tcpkit_connection_duration_seconds`): one counter per bucket, added to
/// once per timed close, never per message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Durations {
    /// Closes per bucket (not cumulative): the `i`th counts lifetimes up
    /// to [`Durations::BOUNDS`]`[i]` seconds and above the bound before it;
    /// the last, everything longer than the last bound.
    pub buckets: [u64; Durations::BUCKETS],
    /// Every timed lifetime added up, in microseconds.
    pub sum_us: u64,
}

impl Durations {
    /// Upper bounds of the buckets, in seconds (then `+Inf`): from a
    /// bench's millisecond connections to a chat client's hours.
    pub const BOUNDS: [f64; 12] = [
        0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
    ];

    /// Buckets, `+Inf` included.
    pub const BUCKETS: usize = Durations::BOUNDS.len() + 1;

    const BOUNDS_US: [u64; 12] = [
        1_000,
        10_000,
        100_000,
        500_000,
        1_000_000,
        5_000_000,
        10_000_000,
        30_000_000,
        60_000_000,
        300_000_000,
        1_800_000_000,
        3_600_000_000,
    ];

    /// The bucket a lifetime of `us` microseconds falls in.
    fn bucket(us: u64) -> usize {
        Durations::BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(Durations::BOUNDS.len())
    }

    /// How many lifetimes were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Chat's gauges: rooms that exist and members in them. A chat's hub
/// updates them under its own lock when someone joins or leaves (never on
/// a message); [`Metrics::watch_chat`] makes a server's snapshot read them.
#[derive(Debug, Default)]
pub struct ChatGauges {
    rooms: AtomicU64,
    members: AtomicU64,
}

impl ChatGauges {
    /// Sets the number of rooms and adds `members` (which may be negative).
    pub fn changed(&self, rooms: usize, members: i64) {
        self.rooms.store(rooms as u64, Relaxed);
        if members >= 0 {
            self.members.fetch_add(members.unsigned_abs(), Relaxed);
        } else {
            self.members.fetch_sub(members.unsigned_abs(), Relaxed);
        }
    }

    /// Rooms and members right now.
    pub fn get(&self) -> (u64, u64) {
        (self.rooms.load(Relaxed), self.members.load(Relaxed))
    }
}

/// Chat's message bus between instances (`serve --mode chat --bus`): its
/// state and what went through it. The bus updates these as it works;
/// [`Metrics::watch_chat_bus`] makes a server's snapshot read them.
#[derive(Debug, Default)]
pub struct BusStats {
    /// 1 while connected and subscribed, else 0.
    pub up: AtomicU64,
    /// Room lines and notices published to the bus.
    pub published: AtomicU64,
    /// Room lines and notices received from other instances.
    pub received: AtomicU64,
    /// Lines and notices not published: the publish queue was full, or the
    /// bus was down or failed to take them.
    pub dropped: AtomicU64,
    /// Requests to the bus that got no answer in time (a stalled server).
    pub stalls: AtomicU64,
    /// Connections to the bus made after the first.
    pub reconnects: AtomicU64,
}

impl BusStats {
    /// Adds `n` to `counter` (one of this struct's fields).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// Why a connection was turned away before its service saw a byte, as
/// counted by [`Metrics::rejected`] and exported (one family, label
/// `reason` = [`Rejection::as_str`]) as `tcpkit_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The server was at its connection limit (`--max-connections`).
    MaxConnections,
    /// The client's address is denied by the access list (`--allow`,
    /// `--deny` and their files).
    AccessList,
    /// The PROXY protocol header was refused (`--proxy-protocol`).
    Proxy(ProxyFailure),
    /// The TLS handshake failed (`--tls`).
    Tls(HandshakeFailure),
}

impl Rejection {
    /// How many reasons there are (the counters' array length).
    pub const COUNT: usize = 2 + ProxyFailure::ALL.len() + HandshakeFailure::ALL.len();

    /// Every reason, in counter order.
    pub const ALL: [Rejection; Rejection::COUNT] = [
        Rejection::MaxConnections,
        Rejection::AccessList,
        Rejection::Proxy(ProxyFailure::Untrusted),
        Rejection::Proxy(ProxyFailure::Missing),
        Rejection::Proxy(ProxyFailure::Malformed),
        Rejection::Proxy(ProxyFailure::TooLarge),
        Rejection::Proxy(ProxyFailure::Timeout),
        Rejection::Proxy(ProxyFailure::Io),
        Rejection::Tls(HandshakeFailure::Timeout),
        Rejection::Tls(HandshakeFailure::Protocol),
        Rejection::Tls(HandshakeFailure::Certificate),
        Rejection::Tls(HandshakeFailure::Io),
    ];

    /// The reason's position in [`Rejection::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Rejection::MaxConnections => 0,
            Rejection::AccessList => 1,
            Rejection::Proxy(p) => 2 + p as usize,
            Rejection::Tls(t) => 2 + ProxyFailure::ALL.len() + t as usize,
        }
    }

    /// The `reason` label and the word for logs: `max_connections`,
    /// `access_list`, `proxy_<failure>`, `tls_<failure>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MaxConnections => "max_connections",
            Rejection::AccessList => "access_list",
            Rejection::Proxy(ProxyFailure::Untrusted) => "proxy_untrusted",
            Rejection::Proxy(ProxyFailure::Missing) => "proxy_missing",
            Rejection::Proxy(ProxyFailure::Malformed) => "proxy_malformed",
            Rejection::Proxy(ProxyFailure::TooLarge) => "proxy_too_large",
            Rejection::Proxy(ProxyFailure::Timeout) => "proxy_timeout",
            Rejection::Proxy(ProxyFailure::Io) => "proxy_io",
            Rejection::Tls(HandshakeFailure::Timeout) => "tls_timeout",
            Rejection::Tls(HandshakeFailure::Protocol) => "tls_protocol",
            Rejection::Tls(HandshakeFailure::Certificate) => "tls_certificate",
            Rejection::Tls(HandshakeFailure::Io) => "tls_io",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a PROXY protocol header was refused ([`Rejection::Proxy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyFailure {
    /// A header from a source outside `--proxy-trusted`.
    Untrusted,
    /// A trusted source that sent no header (the first bytes are not one).
    Missing,
    /// A header that does not parse (v1 or v2).
    Malformed,
    /// More bytes than the header size cap without a complete header.
    TooLarge,
    /// No complete header within the header deadline.
    Timeout,
    /// The connection failed underneath (reset, EOF mid-header).
    Io,
}

impl ProxyFailure {
    /// Every reason, in counter order.
    pub const ALL: [ProxyFailure; 6] = [
        ProxyFailure::Untrusted,
        ProxyFailure::Missing,
        ProxyFailure::Malformed,
        ProxyFailure::TooLarge,
        ProxyFailure::Timeout,
        ProxyFailure::Io,
    ];
}

/// Why a TLS handshake failed, as counted in [`Snapshot`] and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// Not finished within the handshake deadline (a stalled or slow peer).
    Timeout,
    /// Not TLS (a plain-text client), a malformed message, or nothing in
    /// common (versions, cipher suites, ALPN).
    Protocol,
    /// A certificate refused: the client's (mutual TLS), or ours by the
    /// client (its alert).
    Certificate,
    /// The connection failed underneath (reset, EOF mid-handshake).
    Io,
}

impl HandshakeFailure {
    /// Every reason, in counter order.
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Protocol,
        HandshakeFailure::Certificate,
        HandshakeFailure::Io,
    ];

    /// A word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Certificate => "certificate",
            HandshakeFailure::Io => "io",
        }
    }
}

/// Closes by reason, for [`Snapshot`] (see [`Close`]). In JSON, an object
/// keyed by reason label, with `errors` keyed by kind label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Closes {
    /// Counts by [`Close::REASONS`] label, in that order.
    pub by_reason: [u64; Close::REASONS.len()],
    /// [`Close::Error`] closes by [`Close::ERROR_KINDS`] label, in that order.
    pub errors_by_kind: [u64; Close::ERROR_KINDS.len()],
}

impl Serialize for Closes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Errors<'a>(&'a Closes);
        impl Serialize for Errors<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(Close::ERROR_KINDS.len()))?;
                for (kind, n) in Close::ERROR_KINDS.iter().zip(self.0.errors_by_kind) {
                    map.serialize_entry(kind, &n)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(Close::REASONS.len() + 1))?;
        for (reason, n) in Close::REASONS.iter().zip(self.by_reason) {
            map.serialize_entry(reason, &n)?;
        }
        map.serialize_entry("errors", &Errors(self))?;
        map.end()
    }
}

impl Closes {
    /// Closes for `reason` (for [`Close::Error`]: that kind's label).
    pub fn get(&self, reason: Close) -> u64 {
        match reason {
            Close::Error(kind) => self.errors_by_kind[Close::error_index(kind)],
            other => self.by_reason[other.index()],
        }
    }
}

impl Snapshot {
    /// The count of connections turned away for `why`.
    pub fn rejected(&self, why: Rejection) -> u64 {
        match why {
            Rejection::MaxConnections => self.connections_rejected,
            Rejection::AccessList => self.rejected_access_list,
            Rejection::Proxy(ProxyFailure::Untrusted) => self.rejected_proxy_untrusted,
            Rejection::Proxy(ProxyFailure::Missing) => self.rejected_proxy_missing,
            Rejection::Proxy(ProxyFailure::Malformed) => self.rejected_proxy_malformed,
            Rejection::Proxy(ProxyFailure::TooLarge) => self.rejected_proxy_too_large,
            Rejection::Proxy(ProxyFailure::Timeout) => self.rejected_proxy_timeout,
            Rejection::Proxy(ProxyFailure::Io) => self.rejected_proxy_io,
            Rejection::Tls(HandshakeFailure::Timeout) => self.tls_failed_timeout,
            Rejection::Tls(HandshakeFailure::Protocol) => self.tls_failed_protocol,
            Rejection::Tls(HandshakeFailure::Certificate) => self.tls_failed_certificate,
            Rejection::Tls(HandshakeFailure::Io) => self.tls_failed_io,
        }
    }
}

/// A copy of [`Metrics`] at one moment, for printing or `--json` output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Connections accepted and handed to the service.
    pub connections_accepted: u64,
    /// Connections accepted and closed at once because the server was full
    /// ([`Rejection::MaxConnections`]; every reason: [`Snapshot::rejected`]).
    pub connections_rejected: u64,
    /// Connections denied by the access list ([`Rejection::AccessList`]).
    pub rejected_access_list: u64,
    /// PROXY headers from an untrusted source ([`ProxyFailure::Untrusted`]).
    pub rejected_proxy_untrusted: u64,
    /// Trusted sources that sent no PROXY header ([`ProxyFailure::Missing`]).
    pub rejected_proxy_missing: u64,
    /// PROXY headers that did not parse ([`ProxyFailure::Malformed`]).
    pub rejected_proxy_malformed: u64,
    /// PROXY headers over the size cap ([`ProxyFailure::TooLarge`]).
    pub rejected_proxy_too_large: u64,
    /// PROXY headers not complete in time ([`ProxyFailure::Timeout`]).
    pub rejected_proxy_timeout: u64,
    /// Connections that failed while sending their PROXY header ([`ProxyFailure::Io`]).
    pub rejected_proxy_io: u64,
    /// Connections open right now.
    pub connections_active: u64,
    /// Connections that have finished (any reason: the sum of [`Snapshot::closes`]).
    pub connections_closed: u64,
    /// Connections closed for having no traffic for the idle timeout.
    pub idle_timeouts: u64,
    /// Clients disconnected for falling behind (chat), counted when found
    /// slow.
    pub slow_consumers: u64,
    /// Relay: clients closed because their upstream could not be reached
    /// (refused, timed out, unresolvable).
    pub upstream_connect_failures: u64,
    /// `accept(2)` failures survived (aborted handshakes, out of descriptors).
    pub accept_errors: u64,
    /// Of those, the ones after which the loop paused ([`Metrics::accept_backoff`]).
    pub accept_backoffs: u64,
    /// Closes by reason.
    pub closes: Closes,
    /// How long closed connections lived.
    pub durations: Durations,
    /// Chat rooms right now (0 for other services).
    pub chat_rooms: u64,
    /// Chat members right now (0 for other services).
    pub chat_members: u64,
    /// Chat bus (`--bus`): 1 while connected and subscribed, 0 when down
    /// or when there is no bus.
    pub chat_bus_up: u64,
    /// Chat bus: lines and notices published ([`BusStats::published`]).
    pub chat_bus_published: u64,
    /// Chat bus: lines and notices received from other instances.
    pub chat_bus_received: u64,
    /// Chat bus: lines and notices dropped on the way out.
    pub chat_bus_dropped: u64,
    /// Chat bus: requests that timed out (a stalled bus).
    pub chat_bus_stalls: u64,
    /// Chat bus: reconnections.
    pub chat_bus_reconnects: u64,
    /// Closes on purpose (a reason line, the connection limit) that shut
    /// the write side down and read what the client still sent, so the
    /// client got the reason instead of a reset (`service::linger`).
    pub lingering_closes: u64,
    /// Of [`Snapshot::lingering_closes`], those ended by the time or byte
    /// bound while the client was still sending.
    pub lingering_cut_off: u64,
    /// Bytes read from clients, by closed connections.
    pub bytes_in: u64,
    /// Bytes written to clients, by closed connections.
    pub bytes_out: u64,
    /// Bytes the server holds right now for peers that are not reading.
    pub buffered_bytes: u64,
    /// The most [`Snapshot::buffered_bytes`] has ever been.
    pub buffered_bytes_max: u64,
    /// TLS handshakes completed (the connection then went to the service).
    pub tls_handshakes: u64,
    /// TLS handshakes that ran out of time ([`HandshakeFailure::Timeout`]).
    pub tls_failed_timeout: u64,
    /// TLS handshakes with a peer that did not speak TLS, or nothing in
    /// common ([`HandshakeFailure::Protocol`]).
    pub tls_failed_protocol: u64,
    /// TLS handshakes that failed on a certificate ([`HandshakeFailure::Certificate`]).
    pub tls_failed_certificate: u64,
    /// TLS handshakes cut by the connection failing ([`HandshakeFailure::Io`]).
    pub tls_failed_io: u64,
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// A consistent-enough copy (each field read once, relaxed).
    pub fn snapshot(&self) -> Snapshot {
        let closes = Closes {
            by_reason: self.closed.each_ref().map(|c| c.load(Relaxed)),
            errors_by_kind: self.close_errors.each_ref().map(|c| c.load(Relaxed)),
        };
        let (chat_rooms, chat_members) = self.chat.get().map_or((0, 0), |g| g.get());
        let bus =
            |f: fn(&BusStats) -> &AtomicU64| self.chat_bus.get().map_or(0, |b| f(b).load(Relaxed));
        Snapshot {
            connections_accepted: self.accepted.load(Relaxed),
            connections_rejected: self.rejected_by(Rejection::MaxConnections),
            rejected_access_list: self.rejected_by(Rejection::AccessList),
            rejected_proxy_untrusted: self.rejected_by(Rejection::Proxy(ProxyFailure::Untrusted)),
            rejected_proxy_missing: self.rejected_by(Rejection::Proxy(ProxyFailure::Missing)),
            rejected_proxy_malformed: self.rejected_by(Rejection::Proxy(ProxyFailure::Malformed)),
            rejected_proxy_too_large: self.rejected_by(Rejection::Proxy(ProxyFailure::TooLarge)),
            rejected_proxy_timeout: self.rejected_by(Rejection::Proxy(ProxyFailure::Timeout)),
            rejected_proxy_io: self.rejected_by(Rejection::Proxy(ProxyFailure::Io)),
            connections_active: self.active.load(Relaxed),
            connections_closed: closes.by_reason.iter().sum(),
            idle_timeouts: closes.get(Close::IdleTimeout),
            slow_consumers: self.slow_consumers.load(Relaxed),
            upstream_connect_failures: self.upstream_connect_failures.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            accept_backoffs: self.accept_backoffs.load(Relaxed),
            closes,
            durations: Durations {
                buckets: self.durations.each_ref().map(|b| b.load(Relaxed)),
                sum_us: self.durations_sum_us.load(Relaxed),
            },
            chat_rooms,
            chat_members,
            chat_bus_up: bus(|b| &b.up),
            chat_bus_published: bus(|b| &b.published),
            chat_bus_received: bus(|b| &b.received),
            chat_bus_dropped: bus(|b| &b.dropped),
            chat_bus_stalls: bus(|b| &b.stalls),
            chat_bus_reconnects: bus(|b| &b.reconnects),
            lingering_closes: self.lingering_closes.load(Relaxed),
            lingering_cut_off: self.lingering_cut_off.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            buffered_bytes: self.buffered_bytes.load(Relaxed),
            buffered_bytes_max: self.buffered_bytes_max.load(Relaxed),
            tls_handshakes: self.tls_handshakes.load(Relaxed),
            tls_failed_timeout: self.rejected_by(Rejection::Tls(HandshakeFailure::Timeout)),
            tls_failed_protocol: self.rejected_by(Rejection::Tls(HandshakeFailure::Protocol)),
            tls_failed_certificate: self.rejected_by(Rejection::Tls(HandshakeFailure::Certificate)),
            tls_failed_io: self.rejected_by(Rejection::Tls(HandshakeFailure::Io)),
        }
    }

    fn rejected_by(&self, why: Rejection) -> u64 {
        self.rejected[why.index()].load(Relaxed)
    }

    /// A connection was accepted and is being served.
    pub fn connection_opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
    }

    /// A connection counted by [`Metrics::connection_opened`] was closed at
    /// admission, having moved these many bytes: the same as
    /// `closed(Close::Rejected, bytes_in, bytes_out, None)`. Count the
    /// refusal's reason with [`Metrics::rejected`].
    pub fn connection_closed(&self, bytes_in: u64, bytes_out: u64) {
        self.closed(Close::Rejected, bytes_in, bytes_out, None);
    }

    /// A connection counted by [`Metrics::connection_opened`] finished for
    /// `reason`, having moved these many bytes, after living `lived` (`None`:
    /// not timed; it stays out of [`Snapshot::durations`]). Once per
    /// connection: a few atomics, never on the per-message path.
    pub fn closed(&self, reason: Close, bytes_in: u64, bytes_out: u64, lived: Option<Duration>) {
        self.active.fetch_sub(1, Relaxed);
        self.closed[reason.index()].fetch_add(1, Relaxed);
        if let Close::Error(kind) = reason {
            self.close_errors[Close::error_index(kind)].fetch_add(1, Relaxed);
        }
        if bytes_in != 0 {
            self.bytes_in.fetch_add(bytes_in, Relaxed);
        }
        if bytes_out != 0 {
            self.bytes_out.fetch_add(bytes_out, Relaxed);
        }
        if let Some(lived) = lived {
            let us = u64::try_from(lived.as_micros()).unwrap_or(u64::MAX);
            self.durations[Durations::bucket(us)].fetch_add(1, Relaxed);
            self.durations_sum_us.fetch_add(us, Relaxed);
        }
    }

    /// Bytes a connection moved, counted without closing it: a service
    /// dropped unfinished (cut off at the shutdown deadline) adds what it
    /// moved here, since it never returns its counts.
    pub fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
    }

    /// A connection was accepted over the limit and closed at once
    /// (the same as `rejected(Rejection::MaxConnections)`).
    pub fn connection_rejected(&self) {
        self.rejected(Rejection::MaxConnections);
    }

    /// A connection was turned away for `why`, before its service saw a
    /// byte. This counts the refusal only: a connection already counted by
    /// [`Metrics::connection_opened`] (admission runs after the accept loop
    /// gave it a slot) must still be closed with
    /// [`Metrics::connection_closed`].
    pub fn rejected(&self, why: Rejection) {
        self.rejected[why.index()].fetch_add(1, Relaxed);
    }

    /// A slow consumer was disconnected.
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// A relay could not reach its upstream for a client.
    pub fn upstream_connect_failed(&self) {
        self.upstream_connect_failures.fetch_add(1, Relaxed);
    }

    /// An `accept(2)` call failed and the loop carried on.
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    /// The accept loop paused after a failure that would repeat at once
    /// (out of descriptors or buffers).
    pub fn accept_backoff(&self) {
        self.accept_backoffs.fetch_add(1, Relaxed);
    }

    /// From now on [`Metrics::snapshot`] reports `gauges` as the chat's
    /// rooms and members. The first call wins (a server runs one service);
    /// after it, a call costs one atomic load.
    pub fn watch_chat(&self, gauges: &Arc<ChatGauges>) {
        if self.chat.get().is_none() {
            let _ = self.chat.set(gauges.clone());
        }
    }

    /// From now on [`Metrics::snapshot`] reports `stats` as the chat bus's.
    /// The first call wins.
    pub fn watch_chat_bus(&self, stats: &Arc<BusStats>) {
        if self.chat_bus.get().is_none() {
            let _ = self.chat_bus.set(stats.clone());
        }
    }

    /// A lingering close started.
    pub fn lingering_close(&self) {
        self.lingering_closes.fetch_add(1, Relaxed);
    }

    /// A lingering close hit its time or byte bound.
    pub fn lingering_cut_off(&self) {
        self.lingering_cut_off.fetch_add(1, Relaxed);
    }

    /// The server started holding `bytes` for a peer that is not reading.
    pub fn buffer_grew(&self, bytes: u64) {
        let now = self.buffered_bytes.fetch_add(bytes, Relaxed) + bytes;
        self.buffered_bytes_max.fetch_max(now, Relaxed);
    }

    /// A TLS handshake completed.
    pub fn tls_handshake(&self) {
        self.tls_handshakes.fetch_add(1, Relaxed);
    }

    /// A TLS handshake failed for `reason` (the same as
    /// `rejected(Rejection::Tls(reason))`).
    pub fn tls_handshake_failed(&self, reason: HandshakeFailure) {
        self.rejected(Rejection::Tls(reason));
    }

    /// The server released `bytes` it held for a peer.
    pub fn buffer_shrank(&self, bytes: u64) {
        self.buffered_bytes.fetch_sub(bytes, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauge_high_water_mark() {
        let m = Metrics::new();
        m.connection_opened();
        m.buffer_grew(10);
        m.buffer_grew(5);
        m.buffer_shrank(15);
        m.connection_closed(3, 4);
        m.connection_rejected();
        m.lingering_close();
        m.lingering_close();
        m.lingering_cut_off();
        let s = m.snapshot();
        assert_eq!(s.connections_accepted, 1);
        assert_eq!(s.connections_active, 0);
        assert_eq!(s.connections_rejected, 1);
        assert_eq!((s.bytes_in, s.bytes_out), (3, 4));
        assert_eq!((s.buffered_bytes, s.buffered_bytes_max), (0, 15));
        assert_eq!((s.lingering_closes, s.lingering_cut_off), (2, 1));
        m.tls_handshake();
        for reason in HandshakeFailure::ALL {
            m.tls_handshake_failed(reason);
        }
        m.tls_handshake_failed(HandshakeFailure::Protocol);
        let s = m.snapshot();
        assert_eq!(s.tls_handshakes, 1);
        assert_eq!(
            (
                s.tls_failed_timeout,
                s.tls_failed_protocol,
                s.tls_failed_certificate,
                s.tls_failed_io
            ),
            (1, 2, 1, 1)
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"tls_failed_protocol\":2"), "{json}");
        assert!(
            json.contains("\"rejected\":1,\"error\":0,\"errors\":{\"connection_reset\":0"),
            "{json}"
        );
        assert!(json.contains("\"buffered_bytes_max\":15"), "{json}");
        assert!(json.contains("\"lingering_cut_off\":1"), "{json}");
    }

    #[test]
    fn closes_by_reason_and_lifetimes_in_buckets() {
        let m = Metrics::new();
        let ms = Duration::from_millis;
        for (reason, lived) in [
            (Close::PeerClosed, Some(ms(0))),
            (Close::PeerClosed, Some(ms(1))),
            (Close::IdleTimeout, Some(ms(1001))),
            (Close::Error(ErrorKind::ConnectionReset), Some(ms(20))),
            (
                Close::Error(ErrorKind::Verification),
                Some(Duration::from_secs(5000)),
            ),
            (Close::Shutdown, None),
        ] {
            m.connection_opened();
            m.closed(reason, 1, 2, lived);
        }
        let s = m.snapshot();
        assert_eq!(s.connections_closed, 6);
        assert_eq!(s.connections_active, 0);
        assert_eq!((s.bytes_in, s.bytes_out), (6, 12));
        assert_eq!(s.idle_timeouts, 1);
        let c = s.closes;
        assert_eq!(c.get(Close::PeerClosed), 2);
        assert_eq!(c.get(Close::Shutdown), 1);
        assert_eq!(c.by_reason[Close::Error(ErrorKind::Io).index()], 2);
        assert_eq!(c.get(Close::Error(ErrorKind::ConnectionReset)), 1);
        assert_eq!(c.get(Close::Error(ErrorKind::InvalidPort)), 1, "other");
        // 0 and 1 ms in the first bucket (<= 1 ms), 20 ms in the third,
        // 1.001 s above 1 s, 5000 s above the last bound; the shutdown
        // close was not timed.
        let d = s.durations;
        assert_eq!(d.count(), 5);
        assert_eq!(d.buckets[0], 2);
        assert_eq!(d.buckets[2], 1);
        assert_eq!(d.buckets[5], 1);
        assert_eq!(d.buckets[Durations::BUCKETS - 1], 1);
        assert_eq!(d.sum_us, 1_000 + 1_001_000 + 20_000 + 5_000_000_000);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"closes\":{\"peer_closed\":2,"), "{json}");
        assert!(
            json.contains("\"errors\":{\"connection_reset\":1,"),
            "{json}"
        );
    }

    #[test]
    fn chat_bus_stats_show_once_watched() {
        let m = Metrics::new();
        let bus = Arc::new(BusStats::default());
        BusStats::add(&bus.published, 3);
        assert_eq!(m.snapshot().chat_bus_published, 0, "not watched yet");
        m.watch_chat_bus(&bus);
        bus.up.store(1, Relaxed);
        BusStats::add(&bus.dropped, 2);
        let s = m.snapshot();
        assert_eq!(
            (s.chat_bus_up, s.chat_bus_published, s.chat_bus_dropped),
            (1, 3, 2)
        );
    }

    #[test]
    fn chat_gauges_show_once_watched() {
        let m = Metrics::new();
        let g = Arc::new(ChatGauges::default());
        g.changed(1, 2);
        assert_eq!((m.snapshot().chat_rooms, m.snapshot().chat_members), (0, 0));
        m.watch_chat(&g);
        g.changed(2, -1);
        assert_eq!((m.snapshot().chat_rooms, m.snapshot().chat_members), (2, 1));
        m.watch_chat(&Arc::new(ChatGauges::default()));
        assert_eq!(m.snapshot().chat_rooms, 2, "the first hub stays");
    }

    #[test]
    fn every_rejection_has_its_own_counter_and_label() {
        let m = Metrics::new();
        for (i, why) in Rejection::ALL.into_iter().enumerate() {
            assert_eq!(why.index(), i, "{why}");
            for _ in 0..=i {
                m.rejected(why);
            }
        }
        let s = m.snapshot();
        let mut labels = std::collections::HashSet::new();
        for (i, why) in Rejection::ALL.into_iter().enumerate() {
            assert_eq!(s.rejected(why), i as u64 + 1, "{why}");
            assert!(labels.insert(why.as_str()), "{why} twice");
        }
        assert_eq!(s.connections_rejected, 1);
        assert_eq!(s.tls_failed_io, Rejection::COUNT as u64);
    }
}
