//! A member's outgoing side: the bounded queue other sessions fill, the
//! write loop that empties it into the socket, and what is owed when the
//! session ends. Everything here survives the write loop's future being
//! dropped mid-write (the session `select!`s it against the read side).

use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::room::notice;
use super::{FAREWELL_DEADLINE, FLUSH_DEADLINE, LastWrite};
use crate::metrics::Metrics;
use crate::service::CloseReason;

/// A member's outgoing side: its queue, and what is left of the message
/// being written. It lives outside the write loop's future so that the loop
/// can be dropped at any await (the read side ended first) without losing
/// or cutting a message: [`Outbox::close`] goes on where it stopped.
pub(super) struct Outbox {
    rx: mpsc::Receiver<Bytes>,
    /// The unwritten rest of the current message (empty: none).
    current: Bytes,
    /// Bytes written to the client so far (taken by [`Outbox::take_bytes_out`]
    /// when the session ends; whatever is left at drop goes to `metrics`).
    bytes_out: u64,
    metrics: Arc<Metrics>,
}

impl Drop for Outbox {
    /// Dropped with the session cut off at the grace deadline: the bytes
    /// it did deliver still count in the server's totals.
    fn drop(&mut self) {
        if self.bytes_out != 0 {
            self.metrics.add_bytes(0, self.bytes_out);
        }
    }
}

impl Outbox {
    /// An outbox for the receiving end of a member's queue.
    pub(super) fn new(rx: mpsc::Receiver<Bytes>, metrics: Arc<Metrics>) -> Outbox {
        Outbox {
            rx,
            current: Bytes::new(),
            bytes_out: 0,
            metrics,
        }
    }

    /// The bytes written so far, handed over to the session's [`Served`]
    /// (so the drop adds nothing twice).
    ///
    /// [`Served`]: crate::service::Served
    pub(super) fn take_bytes_out(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_out)
    }

    /// Writes the rest of the current message. Cancel-safe: each `write`
    /// either wrote nothing or is accounted for before the next await.
    async fn write_current<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        last_write: &LastWrite,
    ) -> std::io::Result<()> {
        while !self.current.is_empty() {
            let n = wr.write(&self.current).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.current.advance(n);
            self.bytes_out += n as u64;
            last_write.touch();
        }
        Ok(())
    }

    /// Writes messages as they are queued; ends only on a write error.
    pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        last_write: &LastWrite,
    ) -> CloseReason {
        loop {
            if let Err(e) = self.write_current(wr, last_write).await {
                return CloseReason::Error(crate::Error::io(e, "chat write"));
            }
            match self.rx.recv().await {
                Some(msg) => self.current = msg,
                None => return CloseReason::Done,
            }
        }
    }

    /// Writes every message already queued, but not what comes later.
    async fn flush<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        last_write: &LastWrite,
    ) -> std::io::Result<()> {
        loop {
            self.write_current(wr, last_write).await?;
            match self.rx.try_recv() {
                Ok(msg) => self.current = msg,
                Err(_) => return Ok(()),
            }
        }
    }

    /// What the session still owes the client as it ends, then the
    /// farewell: a member that half-closed, quit, sent an over-long line, or
    /// idled, and everyone at shutdown, first gets every line already
    /// queued for it (within [`FLUSH_DEADLINE`]). A slow consumer only gets
    /// the end of the message in flight, so its farewell starts a line.
    pub(super) async fn close<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        reason: &CloseReason,
        farewell: Option<String>,
        last_write: &LastWrite,
    ) {
        let owed = match reason {
            CloseReason::Error(_) => return,
            CloseReason::SlowConsumer => {
                tokio::time::timeout(FAREWELL_DEADLINE, self.write_current(wr, last_write)).await
            }
            _ => tokio::time::timeout(FLUSH_DEADLINE, self.flush(wr, last_write)).await,
        };
        // Not delivered in time: a farewell would land in the middle of a
        // message, or never.
        if !matches!(owed, Ok(Ok(()))) {
            return;
        }
        if let Some(text) = farewell {
            self.current = notice(format_args!("{text}"));
            let _ =
                tokio::time::timeout(FAREWELL_DEADLINE, self.write_current(wr, last_write)).await;
        }
    }
}
