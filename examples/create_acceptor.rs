//! Seed block 4, `crear_acceptor_socket`: a server needs a separate,
//! *passive* socket, the acceptor, which only produces connected sockets.
//!
//! The original wrote `asio::in_context`, chose `tcp::v6()` but never opened
//! the acceptor with it, then checked an `error_code` nothing had set. Here
//! [`Acceptor::open`] really opens it, and a host without IPv6 gets a clear
//! error (and this example falls back to IPv4 to carry on).
//!
//! [`Acceptor`] is a different type from [`tcpkit::Socket`]: it has `bind`,
//! `listen` and `accept`, and no `read` or `write`.

use std::error::Error;

use tcpkit::Acceptor;
use tcpkit::net::Protocol;

fn main() -> Result<(), Box<dyn Error>> {
    let acceptor = match Acceptor::open(Protocol::V6) {
        Ok(acceptor) => acceptor,
        Err(e) => {
            println!(
                "failed to open an IPv6 acceptor. Error code = {}. Message: {}",
                e.code(),
                e.message()
            );
            println!("falling back to IPv4");
            Acceptor::open(Protocol::V4)?
        }
    };
    println!(
        "opened an {} acceptor (passive socket; not bound or listening yet)",
        acceptor.protocol()
    );
    Ok(())
}
