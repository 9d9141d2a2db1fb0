//! A user's own service on tcpkit's server: an "uppercase" line service.
//!
//! Starts a server on 127.0.0.1:0, talks to it once as a client, shuts it down
//! and prints what happened. Run with `cargo run --example custom_service`.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use tcpkit::codec::LineCodec;
use tcpkit::server::ServerBuilder;
use tcpkit::service::{CloseReason, Connection, Served, Service};
use tcpkit::{Endpoint, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::FramedRead;

/// Answers every line with the same line in upper case.
struct Upper;

impl Service for Upper {
    fn name(&self) -> &'static str {
        "upper"
    }

    fn serve(&self, conn: Connection) -> impl Future<Output = Served> + Send + 'static {
        // Nothing to take from `self`; a stateful service would clone an Arc here.
        upper(conn)
    }
}

async fn upper(mut conn: Connection) -> Served {
    let (rd, mut wr) = conn.stream.split();
    let mut lines = FramedRead::new(rd, LineCodec::new(conn.max_line));
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let reason = loop {
        let line = tokio::select! {
            // Shutdown: nothing in flight between lines, so stop here.
            _ = conn.shutdown.cancelled() => break CloseReason::Shutdown,
            line = lines.next() => line,
        };
        let line = match line {
            None => break CloseReason::PeerClosed,
            Some(Err(e)) => break CloseReason::Error(e),
            Some(Ok(line)) => line,
        };
        bytes_in += line.len() as u64 + 1;
        let mut reply = line.to_ascii_uppercase();
        reply.push(b'\n');
        if let Err(e) = wr.write_all(&reply).await {
            break CloseReason::Error(Error::io(e, "write reply"));
        }
        bytes_out += reply.len() as u64;
    };
    Served {
        bytes_in,
        bytes_out,
        reason,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = ServerBuilder::new()
        .listen(Endpoint::loopback_v4(0))
        .idle_timeout(Some(Duration::from_secs(5)))
        .bind()?;
    let addr = server.local_endpoint();
    let handle = server.handle();
    println!(
        "listening on {addr} (upper, backlog {})",
        server.effective_backlog()
    );
    let running = tokio::spawn(server.run(Upper));

    // One client: send a line, read the answer, close.
    let mut client = tokio::net::TcpStream::connect(addr.socket_addr()).await?;
    client.write_all(b"hello, tcpkit\n").await?;
    client.shutdown().await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer)).await??;
    print!("client got: {answer}");

    handle.shutdown();
    let summary = tokio::time::timeout(Duration::from_secs(5), running).await???;
    println!("{summary}");
    assert_eq!(answer, "HELLO, TCPKIT\n");
    Ok(())
}
