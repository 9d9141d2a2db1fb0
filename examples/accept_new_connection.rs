//! Seed block 7, `accept_new_connection`: listen with a backlog of 30, then
//! accept a client, which yields a *new* socket for that client while the
//! acceptor keeps listening.
//!
//! The original used port `333` (meant `3333`), `address::any()` (no such
//! function), `asio::ip::acceptor` (it is `ip::tcp::acceptor`), misspelt the
//! acceptor as `accpetor`, and called the blocking `accept` "non-blocking".
//! `accept` blocks until a client arrives; this example says so and, with no
//! arguments, connects a client of its own so it never waits forever.
//!
//! Usage: `accept_new_connection [PORT]`. With a port (3333 for the seed's)
//! it waits for an outside client, e.g. `nc 127.0.0.1 3333`.

use std::error::Error;
use std::thread;

use tcpkit::net::Protocol;
use tcpkit::{Acceptor, DEFAULT_BACKLOG, Endpoint, Socket};

fn main() -> Result<(), Box<dyn Error>> {
    let port = std::env::args()
        .nth(1)
        .map(|p| p.parse::<u16>())
        .transpose()?;
    let ep = Endpoint::any_v4(port.unwrap_or(0));

    let acceptor = Acceptor::open(Protocol::V4)?;
    acceptor.set_reuse_address(true)?;
    acceptor.bind(&ep)?;
    // The backlog queues connections the kernel has completed but we have not
    // accepted yet; the kernel caps it at net.core.somaxconn.
    acceptor.listen(DEFAULT_BACKLOG)?;
    let bound = acceptor.local_endpoint()?;
    println!(
        "listening on {bound}, backlog {DEFAULT_BACKLOG} (kernel grants {})",
        Acceptor::effective_backlog(DEFAULT_BACKLOG)
    );

    let client = match port {
        Some(_) => None,
        None => {
            let target = Endpoint::loopback_v4(bound.port());
            Some(thread::spawn(move || Socket::connect_to(&target)))
        }
    };
    println!("accept() blocks until a client connects...");
    let (socket, peer) = acceptor.accept()?;
    println!(
        "accepted {peer}: a new socket {} <-> {}",
        socket.local_endpoint()?,
        socket.peer_endpoint()?
    );
    if let Some(client) = client {
        let client = client.join().map_err(|_| "client thread panicked")??;
        println!(
            "(the client's own endpoint is {})",
            client.local_endpoint()?
        );
    }
    Ok(())
}
