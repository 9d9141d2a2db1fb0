//! [`Balanced`]: one upstream chosen per client among several, with passive
//! and active health.
//!
//! * **Policy** ([`Policy`]): `round-robin` (in turn over those up), `least-conn` (the
//!   fewest live pairs, counted by the [`Lease`] each pair holds; ties in
//!   turn), `hash-source` (rendezvous hashing of the client's IP address,
//!   port left out: a client keeps its upstream while the set is stable,
//!   and when one goes down only the clients it had move).
//! * **Passive health**: a connect that fails (refused, timed out,
//!   unresolvable) marks that upstream down for a back-off:
//!   [`FIRST_BACKOFF`] (1 s) after the first failure in a row, doubling with
//!   each further one, at most [`MAX_BACKOFF`] (30 s). When it runs out, the
//!   next client tries it again; one success clears the count. A single
//!   upstream is never marked down (as nginx does): every client tries it.
//! * **Retry**: a client whose connect failed (no byte forwarded yet) is
//!   tried on another upstream that is up, each upstream at most once per
//!   client, in the policy's order. When none is left the client is closed
//!   at once, counted in [`Snapshot::no_upstream`](crate::metrics::Snapshot)
//!   and logged with every reason.
//! * **Active health** ([`BalanceOptions::health_interval`]): every interval
//!   each upstream gets [`Upstream::check`] (a TCP connect for [`Fixed`]);
//!   a failure marks it down (escalating the back-off as above), a success
//!   brings it back at once. Run by the future from
//!   [`Balanced::health_checks`], which the caller spawns.
//!
//! Names are resolved by each upstream at each connect and check (see
//! [`Fixed`]).
//!
//! [`Fixed`]: super::Fixed

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::upstream::{Connected, Upstream};
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result, code};
use crate::metrics::Metrics;

/// Back-off after an upstream's first failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off (reached after six failures in a row).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How a [`Balanced`] picks an upstream for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each upstream in turn.
    #[default]
    RoundRobin,
    /// The upstream with the fewest live pairs (ties in turn).
    LeastConn,
    /// By the client's IP address (rendezvous hashing): the same client
    /// goes to the same upstream while it is up.
    HashSource,
}

impl Policy {
    /// The name `--balance` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastConn => "least-conn",
            Policy::HashSource => "hash-source",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`Balanced`]'s settings.
#[derive(Debug, Clone, Copy)]
pub struct BalanceOptions {
    /// How to pick.
    pub policy: Policy,
    /// Back-off after the first failure in a row (doubled per further one).
    pub first_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
    /// Active health checks every this long (`None`: passive health only).
    pub health_interval: Option<Duration>,
}

impl Default for BalanceOptions {
    fn default() -> Self {
        BalanceOptions {
            policy: Policy::default(),
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
            health_interval: None,
        }
    }
}

/// One upstream's state, from [`Balanced::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// The upstream's [`Upstream::describe`].
    pub target: String,
    /// Whether clients are given to it now (not in a back-off).
    pub up: bool,
    /// Live pairs on it.
    pub active: usize,
    /// Failures in a row (0 after a success).
    pub failures: u32,
}

/// Several upstreams behind one [`Upstream`]: a policy picks one per
/// client, with passive health, retries and optional active checks (see
/// the [module documentation](self)).
///
/// Cloning is cheap and shares the state (counts, health): keep a clone to
/// read [`Balanced::status`] or run [`Balanced::health_checks`].
///
/// ```no_run
/// # async fn f() -> tcpkit::Result<()> {
/// use std::time::Duration;
/// use tcpkit::endpoint::HostPort;
/// use tcpkit::relay::{BalanceOptions, Balanced, Fixed, Policy, Relay};
/// use tcpkit::server::ServerBuilder;
///
/// let targets = ["127.0.0.1:8081", "127.0.0.1:8082"]
///     .into_iter()
///     .map(|t| Ok(Fixed::new(HostPort::parse(t)?, Duration::from_secs(5))))
///     .collect::<tcpkit::Result<Vec<_>>>()?;
/// let options = BalanceOptions {
///     policy: Policy::LeastConn,
///     health_interval: Some(Duration::from_secs(2)),
///     ..BalanceOptions::default()
/// };
/// let balanced = Balanced::with_options(targets, options)?;
/// if let Some(checks) = balanced.health_checks() {
///     tokio::spawn(checks);
/// }
/// let server = ServerBuilder::new().listen("127.0.0.1:9090".parse()?).bind()?;
/// server.run(Relay::new(balanced)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Balanced<B> {
    shared: Arc<Shared<B>>,
}

impl<B> Clone for Balanced<B> {
    fn clone(&self) -> Self {
        Balanced {
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug)]
struct Shared<B> {
    backends: Vec<Backend<B>>,
    options: BalanceOptions,
    /// Round-robin position (also where least-conn starts breaking ties).
    next: AtomicUsize,
    /// What `down_until` counts from.
    epoch: Instant,
}

#[derive(Debug)]
struct Backend<B> {
    upstream: B,
    name: String,
    /// Rendezvous hashing key: the target's text, plus its position among
    /// equal targets (so a target given twice is two keys).
    key: u64,
    live: Arc<AtomicUsize>,
    /// Milliseconds after `epoch` until which it is down; 0: up.
    down_until: AtomicU64,
    failures: AtomicU32,
}

impl<B: Upstream> Balanced<B> {
    /// Balances over `upstreams` with `policy` and the default back-off,
    /// passive health only. Refuses an empty list.
    pub fn new(upstreams: Vec<B>, policy: Policy) -> Result<Balanced<B>> {
        Balanced::with_options(
            upstreams,
            BalanceOptions {
                policy,
                ..BalanceOptions::default()
            },
        )
    }

    /// Balances over `upstreams` with `options`. Refuses an empty list, a
    /// zero back-off or health interval.
    pub fn with_options(upstreams: Vec<B>, options: BalanceOptions) -> Result<Balanced<B>> {
        let invalid = |what: &str| {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                format!("balancer: {what}"),
            ))
        };
        if upstreams.is_empty() {
            return invalid("no upstream to balance over");
        }
        if options.first_backoff.is_zero() || options.max_backoff < options.first_backoff {
            return invalid("the back-off must be above 0 and its maximum at least its start");
        }
        if options.health_interval.is_some_and(|d| d.is_zero()) {
            return invalid("the health check interval must be above 0");
        }
        let mut backends: Vec<Backend<B>> = Vec::with_capacity(upstreams.len());
        for upstream in upstreams {
            let name = upstream.describe();
            let twins = backends.iter().filter(|b| b.name == name).count() as u64;
            backends.push(Backend {
                key: mix(fnv1a(FNV_OFFSET, name.as_bytes()) ^ twins.wrapping_mul(GOLDEN)),
                name,
                upstream,
                live: Arc::new(AtomicUsize::new(0)),
                down_until: AtomicU64::new(0),
                failures: AtomicU32::new(0),
            });
        }
        Ok(Balanced {
            shared: Arc::new(Shared {
                backends,
                options,
                next: AtomicUsize::new(0),
                epoch: Instant::now(),
            }),
        })
    }

    /// The settings in use.
    pub fn options(&self) -> &BalanceOptions {
        &self.shared.options
    }

    /// Each upstream's state now, in the order given.
    pub fn status(&self) -> Vec<BackendStatus> {
        let s = &*self.shared;
        let now = s.now_ms();
        s.backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStatus {
                target: b.name.clone(),
                up: s.is_up(i, now),
                active: b.live.load(Relaxed),
                failures: b.failures.load(Relaxed),
            })
            .collect()
    }

    /// The active health checks, to spawn on a runtime (`None` without
    /// [`BalanceOptions::health_interval`]). The first round runs at once;
    /// each round checks every upstream at the same time (each check under
    /// that upstream's own connect deadline), and the next
    /// starts one interval after the previous one started (or when it ends,
    /// if it took longer). It ends when the last clone of this balancer is
    /// dropped.
    pub fn health_checks(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let interval = self.shared.options.health_interval?;
        let weak: Weak<Shared<B>> = Arc::downgrade(&self.shared);
        Some(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let rounds = shared.backends.iter().enumerate().map(|(i, b)| {
                    let shared = &shared;
                    async move {
                        match b.upstream.check().await {
                            Ok(()) => shared.succeeded(i, "health check"),
                            Err(e) => shared.failed(i, &e, true),
                        }
                    }
                });
                futures_util::future::join_all(rounds).await;
            }
        })
    }

    async fn connect_with(
        &self,
        client: &Endpoint,
        metrics: Option<&Metrics>,
    ) -> Result<(Connected, Option<Lease>)> {
        let s = &*self.shared;
        let n = s.backends.len();
        let turn = s.next.fetch_add(1, Relaxed);
        let mut tried = vec![false; n];
        let mut failures: Vec<(usize, Error)> = Vec::new();
        while let Some(i) = s.pick(client, turn, &tried) {
            tried[i] = true;
            let b = &s.backends[i];
            // Taken before the connect, so that clients arriving meanwhile
            // see this one on it (least-conn).
            let lease = Lease::take(&b.live);
            match b.upstream.connect_leased(client, None).await {
                Ok((connected, inner)) => {
                    s.succeeded(i, "connect");
                    return Ok((connected, Some(lease.holding(inner))));
                }
                Err(e) => {
                    drop(lease);
                    if let Some(m) = metrics {
                        m.upstream_connect_failed();
                    }
                    s.failed(i, &e, false);
                    failures.push((i, e));
                }
            }
        }
        if let Some(m) = metrics {
            m.no_upstream();
        }
        Err(s.none_left(failures))
    }
}

impl<B: Upstream> Upstream for Balanced<B> {
    /// Picks and connects; the pair is not counted for `least-conn` (the
    /// relay calls [`Upstream::connect_leased`], which is).
    async fn connect(&self, client: &Endpoint) -> Result<Connected> {
        Ok(self.connect_with(client, None).await?.0)
    }

    async fn connect_leased(
        &self,
        client: &Endpoint,
        metrics: Option<&Metrics>,
    ) -> Result<(Connected, Option<Lease>)> {
        self.connect_with(client, metrics).await
    }

    fn background(&self) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> {
        self.health_checks()
            .map(|f| Box::pin(f) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>)
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self
            .shared
            .backends
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        format!("{} ({})", names.join(", "), self.shared.options.policy)
    }
}

impl<B: Upstream> Shared<B> {
    fn now_ms(&self) -> u64 {
        // Never 0, which means "up".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn is_up(&self, i: usize, now: u64) -> bool {
        self.backends.len() == 1 || self.backends[i].down_until.load(Relaxed) <= now
    }

    /// The next upstream for `client`: up and not yet tried for it.
    /// `turn` counts clients (round-robin's position, and where least-conn
    /// starts breaking ties).
    fn pick(&self, client: &Endpoint, turn: usize, tried: &[bool]) -> Option<usize> {
        let n = self.backends.len();
        let start = turn % n;
        let now = self.now_ms();
        let usable = |&i: &usize| !tried[i] && self.is_up(i, now);
        let candidates = (0..n).map(|k| (start + k) % n).filter(usable);
        match self.options.policy {
            // In turn over those usable, so a down upstream's share is
            // spread over the others rather than all given to its
            // neighbour.
            Policy::RoundRobin => {
                let usable_now = (0..n).filter(usable);
                let count = usable_now.clone().count();
                { usable_now }.nth(turn % count.max(1))
            }
            // `min_by_key` keeps the first of equals: ties go in turn.
            Policy::LeastConn => candidates.min_by_key(|&i| self.backends[i].live.load(Relaxed)),
            Policy::HashSource => {
                let ip = client_key(client);
                candidates.max_by_key(|&i| (mix(self.backends[i].key ^ ip), std::cmp::Reverse(i)))
            }
        }
    }

    /// Marks upstream `i` down for its next back-off, unless another client
    /// already did (`always`: a health check, which escalates regardless).
    fn failed(&self, i: usize, error: &Error, always: bool) {
        let b = &self.backends[i];
        let now = self.now_ms();
        if self.backends.len() == 1 {
            b.failures.fetch_add(1, Relaxed);
            return;
        }
        if !always && b.down_until.load(Relaxed) > now {
            return;
        }
        let failures = b.failures.fetch_add(1, Relaxed).saturating_add(1);
        let backoff = self.backoff(failures);
        let was_up = b.down_until.swap(now + backoff.as_millis() as u64, Relaxed) <= now;
        if was_up {
            tracing::warn!(
                upstream = %b.name,
                failures,
                "upstream down for {backoff:?}: {error}"
            );
        } else {
            tracing::debug!(upstream = %b.name, failures, "upstream still down for {backoff:?}: {error}");
        }
    }

    fn succeeded(&self, i: usize, by: &str) {
        let b = &self.backends[i];
        // Read first: the common case (it was up) writes nothing, so
        // connects on several cores do not bounce this cache line.
        if b.failures.load(Relaxed) == 0 && b.down_until.load(Relaxed) == 0 {
            return;
        }
        let failures = b.failures.swap(0, Relaxed);
        let was_down = b.down_until.swap(0, Relaxed) != 0;
        if was_down {
            tracing::info!(upstream = %b.name, "upstream back up ({by} succeeded after {failures} failures)");
        }
    }

    /// `first_backoff × 2^(failures − 1)`, at most `max_backoff`.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.options
            .first_backoff
            .saturating_mul(1 << doublings)
            .min(self.options.max_backoff)
    }

    /// The error for a client no upstream could take.
    fn none_left(&self, failures: Vec<(usize, Error)>) -> Error {
        let n = self.backends.len();
        let down = n - failures.len();
        if failures.is_empty() {
            let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
            return Error::new(
                ErrorKind::Unreachable,
                libc::EHOSTUNREACH,
                format!(
                    "relay: no upstream up (all {n} down after failing: {})",
                    names.join(", ")
                ),
            );
        }
        let (kind, code) = (failures[0].1.kind(), failures[0].1.code());
        let reasons: Vec<String> = failures
            .into_iter()
            .map(|(i, e)| format!("{}: {}", self.backends[i].name, e.message()))
            .collect();
        let rest = if down > 0 {
            format!(" ({down} more down)")
        } else {
            String::new()
        };
        Error::new(
            kind,
            code,
            format!(
                "relay: every upstream tried failed{rest}: {}",
                reasons.join("; ")
            ),
        )
    }
}

/// One live pair counted against an upstream: taking it adds one to the
/// counter, dropping it takes one away. [`Upstream::connect_leased`]
/// returns it; the relay holds it for as long as the pair lives.
#[derive(Debug)]
pub struct Lease {
    live: Arc<AtomicUsize>,
    /// A lease the inner upstream already held (a balancer over balancers).
    inner: Option<Box<Lease>>,
}

impl Lease {
    /// Counts one more live pair on `live`.
    pub fn take(live: &Arc<AtomicUsize>) -> Lease {
        live.fetch_add(1, Relaxed);
        Lease {
            live: live.clone(),
            inner: None,
        }
    }

    /// This lease, also holding `inner` until dropped.
    pub fn holding(mut self, inner: Option<Lease>) -> Lease {
        self.inner = inner.map(Box::new);
        self
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Relaxed);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// FNV-1a over `bytes`, from `hash`: stable across runs and Rust versions
/// (unlike `DefaultHasher`), so a restarted relay sends clients where the
/// previous one did.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// SplitMix64's finaliser: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The client's IP address (never its port), hashed.
fn client_key(client: &Endpoint) -> u64 {
    let ip = match client.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    mix(fnv1a(FNV_OFFSET, &ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_and_stops_at_the_cap() {
        let b: Balanced<super::super::Fixed> = Balanced::new(
            vec![fixed("127.0.0.1:1"), fixed("127.0.0.1:2")],
            Policy::RoundRobin,
        )
        .unwrap();
        let s = &*b.shared;
        let got: Vec<u64> = (1..=8).map(|f| s.backoff(f).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(s.backoff(u32::MAX), MAX_BACKOFF);
    }

    fn fixed(t: &str) -> super::super::Fixed {
        super::super::Fixed::new(
            crate::endpoint::HostPort::parse(t).unwrap(),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn hash_ignores_the_port_and_moves_only_the_removed_targets_clients() {
        let targets: Vec<_> = (1..=4).map(|p| fixed(&format!("127.0.0.1:{p}"))).collect();
        let b = Balanced::new(targets, Policy::HashSource).unwrap();
        let s = &*b.shared;
        let none = [false; 4];
        let mut per = [0usize; 4];
        for c in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + c);
            let a = Endpoint::from(std::net::SocketAddr::from((ip, 1000)));
            let b2 = Endpoint::from(std::net::SocketAddr::from((ip, 2000)));
            let first = s.pick(&a, 0, &none).unwrap();
            assert_eq!(
                s.pick(&b2, 3, &none),
                Some(first),
                "port or start changed it"
            );
            per[first] += 1;
            // Without target 2, a client of another target stays.
            let mut gone = none;
            gone[2] = true;
            let after = s.pick(&a, 0, &gone).unwrap();
            if first != 2 {
                assert_eq!(after, first);
            }
        }
        assert!(per.iter().all(|&n| n > 150), "uneven: {per:?}");
    }

    #[test]
    fn an_empty_list_is_refused() {
        let err = Balanced::<super::super::Fixed>::new(vec![], Policy::LeastConn).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }
}
