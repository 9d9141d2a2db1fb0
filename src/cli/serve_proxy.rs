//! `tcpkit serve`'s PROXY protocol flags -> a checked [`ProxyProtocol`].
//!
//! `--proxy-protocol` needs at least one `--proxy-trusted` (clap exits 2
//! naming it otherwise): a listener that believes headers from anyone lets
//! anyone choose the address it is logged and filtered as, so there is no
//! default trusted network, not even loopback.

use std::time::Duration;

use ipnet::IpNet;
use tcpkit::server::ProxyProtocol;

use super::values;

/// The PROXY protocol flags of `tcpkit serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Read a PROXY protocol header (v1 or v2, as HAProxy's send-proxy and
    /// nginx's proxy_protocol send) first on every connection, before TLS
    /// and the service; the client it carries is the one logged, counted
    /// and shown to the service. Only sources in --proxy-trusted may
    /// connect; others are closed at accept, as are trusted ones without a
    /// valid header.
    #[arg(long, requires = "proxy_trusted")]
    proxy_protocol: bool,
    /// A balancer's network (CIDR such as 10.0.0.0/8, or one address)
    /// allowed to connect and send the header; repeat for more.
    #[arg(long, value_name = "CIDR", action = clap::ArgAction::Append, value_parser = cidr, requires = "proxy_protocol")]
    proxy_trusted: Vec<IpNet>,
    /// Close a trusted source that has not sent its whole header in this
    /// long (counted from accept).
    #[arg(long, value_name = "DURATION", value_parser = header_timeout, default_value = "3s", requires = "proxy_protocol")]
    proxy_timeout: Duration,
}

impl ProxyArgs {
    /// The library's settings, `None` without `--proxy-protocol`.
    pub fn config(&self) -> Option<ProxyProtocol> {
        self.proxy_protocol.then(|| {
            ProxyProtocol::new(self.proxy_trusted.iter().copied())
                .header_timeout(self.proxy_timeout)
        })
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (one host), read as
/// the access lists read theirs (bits below the prefix refused as a typo).
fn cidr(text: &str) -> Result<IpNet, String> {
    tcpkit::server::access::parse_rule(text).map_err(|e| e.to_string())
}

fn header_timeout(text: &str) -> Result<Duration, String> {
    let d = values::duration(text)?;
    if d.is_zero() {
        return Err("must be above zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_single_addresses_are_taken() {
        assert_eq!(cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        for bad in [
            "",
            "10.0.0.0/33",
            "localhost",
            "10.0.0.0/",
            "1.2.3",
            "10.0.0.1/8",
        ] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
        assert!(header_timeout("0").is_err());
        assert_eq!(header_timeout("250ms").unwrap(), Duration::from_millis(250));
    }
}
