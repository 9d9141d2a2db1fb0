//! Seed block 6, `connect_to_end`: a client connects a socket to the
//! server's endpoint.
//!
//! The original connected to a fixed `192.168.1.36:3333` with the throwing
//! `connect` and no error handling, wrote `ep.protcol()`, and could wait for
//! minutes on an unreachable host. Here the address is an argument, the
//! connect has a deadline, and refused / unreachable / timed out each arrive
//! as an error with a code and a message.
//!
//! Usage: `connect [ADDRESS [PORT]]` (port default 3333). With no arguments
//! the example starts its own acceptor on `127.0.0.1:0` to connect to, then
//! shows how a refused connection is reported.

use std::error::Error;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use tcpkit::net::Protocol;
use tcpkit::{Acceptor, DEFAULT_BACKLOG, DEFAULT_PORT, Endpoint, Socket};

/// Long enough for a real network, short enough that a black hole is reported.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let Some(address) = args.next() else {
        return demo();
    };
    let port = match args.next() {
        Some(text) => text.parse::<u16>()?,
        None => DEFAULT_PORT,
    };
    let ep = match Endpoint::new(&address, port) {
        Ok(ep) => ep,
        Err(e) => return Ok(report("parse the address", &e)),
    };
    match connect(&ep) {
        Ok(socket) => {
            println!("connected {} -> {ep}", socket.local_endpoint()?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report("connect", &e)),
    }
}

/// Opens a socket of the endpoint's protocol and connects with a deadline.
fn connect(ep: &Endpoint) -> tcpkit::Result<Socket> {
    let mut socket = Socket::open(Protocol::of(ep))?;
    socket.connect_timeout(ep, CONNECT_TIMEOUT)?;
    Ok(socket)
}

fn demo() -> Result<ExitCode, Box<dyn Error>> {
    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), DEFAULT_BACKLOG)?;
    let server_ep = acceptor.local_endpoint()?;
    println!("started a local acceptor on {server_ep}");
    let server = thread::spawn(move || acceptor.accept().map(|(_, peer)| peer));

    let socket = connect(&server_ep)?;
    println!("connected {} -> {server_ep}", socket.local_endpoint()?);
    let peer = server.join().map_err(|_| "acceptor thread panicked")??;
    println!("the server accepted a connection from {peer}");

    // A port nothing listens on: bound by the kernel, then released.
    let probe = Acceptor::open(Protocol::V4)?;
    probe.bind(&Endpoint::loopback_v4(0))?;
    let closed = probe.local_endpoint()?;
    drop(probe);
    println!("now connecting to {closed}, where nothing listens:");
    if let Err(e) = connect(&closed) {
        report("connect", &e);
    }
    Ok(ExitCode::SUCCESS)
}

fn report(what: &str, e: &tcpkit::Error) -> ExitCode {
    println!(
        "failed to {what}. Error code = {}. Message: {}",
        e.code(),
        e.message()
    );
    ExitCode::FAILURE
}
