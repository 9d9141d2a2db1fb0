//! Name resolution behind a trait, so tests never ask a DNS server.
//!
//! [`SystemResolver`] calls `getaddrinfo(3)` through the standard library;
//! [`StaticResolver`] answers from a table (and can fail on purpose), which is
//! how tests exercise resolver failures and multi-address names.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;

use super::{Endpoint, parse_ip};
use crate::error::{Error, ErrorKind, Result, code};

/// Turns a host name and a port into every endpoint it names, in order.
pub trait Resolve: Send + Sync + 'static {
    /// Resolves `host` (a name or an IP literal) with `port`. An empty answer
    /// is an error of kind [`ErrorKind::Resolve`] naming `host`.
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<Endpoint>>;
}

/// The operating system's resolver (`getaddrinfo(3)`): `/etc/hosts`, then DNS.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<Endpoint>> {
        if let Ok((ip, zone)) = parse_ip(host) {
            return Ok(vec![Endpoint::from_ip(ip, port, zone)]);
        }
        let addrs = (host, port).to_socket_addrs().map_err(|e| {
            Error::new(
                ErrorKind::Resolve,
                code::RESOLVE,
                format!("resolve {host:?}: {e}"),
            )
        })?;
        non_empty(host, addrs.map(Endpoint::from).collect())
    }
}

/// A fixed table of names, for tests and for pinning names in configs.
///
/// ```
/// use tcpkit::endpoint::{Resolve, StaticResolver};
///
/// let r = StaticResolver::new().with("db", ["::1".parse()?, "127.0.0.1".parse()?]);
/// let eps = r.resolve("db", 5432)?;
/// assert_eq!(eps.len(), 2);
/// assert!(eps[0].is_ipv6());
/// assert!(r.resolve("nope", 1).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table: every name fails to resolve.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` with its addresses, in the order they will be returned.
    pub fn with(mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.names
            .insert(name.to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<Endpoint>> {
        if let Ok((ip, zone)) = parse_ip(host) {
            return Ok(vec![Endpoint::from_ip(ip, port, zone)]);
        }
        match self.names.get(&host.to_ascii_lowercase()) {
            Some(ips) => non_empty(host, ips.iter().map(|&ip| (ip, port).into()).collect()),
            None => Err(Error::new(
                ErrorKind::Resolve,
                code::RESOLVE,
                format!("resolve {host:?}: name not known"),
            )),
        }
    }
}

impl<R: Resolve + ?Sized> Resolve for Arc<R> {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<Endpoint>> {
        (**self).resolve(host, port)
    }
}

fn non_empty(host: &str, eps: Vec<Endpoint>) -> Result<Vec<Endpoint>> {
    if eps.is_empty() {
        return Err(Error::new(
            ErrorKind::Resolve,
            code::RESOLVE,
            format!("resolve {host:?}: no addresses"),
        ));
    }
    Ok(eps)
}

/// Runs a (blocking) resolver on tokio's blocking pool.
pub(crate) async fn resolve_async<R: Resolve + Clone>(
    resolver: &R,
    host: &str,
    port: u16,
) -> Result<Vec<Endpoint>> {
    let resolver = resolver.clone();
    let owned = host.to_owned();
    tokio::task::spawn_blocking(move || resolver.resolve(&owned, port))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Resolve,
                code::RESOLVE,
                format!("resolve {host:?}: resolver task failed: {e}"),
            )
        })?
}

/// Splits `host:port`, `[v6]:port` or `[v6%zone]:port` into host and port text.
///
/// The host keeps no brackets. A bare IPv6 literal without brackets
/// (`::1:80`) is rejected as ambiguous. An empty port is returned as `""`.
pub fn split_host_port(text: &str) -> Result<(&str, &str)> {
    let missing = || {
        Error::new(
            ErrorKind::MissingPort,
            code::MISSING_PORT,
            format!("invalid endpoint {text:?}: missing port (expected HOST:PORT)"),
        )
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidAddress,
                code::INVALID_ADDRESS,
                format!("invalid endpoint {text:?}: unclosed '['"),
            )
        })?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, port)),
            None if after.is_empty() => Err(missing()),
            None => Err(Error::new(
                ErrorKind::InvalidAddress,
                code::INVALID_ADDRESS,
                format!("invalid endpoint {text:?}: expected ':' after ']'"),
            )),
        };
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(missing)?;
    if host.contains(':') {
        return Err(Error::new(
            ErrorKind::InvalidAddress,
            code::INVALID_ADDRESS,
            format!("invalid endpoint {text:?}: write IPv6 addresses in brackets, as [::1]:3333"),
        ));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(
            split_host_port("localhost:80").unwrap(),
            ("localhost", "80")
        );
        assert_eq!(split_host_port("[::1]:80").unwrap(), ("::1", "80"));
        assert_eq!(split_host_port("h:").unwrap(), ("h", ""));
        assert_eq!(
            split_host_port("::1:80").unwrap_err().kind(),
            ErrorKind::InvalidAddress
        );
        assert_eq!(
            split_host_port("[::1]x").unwrap_err().kind(),
            ErrorKind::InvalidAddress
        );
        assert_eq!(
            split_host_port("h").unwrap_err().kind(),
            ErrorKind::MissingPort
        );
    }

    #[test]
    fn system_resolver_resolves_localhost_and_literals() {
        let eps = SystemResolver.resolve("localhost", 3333).unwrap();
        assert!(!eps.is_empty());
        assert!(eps.iter().all(|e| e.ip().is_loopback() && e.port() == 3333));
        let eps = SystemResolver.resolve("::1", 1).unwrap();
        assert_eq!(eps, vec![Endpoint::loopback_v6(1)]);
    }

    #[test]
    fn static_resolver_failures_name_the_host() {
        let err = StaticResolver::new().resolve("db.internal", 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Resolve);
        assert_eq!(err.code(), code::RESOLVE);
        assert!(err.message().contains("db.internal"));
        let empty = StaticResolver::new().with("x", []);
        assert_eq!(
            empty.resolve("x", 1).unwrap_err().kind(),
            ErrorKind::Resolve
        );
    }

    #[tokio::test]
    async fn async_resolution_keeps_order() {
        let r = StaticResolver::new().with(
            "dual",
            ["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        );
        let eps = resolve_async(&r, "dual", 9).await.unwrap();
        assert_eq!(
            eps,
            vec![Endpoint::loopback_v6(9), Endpoint::loopback_v4(9)]
        );
        let eps = Endpoint::resolve_async("localhost:9").await.unwrap();
        assert!(eps.iter().all(|e| e.ip().is_loopback()));
    }
}
