//! Workloads that open connections rather than stream on them: connect
//! churn, idle connections, and one-way bulk.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout_at};

use super::echo::Schedule;
use super::{BenchStream, ConnError, Ctx, to_tokio};
use crate::bench::IDLE_PROBE_BYTES;
use crate::bench::message::{MessagePattern, Mismatch, Verifier};
use crate::error::Error;

/// Connection churn: connect, write one message, read its echo, close;
/// latency is the connect alone, from the intended start in an open loop.
pub(super) async fn connect_loop(ctx: &Ctx) -> Result<(), ConnError> {
    let config = &ctx.config;
    let pattern = MessagePattern::new(ctx.id, config.size_bytes);
    let send = pattern.new_buffer();
    let mut recv = vec![0u8; pattern.size()];
    let schedule = config
        .rate_per_s
        .map(|r| Schedule::new(ctx.clock.start, ctx.id, config.connections, r));
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    let mut verifier = Verifier::new(pattern.clone());
    let mut iteration = 0u64;
    loop {
        let started = match &schedule {
            Some(s) => {
                let due = s.at(iteration);
                if due >= ctx.clock.stop_at {
                    return Ok(());
                }
                sleep_until(to_tokio(due)).await;
                due
            }
            None => Instant::now(),
        };
        if Instant::now() >= ctx.clock.stop_at {
            return Ok(());
        }
        iteration += 1;
        verifier.reset();
        match connect_once(ctx, &send, &mut recv, &mut verifier).await {
            Ok(connected) => {
                ctx.record(started, connected - started, send.len());
                if ctx.clock.in_window(started) {
                    ctx.stats.borrow_mut().established += 1;
                }
            }
            Err(e @ ConnError::Verify(_)) => return Err(e),
            Err(e) => {
                ctx.fail(e);
                // Back off so a refused port does not spin a core.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connect / write / read echo / close; returns when the connect completed.
async fn connect_once(
    ctx: &Ctx,
    send: &[u8],
    recv: &mut [u8],
    verifier: &mut Verifier,
) -> Result<Instant, ConnError> {
    // The permit is held through the echo (see `Ctx::open`).
    let (mut stream, _permit) = ctx.open().await?;
    let connected = Instant::now();
    stream
        .write_all(send)
        .await
        .map_err(ctx.io(0, "write to"))?;
    stream
        .read_exact(recv)
        .await
        .map_err(ctx.io(0, "read from"))?;
    verifier.check(recv).map_err(ConnError::Verify)?;
    stream.close().await;
    Ok(connected)
}

/// Open a connection, echo one byte, then hold it until the end.
pub(super) async fn idle(ctx: &Ctx) -> Result<(), ConnError> {
    let deadline = to_tokio(ctx.clock.stop_at);
    let echoed = match timeout_at(deadline, idle_open(ctx)).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::Connect(Error::timed_out(
            format_args!("open and echo one byte to {}", ctx.config.target),
            ctx.clock.stop_at - ctx.clock.start,
        ))),
    };
    // Counted only once the echo is back, so the orchestrator samples the
    // server's RSS after it has served every connection.
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    // Held as TCP only: the client's TLS state is not what is measured.
    let _stream = echoed?.into_tcp();
    sleep_until(to_tokio(ctx.clock.stop_at)).await;
    Ok(())
}

/// Connects and echoes one byte, counted as one message (idle mode).
async fn idle_open(ctx: &Ctx) -> Result<BenchStream, ConnError> {
    let (stream, rtt) = echo_one_byte(ctx).await?;
    {
        let mut s = ctx.stats.borrow_mut();
        s.histogram.record(rtt);
        s.established += 1;
        s.messages += 1;
        s.bytes += IDLE_PROBE_BYTES as u64;
    }
    ctx.live.messages.fetch_add(1, Relaxed);
    Ok(stream)
}

/// Connects and echoes one byte (the connection id's low byte), verified;
/// returns the stream and the byte's round trip. Nothing is counted here.
pub(super) async fn echo_one_byte(ctx: &Ctx) -> Result<(BenchStream, Duration), ConnError> {
    // The permit is held through the echo (see `Ctx::open`).
    let (mut stream, _permit) = ctx.open().await?;
    let byte = [ctx.id as u8; IDLE_PROBE_BYTES];
    let t0 = Instant::now();
    stream
        .write_all(&byte)
        .await
        .map_err(ctx.io(0, "write to"))?;
    let mut got = [0u8; IDLE_PROBE_BYTES];
    stream
        .read_exact(&mut got)
        .await
        .map_err(ctx.io(0, "read from"))?;
    if got != byte {
        return Err(ConnError::Verify(Mismatch {
            conn_id: ctx.id,
            offset: 0,
            seq: 0,
            byte_in_message: 0,
            expected: byte[0],
            got: got[0],
        }));
    }
    Ok((stream, t0.elapsed()))
}

/// One-way bulk: write `size`-byte chunks as fast as the socket takes them
/// (latency is per write), discarding anything that comes back so an echo
/// server works too.
pub(super) async fn throughput(ctx: &Ctx) -> Result<(), ConnError> {
    // Nothing comes back from a discard server to wait for.
    let (mut stream, _) = ctx.open().await?;
    ctx.stats.borrow_mut().established += 1;
    ctx.live.opened_or_failed.fetch_add(1, Relaxed);
    match &mut stream {
        BenchStream::Plain(s) => {
            let (rd, wr) = s.split();
            bulk(ctx, rd, wr).await
        }
        #[cfg(feature = "tls")]
        BenchStream::Tls(s) => {
            let (rd, wr) = tokio::io::split(&mut **s);
            bulk(ctx, rd, wr).await
        }
    }
}

async fn bulk<R, W>(ctx: &Ctx, mut rd: R, mut wr: W) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let pattern = MessagePattern::new(ctx.id, ctx.config.size_bytes);
    let send = pattern.new_buffer();
    let writer = async {
        let mut offset = 0u64;
        loop {
            let t0 = Instant::now();
            wr.write_all(&send)
                .await
                .map_err(ctx.io(offset, "write to"))?;
            let now = Instant::now();
            ctx.record(now, now - t0, send.len());
            offset += send.len() as u64;
        }
    };
    let reader = async {
        let mut sink = vec![0u8; 65536];
        loop {
            match rd.read(&mut sink).await {
                Ok(0) => return Ok::<(), ConnError>(()),
                Ok(_) => {}
                Err(e) => return Err(ctx.io(0, "read from")(e)),
            }
        }
    };
    let both = async {
        tokio::select! {
            r = writer => r,
            r = reader => r,
        }
    };
    match timeout_at(to_tokio(ctx.clock.stop_at), both).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}
