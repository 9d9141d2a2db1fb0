//! [`Discard`]: reads and counts (RFC 863).

use super::{Connection, Served, Service, pump};

/// Reads everything and throws it away, counting bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl Service for Discard {
    fn name(&self) -> &'static str {
        "discard"
    }

    fn serve(&self, conn: Connection) -> impl Future<Output = Served> + Send + 'static {
        pump::pump(conn, pump::Mode::Discard)
    }
}
