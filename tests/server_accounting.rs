//! Every byte accounted: connections cut off at the shutdown deadline
//! still count what they moved in the summary (and so in `--json`).

mod server_util;

use std::time::Duration;

use server_util::{DEADLINE, within};
use tcpkit::server::ServerBuilder;
use tcpkit::service::{DRAIN_QUIET, Echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Shorter than [`DRAIN_QUIET`]: a quiet client is still being drained when
/// the grace period ends, so it is closed by force.
const GRACE: Duration = Duration::from_millis(100);

#[tokio::test]
async fn echo_cut_off_at_the_deadline_counts_what_it_echoed() {
    assert!(GRACE < DRAIN_QUIET);
    let server = server_util::start(ServerBuilder::new().shutdown_grace(GRACE), Echo);
    let mut client = within(DEADLINE, "connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let sent = [7u8; 264];
    within(DEADLINE, "write", client.write_all(&sent))
        .await
        .expect("write");
    let mut back = [0u8; 264];
    within(DEADLINE, "echo", client.read_exact(&mut back))
        .await
        .expect("read");
    assert_eq!(back, sent);
    // The client never closes: the server stops with it still open.
    let summary = server.stop().await;
    assert_eq!(summary.aborted, 1, "{summary}");
    assert_eq!(summary.snapshot.connections_closed, 1, "{summary}");
    assert_eq!(summary.snapshot.bytes_in, 264, "{summary}");
    assert_eq!(summary.snapshot.bytes_out, 264, "{summary}");
    assert_eq!(summary.snapshot.buffered_bytes, 0, "{summary}");
    drop(client);
}

#[tokio::test]
async fn chat_cut_off_at_the_deadline_counts_what_it_moved() {
    use tcpkit::service::Chat;
    let server = server_util::start(ServerBuilder::new().shutdown_grace(GRACE), Chat::new());
    let mut client = within(DEADLINE, "connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    within(DEADLINE, "write", client.write_all(b"/who\n"))
        .await
        .expect("write");
    // Welcome and the /who reply: two lines.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.iter().filter(|&&b| b == b'\n').count() < 2 {
        let n = within(DEADLINE, "replies", client.read(&mut buf))
            .await
            .expect("read");
        assert_ne!(n, 0, "closed early after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    // The client never closes: after the farewell the server lingers for
    // it, and the grace period (shorter than the linger) cuts that off.
    let stopping = tokio::spawn(server.stop());
    loop {
        let n = within(DEADLINE, "farewell", client.read(&mut buf))
            .await
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.ends_with("* server shutting down\r\n"), "{text:?}");
    let summary = within(DEADLINE, "stop", stopping).await.expect("stop task");
    assert_eq!(summary.aborted, 1, "{summary}");
    assert_eq!(summary.snapshot.bytes_in, 5, "{summary}");
    assert_eq!(summary.snapshot.bytes_out, got.len() as u64, "{summary}");
    drop(client);
}
