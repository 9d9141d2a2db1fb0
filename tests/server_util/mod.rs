//! Helpers shared by the `server_*` integration tests: start a server on
//! loopback port 0, stop it under a deadline, and line-based clients.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tcpkit::Endpoint;
use tcpkit::codec::LineCodec;
use tcpkit::metrics::Metrics;
use tcpkit::server::{ServerBuilder, ShutdownHandle, Summary};
use tcpkit::service::Service;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

/// Every wait in these tests has this deadline unless it says otherwise.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A server running in the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    pub metrics: Arc<Metrics>,
    task: JoinHandle<tcpkit::Result<Summary>>,
}

/// Binds `builder` on 127.0.0.1:0 and runs `service`.
pub fn start<S: Service>(builder: ServerBuilder, service: S) -> TestServer {
    let server = builder
        .listen(Endpoint::loopback_v4(0))
        .bind()
        .expect("bind test server");
    TestServer {
        addr: server.local_endpoint().socket_addr(),
        handle: server.handle(),
        metrics: server.metrics(),
        task: tokio::spawn(server.run(service)),
    }
}

impl TestServer {
    /// Graceful shutdown, awaited under the deadline.
    pub async fn stop(self) -> Summary {
        self.handle.shutdown();
        within(DEADLINE, "server shutdown", self.task)
            .await
            .expect("server task panicked")
            .expect("server failed")
    }

    /// Waits until `pred` holds for the metrics.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&tcpkit::metrics::Snapshot) -> bool) {
        within(DEADLINE, what, async {
            while !pred(&self.metrics.snapshot()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

/// A line-based client (chat).
pub struct LineClient {
    lines: FramedRead<OwnedReadHalf, LineCodec>,
    wr: OwnedWriteHalf,
}

impl LineClient {
    pub async fn connect(addr: SocketAddr) -> LineClient {
        let stream = within(DEADLINE, "connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        LineClient::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> LineClient {
        // Small lines back to back: no Nagle/delayed-ACK stalls.
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (rd, wr) = stream.into_split();
        LineClient {
            lines: FramedRead::new(rd, LineCodec::new(1 << 20)),
            wr,
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes()).await
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        within(DEADLINE, "send", self.wr.write_all(bytes))
            .await
            .expect("send");
    }

    /// The next line, or `None` at EOF/reset.
    pub async fn recv(&mut self) -> Option<String> {
        match within(DEADLINE, "receive a line", self.lines.next()).await {
            Some(Ok(line)) => Some(String::from_utf8_lossy(&line).into_owned()),
            _ => None,
        }
    }

    /// Reads lines until one equals `want`, returning those skipped.
    pub async fn expect(&mut self, want: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            match self.recv().await {
                Some(line) if line == want => return skipped,
                Some(line) => skipped.push(line),
                None => panic!("EOF waiting for {want:?}; got {skipped:?}"),
            }
        }
    }
}
