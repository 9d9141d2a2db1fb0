//! [`SendProxy`]: a PROXY protocol header towards the upstream
//! (`tcpkit relay --send-proxy v2`), so the upstream sees the real
//! client's address instead of the relay's (HAProxy's `send-proxy-v2`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncWriteExt;

use super::{Connected, Upstream};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::proxy::{Version, encode, encode_local};

/// Wraps an upstream: once it is connected, and before any byte of the
/// client's, writes a PROXY header whose source is the client's address
/// (the `client` given to [`Upstream::connect`]).
///
/// The header's destination is the address the client reached when it is
/// set with [`with_destination`](Self::with_destination); otherwise the
/// wildcard address of the client's family with port 0 (an [`Upstream`]
/// is told only the client, and a relay listening on every interface has
/// no one address to name). Receivers use the source; the destination is
/// informational.
///
/// A client with no address (the unspecified `0.0.0.0:0`: a client of a
/// UNIX-domain listener, or a health check) gets v1's `PROXY UNKNOWN` or a
/// v2 `LOCAL` header: the receiver then believes the connection's own
/// peer (the relay), as the protocol says for a sender with no address
/// to tell. (v2's `AF_UNIX` addresses would need the listener's path,
/// which an [`Upstream`] is not told.)
///
/// Wrap each backend, inside any TLS ([`ToTls`](super::ToTls)): the header
/// goes in the clear before the handshake, as HAProxy sends it.
///
/// ```
/// use std::time::Duration;
/// use tcpkit::endpoint::HostPort;
/// use tcpkit::proxy::Version;
/// use tcpkit::relay::{Fixed, Relay, SendProxy, Upstream};
/// let fixed = Fixed::new(HostPort::parse("127.0.0.1:8080")?, Duration::from_secs(5));
/// let up = SendProxy::new(fixed, Version::V2);
/// assert_eq!(up.describe(), "127.0.0.1:8080 (PROXY v2)");
/// let relay = Relay::new(up);
/// # Ok::<(), tcpkit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SendProxy<U> {
    inner: U,
    version: Version,
    destination: Option<Endpoint>,
}

impl<U: Upstream> SendProxy<U> {
    /// Sends a `version` header on every connection `inner` makes.
    pub fn new(inner: U, version: Version) -> SendProxy<U> {
        SendProxy {
            inner,
            version,
            destination: None,
        }
    }

    /// Names `destination` as the address the client reached.
    pub fn with_destination(mut self, destination: Endpoint) -> SendProxy<U> {
        self.destination = Some(destination);
        self
    }

    /// The wrapped upstream.
    pub fn inner(&self) -> &U {
        &self.inner
    }

    /// The header for `client`.
    fn header(&self, client: &Endpoint) -> Vec<u8> {
        if client.is_unspecified() && client.port() == 0 {
            return match self.version {
                Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
                Version::V2 => encode_local(),
            };
        }
        let destination = match self.destination {
            Some(ep) => ep.socket_addr(),
            None => {
                let ip = match client.ip().to_canonical() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                SocketAddr::new(ip, 0)
            }
        };
        encode(self.version, client.socket_addr(), destination)
    }
}

impl<U: Upstream> Upstream for SendProxy<U> {
    async fn connect(&self, client: &Endpoint) -> Result<Connected> {
        let mut up = self.inner.connect(client).await?;
        let header = self.header(client);
        // A few hundred bytes into a fresh socket's empty send buffer: no
        // wait. Flushed for a wrapped stream that holds bytes back.
        let sent = async {
            up.stream.write_all(&header).await?;
            up.stream.flush().await
        };
        sent.await.map_err(|e| {
            Error::io(
                e,
                format_args!("send the PROXY {} header to {}", self.version, up.peer),
            )
        })?;
        Ok(up)
    }

    fn describe(&self) -> String {
        format!("{} (PROXY {})", self.inner.describe(), self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::parse;

    #[derive(Debug)]
    struct Nowhere;

    impl Upstream for Nowhere {
        async fn connect(&self, _client: &Endpoint) -> Result<Connected> {
            unreachable!("not connected in these tests")
        }
        fn describe(&self) -> String {
            "nowhere".into()
        }
    }

    #[test]
    fn the_header_carries_the_client_and_a_wildcard_of_its_family() {
        let v4: Endpoint = "192.0.2.7:40000".parse().unwrap();
        let h = parse(&SendProxy::new(Nowhere, Version::V2).header(&v4)).unwrap();
        assert_eq!(h.source, Some(v4.socket_addr()));
        assert_eq!(h.destination, Some("0.0.0.0:0".parse().unwrap()));
        let v6: Endpoint = "[2001:db8::7]:40000".parse().unwrap();
        let h = parse(&SendProxy::new(Nowhere, Version::V1).header(&v6)).unwrap();
        assert_eq!(h.source, Some(v6.socket_addr()));
        assert_eq!(h.destination, Some("[::]:0".parse().unwrap()));
        let dst: Endpoint = "198.51.100.1:443".parse().unwrap();
        let up = SendProxy::new(Nowhere, Version::V2).with_destination(dst);
        let h = parse(&up.header(&v4)).unwrap();
        assert_eq!(h.destination, Some(dst.socket_addr()));
    }

    #[test]
    fn a_client_without_an_address_gets_unknown_or_local() {
        let none = Endpoint::any_v4(0);
        let v1 = SendProxy::new(Nowhere, Version::V1).header(&none);
        assert_eq!(v1, b"PROXY UNKNOWN\r\n");
        let h = parse(&v1).unwrap();
        assert_eq!(h.source, None);
        let v2 = SendProxy::new(Nowhere, Version::V2).header(&none);
        assert_eq!(v2, encode_local());
        assert_eq!(parse(&v2).unwrap().source, None);
    }
}
