//! [`HostPort`]: endpoint text as every command takes it, before resolution.
//!
//! One parser for every place a user names an endpoint (`serve --listen`,
//! `listen`, `connect`, `bench --target`, `--source`), so the same text means
//! the same thing everywhere:
//!
//! | text             | meaning                                             |
//! |------------------|-----------------------------------------------------|
//! | `3333`           | a port alone: every interface (listen), this host (dial) |
//! | `127.0.0.1:3333` | an IPv4 address                                     |
//! | `[::1]:3333`     | an IPv6 address (`[fe80::1%eth0]:3333` with a zone) |
//! | `localhost:3333` | a name, resolved by a [`Resolve`]r                  |
//!
//! Text that looks like an address but is not one (`192.168.1.3x:80`), a
//! missing host (`:3333`) or a name with characters no host name has are
//! errors here, before any lookup: a typo must not become a DNS query.

use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use super::{Endpoint, Resolve, parse_ip, parse_port, split_host_port};
use crate::error::{Error, ErrorKind, Result, code};

/// How long a blocking [`HostPort::resolve`] waits for the resolver by
/// default: `getaddrinfo(3)` has no deadline of its own.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The host part of a [`HostPort`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// No host, a port alone: every interface to listen on, this host
    /// (loopback) to connect to.
    Unspecified,
    /// An IP address literal, with its IPv6 scope id (0 for none).
    Ip(IpAddr, u32),
    /// A name for the resolver.
    Name(String),
}

/// Endpoint text parsed but not resolved: a [`Host`] and a port.
///
/// ```
/// use tcpkit::endpoint::{Host, HostPort};
///
/// assert_eq!(HostPort::parse("5600")?.host(), &Host::Unspecified);
/// assert_eq!(HostPort::parse("localhost:4800")?.host(), &Host::Name("localhost".into()));
/// let v6 = HostPort::parse("[::1]:3333")?;
/// assert_eq!(v6.endpoint(), Some(tcpkit::Endpoint::loopback_v6(3333)));
/// // nc's habit: host and port as two words.
/// assert_eq!(HostPort::from_parts("::1", "3333")?, v6);
///
/// let err = HostPort::parse(":3333").unwrap_err();
/// assert!(err.message().contains("missing host"));
/// assert_eq!(HostPort::parse("192.168.1.3x:80").unwrap_err().kind(),
///            tcpkit::ErrorKind::InvalidAddress);
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    host: Host,
    port: u16,
}

impl HostPort {
    /// Parses `PORT`, `HOST:PORT`, `a.b.c.d:PORT` or `[v6]:PORT` (surrounding
    /// whitespace ignored). Pure: no socket, no lookup.
    pub fn parse(text: &str) -> Result<HostPort> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid(text, "empty text (expected PORT or HOST:PORT)"));
        }
        if trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(HostPort {
                host: Host::Unspecified,
                port: parse_port(trimmed, text)?,
            });
        }
        let (host, port) = split_host_port(trimmed)?;
        if host.is_empty() {
            return Err(invalid(
                text,
                "missing host before ':' (write HOST:PORT, or the port alone)",
            ));
        }
        let port = parse_port(port, text)?;
        Ok(HostPort {
            host: parse_host(host, text)?,
            port,
        })
    }

    /// Host and port given as two words (`connect HOST PORT`, as nc takes
    /// them). The host may be an IPv6 address with or without brackets.
    pub fn from_parts(host: &str, port: &str) -> Result<HostPort> {
        let whole = format!("{host} {port}");
        let host = host.trim();
        if host.is_empty() {
            return Err(invalid(&whole, "missing host"));
        }
        let port = parse_port(port.trim(), &whole)?;
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(HostPort {
            host: parse_host(bare, &whole)?,
            port,
        })
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint, when the text was an IP address (no lookup needed).
    pub fn endpoint(&self) -> Option<Endpoint> {
        match self.host {
            Host::Ip(ip, zone) => Some(Endpoint::from_ip(ip, self.port, zone)),
            _ => None,
        }
    }

    /// Every endpoint this text names to connect to, in the resolver's order:
    /// an address as itself, a port alone as this host's loopback addresses
    /// (IPv4 first), a name as `resolver` answers it. Blocking; the resolver
    /// gets `deadline` to answer (it runs on its own thread, which is left
    /// behind if it never returns), after which the error is of kind
    /// [`ErrorKind::Resolve`] naming the host.
    pub fn resolve<R: Resolve + Clone>(
        &self,
        resolver: &R,
        deadline: Duration,
    ) -> Result<Vec<Endpoint>> {
        let name = match &self.host {
            Host::Name(name) => name.clone(),
            _ => return Ok(self.literal_endpoints()),
        };
        let (tx, rx) = mpsc::channel();
        let (resolver, port, host) = (resolver.clone(), self.port, name.clone());
        std::thread::Builder::new()
            .name("tcpkit-resolve".into())
            .spawn(move || {
                // The receiver may have given up: nothing to do then.
                let _ = tx.send(resolver.resolve(&host, port));
            })
            .map_err(|e| Error::io(e, format_args!("start a thread to resolve {name:?}")))?;
        match rx.recv_timeout(deadline) {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Resolve,
                code::RESOLVE,
                format!(
                    "resolve {name:?}: no answer within {}",
                    humantime::format_duration(deadline)
                ),
            )),
        }
    }

    /// [`HostPort::resolve`] for async code: the resolver runs on tokio's
    /// blocking pool; the caller puts the deadline around it.
    pub async fn resolve_async<R: Resolve + Clone>(&self, resolver: &R) -> Result<Vec<Endpoint>> {
        match &self.host {
            Host::Name(name) => super::resolve_async(resolver, name, self.port).await,
            _ => Ok(self.literal_endpoints()),
        }
    }

    fn literal_endpoints(&self) -> Vec<Endpoint> {
        match self.host {
            Host::Ip(ip, zone) => vec![Endpoint::from_ip(ip, self.port, zone)],
            _ => vec![
                Endpoint::loopback_v4(self.port),
                Endpoint::loopback_v6(self.port),
            ],
        }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Unspecified => write!(f, "{}", self.port),
            Host::Ip(..) => match self.endpoint() {
                Some(ep) => ep.fmt(f),
                None => Ok(()),
            },
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl std::str::FromStr for HostPort {
    type Err = Error;

    fn from_str(s: &str) -> Result<HostPort> {
        HostPort::parse(s)
    }
}

fn invalid(text: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidAddress,
        code::INVALID_ADDRESS,
        format!("invalid endpoint {text:?}: {why}"),
    )
}

/// An IP literal, or a name that could be one (letters, digits, `-`, `_`,
/// `.`): anything else is an error naming the whole input.
fn parse_host(host: &str, input: &str) -> Result<Host> {
    if looks_like_ip(host) {
        let (ip, zone) = parse_ip(host)?;
        return Ok(Host::Ip(ip, zone));
    }
    let name_like = host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_like {
        return Err(invalid(
            input,
            &format!("{host:?} is neither an IP address nor a host name"),
        ));
    }
    Ok(Host::Name(host.to_owned()))
}

/// Whether host text is meant as an IP literal: it has a `:` (IPv6 needs
/// one), or starts with a digit and has four dot-separated parts or a
/// numeric last part (no DNS name ends in an all-digit label).
pub(crate) fn looks_like_ip(host: &str) -> bool {
    if host.contains(':') || host.starts_with('[') {
        return true;
    }
    if !host.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() == 4
        || labels
            .last()
            .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::StaticResolver;

    fn kind(text: &str) -> ErrorKind {
        HostPort::parse(text).unwrap_err().kind()
    }

    #[test]
    fn every_form_parses() {
        let hp = HostPort::parse("5600").unwrap();
        assert_eq!((hp.host(), hp.port()), (&Host::Unspecified, 5600));
        let hp = HostPort::parse(" 127.0.0.1:80 ").unwrap();
        assert_eq!(hp.endpoint(), Some(Endpoint::loopback_v4(80)));
        let hp = HostPort::parse("[::1]:0").unwrap();
        assert_eq!(hp.endpoint(), Some(Endpoint::loopback_v6(0)));
        let hp = HostPort::parse("LocalHost:4800").unwrap();
        assert_eq!(hp.host(), &Host::Name("LocalHost".into()));
        assert_eq!(hp.endpoint(), None);
        assert_eq!(hp.to_string(), "LocalHost:4800");
    }

    #[test]
    fn bad_text_fails_before_any_lookup() {
        assert_eq!(kind(""), ErrorKind::InvalidAddress);
        assert_eq!(kind(":3333"), ErrorKind::InvalidAddress);
        assert!(
            HostPort::parse(":3333")
                .unwrap_err()
                .message()
                .contains("missing host")
        );
        assert_eq!(kind("localhost"), ErrorKind::MissingPort);
        assert_eq!(kind("localhost:"), ErrorKind::MissingPort);
        assert_eq!(kind("65536"), ErrorKind::InvalidPort);
        assert_eq!(kind("h:99999"), ErrorKind::InvalidPort);
        assert_eq!(kind("192.168.1.3x:1"), ErrorKind::InvalidAddress);
        assert_eq!(kind("::1:80"), ErrorKind::InvalidAddress);
        assert_eq!(kind("bad host:80"), ErrorKind::InvalidAddress);
        assert_eq!(kind("a/b:80"), ErrorKind::InvalidAddress);
    }

    #[test]
    fn ip_lookalikes_are_not_names() {
        for host in ["192.168.1.3x", "1.2.3.4", "::1", "10.0.0.300", "1.2"] {
            assert!(looks_like_ip(host), "{host}");
        }
        for host in ["localhost", "example.com", "3com.com", "db"] {
            assert!(!looks_like_ip(host), "{host}");
        }
    }

    #[test]
    fn two_words_as_nc_takes_them() {
        let hp = HostPort::from_parts("127.0.0.1", "4600").unwrap();
        assert_eq!(hp.endpoint(), Some(Endpoint::loopback_v4(4600)));
        assert_eq!(
            HostPort::from_parts("[::1]", "1").unwrap().endpoint(),
            Some(Endpoint::loopback_v6(1))
        );
        let err = HostPort::from_parts("h", "http").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPort);
        assert!(err.message().contains("h http"), "{err}");
        assert_eq!(
            HostPort::from_parts("", "1").unwrap_err().kind(),
            ErrorKind::InvalidAddress
        );
    }

    #[test]
    fn resolution_goes_through_the_given_resolver() {
        let r = StaticResolver::new().with("db", ["::1".parse().unwrap()]);
        let eps = HostPort::parse("db:5")
            .unwrap()
            .resolve(&r, RESOLVE_TIMEOUT)
            .unwrap();
        assert_eq!(eps, vec![Endpoint::loopback_v6(5)]);
        let err = HostPort::parse("badhost:80")
            .unwrap()
            .resolve(&r, RESOLVE_TIMEOUT)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Resolve);
        assert!(err.message().contains("badhost"), "{err}");
        let eps = HostPort::parse("7")
            .unwrap()
            .resolve(&r, RESOLVE_TIMEOUT)
            .unwrap();
        assert!(eps.iter().all(|e| e.ip().is_loopback() && e.port() == 7));
    }

    /// A resolver that never answers in time.
    #[derive(Clone)]
    struct Stuck(Duration);

    impl Resolve for Stuck {
        fn resolve(&self, host: &str, _port: u16) -> Result<Vec<Endpoint>> {
            std::thread::sleep(self.0);
            Err(invalid(host, "stuck"))
        }
    }

    #[test]
    fn a_stuck_resolver_meets_the_deadline() {
        let start = std::time::Instant::now();
        let err = HostPort::parse("slow:1")
            .unwrap()
            .resolve(&Stuck(Duration::from_secs(30)), Duration::from_millis(50))
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waited past the deadline"
        );
        assert_eq!(err.kind(), ErrorKind::Resolve);
        assert!(err.message().contains("\"slow\""), "{err}");
        assert!(err.message().contains("no answer within"), "{err}");
    }
}
