//! Addresses that may be a UNIX socket: [`Target`] is the text a user
//! types (`HOST:PORT` or `unix:PATH`), [`Address`] is what a stream is
//! connected to (an IP [`Endpoint`] or a socket path).
//!
//! Kept apart from [`HostPort`] and [`Endpoint`] on purpose: everything
//! that only speaks TCP (the server's listeners, the bench, access lists,
//! the PROXY protocol) keeps its IP-only types, and only the places that
//! can carry a UNIX socket (`connect`, `listen`, the relay's upstream) take
//! these.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Endpoint, HostPort};
use crate::error::{Error, ErrorKind, Result, code};

/// The prefix that names a UNIX-domain socket path.
pub const UNIX_PREFIX: &str = "unix:";

/// Longest UNIX socket path in bytes: `sun_path` is 108 bytes on Linux,
/// one of them the terminating NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// Endpoint text that may name a UNIX socket: [`HostPort`]'s forms, or
/// `unix:PATH` (a filesystem path, absolute or relative).
///
/// ```
/// use tcpkit::endpoint::Target;
/// assert!(matches!(Target::parse("unix:/run/app.sock")?, Target::Unix(_)));
/// assert!(matches!(Target::parse("localhost:80")?, Target::Inet(_)));
/// assert_eq!(Target::parse("unix:/run/app.sock")?.to_string(), "unix:/run/app.sock");
/// assert!(Target::parse("unix:").is_err());
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP endpoint as [`HostPort`] parses it.
    Inet(HostPort),
    /// A UNIX-domain stream socket at this path.
    Unix(PathBuf),
}

impl Target {
    /// Parses `unix:PATH` or anything [`HostPort::parse`] takes. A path
    /// must be non-empty, at most [`MAX_UNIX_PATH`] bytes and free of NUL
    /// bytes (Linux's abstract namespace is not supported); errors name the
    /// text.
    pub fn parse(text: &str) -> Result<Target> {
        match text.strip_prefix(UNIX_PREFIX) {
            Some(path) => unix_path(path, text).map(Target::Unix),
            None => HostPort::parse(text).map(Target::Inet),
        }
    }
}

/// Checks a socket path (`input` is the whole text, for errors).
fn unix_path(path: &str, input: &str) -> Result<PathBuf> {
    let invalid = |why: String| {
        Error::new(
            ErrorKind::InvalidAddress,
            code::INVALID_ADDRESS,
            format!("invalid UNIX socket address {input:?}: {why}"),
        )
    };
    if path.is_empty() {
        return Err(invalid("empty path (write unix:PATH)".into()));
    }
    if path.contains('\0') {
        return Err(invalid("NUL byte in the path".into()));
    }
    if path.len() > MAX_UNIX_PATH {
        return Err(invalid(format!(
            "path is {} bytes, the most a UNIX socket path can be is {MAX_UNIX_PATH}",
            path.len()
        )));
    }
    Ok(PathBuf::from(path))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Inet(hp) => hp.fmt(f),
            Target::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Target> {
        Target::parse(s)
    }
}

/// What a stream is connected to: an IP endpoint, or a UNIX socket path
/// (shown as `unix:PATH`).
///
/// ```
/// use tcpkit::endpoint::Address;
/// let tcp = Address::from(tcpkit::Endpoint::loopback_v4(80));
/// assert_eq!(tcp.to_string(), "127.0.0.1:80");
/// assert_eq!(tcp.endpoint(), Some(tcpkit::Endpoint::loopback_v4(80)));
/// let unix = Address::Unix("/run/app.sock".into());
/// assert_eq!(unix.to_string(), "unix:/run/app.sock");
/// assert_eq!(unix.endpoint(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IP address and port.
    Inet(Endpoint),
    /// A UNIX-domain socket path.
    Unix(PathBuf),
}

impl Address {
    /// The IP endpoint, if this is one.
    pub fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Address::Inet(ep) => Some(*ep),
            Address::Unix(_) => None,
        }
    }

    /// The socket path, if this is a UNIX socket.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Address::Inet(_) => None,
            Address::Unix(path) => Some(path),
        }
    }
}

impl From<Endpoint> for Address {
    fn from(ep: Endpoint) -> Address {
        Address::Inet(ep)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(ep) => ep.fmt(f),
            Address::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_are_checked_and_named() {
        assert_eq!(
            Target::parse("unix:rel.sock").unwrap(),
            Target::Unix("rel.sock".into())
        );
        for (text, why) in [
            ("unix:", "empty path"),
            ("unix:a\0b", "NUL"),
            (&format!("unix:/{}", "x".repeat(107)), "108 bytes"),
        ] {
            let err = Target::parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidAddress, "{text:?}");
            assert!(err.message().contains(why), "{text:?}: {err}");
            assert!(err.message().contains("unix:"), "{text:?}: {err}");
        }
        let longest = format!("unix:/{}", "x".repeat(106));
        assert!(Target::parse(&longest).is_ok());
    }

    #[test]
    fn everything_else_is_host_port() {
        assert_eq!(
            Target::parse("127.0.0.1:7").unwrap(),
            Target::Inet(HostPort::parse("127.0.0.1:7").unwrap())
        );
        // The prefix wins: `unix:80` is a socket file named 80, not port
        // 80 of a host called `unix`.
        assert!(matches!(Target::parse("unix:80").unwrap(), Target::Unix(_)));
        assert!(matches!(
            Target::parse("unixhost:80").unwrap(),
            Target::Inet(_)
        ));
        assert!(Target::parse("nope:port").is_err());
    }
}
