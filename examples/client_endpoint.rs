//! Seed block 1, `client_end_point`: turn the server's address text and a
//! port into an [`Endpoint`].
//!
//! The original parsed a variable that did not exist (`rwa_ip_address` vs
//! `raw_ip_address`), returned `ec.velue()`, and used a `port_num` it never
//! declared. Here IPv4 and IPv6 text both parse, and bad text is reported the
//! Asio way, with `code()` and `message()`, never a panic.
//!
//! Usage: `client_endpoint [ADDRESS] [PORT]` (default `127.0.0.1 3333`; the
//! seed's `192.168.1.34` works too). With no arguments it also shows how a
//! typo is reported, and still exits 0; a bad address *you* give exits 1.

use std::process::ExitCode;

use tcpkit::{DEFAULT_PORT, Endpoint};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let user_address = args.next();
    let port = match args.next().map(|p| p.parse::<u16>()) {
        None => DEFAULT_PORT,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("bad port: {e}");
            return ExitCode::FAILURE;
        }
    };

    let address = user_address.as_deref().unwrap_or("127.0.0.1");
    if !parse_and_report(address, port) {
        return ExitCode::FAILURE;
    }
    if user_address.is_none() {
        // The demonstration: IPv6 text, then text with a typo in it.
        parse_and_report("::1", port);
        println!("now a deliberate typo, to show how it is reported:");
        parse_and_report("192.168.1.3x", port);
    }
    ExitCode::SUCCESS
}

/// Parses `address` with `port`, printing the endpoint or the error's code
/// and message. Returns whether it parsed.
fn parse_and_report(address: &str, port: u16) -> bool {
    match Endpoint::new(address, port) {
        Ok(ep) => {
            let family = if ep.is_ipv6() { "IPv6" } else { "IPv4" };
            println!("parsed {address:?} -> endpoint {ep} ({family})");
            true
        }
        Err(e) => {
            println!(
                "failed to parse the IP address. Error code = {}. Message: {}",
                e.code(),
                e.message()
            );
            false
        }
    }
}
