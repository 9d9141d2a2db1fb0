//! The protocol choice: TCP over IPv4 or over IPv6.

use crate::endpoint::Endpoint;

/// TCP over IPv4 or IPv6: Asio's `ip::tcp::v4()` / `ip::tcp::v6()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `AF_INET`.
    V4,
    /// `AF_INET6`.
    V6,
}

impl Protocol {
    /// The protocol of an endpoint's address.
    ///
    /// ```
    /// use tcpkit::{Endpoint, net::Protocol};
    /// assert_eq!(Protocol::of(&Endpoint::any_v6(1)), Protocol::V6);
    /// ```
    pub fn of(endpoint: &Endpoint) -> Protocol {
        if endpoint.is_ipv6() {
            Protocol::V6
        } else {
            Protocol::V4
        }
    }

    pub(crate) fn domain(self) -> socket2::Domain {
        match self {
            Protocol::V4 => socket2::Domain::IPV4,
            Protocol::V6 => socket2::Domain::IPV6,
        }
    }

    /// `"IPv4"` or `"IPv6"`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V4 => "IPv4",
            Protocol::V6 => "IPv6",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
