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
