//! Services over a stream that is not a TCP socket (`tokio::io::duplex`),
//! through the public API: what TLS and the relay will hand a service.

use std::time::Duration;

use tcpkit::Endpoint;
use tcpkit::service::{CloseReason, Connection, Discard, Echo, Service, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?}: {what}"),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// 256 KiB through 1 KiB pipes, the client not reading at first: the echo
/// holds what the peer cannot take (the backpressure path), resumes when it
/// reads, returns every byte in order, and closes after the client's EOF.
#[tokio::test]
async fn echo_over_a_pipe_holds_back_and_returns_every_byte() {
    let (ours, theirs) = tokio::io::duplex(1024);
    let ep = Endpoint::loopback_v4(0);
    let conn = Connection::new(Stream::other(ours), ep, ep);
    let metrics = conn.metrics.clone();
    let serving = tokio::spawn(Echo.serve(conn));

    let data = pattern(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.expect("write");
        wr.shutdown().await.expect("shutdown");
    });
    // Read nothing until the server holds bytes for us.
    within("the echo to back up", async {
        while metrics.snapshot().buffered_bytes == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut got = Vec::new();
    within("the echo and EOF", rd.read_to_end(&mut got))
        .await
        .expect("read");
    assert!(
        got == data,
        "echoed {} bytes, not the {} sent in order",
        got.len(),
        data.len()
    );
    within("the writer", writer).await.expect("writer");

    let served = within("the service to finish", serving)
        .await
        .expect("service");
    assert_eq!(served.bytes_in, data.len() as u64);
    assert_eq!(served.bytes_out, data.len() as u64);
    assert!(
        matches!(served.reason, CloseReason::PeerClosed),
        "{}",
        served.reason
    );
    let snap = metrics.snapshot();
    assert_eq!(snap.buffered_bytes, 0, "the backlog gauge is released");
    assert!(snap.buffered_bytes_max > 0);
}

#[tokio::test]
async fn discard_over_a_pipe_counts_and_closes_after_eof() {
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let ep = Endpoint::loopback_v4(0);
    let serving = tokio::spawn(Discard.serve(Connection::new(Stream::other(ours), ep, ep)));
    let data = pattern(100_000);
    within("write", theirs.write_all(&data))
        .await
        .expect("write");
    within("shutdown", theirs.shutdown())
        .await
        .expect("shutdown");
    let mut got = Vec::new();
    within("EOF from discard", theirs.read_to_end(&mut got))
        .await
        .expect("read");
    assert!(got.is_empty(), "discard sent {} bytes", got.len());
    let served = within("the service to finish", serving)
        .await
        .expect("service");
    assert_eq!(served.bytes_in, data.len() as u64);
    assert_eq!(served.bytes_out, 0);
    assert!(
        matches!(served.reason, CloseReason::PeerClosed),
        "{}",
        served.reason
    );
}

/// Shutdown reaches a service on a pipe as on a socket: it finishes once the
/// peer is quiet.
#[tokio::test]
async fn echo_over_a_pipe_stops_on_shutdown() {
    let (ours, mut theirs) = tokio::io::duplex(1024);
    let ep = Endpoint::loopback_v4(0);
    let conn = Connection::new(Stream::other(ours), ep, ep);
    let shutdown = conn.shutdown.clone();
    let serving = tokio::spawn(Echo.serve(conn));
    within("write", theirs.write_all(b"ping"))
        .await
        .expect("write");
    let mut buf = [0u8; 4];
    within("echo", theirs.read_exact(&mut buf))
        .await
        .expect("read");
    assert_eq!(&buf, b"ping");
    shutdown.cancel();
    let served = within("the service to finish", serving)
        .await
        .expect("service");
    assert!(
        matches!(served.reason, CloseReason::Shutdown),
        "{}",
        served.reason
    );
    assert_eq!((served.bytes_in, served.bytes_out), (4, 4));
}
