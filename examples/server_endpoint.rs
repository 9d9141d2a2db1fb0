//! Seed block 2, `server_endpoint`: the endpoint a server listens on, the
//! wildcard address ("every interface") and a port.
//!
//! The original wrote `unsigned shor` for the port's type and only showed
//! IPv6 (`address_v6::any()`). Both wildcards are shown here: `[::]` (which,
//! dual-stack, hears IPv4 clients too) and `0.0.0.0`. Nothing is opened yet:
//! an endpoint is only an address and a port.
//!
//! Usage: `server_endpoint [PORT]` (default 3333, the seed's port).

use std::error::Error;

use tcpkit::{DEFAULT_PORT, Endpoint};

fn main() -> Result<(), Box<dyn Error>> {
    let port = match std::env::args().nth(1) {
        Some(text) => text.parse::<u16>()?,
        None => DEFAULT_PORT,
    };
    for ep in [Endpoint::any_v6(port), Endpoint::any_v4(port)] {
        println!(
            "server endpoint {ep}: wildcard = {}, IPv6 = {}, port = {}",
            ep.is_unspecified(),
            ep.is_ipv6(),
            ep.port()
        );
    }
    Ok(())
}
