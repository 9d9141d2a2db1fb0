//! Seed block 5, `bind_acceptor_socket`: bind the acceptor to the wildcard
//! address so it hears on every interface.
//!
//! The original passed `ep.protocol` without calling it, declared
//! `error_code ec()` (a function, C++'s most vexing parse) and called
//! `bind(ec, ep.protocol())` with the arguments wrong way round and no
//! endpoint. Here the acceptor sets `SO_REUSEADDR` (so a restarted server can
//! bind while old connections sit in `TIME_WAIT`), binds, and listens; then a
//! second acceptor on the same port shows how "address in use" is reported.
//!
//! Usage: `bind_acceptor [PORT]`. The default is port 0 (the kernel picks a
//! free one) so the example never fails because 3333 is taken; pass 3333 for
//! the seed's port.

use std::error::Error;
use std::process::ExitCode;

use tcpkit::net::Protocol;
use tcpkit::{Acceptor, DEFAULT_BACKLOG, Endpoint};

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let port = match std::env::args().nth(1) {
        Some(text) => text.parse::<u16>()?,
        None => 0,
    };
    let ep = Endpoint::any_v4(port);
    let acceptor = Acceptor::open(Protocol::V4)?;
    acceptor.set_reuse_address(true)?;
    if let Err(e) = acceptor.bind(&ep) {
        println!(
            "failed to bind the acceptor. Error code = {}. Message: {}",
            e.code(),
            e.message()
        );
        return Ok(ExitCode::FAILURE);
    }
    acceptor.listen(DEFAULT_BACKLOG)?;
    let bound = acceptor.local_endpoint()?;
    println!("bound and listening on {bound} (asked for {ep})");

    // SO_REUSEADDR does not let a second server take a port with a listener.
    let second = Acceptor::open(Protocol::V4)?;
    second.set_reuse_address(true)?;
    match second.bind(&bound) {
        Ok(()) => println!("unexpected: a second acceptor bound {bound} too"),
        Err(e) => println!(
            "a second acceptor on {bound}, as expected, fails. Error code = {}. Message: {}",
            e.code(),
            e.message()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
