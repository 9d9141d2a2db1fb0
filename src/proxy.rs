//! PROXY protocol headers (HAProxy's v1 text and v2 binary), I/O-free:
//! [`frame`] says how long the header at the front of some bytes is (or
//! that more are needed, or that it is not one), [`parse`] reads the
//! addresses out of a framed header with the `ppp` crate, and [`encode`]
//! builds one for a client, a bench or a relay to send.
//!
//! Framing is separate from parsing so that a server can read exactly the
//! header's bytes off a socket and leave the client's first bytes after it
//! where they are (see `server::proxy`). Both sizes are capped:
//! [`V1_MAX_BYTES`] is the specification's own maximum, [`V2_MAX_BYTES`]
//! bounds the TLVs a balancer may append (HAProxy's default buffer for them).
//!
//! ```
//! use std::net::SocketAddr;
//! use tcpkit::proxy::{self, Frame, Version};
//! let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
//! let server: SocketAddr = "198.51.100.1:443".parse().unwrap();
//! let mut bytes = proxy::encode(Version::V2, client, server);
//! bytes.extend_from_slice(b"hello");
//! let Frame::Complete(len) = proxy::frame(&bytes) else { panic!() };
//! let header = proxy::parse(&bytes[..len])?;
//! assert_eq!(header.source, Some(client));
//! assert_eq!(&bytes[len..], b"hello");
//! # Ok::<(), tcpkit::Error>(())
//! ```

use std::fmt;
use std::net::SocketAddr;

use crate::error::{Error, ErrorKind, Result, code};

/// The longest v1 header, `\r\n` included (the specification's 107 bytes:
/// `PROXY TCP6` with two full IPv6 addresses and ports).
pub const V1_MAX_BYTES: usize = 107;

/// The longest v2 header accepted: the 16 fixed bytes, IPv6 addresses (36)
/// and up to 484 bytes of TLVs. 536 is HAProxy's default for the TLVs it
/// reads; the format allows 64 KiB, which no balancer sends in practice.
pub const V2_MAX_BYTES: usize = 536;

/// The most bytes [`frame`] ever needs to see.
pub const MAX_HEADER_BYTES: usize = V2_MAX_BYTES;

/// v2's 12-byte signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2's fixed part: signature, version/command, family/protocol, length.
const V2_FIXED: usize = 16;
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// Which PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text format (`PROXY TCP4 a b p q\r\n`).
    V1,
    /// The binary format (what HAProxy's `send-proxy-v2` sends).
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Why bytes are not an acceptable header (counted and logged by reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// They do not start like a PROXY header at all (a client that speaks
    /// first without one).
    Missing,
    /// Longer than [`V1_MAX_BYTES`] / [`V2_MAX_BYTES`].
    Oversized,
    /// A PROXY header, but not a well-formed one.
    Malformed,
}

impl Invalid {
    /// A word for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Missing => "missing",
            Invalid::Oversized => "oversized",
            Invalid::Malformed => "malformed",
        }
    }

    /// The error code that stands for it ([`reason_of`] reads it back).
    pub fn code(self) -> i32 {
        match self {
            Invalid::Missing => code::PROXY_HEADER_MISSING,
            Invalid::Oversized => code::PROXY_HEADER_TOO_LARGE,
            Invalid::Malformed => code::PROXY_HEADER_MALFORMED,
        }
    }
}

/// What [`frame`] found at the front of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A header of this many bytes (what follows is the client's).
    Complete(usize),
    /// Every byte so far may still begin a header: more are needed. The
    /// bytes seen all belong to the header, so a reader may consume them.
    Incomplete,
    /// Not a header, or not one we accept.
    Invalid(Invalid),
}

/// How long the header at the front of `bytes` is, looking at no byte
/// past it and at most [`MAX_HEADER_BYTES`]. Checks only the framing (the
/// v1 prefix and line end, the v2 signature and length); [`parse`] checks
/// the rest.
///
/// ```
/// use tcpkit::proxy::{frame, Frame, Invalid};
/// assert_eq!(frame(b"PROXY UNKNOWN\r\nhi"), Frame::Complete(15));
/// assert_eq!(frame(b"PROXY TCP4 1.2."), Frame::Incomplete);
/// assert_eq!(frame(b"GET / HTTP/1.1\r\n"), Frame::Invalid(Invalid::Missing));
/// ```
pub fn frame(bytes: &[u8]) -> Frame {
    let Some(&first) = bytes.first() else {
        return Frame::Incomplete;
    };
    if first == V2_SIGNATURE[0] {
        frame_v2(bytes)
    } else if first == V1_PREFIX[0] {
        frame_v1(bytes)
    } else {
        Frame::Invalid(Invalid::Missing)
    }
}

fn frame_v1(bytes: &[u8]) -> Frame {
    let prefix = bytes.len().min(V1_PREFIX.len());
    if bytes[..prefix] != V1_PREFIX[..prefix] {
        return Frame::Invalid(Invalid::Missing);
    }
    let window = &bytes[..bytes.len().min(V1_MAX_BYTES)];
    match memchr::memchr(b'\n', window) {
        // The specification ends the line with CRLF; a bare LF is not one.
        Some(i) if i > 0 && window[i - 1] == b'\r' => Frame::Complete(i + 1),
        Some(_) => Frame::Invalid(Invalid::Malformed),
        None if window.len() >= V1_MAX_BYTES => Frame::Invalid(Invalid::Oversized),
        None => Frame::Incomplete,
    }
}

fn frame_v2(bytes: &[u8]) -> Frame {
    let prefix = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..prefix] != V2_SIGNATURE[..prefix] {
        return Frame::Invalid(Invalid::Missing);
    }
    if bytes.len() < V2_FIXED {
        return Frame::Incomplete;
    }
    let total = V2_FIXED + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if total > V2_MAX_BYTES {
        Frame::Invalid(Invalid::Oversized)
    } else if bytes.len() >= total {
        Frame::Complete(total)
    } else {
        Frame::Incomplete
    }
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// The format it came in.
    pub version: Version,
    /// The original client, or `None` when the header carries none (v2's
    /// `LOCAL` command, a balancer's own health check; v1's `UNKNOWN`; a
    /// UNIX or unspecified family): the connection is then the sender's
    /// own and its TCP peer stands.
    pub source: Option<SocketAddr>,
    /// The address the original client reached, when carried.
    pub destination: Option<SocketAddr>,
    /// The header's length in bytes.
    pub len: usize,
}

fn invalid(reason: Invalid, detail: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::ProxyHeader,
        reason.code(),
        format!("PROXY header {}: {detail}", reason.as_str()),
    )
}

/// The reason a [`parse`] error stands for (read from its code), if it is
/// a header error ([`ErrorKind::ProxyHeader`]).
pub fn reason_of(err: &Error) -> Option<Invalid> {
    if err.kind() != ErrorKind::ProxyHeader {
        return None;
    }
    [Invalid::Missing, Invalid::Oversized, Invalid::Malformed]
        .into_iter()
        .find(|r| r.code() == err.code())
}

/// Parses one whole header (exactly the bytes [`frame`] counted; trailing
/// bytes are an error). The error is [`ErrorKind::ProxyHeader`], saying
/// which [`Invalid`] reason and what was wrong.
pub fn parse(bytes: &[u8]) -> Result<Header> {
    match frame(bytes) {
        Frame::Complete(len) if len == bytes.len() => {}
        Frame::Complete(len) => {
            return Err(invalid(
                Invalid::Malformed,
                format_args!("{} bytes after a {len}-byte header", bytes.len() - len),
            ));
        }
        Frame::Incomplete => {
            return Err(invalid(
                Invalid::Malformed,
                format_args!("truncated after {} bytes", bytes.len()),
            ));
        }
        Frame::Invalid(reason) => return Err(invalid(reason, "not a PROXY v1 or v2 header")),
    }
    if bytes[0] == V1_PREFIX[0] {
        parse_v1(bytes)
    } else {
        parse_v2(bytes)
    }
}

fn parse_v1(bytes: &[u8]) -> Result<Header> {
    use ppp::v1::Addresses;
    let header = ppp::v1::Header::try_from(bytes)
        .map_err(|e| invalid(Invalid::Malformed, format_args!("v1: {e}")))?;
    let (source, destination) = match header.addresses {
        Addresses::Tcp4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        Addresses::Tcp6(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        Addresses::Unknown => {
            return Ok(Header {
                version: Version::V1,
                source: None,
                destination: None,
                len: bytes.len(),
            });
        }
    };
    Ok(Header {
        version: Version::V1,
        source: Some(source),
        destination: Some(destination),
        len: bytes.len(),
    })
}

fn parse_v2(bytes: &[u8]) -> Result<Header> {
    use ppp::v2::{Addresses, Command};
    let header = ppp::v2::Header::try_from(bytes)
        .map_err(|e| invalid(Invalid::Malformed, format_args!("v2: {e}")))?;
    let pair = match (header.command, header.addresses) {
        (Command::Local, _) => None,
        (Command::Proxy, Addresses::IPv4(a)) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        (Command::Proxy, Addresses::IPv6(a)) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        // UNIX sockets and the unspecified family carry no IP client:
        // the specification says to use the connection's own addresses.
        (Command::Proxy, Addresses::Unix(_) | Addresses::Unspecified) => None,
    };
    Ok(Header {
        version: Version::V2,
        source: pair.map(|p| p.0),
        destination: pair.map(|p| p.1),
        len: bytes.len(),
    })
}

/// A header announcing a connection from `source` to `destination`
/// (`PROXY` command, TCP). Both go as IPv4 when both are IPv4 (an
/// IPv4-mapped IPv6 address counts as IPv4), else both as IPv6 (an IPv4
/// one mapped), so the header always carries the two addresses.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let v4 = |a: SocketAddr| match a.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => Some(SocketAddr::from((ip, a.port()))),
        std::net::IpAddr::V6(_) => None,
    };
    let v6 = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => SocketAddr::from((ip.to_ipv6_mapped(), a.port())),
        std::net::IpAddr::V6(_) => a,
    };
    let pair = match (v4(source), v4(destination)) {
        (Some(s), Some(d)) => (s, d),
        _ => (v6(source), v6(destination)),
    };
    match version {
        Version::V1 => ppp::v1::Addresses::from(pair).to_string().into_bytes(),
        Version::V2 => v2(ppp::v2::Command::Proxy, ppp::v2::Addresses::from(pair)),
    }
}

/// A v2 `LOCAL` header: a connection the sender makes on its own behalf
/// (a health check), whose TCP peer is the one to believe.
pub fn encode_local() -> Vec<u8> {
    v2(ppp::v2::Command::Local, ppp::v2::Addresses::Unspecified)
}

fn v2(command: ppp::v2::Command, addresses: ppp::v2::Addresses) -> Vec<u8> {
    let version_command = ppp::v2::Version::Two | command;
    // Writing into a `Vec` cannot fail; should the builder ever refuse,
    // the fixed part alone is still a valid header with no address.
    ppp::v2::Builder::with_addresses(version_command, ppp::v2::Protocol::Stream, addresses)
        .build()
        .unwrap_or_else(|_| {
            let mut fixed = V2_SIGNATURE.to_vec();
            fixed.extend_from_slice(&[version_command, 0, 0, 0]);
            fixed
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_versions_round_trip_v4_and_v6() {
        for (src, dst) in [
            ("192.0.2.7:40000", "198.51.100.1:443"),
            ("[2001:db8::7]:40000", "[2001:db8::1]:443"),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            ),
        ] {
            for version in [Version::V1, Version::V2] {
                let bytes = encode(version, addr(src), addr(dst));
                assert_eq!(frame(&bytes), Frame::Complete(bytes.len()), "{version}");
                let h = parse(&bytes).unwrap();
                assert_eq!(h.version, version);
                assert_eq!(h.source, Some(addr(src)));
                assert_eq!(h.destination, Some(addr(dst)));
            }
        }
        // The longest TCP6 header fits; the cap's 107 is for UNKNOWN
        // followed by the same addresses, which the specification allows.
        let longest = encode(
            Version::V1,
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        );
        assert_eq!(longest.len(), 104);
        let mut unknown = b"PROXY UNKNOWN".to_vec();
        unknown.extend_from_slice(&longest[b"PROXY TCP6".len()..]);
        assert_eq!(unknown.len(), V1_MAX_BYTES);
        assert_eq!(frame(&unknown), Frame::Complete(V1_MAX_BYTES));
    }

    #[test]
    fn mapped_addresses_go_as_ipv4_and_mixed_families_as_ipv6() {
        let h = parse(&encode(
            Version::V2,
            addr("[::ffff:10.1.2.3]:5"),
            addr("127.0.0.1:6"),
        ))
        .unwrap();
        assert_eq!(h.source, Some(addr("10.1.2.3:5")));
        for version in [Version::V1, Version::V2] {
            let h = parse(&encode(version, addr("[::1]:5"), addr("127.0.0.1:6"))).unwrap();
            assert_eq!(h.source, Some(addr("[::1]:5")), "{version}");
            assert_eq!(
                h.destination,
                Some(addr("[::ffff:127.0.0.1]:6")),
                "{version}"
            );
            // The fuzzer's case: a mapped destination beside a real IPv6 source.
            let h = parse(&encode(
                version,
                addr("[2001:db8::1]:5"),
                addr("[::ffff:1.2.3.4]:6"),
            ))
            .unwrap();
            assert_eq!(h.destination, Some(addr("[::ffff:1.2.3.4]:6")), "{version}");
        }
    }

    #[test]
    fn local_and_unknown_carry_no_client() {
        let h = parse(&encode_local()).unwrap();
        assert_eq!((h.version, h.source, h.len), (Version::V2, None, 16));
        let h = parse(b"PROXY UNKNOWN\r\n").unwrap();
        assert_eq!((h.version, h.source), (Version::V1, None));
    }

    #[test]
    fn framing_never_looks_past_the_header() {
        let header = encode(Version::V1, addr("10.0.0.1:1"), addr("10.0.0.2:2"));
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"\r\nPROXY and more\n");
        assert_eq!(frame(&bytes), Frame::Complete(header.len()));
        // Every strict prefix of a header is incomplete, never invalid.
        for version in [Version::V1, Version::V2] {
            let h = encode(version, addr("[2001:db8::7]:1"), addr("[2001:db8::1]:2"));
            for cut in 0..h.len() {
                assert_eq!(frame(&h[..cut]), Frame::Incomplete, "{version} at {cut}");
            }
        }
    }

    #[test]
    fn caps_and_garbage_are_invalid_by_reason() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(V1_MAX_BYTES, b'1');
        assert_eq!(frame(&long), Frame::Invalid(Invalid::Oversized));
        assert_eq!(frame(&long[..V1_MAX_BYTES - 1]), Frame::Incomplete);
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0x02, 0x00]); // 16 + 512 bytes: under the cap
        assert!(matches!(frame(&big), Frame::Incomplete));
        big[14..16].copy_from_slice(&((V2_MAX_BYTES - 16 + 1) as u16).to_be_bytes());
        assert_eq!(frame(&big), Frame::Invalid(Invalid::Oversized));
        assert_eq!(frame(b"hello"), Frame::Invalid(Invalid::Missing));
        assert_eq!(frame(b"PROXX"), Frame::Invalid(Invalid::Missing));
        assert_eq!(
            frame(b"\r\n\r\n\0\r\nQUIX"),
            Frame::Invalid(Invalid::Missing)
        );
        assert_eq!(frame(b"PROXY TCP4\n"), Frame::Invalid(Invalid::Malformed));
        let err = parse(b"PROXY TCP4 a b c d\r\n").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProxyHeader);
        assert_eq!(reason_of(&err), Some(Invalid::Malformed));
        assert_eq!(
            reason_of(&parse(b"nope").unwrap_err()),
            Some(Invalid::Missing)
        );
        // v2 with a bad version nibble or command.
        let mut bad = encode_local();
        bad[12] = 0x31;
        assert_eq!(
            reason_of(&parse(&bad).unwrap_err()),
            Some(Invalid::Malformed)
        );
    }
}
