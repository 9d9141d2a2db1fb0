//! Counters shared by the server, the bench and progress output.
//!
//! [`Metrics`] is a set of atomics a server updates and anyone may read;
//! [`Snapshot`] is a plain, serializable copy taken at one moment. The
//! per-message path never touches these: a connection keeps its own byte
//! counts in local integers and adds them here once, when it closes. The one
//! exception is the backpressure gauge ([`Snapshot::buffered_bytes`]), updated
//! only when a peer stops reading and the server has to hold bytes for it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Live counters. Cheap to share behind an `Arc`; every field is an atomic.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    rejected: [AtomicU64; Rejection::COUNT],
    active: AtomicU64,
    closed: AtomicU64,
    idle_timeouts: AtomicU64,
    slow_consumers: AtomicU64,
    accept_errors: AtomicU64,
    lingering_closes: AtomicU64,
    lingering_cut_off: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    buffered_bytes: AtomicU64,
    buffered_bytes_max: AtomicU64,
    tls_handshakes: AtomicU64,
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
    /// Connections that have finished (any reason).
    pub connections_closed: u64,
    /// Connections closed for having no traffic for the idle timeout.
    pub idle_timeouts: u64,
    /// Clients disconnected for falling behind (chat).
    pub slow_consumers: u64,
    /// `accept(2)` failures survived (aborted handshakes, out of descriptors).
    pub accept_errors: u64,
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
            connections_closed: self.closed.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
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

    /// A connection finished, having moved these many bytes.
    pub fn connection_closed(&self, bytes_in: u64, bytes_out: u64) {
        self.active.fetch_sub(1, Relaxed);
        self.closed.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
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

    /// A connection was closed by the idle timeout.
    pub fn idle_timeout(&self) {
        self.idle_timeouts.fetch_add(1, Relaxed);
    }

    /// A slow consumer was disconnected.
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// An `accept(2)` call failed and the loop carried on.
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
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
        assert!(json.contains("\"buffered_bytes_max\":15"), "{json}");
        assert!(json.contains("\"lingering_cut_off\":1"), "{json}");
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
