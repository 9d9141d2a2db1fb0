//! Endpoints: an IP address and a port, the seed's blocks 1 and 2.
//!
//! An [`Endpoint`] is what both sides of a TCP conversation need: "without one,
//! even a working socket would not know whom to talk to". Parsing is pure (no
//! socket, no DNS) and reports bad text with an [`Error`] that names it.
//! Names such as `localhost:3333` go through a [`Resolve`] implementation.
//! [`HostPort`] is the one parser for endpoint text as users type it (a port
//! alone, an address or a name, with a port): every command uses it.
//! [`Target`] adds `unix:PATH` for the commands that can use a UNIX socket,
//! and [`Address`] names what such a stream is connected to.

mod address;
mod host_port;
mod resolve;

pub use address::{Address, MAX_UNIX_PATH, Target, UNIX_PREFIX};
pub use host_port::{Host, HostPort, RESOLVE_TIMEOUT};
pub(crate) use resolve::resolve_async;
pub use resolve::{Resolve, StaticResolver, SystemResolver, split_host_port};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result, code};

/// The seed's default port (its `3333`).
pub const DEFAULT_PORT: u16 = 3333;

/// An IP address and a port: Asio's `ip::tcp::endpoint`.
///
/// ```
/// use tcpkit::Endpoint;
///
/// let ep = Endpoint::parse("[::1]:3333")?;
/// assert!(ep.is_ipv6());
/// assert_eq!(ep.port(), 3333);
/// assert_eq!(Endpoint::new("192.168.1.34", 3333)?.to_string(), "192.168.1.34:3333");
/// assert_eq!(Endpoint::any_v6(3333).to_string(), "[::]:3333");
///
/// let err = Endpoint::parse("192.168.1.3x:3333").unwrap_err();
/// assert_eq!(err.code(), tcpkit::error::code::INVALID_ADDRESS);
/// assert!(err.message().contains("192.168.1.3x"));
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint(SocketAddr);

impl Endpoint {
    /// An endpoint from address text (IPv4, or IPv6 with or without brackets
    /// and an optional `%zone`) and a port: the seed's `client_end_point`.
    pub fn new(address: &str, port: u16) -> Result<Endpoint> {
        let ip = parse_ip(address)?;
        Ok(Endpoint::from_ip(ip.0, port, ip.1))
    }

    /// Parses `"a.b.c.d:port"`, `"[v6]:port"` or `"[v6%zone]:port"`.
    ///
    /// Surrounding whitespace is ignored; anything else that is not an IP
    /// address and a port in `0..=65535` is an error naming the text. Host
    /// names are not accepted here: use [`Endpoint::resolve`].
    pub fn parse(text: &str) -> Result<Endpoint> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidAddress,
                code::INVALID_ADDRESS,
                format!("invalid endpoint {text:?}: empty text"),
            ));
        }
        let (host, port) = split_host_port(trimmed)?;
        let port = parse_port(port, text)?;
        let (ip, zone) = parse_ip(host)?;
        Ok(Endpoint::from_ip(ip, port, zone))
    }

    /// The IPv4 wildcard `0.0.0.0:port`: every IPv4 interface.
    pub fn any_v4(port: u16) -> Endpoint {
        Endpoint(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
    }

    /// The IPv6 wildcard `[::]:port`: the seed's `address_v6::any()`.
    pub fn any_v6(port: u16) -> Endpoint {
        Endpoint(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
    }

    /// IPv4 loopback `127.0.0.1:port`.
    pub fn loopback_v4(port: u16) -> Endpoint {
        Endpoint(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }

    /// IPv6 loopback `[::1]:port`.
    pub fn loopback_v6(port: u16) -> Endpoint {
        Endpoint(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port))
    }

    /// Resolves any text [`HostPort::parse`] takes to every address, blocking,
    /// with the system resolver (`getaddrinfo(3)`), in the resolver's order,
    /// within [`RESOLVE_TIMEOUT`].
    pub fn resolve(text: &str) -> Result<Vec<Endpoint>> {
        HostPort::parse(text)?.resolve(&SystemResolver, RESOLVE_TIMEOUT)
    }

    /// Async [`Endpoint::resolve`]: runs the system resolver off the runtime's
    /// worker threads (the caller puts a deadline around it).
    pub async fn resolve_async(text: &str) -> Result<Vec<Endpoint>> {
        HostPort::parse(text)?.resolve_async(&SystemResolver).await
    }

    /// The address.
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// This endpoint with another port.
    pub fn with_port(mut self, port: u16) -> Endpoint {
        self.0.set_port(port);
        self
    }

    /// Whether the address is IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.0.is_ipv4()
    }

    /// Whether the address is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.0.is_ipv6()
    }

    /// Whether the address is a wildcard (`0.0.0.0` or `::`).
    pub fn is_unspecified(&self) -> bool {
        self.0.ip().is_unspecified()
    }

    /// The standard library address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }

    fn from_ip(ip: IpAddr, port: u16, zone: u32) -> Endpoint {
        match ip {
            IpAddr::V6(v6) => Endpoint(SocketAddr::V6(SocketAddrV6::new(v6, port, 0, zone))),
            IpAddr::V4(_) => Endpoint(SocketAddr::new(ip, port)),
        }
    }
}

/// Parses a port, naming the whole input on failure.
pub(crate) fn parse_port(port: &str, input: &str) -> Result<u16> {
    if port.is_empty() {
        return Err(Error::new(
            ErrorKind::MissingPort,
            code::MISSING_PORT,
            format!("invalid endpoint {input:?}: missing port"),
        ));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(
            ErrorKind::InvalidPort,
            code::INVALID_PORT,
            format!("invalid port {port:?} in {input:?}: not a number"),
        ));
    }
    port.parse::<u16>().map_err(|_| {
        Error::new(
            ErrorKind::InvalidPort,
            code::INVALID_PORT,
            format!("invalid port {port:?} in {input:?}: must be 0 to 65535"),
        )
    })
}

/// Parses an IP address text, with optional brackets and `%zone` for IPv6.
/// Returns the address and the IPv6 scope id (0 for none).
fn parse_ip(text: &str) -> Result<(IpAddr, u32)> {
    let invalid = |why: &str| {
        Error::new(
            ErrorKind::InvalidAddress,
            code::INVALID_ADDRESS,
            format!("invalid IP address {text:?}: {why}"),
        )
    };
    let inner = text.trim();
    if inner.is_empty() {
        return Err(invalid("empty text"));
    }
    let inner = match inner.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| invalid("unclosed '['"))?,
        None => inner,
    };
    let (addr, zone) = match inner.split_once('%') {
        Some((addr, zone)) => (addr, Some(zone)),
        None => (inner, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| invalid("not an IPv4 or IPv6 address"))?;
    let scope = match (ip, zone) {
        (_, None) => 0,
        (IpAddr::V4(_), Some(_)) => return Err(invalid("a zone id needs an IPv6 address")),
        (IpAddr::V6(_), Some(zone)) => parse_zone(zone).ok_or_else(|| {
            invalid("zone id must be an interface index or the name of an interface")
        })?,
    };
    Ok((ip, scope))
}

/// A zone id is an interface index (`%2`) or an interface name (`%eth0`).
fn parse_zone(zone: &str) -> Option<u32> {
    if zone.is_empty() {
        return None;
    }
    if let Ok(index) = zone.parse::<u32>() {
        return Some(index);
    }
    let name = std::ffi::CString::new(zone).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Endpoint> {
        Endpoint::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                write!(f, "[{}%{}]:{}", v6.ip(), v6.scope_id(), v6.port())
            }
            addr => addr.fmt(f),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint(addr)
    }
}

impl From<Endpoint> for SocketAddr {
    fn from(ep: Endpoint) -> SocketAddr {
        ep.0
    }
}

impl From<(IpAddr, u16)> for Endpoint {
    fn from((ip, port): (IpAddr, u16)) -> Endpoint {
        Endpoint(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> ErrorKind {
        Endpoint::parse(text).unwrap_err().kind()
    }

    #[test]
    fn parses_v4_and_v6() {
        let ep = Endpoint::parse("192.168.1.34:3333").unwrap();
        assert_eq!(ep.ip(), "192.168.1.34".parse::<IpAddr>().unwrap());
        assert_eq!(ep.port(), 3333);
        let ep = Endpoint::parse("[::1]:3333").unwrap();
        assert_eq!(ep, Endpoint::loopback_v6(3333));
        assert_eq!(ep.to_string(), "[::1]:3333");
    }

    #[test]
    fn parses_bracketed_v6_with_zone() {
        let ep = Endpoint::parse("[fe80::1%2]:3333").unwrap();
        match ep.socket_addr() {
            SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), 2),
            other => panic!("expected v6, got {other}"),
        }
        assert_eq!(ep.to_string(), "[fe80::1%2]:3333");
        assert_eq!(Endpoint::parse(&ep.to_string()).unwrap(), ep);
        let lo = Endpoint::parse("[fe80::1%lo]:1").unwrap();
        assert_ne!(lo.to_string(), "[fe80::1]:1");
        assert_eq!(kind("[fe80::1%no-such-if0]:1"), ErrorKind::InvalidAddress);
        assert_eq!(kind("[fe80::1%]:1"), ErrorKind::InvalidAddress);
        assert_eq!(kind("1.2.3.4%2:1"), ErrorKind::InvalidAddress);
    }

    #[test]
    fn port_bounds() {
        assert_eq!(Endpoint::parse("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(Endpoint::parse("127.0.0.1:65535").unwrap().port(), 65535);
        let err = Endpoint::parse("127.0.0.1:65536").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPort);
        assert_eq!(err.code(), code::INVALID_PORT);
        assert!(err.message().contains("65536"), "{err}");
        assert_eq!(kind("127.0.0.1:-1"), ErrorKind::InvalidPort);
        assert_eq!(kind("127.0.0.1:+80"), ErrorKind::InvalidPort);
    }

    #[test]
    fn rejects_bad_text_naming_it() {
        for (text, named) in [
            ("", "\"\""),
            ("   ", "\"   \""),
            ("garbage", "\"garbage\""),
            ("192.168.1.3x:3333", "\"192.168.1.3x\""),
            ("[::1:3333", "\"[::1:3333\""),
            ("::1:3333", "\"::1:3333\""),
            ("1.2.3.4:port", "\"port\""),
        ] {
            let err = Endpoint::parse(text).unwrap_err();
            assert!(err.message().contains(named), "{text:?}: {err}");
            assert!(err.code() >= 1000, "{text:?}: {err}");
        }
        let err = Endpoint::parse("192.168.1.3x:3333").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidAddress);
        assert!(err.message().contains("\"192.168.1.3x\""), "{err}");
        assert_eq!(kind("127.0.0.1"), ErrorKind::MissingPort);
        assert_eq!(kind("127.0.0.1:"), ErrorKind::MissingPort);
        assert_eq!(kind("[::1]"), ErrorKind::MissingPort);
    }

    #[test]
    fn whitespace_outside_is_trimmed_inside_is_an_error() {
        assert_eq!(
            Endpoint::parse("  127.0.0.1:80\n").unwrap(),
            Endpoint::loopback_v4(80)
        );
        assert_eq!(kind("127.0.0.1: 80"), ErrorKind::InvalidPort);
        assert_eq!(kind("127. 0.0.1:80"), ErrorKind::InvalidAddress);
    }

    #[test]
    fn new_takes_plain_or_bracketed_v6() {
        assert_eq!(Endpoint::new("::1", 7).unwrap(), Endpoint::loopback_v6(7));
        assert_eq!(Endpoint::new("[::1]", 7).unwrap(), Endpoint::loopback_v6(7));
        let err = Endpoint::new("not-an-ip", 7).unwrap_err();
        assert!(err.message().contains("not-an-ip"));
    }

    #[test]
    fn wildcards_and_conversions() {
        assert_eq!(Endpoint::any_v4(3333).to_string(), "0.0.0.0:3333");
        assert_eq!(Endpoint::any_v6(DEFAULT_PORT).to_string(), "[::]:3333");
        assert!(Endpoint::any_v6(1).is_unspecified());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ep = Endpoint::from(addr);
        assert_eq!(SocketAddr::from(ep), addr);
        assert_eq!("127.0.0.1:9".parse::<Endpoint>().unwrap(), ep);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_errors_name_the_input(text in ".{0,64}") {
            if let Err(err) = Endpoint::parse(&text) {
                proptest::prop_assert!(err.code() >= 1000);
                proptest::prop_assert!(!err.message().is_empty());
            }
        }

        #[test]
        fn display_round_trips(addr in proptest::prelude::any::<SocketAddr>()) {
            let ep = Endpoint::from(addr);
            let back = Endpoint::parse(&ep.to_string()).unwrap();
            proptest::prop_assert_eq!(back.ip(), ep.ip());
            proptest::prop_assert_eq!(back.port(), ep.port());
        }
    }
}
