//! Seed block 3, `creat_tcp_socket`: choose a protocol and open an active
//! TCP socket (`socket(2)`).
//!
//! The original checked `ec.velue()` and printed `ec.error()` (it meant
//! `value()` and `message()`), and needed an `io_context` only because Asio
//! does. Here opening is one call whose failure carries a code and a message.
//!
//! Usage: `create_tcp_socket [v4|v6]` (default v4, the seed's choice).

use std::process::ExitCode;

use tcpkit::Socket;
use tcpkit::net::Protocol;

fn main() -> ExitCode {
    let protocol = match std::env::args().nth(1).as_deref() {
        None | Some("v4") => Protocol::V4,
        Some("v6") => Protocol::V6,
        Some(other) => {
            eprintln!("unknown protocol {other:?}: expected v4 or v6");
            return ExitCode::FAILURE;
        }
    };
    match Socket::open(protocol) {
        Ok(socket) => {
            // Not bound or connected yet: the kernel reports the wildcard, port 0.
            let local = socket
                .local_endpoint()
                .map_or_else(|e| e.to_string(), |ep| ep.to_string());
            println!(
                "opened an {} TCP socket (local endpoint {local})",
                socket.protocol()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "failed to open the socket! Error code = {}. Message: {}",
                e.code(),
                e.message()
            );
            ExitCode::FAILURE
        }
    }
}
