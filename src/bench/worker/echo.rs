//! The echo workload: a closed loop with `pipeline` messages in flight, or an
//! open loop on a fixed schedule (wrk2's coordinated-omission correction).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::SemaphorePermit;
use tokio::time::{sleep_until, timeout_at};

use super::{BenchStream, ConnError, Ctx, eof, recv_len, to_tokio};
use crate::bench::message::{MessagePattern, Verifier};
use crate::error::Error;

/// How long an open-loop run waits after the end for messages still in flight.
const DRAIN: Duration = Duration::from_secs(2);

/// One echo connection until the clock stops.
pub(super) async fn run(ctx: &Ctx) -> Result<(), ConnError> {
    let (mut stream, permit) = ctx.open().await?;
    ctx.stats.borrow_mut().established += 1;
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    match ctx.config.rate_per_s {
        // One timer for the whole loop, not one per read: the deadline ends it.
        None => {
            let stop = to_tokio(ctx.clock.stop_at);
            // Each stream type its own monomorphised loop: the plain one is
            // the code as it was before TLS.
            let done = match &mut stream {
                BenchStream::Plain(s) => timeout_at(stop, echo_closed(ctx, s, permit)).await,
                #[cfg(feature = "tls")]
                BenchStream::Tls(s) => timeout_at(stop, echo_closed(ctx, &mut **s, permit)).await,
            };
            done.unwrap_or(Ok(()))
        }
        // The first send may be scheduled far ahead: free the gate now.
        Some(rate) => {
            drop(permit);
            match &mut stream {
                BenchStream::Plain(s) => {
                    let (rd, wr) = s.split();
                    echo_open(ctx, rd, wr, rate).await
                }
                #[cfg(feature = "tls")]
                BenchStream::Tls(s) => {
                    let (rd, wr) = tokio::io::split(&mut **s);
                    echo_open(ctx, rd, wr, rate).await
                }
            }
        }
    }
}

/// Closed loop: `pipeline` messages in flight; each echo completed sends the next.
async fn echo_closed<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Ctx,
    stream: &mut S,
    mut permit: Option<SemaphorePermit<'_>>,
) -> Result<(), ConnError> {
    let config = &ctx.config;
    let pattern = MessagePattern::new(ctx.id, config.size_bytes);
    let size = pattern.size();
    let k = config.pipeline;
    // Room for all K messages, so echoes completed by one read are answered
    // with one write(2), not one per message.
    let mut send = pattern.new_buffer().repeat(k);
    let mut verifier = Verifier::new(pattern.clone());
    let mut recv = vec![0u8; recv_len(config)];
    let mut sent_at = vec![Instant::now(); k];
    let mut next_seq = 0u64;
    let mut due = k as u64;
    loop {
        let now = Instant::now();
        for (i, msg) in send.chunks_exact_mut(size).take(due as usize).enumerate() {
            let seq = next_seq + i as u64;
            pattern.set_seq(msg, seq);
            sent_at[(seq % k as u64) as usize] = now;
        }
        stream
            .write_all(&send[..due as usize * size])
            .await
            .map_err(ctx.io(next_seq * size as u64, "write to"))?;
        next_seq += due;
        due = 0;
        while due == 0 {
            let offset = verifier.offset();
            let n = stream
                .read(&mut recv)
                .await
                .map_err(ctx.io(offset, "read from"))?;
            if n == 0 {
                return Err(eof(ctx, offset));
            }
            due = verifier.check(&recv[..n]).map_err(ConnError::Verify)?;
            ctx.verified_bytes.set(verifier.offset());
        }
        // The server has answered: let the next connect of this thread go.
        permit.take();
        let now = Instant::now();
        let first = verifier.messages_done() - due;
        for seq in first..first + due {
            ctx.record(now, now - sent_at[(seq % k as u64) as usize], size);
        }
        if now >= ctx.clock.stop_at {
            return Ok(());
        }
    }
}

/// Send times of one connection in an open loop: connection `id` of `n`
/// sends every `n / rate` seconds, offset by `id / n` of that interval.
pub(super) struct Schedule {
    first: Instant,
    interval_ns: u64,
}

impl Schedule {
    pub(super) fn new(start: Instant, id: u32, connections: usize, rate_per_s: f64) -> Schedule {
        let interval_ns = ((connections as f64 / rate_per_s) * 1e9).max(1.0) as u64;
        let phase = interval_ns * u64::from(id) / connections as u64;
        Schedule {
            first: start + Duration::from_nanos(phase),
            interval_ns,
        }
    }

    pub(super) fn at(&self, seq: u64) -> Instant {
        self.first + Duration::from_nanos(self.interval_ns.saturating_mul(seq))
    }

    /// Messages whose send time falls before `stop`.
    fn count_before(&self, stop: Instant) -> u64 {
        let span = stop.saturating_duration_since(self.first).as_nanos() as u64;
        span.div_ceil(self.interval_ns)
    }
}

/// Open loop (wrk2's method): message `seq` is due at a fixed time whether or
/// not earlier echoes came back, and its latency counts from that time, so a
/// stalled server is charged for every message it delayed (no coordinated
/// omission). Writer and reader run side by side on the split stream.
async fn echo_open<R, W>(ctx: &Ctx, mut rd: R, mut wr: W, rate_per_s: f64) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let config = &ctx.config;
    let pattern = MessagePattern::new(ctx.id, config.size_bytes);
    let size = pattern.size();
    let schedule = Schedule::new(ctx.clock.start, ctx.id, config.connections, rate_per_s);
    let total = schedule.count_before(ctx.clock.stop_at);
    let writer = async {
        let mut send = pattern.new_buffer();
        for seq in 0..total {
            sleep_until(to_tokio(schedule.at(seq))).await;
            pattern.set_seq(&mut send, seq);
            wr.write_all(&send)
                .await
                .map_err(ctx.io(seq * size as u64, "write to"))?;
            // Counted when made, not when due: a writer behind its
            // schedule makes fewer sends in the window than it owes.
            if ctx.clock.in_window(Instant::now()) {
                ctx.stats.borrow_mut().sends_in_window += 1;
            }
        }
        Ok::<(), ConnError>(())
    };
    let mut verifier = Verifier::new(pattern.clone());
    let reader = async {
        let mut recv = vec![0u8; recv_len(config)];
        while verifier.messages_done() < total {
            let offset = verifier.offset();
            let n = rd
                .read(&mut recv)
                .await
                .map_err(ctx.io(offset, "read from"))?;
            if n == 0 {
                return Err(eof(ctx, offset));
            }
            let done = verifier.check(&recv[..n]).map_err(ConnError::Verify)?;
            ctx.verified_bytes.set(verifier.offset());
            let now = Instant::now();
            let first = verifier.messages_done() - done;
            for seq in first..first + done {
                let due = schedule.at(seq);
                ctx.record(due, now.saturating_duration_since(due), size);
            }
        }
        Ok(())
    };
    let deadline = to_tokio(ctx.clock.stop_at + DRAIN);
    match timeout_at(deadline, async { tokio::try_join!(writer, reader) }).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => {
            let missing = total - verifier.messages_done();
            Err(ConnError::Io {
                offset: verifier.offset(),
                err: Error::timed_out(
                    format_args!("{missing} messages not echoed by {}", config.target),
                    DRAIN,
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn open_loop_schedule_spreads_connections_and_counts_sends() {
        let t0 = Instant::now();
        // 4 connections at 1,000/s in total: each every 4 ms, offset by 1 ms.
        let s1 = Schedule::new(t0, 1, 4, 1000.0);
        assert_eq!(s1.at(0) - t0, Duration::from_millis(1));
        assert_eq!(s1.at(2) - t0, Duration::from_millis(9));
        // Sends at 1, 5, 9 ms fall before 10 ms; 13 ms does not.
        assert_eq!(s1.count_before(t0 + Duration::from_millis(10)), 3);
        let s0 = Schedule::new(t0, 0, 4, 1000.0);
        assert_eq!(s0.count_before(t0 + Duration::from_secs(1)), 250);
    }
}
