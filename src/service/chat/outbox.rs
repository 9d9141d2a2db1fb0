//! A member's outgoing side: the bounded queue other sessions fill, the
//! write loop that empties it into the socket, and what is owed when the
//! session ends. Everything here survives the write loop's future being
//! dropped mid-write (the session `select!`s it against the read side).
//!
//! Writes are batched: the loop takes everything already queued (up to
//! [`BATCH_LINES`] messages or [`BATCH_BYTES`]) and hands it to the socket
//! in one call, a `writev` on plain TCP, or one copy into a reused buffer
//! on other streams (TLS). So a member that many senders talk to costs one
//! system call per wake-up rather than one per line, while `TCP_NODELAY`
//! still sends a lone line at once.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::room::notice;
use super::{FAREWELL_DEADLINE, FLUSH_DEADLINE, LastWrite};
use crate::metrics::Metrics;
use crate::service::CloseReason;

/// Most messages one write takes from the queue.
pub(super) const BATCH_LINES: usize = 64;

/// Most bytes one write takes from the queue (a single longer message is
/// still written whole, over as many writes as the socket needs).
pub(super) const BATCH_BYTES: usize = 64 * 1024;

/// A member's outgoing side: its queue, and the messages taken from it but
/// not yet (all) written. It lives outside the write loop's future so that
/// the loop can be dropped at any await (the read side ended first) without
/// losing, cutting, repeating or reordering a message: [`Outbox::close`]
/// goes on where it stopped.
pub(super) struct Outbox {
    rx: mpsc::Receiver<Bytes>,
    /// Taken from the queue, not yet written, in order; the front may be
    /// partly written already (what is left of it is what is owed).
    pending: VecDeque<Bytes>,
    /// The bytes in `pending`.
    pending_bytes: usize,
    /// Reused to send `pending` in one write on streams that are not
    /// vectored (TLS): rebuilt from `pending` before each write, so it owes
    /// nothing itself.
    scratch: Vec<u8>,
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
            pending: VecDeque::with_capacity(BATCH_LINES),
            pending_bytes: 0,
            scratch: Vec::new(),
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

    fn push(&mut self, msg: Bytes) {
        self.pending_bytes += msg.len();
        self.pending.push_back(msg);
    }

    /// Takes what is already queued into `pending`, up to a batch.
    fn top_up(&mut self) {
        while self.pending.len() < BATCH_LINES && self.pending_bytes < BATCH_BYTES {
            match self.rx.try_recv() {
                Ok(msg) => self.push(msg),
                Err(_) => return,
            }
        }
    }

    /// `n` bytes of `pending` were written: drops them from its front.
    fn advance(&mut self, mut n: usize) {
        self.bytes_out += n as u64;
        self.pending_bytes -= n;
        while n > 0 {
            let Some(front) = self.pending.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.pending.pop_front();
        }
    }

    /// One write of as much of `pending` as the batch bounds allow (a
    /// `writev` of up to [`BATCH_LINES`] buffers, or one copy into
    /// `scratch`). Cancel-safe: a write either wrote nothing, or is
    /// accounted for before the next await.
    async fn write_some<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        last_write: &LastWrite,
    ) -> std::io::Result<()> {
        let n = if self.pending.len() == 1 {
            wr.write(&self.pending[0]).await?
        } else if wr.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); BATCH_LINES];
            let mut k = 0;
            let mut bytes = 0;
            for msg in self.pending.iter().take(BATCH_LINES) {
                if k > 0 && bytes + msg.len() > BATCH_BYTES {
                    break;
                }
                slices[k] = IoSlice::new(msg);
                k += 1;
                bytes += msg.len();
            }
            wr.write_vectored(&slices[..k]).await?
        } else {
            self.scratch.clear();
            for msg in &self.pending {
                if !self.scratch.is_empty() && self.scratch.len() + msg.len() > BATCH_BYTES {
                    break;
                }
                self.scratch.extend_from_slice(msg);
            }
            wr.write(&self.scratch).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.advance(n);
        last_write.touch();
        Ok(())
    }

    /// Writes everything in `pending`.
    async fn write_pending<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        last_write: &LastWrite,
    ) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            self.write_some(wr, last_write).await?;
        }
        Ok(())
    }

    /// Writes messages as they are queued, each write taking all that is
    /// queued by then (up to a batch); ends only on a write error.
    pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        last_write: &LastWrite,
    ) -> CloseReason {
        loop {
            if self.pending.is_empty() {
                match self.rx.recv().await {
                    Some(msg) => self.push(msg),
                    None => return CloseReason::Done,
                }
            }
            self.top_up();
            if let Err(e) = self.write_some(wr, last_write).await {
                return CloseReason::Error(crate::Error::io(e, "chat write"));
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
            self.top_up();
            if self.pending.is_empty() {
                return Ok(());
            }
            self.write_some(wr, last_write).await?;
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
                // The message in flight is the front of `pending`; those
                // taken behind it were not started: dropped with the queue.
                self.pending.truncate(1);
                self.pending_bytes = self.pending.front().map_or(0, Bytes::len);
                tokio::time::timeout(FAREWELL_DEADLINE, self.write_pending(wr, last_write)).await
            }
            _ => tokio::time::timeout(FLUSH_DEADLINE, self.flush(wr, last_write)).await,
        };
        // Not delivered in time: a farewell would land in the middle of a
        // message, or never.
        if !matches!(owed, Ok(Ok(()))) {
            return;
        }
        if let Some(text) = farewell {
            self.pending.clear();
            self.pending_bytes = 0;
            self.push(notice(format_args!("{text}")));
            let _ =
                tokio::time::timeout(FAREWELL_DEADLINE, self.write_pending(wr, last_write)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use super::*;

    /// A socket that takes at most `chunk` bytes a call, and only every
    /// other call (the other is `Pending`, waking at once), vectored or
    /// not; it counts its calls.
    struct Trickle {
        got: Vec<u8>,
        chunk: usize,
        vectored: bool,
        ready: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let me = self.get_mut();
            me.ready = !me.ready;
            if !me.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            me.calls += 1;
            let bufs = if me.vectored { bufs } else { &bufs[..1] };
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(me.chunk - n);
                me.got.extend_from_slice(&b[..take]);
                n += take;
                if n == me.chunk {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// 500 lines of varied lengths, queued at once, written by a write loop
    /// that is dropped again and again mid-write (as the session's `select!`
    /// drops it), then closed: the socket gets every line exactly once, in
    /// order, uncut; and far fewer writes than lines (they were batched).
    async fn batched_writes_lose_cut_repeat_or_reorder_nothing(vectored: bool, chunk: usize) {
        let (tx, rx) = mpsc::channel(1024);
        let mut want = Vec::new();
        for i in 0..500 {
            let line = format!("user{}: {}\r\n", i % 7, "x".repeat(i * 37 % 300));
            want.extend_from_slice(line.as_bytes());
            tx.try_send(Bytes::from(line)).expect("queue has room");
        }
        let mut out = Outbox::new(rx, Arc::new(Metrics::new()));
        let mut wr = Trickle {
            got: Vec::new(),
            chunk,
            vectored,
            ready: false,
            calls: 0,
        };
        let last_write = LastWrite::new();
        for _ in 0..40 {
            // Each poll of the loop makes one write or none: a few polls,
            // then the loop is dropped wherever it is.
            let run = out.write_loop(&mut wr, &last_write);
            let mut run = std::pin::pin!(run);
            for _ in 0..3 {
                let done = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
                assert!(done.is_pending(), "the loop only ends on an error");
            }
        }
        drop(tx);
        let farewell = Some("bye".to_owned());
        tokio::time::timeout(
            Duration::from_secs(10),
            out.close(&mut wr, &CloseReason::Done, farewell, &last_write),
        )
        .await
        .expect("close ends");
        want.extend_from_slice(b"* bye\r\n");
        assert!(
            wr.got == want,
            "vectored {vectored}, chunk {chunk}: bytes differ"
        );
        assert_eq!(out.take_bytes_out(), want.len() as u64);
        assert!(
            wr.calls * chunk < want.len() + 500 * chunk / 2,
            "{} writes for 500 lines of {} bytes: not batched",
            wr.calls,
            want.len()
        );
    }

    #[tokio::test]
    async fn batched_vectored_writes_keep_every_line_once_in_order() {
        for chunk in [1, 7, 100, 4096, 1 << 20] {
            batched_writes_lose_cut_repeat_or_reorder_nothing(true, chunk).await;
        }
    }

    #[tokio::test]
    async fn batched_copied_writes_keep_every_line_once_in_order() {
        for chunk in [1, 7, 100, 4096, 1 << 20] {
            batched_writes_lose_cut_repeat_or_reorder_nothing(false, chunk).await;
        }
    }

    /// A slow consumer's close finishes the message in flight (the front of
    /// the batch), skips the rest, and its farewell starts a line.
    #[tokio::test]
    async fn a_slow_consumer_gets_the_end_of_the_line_in_flight_then_the_farewell() {
        let (tx, rx) = mpsc::channel(16);
        for i in 0..10 {
            tx.try_send(Bytes::from(format!("line {i} {}\r\n", "y".repeat(50))))
                .expect("queue has room");
        }
        let mut out = Outbox::new(rx, Arc::new(Metrics::new()));
        let mut wr = Trickle {
            got: Vec::new(),
            chunk: 20,
            vectored: true,
            ready: false,
            calls: 0,
        };
        let last_write = LastWrite::new();
        {
            let run = out.write_loop(&mut wr, &last_write);
            let mut run = std::pin::pin!(run);
            // 20 bytes written, then pending.
            let _ = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
        }
        assert_eq!(wr.got.len(), 20);
        out.close(
            &mut wr,
            &CloseReason::SlowConsumer,
            Some("too slow".to_owned()),
            &last_write,
        )
        .await;
        let text = String::from_utf8(wr.got).expect("utf-8");
        assert_eq!(text, format!("line 0 {}\r\n* too slow\r\n", "y".repeat(50)));
    }
}
