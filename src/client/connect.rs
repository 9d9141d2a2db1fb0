//! [`Connector`]: connect to a name over every address it resolves to, racing
//! IPv6 and IPv4 as RFC 8305 ("Happy Eyeballs v2") describes.
//!
//! The addresses are interleaved by family (the resolver's first family
//! first), one attempt starts, and the next starts when the previous one fails
//! or after the *connection attempt delay* (250 ms), whichever comes first.
//! The first handshake to complete wins; every other attempt is dropped,
//! which closes its socket. Each attempt has its own deadline and the whole
//! operation (resolve, attempts and retries) has an overall one.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::endpoint::{Endpoint, HostPort, Resolve, SystemResolver};
use crate::error::{Error, ErrorKind, Result, code};

/// RFC 8305 §5's recommended connection attempt delay.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Which address families a connect may use (`-4` / `-6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// IPv4 and IPv6, raced.
    #[default]
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl Family {
    fn allows(self, ep: &Endpoint) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => ep.is_ipv4(),
            Family::V6 => ep.is_ipv6(),
        }
    }
}

/// How to connect: deadlines, retries, family and source address.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Deadline of each single attempt (one address). `None`: the kernel's
    /// own SYN retry limit (about two minutes on Linux).
    pub attempt_timeout: Option<Duration>,
    /// Deadline of the whole connect, resolution and retries included.
    pub overall_timeout: Option<Duration>,
    /// Delay before racing the next address while one is still pending.
    pub attempt_delay: Duration,
    /// Address families to use.
    pub family: Family,
    /// Local endpoint to `bind(2)` before connecting (port 0: any port).
    /// Only addresses of its family are tried.
    pub source: Option<Endpoint>,
    /// How many times to try all addresses again after they all failed.
    pub retries: u32,
    /// Pause before the first retry; doubled for each further retry.
    pub retry_backoff: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            attempt_timeout: Some(Duration::from_secs(10)),
            overall_timeout: Some(Duration::from_secs(30)),
            attempt_delay: CONNECTION_ATTEMPT_DELAY,
            family: Family::Any,
            source: None,
            retries: 0,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// A connected stream and what it took to get it.
#[derive(Debug)]
pub struct Connected {
    /// The connected stream.
    pub stream: TcpStream,
    /// The remote endpoint that answered.
    pub peer: Endpoint,
    /// The local endpoint the kernel (or `source`) gave the connection.
    pub local: Endpoint,
    /// Every address the target resolved to, in the order they were tried.
    pub resolved: Vec<Endpoint>,
}

/// Connects to names or endpoints with Happy Eyeballs, through an injectable
/// resolver.
///
/// ```no_run
/// # async fn f() -> tcpkit::Result<()> {
/// use tcpkit::client::Connector;
/// let conn = Connector::new().connect("localhost:3333").await?;
/// println!("connected to {} from {}", conn.peer, conn.local);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connector {
    resolver: Arc<dyn Resolve>,
    options: ConnectOptions,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new()
    }
}

impl Connector {
    /// A connector with the system resolver and default options.
    pub fn new() -> Connector {
        Connector {
            resolver: Arc::new(SystemResolver),
            options: ConnectOptions::default(),
        }
    }

    /// Uses `resolver` for names (tests pass a `StaticResolver`).
    pub fn with_resolver(mut self, resolver: impl Resolve) -> Connector {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ConnectOptions) -> Connector {
        self.options = options;
        self
    }

    /// The options in use.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// Resolves `target` (`host:port`, `a.b.c.d:port` or `[v6]:port`) and
    /// connects to the first address that answers.
    ///
    /// Text that looks like an IP address but is not one (`192.168.1.3x`) is
    /// [`ErrorKind::InvalidAddress`], not a name to look up. Cancel-safe:
    /// dropping the future closes every pending attempt.
    pub async fn connect(&self, target: &str) -> Result<Connected> {
        self.connect_host_port(&HostPort::parse(target)?).await
    }

    /// Connects to the first of `endpoints` that answers, with the same racing,
    /// deadlines and retries as [`Connector::connect`].
    pub async fn connect_endpoints(&self, endpoints: &[Endpoint]) -> Result<Connected> {
        let name = match endpoints {
            [one] => one.to_string(),
            _ => format!("{} addresses", endpoints.len()),
        };
        let work = self.connect_resolved(&name, endpoints.to_vec());
        with_deadline(self.options.overall_timeout, &name, work).await
    }

    /// Resolves `target` to the endpoints this connector would try, in order.
    ///
    /// `target` is any text [`HostPort::parse`] takes (a port alone dials this
    /// host). Port 0 is refused ([`ErrorKind::InvalidPort`]): no one can be
    /// reached there. With a source address, a target that has no address of
    /// the source's family is [`ErrorKind::InvalidConfig`] (the two do not
    /// fit together), not a resolution failure.
    pub async fn resolve(&self, target: &str) -> Result<Vec<Endpoint>> {
        let target = HostPort::parse(target)?;
        self.resolve_host_port(&target).await
    }

    /// [`Connector::resolve`] for text already parsed (e.g. from `HOST PORT`).
    pub async fn resolve_host_port(&self, target: &HostPort) -> Result<Vec<Endpoint>> {
        if target.port() == 0 {
            return Err(Error::new(
                ErrorKind::InvalidPort,
                code::INVALID_PORT,
                format!("cannot connect to {target}: port 0 is not a port anyone listens on"),
            ));
        }
        let endpoints = target.resolve_async(&self.resolver).await?;
        let family = self.effective_family();
        let kept: Vec<Endpoint> = endpoints
            .iter()
            .copied()
            .filter(|e| family.allows(e))
            .collect();
        if kept.is_empty() {
            let which = if family == Family::V6 { "IPv6" } else { "IPv4" };
            if let Some(src) = self.options.source {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    code::INVALID_CONFIG,
                    format!(
                        "source address {} is {which} but {target} has only {} addresses",
                        src.ip(),
                        if family == Family::V6 { "IPv4" } else { "IPv6" },
                    ),
                ));
            }
            return Err(Error::new(
                ErrorKind::Resolve,
                code::RESOLVE,
                format!("resolve {target}: no {which} address"),
            ));
        }
        Ok(interleave(kept))
    }

    /// Parses `target` and connects (see [`Connector::connect`]).
    pub async fn connect_host_port(&self, target: &HostPort) -> Result<Connected> {
        let name = target.to_string();
        let work = async {
            let resolved = self.resolve_host_port(target).await?;
            self.connect_resolved(&name, resolved).await
        };
        with_deadline(self.options.overall_timeout, &name, work).await
    }

    /// The family filter, narrowed by the source address if one is set.
    fn effective_family(&self) -> Family {
        match self.options.source {
            Some(src) if src.is_ipv4() => Family::V4,
            Some(_) => Family::V6,
            None => self.options.family,
        }
    }

    /// [`Connector::connect_host_port`] without the `getsockname(2)` for
    /// [`Connected::local`]: the stream and the peer that answered (the
    /// relay's upstream connect, which never looks at its local address).
    pub(crate) async fn connect_host_port_stream(
        &self,
        target: &HostPort,
    ) -> Result<(TcpStream, Endpoint)> {
        let name = target.to_string();
        let work = async {
            let resolved = self.resolve_host_port(target).await?;
            self.race_with_retries(&name, &resolved).await
        };
        with_deadline(self.options.overall_timeout, &name, work).await
    }

    async fn connect_resolved(&self, name: &str, resolved: Vec<Endpoint>) -> Result<Connected> {
        let (stream, peer) = self.race_with_retries(name, &resolved).await?;
        let local = stream
            .local_addr()
            .map(Endpoint::from)
            .map_err(|e| Error::io(e, format_args!("getsockname for {peer}")))?;
        Ok(Connected {
            stream,
            peer,
            local,
            resolved,
        })
    }

    async fn race_with_retries(
        &self,
        name: &str,
        resolved: &[Endpoint],
    ) -> Result<(TcpStream, Endpoint)> {
        let mut backoff = self.options.retry_backoff;
        let mut round = 0;
        loop {
            match race(resolved, &self.options).await {
                Ok(won) => return Ok(won),
                Err(errors) if round >= self.options.retries => {
                    return Err(combine(name, errors));
                }
                Err(errors) => {
                    tracing::info!("{}; retrying in {backoff:?}", combine(name, errors));
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    round += 1;
                }
            }
        }
    }
}

/// One Happy Eyeballs round over `endpoints`: the winner, or every error.
async fn race(
    endpoints: &[Endpoint],
    options: &ConnectOptions,
) -> std::result::Result<(TcpStream, Endpoint), Vec<Error>> {
    if let [ep] = endpoints {
        // One address (an IP literal, the common case): nothing to race, so
        // no task to spawn and join. Its own deadline is left out when the
        // overall one, already running, ends no later and no retry follows:
        // one timer per connect, not two.
        let timeout = match (options.attempt_timeout, options.overall_timeout) {
            (Some(a), Some(o)) if options.retries == 0 && a >= o => None,
            (a, _) => a,
        };
        return match attempt(*ep, options.source, timeout).await {
            Ok(stream) => Ok((stream, *ep)),
            Err(e) => Err(vec![e]),
        };
    }
    // A JoinSet aborts its tasks when dropped, so returning the winner cancels
    // (and closes) every other pending attempt.
    let mut pending = JoinSet::new();
    let mut errors = Vec::new();
    let mut next = endpoints.iter();
    loop {
        if let Some(&ep) = next.next() {
            let (timeout, source) = (options.attempt_timeout, options.source);
            pending.spawn(async move { (ep, attempt(ep, source, timeout).await) });
        }
        let more = next.len() > 0;
        if pending.is_empty() {
            return Err(errors);
        }
        let delay = tokio::time::sleep(options.attempt_delay);
        tokio::pin!(delay);
        loop {
            tokio::select! {
                joined = pending.join_next() => match joined {
                    Some(Ok((ep, Ok(stream)))) => return Ok((stream, ep)),
                    Some(Ok((_, Err(e)))) => {
                        errors.push(e);
                        // A failure starts the next attempt at once (RFC 8305 §5).
                        if more || pending.is_empty() {
                            break;
                        }
                    }
                    Some(Err(join)) => {
                        errors.push(Error::new(ErrorKind::Io, libc::EIO, format!("connect task failed: {join}")));
                        if more || pending.is_empty() {
                            break;
                        }
                    }
                    None => break,
                },
                () = &mut delay, if more => break,
            }
        }
    }
}

/// One connect attempt: `socket(2)` (non-blocking from the start),
/// optional `bind(2)`, then a non-blocking `connect(2)` under its own
/// deadline.
async fn attempt(
    ep: Endpoint,
    source: Option<Endpoint>,
    timeout: Option<Duration>,
) -> Result<TcpStream> {
    let connect = connect_nonblocking(ep, source);
    match timeout {
        Some(t) => tokio::time::timeout(t, connect)
            .await
            .map_err(|_| Error::timed_out(format_args!("connect {ep}"), t))?,
        None => connect.await,
    }
}

/// `connect(2)` on a non-blocking socket, then one wait for writability.
///
/// The result comes from the readiness event: a handshake that completed
/// reports writable and nothing else, so only a failed one (error or
/// hang-up in the event) costs the `getsockopt(SO_ERROR)` that names its
/// errno. Either way the result is known before the caller writes a byte,
/// so a failed address can still be retried elsewhere.
async fn connect_nonblocking(ep: Endpoint, source: Option<Endpoint>) -> Result<TcpStream> {
    use tokio::io::Interest;
    let addr = ep.socket_addr();
    crate::net::require_runtime(&format_args!("connect {ep}"))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), stream_type(), None)
        .map_err(|e| Error::io(e, format_args!("open a TCP socket for {ep}")))?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    crate::net::set_nonblocking(&socket, &format_args!("connect {ep}"))?;
    if let Some(src) = source {
        socket
            .bind(&socket2::SockAddr::from(src.socket_addr()))
            .map_err(|e| Error::io(e, format_args!("bind {src}")))?;
    }
    match socket.connect(&socket2::SockAddr::from(addr)) {
        Ok(()) => {}
        // In progress (EINTR too: the handshake goes on regardless).
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::Interrupted => {}
        Err(e) => return Err(Error::io(e, format_args!("connect {ep}"))),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))
        .map_err(|e| Error::io(e, format_args!("connect {ep}")))?;
    let ready = stream
        .ready(Interest::WRITABLE | Interest::ERROR)
        .await
        .map_err(|e| Error::io(e, format_args!("connect {ep}")))?;
    let failed = ready.is_error() || ready.is_write_closed() || ready.is_read_closed();
    if failed
        && let Some(e) = stream
            .take_error()
            .map_err(|e| Error::io(e, format_args!("connect {ep}")))?
    {
        return Err(Error::io(e, format_args!("connect {ep}")));
    }
    Ok(stream)
}

/// `SOCK_STREAM`, with `SOCK_NONBLOCK` where `socket(2)` takes it (no
/// `fcntl(2)` pair afterwards).
fn stream_type() -> socket2::Type {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    return socket2::Type::STREAM.nonblocking();
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    return socket2::Type::STREAM;
}

async fn with_deadline<T>(
    deadline: Option<Duration>,
    name: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(d) = deadline else {
        return work.await;
    };
    let at = tokio::time::Instant::now() + d;
    let mut work = std::pin::pin!(work);
    // The deadline's timer starts only if the work is still pending after
    // one turn of the runtime's I/O driver. A loopback handshake is usually
    // done by then, and a timer that would fire before every other one
    // costs a wake-up of the driver (an eventfd write) to register. The
    // deadline still counts from the start.
    if let Poll::Ready(r) = poll_once(work.as_mut()).await {
        return r;
    }
    tokio::task::yield_now().await;
    if let Poll::Ready(r) = poll_once(work.as_mut()).await {
        return r;
    }
    tokio::time::timeout_at(at, work)
        .await
        .map_err(|_| Error::timed_out(format_args!("connect {name}"), d))?
}

/// Polls `work` once, in the calling task's context (so its wakers are
/// registered): its result, or `Pending`.
async fn poll_once<T>(mut work: std::pin::Pin<&mut impl Future<Output = T>>) -> Poll<T> {
    std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await
}

/// One error for a failed round: a single address's error as it is; for
/// several, the first one's kind and code with every address's reason.
fn combine(name: &str, mut errors: Vec<Error>) -> Error {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let Some(first) = errors.first() else {
        return Error::new(
            ErrorKind::Resolve,
            code::RESOLVE,
            format!("connect {name}: no address to try"),
        );
    };
    let reasons: Vec<&str> = errors.iter().map(Error::message).collect();
    Error::new(
        first.kind(),
        first.code(),
        format!(
            "connect {name}: all {} addresses failed: {}",
            errors.len(),
            reasons.join("; ")
        ),
    )
}

/// RFC 8305 §4: alternate families, starting with the family of the
/// resolver's first answer, keeping the resolver's order within a family.
/// Private: [`Connector::resolve`] returns the order it produces.
fn interleave(endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    let Some(first_v6) = endpoints.first().map(Endpoint::is_ipv6) else {
        return endpoints;
    };
    let (mut first, mut second): (Vec<_>, Vec<_>) =
        endpoints.into_iter().partition(|e| e.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(first.len() + second.len());
    first.reverse();
    second.reverse();
    loop {
        match (first.pop(), second.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(text: &str) -> Endpoint {
        Endpoint::parse(text).unwrap()
    }

    #[test]
    fn interleaves_families_starting_with_the_first() {
        let v = interleave(vec![
            ep("[::1]:1"),
            ep("[::2]:1"),
            ep("[::3]:1"),
            ep("127.0.0.1:1"),
        ]);
        let want = vec![
            ep("[::1]:1"),
            ep("127.0.0.1:1"),
            ep("[::2]:1"),
            ep("[::3]:1"),
        ];
        assert_eq!(v, want);
        let v = interleave(vec![ep("10.0.0.1:1"), ep("[::1]:1"), ep("10.0.0.2:1")]);
        assert_eq!(v, vec![ep("10.0.0.1:1"), ep("[::1]:1"), ep("10.0.0.2:1")]);
        assert!(interleave(vec![]).is_empty());
    }

    #[tokio::test]
    async fn bad_address_text_is_invalid_address_naming_it() {
        let err = Connector::new()
            .resolve("192.168.1.3x:3333")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidAddress);
        assert!(err.message().contains("192.168.1.3x"), "{err}");
    }

    #[tokio::test]
    async fn port_zero_and_a_missing_host_are_refused_before_dialing() {
        let err = Connector::new().resolve("localhost:0").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPort);
        assert!(err.message().contains("port 0"), "{err}");
        let err = Connector::new().resolve(":3333").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidAddress);
        assert!(err.message().contains("missing host"), "{err}");
    }

    #[tokio::test]
    async fn a_source_of_the_other_family_is_a_mismatch_not_a_resolve_failure() {
        let opts = ConnectOptions {
            source: Some(Endpoint::loopback_v4(0)),
            ..ConnectOptions::default()
        };
        let err = Connector::new()
            .with_options(opts)
            .resolve("[::1]:9")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("127.0.0.1"), "{err}");
        assert!(err.message().contains("[::1]:9"), "{err}");
    }

    #[tokio::test]
    async fn family_filter_and_source_narrow_the_list() {
        let r = crate::endpoint::StaticResolver::new().with(
            "dual",
            ["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        );
        let opts = ConnectOptions {
            family: Family::V4,
            ..ConnectOptions::default()
        };
        let c = Connector::new().with_resolver(r.clone()).with_options(opts);
        assert_eq!(c.resolve("dual:9").await.unwrap(), vec![ep("127.0.0.1:9")]);
        let opts = ConnectOptions {
            source: Some(Endpoint::loopback_v6(0)),
            ..ConnectOptions::default()
        };
        let c = Connector::new().with_resolver(r).with_options(opts);
        assert_eq!(c.resolve("dual:9").await.unwrap(), vec![ep("[::1]:9")]);
        let only_v4 =
            crate::endpoint::StaticResolver::new().with("v4", ["127.0.0.1".parse().unwrap()]);
        let opts = ConnectOptions {
            family: Family::V6,
            ..ConnectOptions::default()
        };
        let err = Connector::new()
            .with_resolver(only_v4)
            .with_options(opts)
            .resolve("v4:9")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Resolve);
        assert!(err.message().contains("v4"), "{err}");
    }
}
