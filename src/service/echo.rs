//! [`Echo`]: every byte back, in order (RFC 862).

use super::{Connection, Served, Service, pump};

/// Echoes every byte back in order. On the client's write shutdown it
/// finishes echoing, then closes. A client that sends without reading makes
/// the server stop reading from it: at most one read's worth (64 KiB) is held
/// for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Service for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn serve(&self, conn: Connection) -> impl Future<Output = Served> + Send + 'static {
        pump::pump(conn, pump::Mode::Echo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection footprint the performance design promises: the
    /// whole echo future (connection, idle timer, cancellation wait, counters,
    /// boxed backpressure buffer) stays small. Measured 288 bytes in a debug
    /// build and 280 in release with tokio 1.54 / tokio-util 0.7.20 on x86_64
    /// (it was 432 / 424 as an `async` block with an unboxed buffer), the
    /// same since the connection's stream became a [`super::Stream`]: the
    /// enum is as large as the `TcpStream` it wraps. The
    /// bound keeps the spawned task in tokio's 512-byte cell class, which is
    /// what idle RSS per connection follows (BENCHMARKS.md, issue 6).
    pub const ECHO_FUTURE_MAX_BYTES: usize = 320;

    #[tokio::test]
    async fn echo_future_is_small() {
        let (conn, _client) = super::super::loopback_connection().await;
        let fut = Echo.serve(conn);
        let size = std::mem::size_of_val(&fut);
        eprintln!("echo connection future: {size} bytes");
        assert!(size <= ECHO_FUTURE_MAX_BYTES, "{size} bytes");
    }
}
