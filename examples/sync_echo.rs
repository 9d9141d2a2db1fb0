//! After the seven blocks, the seed's last step: read and write on the
//! connected socket, both ways, until one side closes. A blocking echo
//! server on its own thread and a client exchanging several messages.
//!
//! The seed stopped at `accept`; this finishes the conversation the way a
//! correct program must: `read_exact`/`write_all` loop over partial reads and
//! writes, every blocking call has a timeout, the client half-closes
//! (`shutdown(Write)`) and the server sees EOF (`read_some` returning 0).
//!
//! Usage: `sync_echo [MESSAGE...]`.

use std::error::Error;
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use tcpkit::{Acceptor, DEFAULT_BACKLOG, Endpoint, Socket};

/// No step in this example should take more than a moment; a stuck one fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    let mut messages: Vec<String> = std::env::args().skip(1).collect();
    if messages.is_empty() {
        messages = ["hello", "the acceptor keeps listening", "bye"]
            .map(String::from)
            .to_vec();
    }

    let acceptor = Acceptor::bind_listen(&Endpoint::loopback_v4(0), DEFAULT_BACKLOG)?;
    let server_ep = acceptor.local_endpoint()?;
    println!("server: listening on {server_ep}");
    let server = thread::spawn(move || serve_one(&acceptor));

    let mut client = Socket::connect_to(&server_ep)?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    println!("client: connected from {}", client.local_endpoint()?);
    for text in &messages {
        client.write_all(text.as_bytes())?;
        let mut echo = vec![0u8; text.len()];
        client.read_exact(&mut echo)?;
        println!(
            "client: sent {text:?}, got back {:?}",
            String::from_utf8_lossy(&echo)
        );
        if echo != text.as_bytes() {
            return Err(format!("echo of {text:?} differs").into());
        }
    }
    // Half-close: the server reads EOF and finishes; we can still read.
    client.shutdown(Shutdown::Write)?;
    let echoed = server.join().map_err(|_| "server thread panicked")??;
    println!("client: closed; the server echoed {echoed} bytes in all");
    Ok(())
}

/// Accepts one client and echoes until it closes; returns the bytes echoed.
fn serve_one(acceptor: &Acceptor) -> tcpkit::Result<usize> {
    let (mut conn, peer) = acceptor.accept()?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    println!("server: accepted {peer}");
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match conn.read_some(&mut buf)? {
            0 => {
                println!("server: {peer} closed its side (EOF)");
                return Ok(total);
            }
            n => {
                conn.write_all(&buf[..n])?;
                total += n;
            }
        }
    }
}
