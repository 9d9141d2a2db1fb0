//! The load generator: workers that verify every echoed byte, HDR histograms
//! and reports.
//!
//! [`run`] starts `threads` OS threads, each a current-thread tokio runtime
//! with one task per connection (the private `worker` module), waits out the
//! warm-up, samples the server's and its own CPU time ([`proc`]) around the
//! measured window,
//! and merges the per-thread [`histogram`]s into a [`BenchReport`]
//! ([`report`]). Every echoed byte is checked against the [`message`] format;
//! `plot` (feature `plot`) draws the latency distribution. [`chat`] is the
//! chat fan-out workload (`tcpkit bench --mode chat`), with its own runner
//! and report: rooms of clients that say stamped lines, every receiver
//! verifying its room's.

pub mod chat;
pub mod histogram;
pub mod message;
#[cfg(feature = "plot")]
pub mod plot;
// Hidden, not private: the `tcpkit` binary (a separate crate) pins CPUs,
// raises the descriptor limit and samples a server's CPU with these, but
// they are Linux `/proc` plumbing, not an API to promise library users.
#[doc(hidden)]
pub mod proc;
mod progress;
pub mod report;
// Hidden for the same reason: starts `tcpkit serve` as a child process for
// `tcpkit bench --server`, which only the binary does.
#[doc(hidden)]
pub mod server;
mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use histogram::{LatencyHistogram, LatencySummary};
pub use progress::Tick;
pub use report::BenchReport;
pub use report::BrokenConnection;
pub use worker::{MAX_BROKEN_LISTED, MAX_ERROR_SAMPLES};

use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result, code};

/// What the load generator does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Echo round trips, closed loop (`pipeline` in flight) or open loop
    /// (`rate_per_s`); every byte verified.
    Echo,
    /// Connect, write one message, read its echo, close, repeatedly.
    Connect,
    /// Open connections, echo one byte each, hold them idle.
    Idle,
    /// One-way bulk writes (to a discard server).
    Throughput,
}

impl Mode {
    /// The mode's name as in `--mode`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Connect => "connect",
            Mode::Idle => "idle",
            Mode::Throughput => "throughput",
        }
    }

    /// What one counted message is, plural, as the report's rates say it:
    /// `msgs` (echo), `conns` (connect, and idle's one-byte probe per
    /// connection) or `writes` (throughput).
    pub fn unit(self) -> &'static str {
        match self {
            Mode::Echo => "msgs",
            Mode::Connect | Mode::Idle => "conns",
            Mode::Throughput => "writes",
        }
    }

    fn latency_of(self) -> &'static str {
        match self {
            Mode::Echo | Mode::Idle => "round trip",
            Mode::Connect => "connect",
            Mode::Throughput => "write",
        }
    }
}

/// A validated description of one run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server to load.
    pub target: Endpoint,
    /// The workload.
    pub mode: Mode,
    /// Connections (concurrent slots in `connect` mode).
    pub connections: usize,
    /// Message size in bytes (at least [`message::MIN_MESSAGE_BYTES`] for
    /// `echo` and `connect`).
    pub size_bytes: usize,
    /// Messages in flight per connection in a closed loop.
    pub pipeline: usize,
    /// Open loop: total messages (or connections) per second.
    pub rate_per_s: Option<f64>,
    /// The measured window.
    pub duration: Duration,
    /// Load before the window, not counted.
    pub warmup: Duration,
    /// Load-generator threads (each a current-thread runtime).
    pub threads: usize,
    /// Deadline for each `connect(2)`.
    pub connect_timeout: Duration,
    /// The server's PID, to read its CPU time and RSS from `/proc`.
    pub server_pid: Option<u32>,
    /// Echo mode: extra connections opened before the warm-up, each echoing
    /// one byte (verified) and then held silent until the run ends; not
    /// counted as messages (issue 6's "10,000 connections, 1 % active").
    pub idle_connections: usize,
    /// Every connection first sends a PROXY protocol header with its own
    /// source and destination (before TLS), for a server behind which no
    /// balancer stands (`serve --proxy-protocol`).
    pub send_proxy: Option<crate::proxy::Version>,
    /// TLS over every connection: the handshake right after the connect
    /// (sessions resumed if the connector resumes), the workload on the
    /// decrypted stream; handshakes counted and timed in the report.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConnector>,
}

/// Bytes each connection echoes in idle mode (and each of echo mode's
/// `idle_connections`), whatever the message size.
pub const IDLE_PROBE_BYTES: usize = 1;

/// The most bytes in flight per connection in a closed loop: beyond the
/// socket buffers, writing before reading would deadlock with the server.
pub const MAX_IN_FLIGHT_BYTES: usize = 1 << 20;

impl BenchConfig {
    /// Whether connections speak TLS.
    pub fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Defaults of `tcpkit bench`: echo, 50 connections × 64 B, pipeline 1,
    /// 10 s after 1 s of warm-up, one thread.
    pub fn new(target: Endpoint) -> BenchConfig {
        BenchConfig {
            target,
            mode: Mode::Echo,
            connections: 50,
            size_bytes: 64,
            pipeline: 1,
            rate_per_s: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            threads: 1,
            connect_timeout: Duration::from_secs(5),
            server_pid: None,
            idle_connections: 0,
            send_proxy: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Checks ranges; the error names the offending value.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                code::INVALID_CONFIG,
                msg,
            ))
        };
        if self.connections == 0 || self.connections > u32::MAX as usize {
            return bad(format!(
                "connections {} must be 1..=2^32-1",
                self.connections
            ));
        }
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        let min = match self.mode {
            Mode::Echo | Mode::Connect => message::MIN_MESSAGE_BYTES,
            Mode::Idle | Mode::Throughput => 1,
        };
        if self.size_bytes > u32::MAX as usize {
            // The header's size field is a u32.
            return bad(format!(
                "size {} B is above the {} B maximum (the message header's size field is 32 bits)",
                self.size_bytes,
                u32::MAX
            ));
        }
        if self.size_bytes < min {
            return bad(format!(
                "size {} B is below the {min} B minimum of {} mode (a {}-byte header with connection id and sequence number)",
                self.size_bytes,
                self.mode.name(),
                message::HEADER_BYTES
            ));
        }
        if self.pipeline == 0 || self.pipeline.saturating_mul(self.size_bytes) > MAX_IN_FLIGHT_BYTES
        {
            return bad(format!(
                "pipeline {} × size {} B must be 1..={MAX_IN_FLIGHT_BYTES} bytes in flight",
                self.pipeline, self.size_bytes
            ));
        }
        if let Some(rate) = self.rate_per_s {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(format!("rate {rate} must be a positive number per second"));
            }
            if !matches!(self.mode, Mode::Echo | Mode::Connect) {
                return bad(format!(
                    "--rate applies to echo and connect modes, not {}",
                    self.mode.name()
                ));
            }
        }
        if self.idle_connections > 0 {
            if self.mode != Mode::Echo {
                return bad(format!(
                    "--idle-connections applies to echo mode, not {}",
                    self.mode.name()
                ));
            }
            if self.connections.saturating_add(self.idle_connections) > u32::MAX as usize {
                return bad(format!(
                    "connections {} + idle connections {} must be at most 2^32-1",
                    self.connections, self.idle_connections
                ));
            }
        }
        if self.duration.is_zero() {
            return bad("duration must be more than 0".into());
        }
        Ok(())
    }
}

/// Runs the benchmark described by `config`, calling `on_tick` from the
/// calling thread during the run. Errors are configuration or thread-start
/// failures; connection errors and verification failures are counted in the
/// report (see [`BenchReport::verification_failures`]).
pub fn run(config: &BenchConfig, mut on_tick: impl FnMut(Tick)) -> Result<BenchReport> {
    config.validate()?;
    let config = Arc::new(config.clone());
    let rss_before = match (config.mode, config.server_pid) {
        (Mode::Idle, Some(pid)) => Some(proc::sample(pid)?.rss_kib),
        _ => None,
    };
    // Idle connections first, so the warm-up and the window see all of them.
    let (held, idle_stats) = if config.idle_connections > 0 {
        crate::net::raise_open_file_limit();
        worker::open_idle(&config)?
    } else {
        (Vec::new(), worker::ThreadStats::default())
    };
    let start = Instant::now();
    let clock = worker::Clock {
        start,
        measure_from: start + config.warmup,
        stop_at: start + config.warmup + config.duration,
    };
    let live = Arc::new(worker::Live::default());
    let threads = config.threads.min(config.connections);
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let ids: Vec<u32> = (t..config.connections)
            .step_by(threads)
            .map(|i| i as u32)
            .collect();
        let (config, live) = (config.clone(), live.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || worker::run_thread(config, clock, ids, live))
            .map_err(|e| Error::io(e, "start a bench thread"))?;
        handles.push(handle);
    }

    let mut ticker = progress::Ticker::new(start, config.warmup, config.duration, &live);
    ticker.wait_until(clock.measure_from, &mut on_tick);
    let before = Window::sample(config.server_pid);
    let mut rss_holding = None;
    if config.mode == Mode::Idle {
        // RSS once every connection has opened (or failed), not before.
        while live.opened_or_failed.load(Relaxed) < config.connections as u64
            && Instant::now() < clock.stop_at
        {
            ticker.wait_until(Instant::now() + Duration::from_millis(20), &mut on_tick);
        }
        std::thread::sleep(Duration::from_millis(100));
        rss_holding = config
            .server_pid
            .and_then(|pid| proc::sample(pid).ok())
            .map(|s| s.rss_kib);
    }
    ticker.wait_until(clock.stop_at, &mut on_tick);
    let after = Window::sample(config.server_pid);

    let mut total = worker::ThreadStats::default();
    for handle in handles {
        let stats = handle
            .join()
            .map_err(|_| Error::new(ErrorKind::Io, libc::EIO, "a bench thread panicked"))??;
        merge(&mut total, stats);
    }
    // Held silent until every active connection finished.
    drop(held);
    total.idle_established = idle_stats.established;
    total.idle_connect_failures = idle_stats.connect_failures;
    // Their echo errors and mismatches count like any other connection's.
    merge(
        &mut total,
        worker::ThreadStats {
            established: 0,
            connect_failures: 0,
            ..idle_stats
        },
    );
    Ok(build_report(
        &config,
        threads,
        total,
        &before,
        &after,
        rss_before,
        rss_holding,
    ))
}

fn merge(total: &mut worker::ThreadStats, s: worker::ThreadStats) {
    total.histogram.merge(&s.histogram);
    total.messages += s.messages;
    total.bytes += s.bytes;
    total.sends_in_window += s.sends_in_window;
    total.established += s.established;
    total.connect_failures += s.connect_failures;
    total.errors += s.errors;
    total.resets += s.resets;
    total.verification_failures += s.verification_failures;
    for e in s.error_samples {
        if total.error_samples.len() < MAX_ERROR_SAMPLES {
            total.error_samples.push(e);
        }
    }
    total.broken += s.broken;
    let room = MAX_BROKEN_LISTED.saturating_sub(total.broken_list.len());
    total
        .broken_list
        .extend(s.broken_list.into_iter().take(room));
    if total.first_mismatch.is_none() {
        total.first_mismatch = s.first_mismatch;
    }
    if total.first_connect_error.is_none() {
        total.first_connect_error = s.first_connect_error;
    }
    total.handshakes += s.handshakes;
    total.resumed_handshakes += s.resumed_handshakes;
    total.handshake_histogram.merge(&s.handshake_histogram);
}

/// CPU and RSS at one edge of the measured window.
struct Window {
    at: Instant,
    client_cpu: Duration,
    /// `None` without a server PID; the error says why it was not read.
    server: Option<Result<proc::ProcSample>>,
}

impl Window {
    fn sample(server_pid: Option<u32>) -> Window {
        Window {
            at: Instant::now(),
            client_cpu: proc::self_cpu(),
            server: server_pid.map(proc::sample),
        }
    }

    fn server(&self) -> Option<&proc::ProcSample> {
        self.server.as_ref().and_then(|s| s.as_ref().ok())
    }
}

/// Why the server's CPU is missing or may be short: a sample that failed,
/// or no CPU at all counted for a window that moved messages (the work ran
/// outside the PID's process tree, or took less than one clock tick).
fn server_note(before: &Window, after: &Window, messages: u64) -> Option<String> {
    let (Some(b), Some(a)) = (&before.server, &after.server) else {
        return None;
    };
    let (b, a) = match (b, a) {
        (Err(e), _) | (_, Err(e)) => return Some(format!("server CPU and RSS not measured: {e}")),
        (Ok(b), Ok(a)) => (b, a),
    };
    if messages > 0 && a.cpu <= b.cpu {
        return Some(format!(
            "no server CPU counted in {} process(es) (the PID and its descendants): \
             the work took less than one {} ms clock tick, or ran in processes outside that tree",
            a.processes.max(b.processes),
            proc::clock_tick().as_millis()
        ));
    }
    None
}

fn build_report(
    config: &BenchConfig,
    threads: usize,
    total: worker::ThreadStats,
    before: &Window,
    after: &Window,
    rss_before: Option<u64>,
    rss_holding: Option<u64>,
) -> BenchReport {
    let secs = config.duration.as_secs_f64();
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let per_msg = |cpu: Duration| {
        if total.messages == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / total.messages as f64
        }
    };
    let server_cpu = match (before.server(), after.server()) {
        (Some(b), Some(a)) => Some(a.cpu.saturating_sub(b.cpu)),
        _ => None,
    };
    let client_cpu = after.client_cpu.saturating_sub(before.client_cpu);
    let tls = config.tls_enabled();
    // Handshakes per second and server CPU per handshake mean something in
    // connect mode only, where every counted connection made one.
    let per_handshake = tls && config.mode == Mode::Connect;
    let handshakes_per_s = per_handshake.then(|| total.handshakes as f64 / secs);
    let server_cpu_us_per_handshake = match server_cpu {
        Some(cpu) if per_handshake && total.handshakes > 0 => {
            Some(cpu.as_secs_f64() * 1e6 / total.handshakes as f64)
        }
        _ => None,
    };
    let rss_per_conn = match (rss_before, rss_holding) {
        (Some(b), Some(h)) if total.established > 0 => {
            Some((h as f64 - b as f64) / total.established as f64)
        }
        _ => None,
    };
    BenchReport {
        mode: config.mode,
        target: config.target.to_string(),
        connections: config.connections,
        size_bytes: match config.mode {
            Mode::Idle => IDLE_PROBE_BYTES,
            _ => config.size_bytes,
        },
        pipeline: config.pipeline,
        rate_per_s: config.rate_per_s,
        sends_in_window: (config.mode == Mode::Echo && config.rate_per_s.is_some())
            .then_some(total.sends_in_window),
        threads,
        warmup: config.warmup,
        duration: config.duration,
        messages: total.messages,
        bytes: total.bytes,
        msgs_per_s: total.messages as f64 / secs,
        mb_per_s: total.bytes as f64 / secs / 1e6,
        latency_of: match (config.mode, tls) {
            (Mode::Connect, true) => "connect + TLS handshake",
            (mode, _) => mode.latency_of(),
        },
        latency_us: total.histogram.summary(),
        connections_established: total.established,
        connect_failures: total.connect_failures,
        errors: total.errors,
        connection_resets: total.resets,
        verification_failures: total.verification_failures,
        error_samples: total.error_samples,
        first_verification_failure: total.first_mismatch,
        broken_connections: total.broken,
        broken: total.broken_list,
        server_pid: config.server_pid,
        server_cpu_us_per_msg: server_cpu.map(per_msg),
        server_cpu_pct: server_cpu.map(|c| c.as_secs_f64() / wall * 100.0),
        server_rss_kib: after.server().map(|s| s.rss_kib),
        // A forking server's children may be gone by the window's end
        // (they exit as the bench closes its connections).
        server_processes: after.server().map(|a| {
            before
                .server()
                .map_or(a.processes, |b| b.processes.max(a.processes))
        }),
        server_note: server_note(before, after, total.messages),
        server_rss_per_conn_kib: rss_per_conn,
        client_cpu_us_per_msg: per_msg(client_cpu),
        client_cpu_pct: client_cpu.as_secs_f64() / wall * 100.0,
        histogram: total.histogram,
        first_connect_error: total.first_connect_error,
        idle_connections: config.idle_connections,
        idle_connections_established: total.idle_established,
        idle_connect_failures: total.idle_connect_failures,
        tls,
        handshakes: total.handshakes,
        resumed_handshakes: total.resumed_handshakes,
        handshakes_per_s,
        handshake_latency_us: tls.then(|| total.handshake_histogram.summary()),
        server_cpu_us_per_handshake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_errors_say_which_bound() {
        let mut config = BenchConfig::new(Endpoint::loopback_v4(1));
        config.size_bytes = 4;
        let err = config.validate().expect_err("too small");
        assert!(err.message().contains("below the 16 B minimum"), "{err}");
        config.size_bytes = u32::MAX as usize + 1;
        let err = config.validate().expect_err("too large");
        assert!(err.message().contains("above the"), "{err}");
    }

    fn window(server: Option<Result<proc::ProcSample>>) -> Window {
        Window {
            at: Instant::now(),
            client_cpu: Duration::ZERO,
            server,
        }
    }

    fn at(cpu_ms: u64, processes: u32) -> Option<Result<proc::ProcSample>> {
        Some(Ok(proc::ProcSample {
            cpu: Duration::from_millis(cpu_ms),
            rss_kib: 1024,
            processes,
        }))
    }

    #[test]
    fn the_report_says_why_server_cpu_is_missing_or_zero() {
        // Measured: nothing to say.
        assert_eq!(
            server_note(&window(at(10, 1)), &window(at(30, 3)), 100),
            None
        );
        // No server PID: no server line at all.
        assert_eq!(server_note(&window(None), &window(None), 100), None);
        // Messages moved, no CPU counted: say so, and where it may be.
        let note = server_note(&window(at(10, 1)), &window(at(10, 1)), 100).unwrap();
        assert!(
            note.contains("no server CPU counted in 1 process"),
            "{note}"
        );
        assert!(note.contains("outside that tree"), "{note}");
        // No messages, no CPU: nothing was owed.
        assert_eq!(server_note(&window(at(10, 1)), &window(at(10, 1)), 0), None);
        // A sample that failed: its error, not silence.
        let gone = Error::new(ErrorKind::Io, libc::ENOENT, "read /proc/42/stat");
        let note = server_note(&window(at(10, 1)), &window(Some(Err(gone))), 100).unwrap();
        assert!(
            note.contains("not measured") && note.contains("/proc/42/stat"),
            "{note}"
        );
    }
}
