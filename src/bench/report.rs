//! The result of a run: one serializable [`BenchReport`] (the `--json`
//! object) and its human table.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::Mode;
use super::histogram::{LatencyHistogram, LatencySummary};
use crate::error::ErrorKind;

/// Everything a run measured. Absent values (no server PID, idle mode's RSS
/// per connection in other modes) serialize as `null`, so every field is
/// always present in `--json` output.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Workload: `echo`, `connect`, `idle` or `throughput`.
    pub mode: Mode,
    /// The server endpoint.
    pub target: String,
    /// Connections (concurrent slots in `connect` mode).
    pub connections: usize,
    /// Message size in bytes (idle mode: its one-byte probe).
    pub size_bytes: usize,
    /// Messages in flight per connection (closed loop).
    pub pipeline: usize,
    /// Open-loop target rate in messages (or connections) per second.
    pub rate_per_s: Option<f64>,
    /// Open-loop echo: messages actually written in the window (`messages`
    /// counts echoes by their scheduled time, so only this shows a sender
    /// that fell behind its rate).
    pub sends_in_window: Option<u64>,
    /// Load-generator threads.
    pub threads: usize,
    /// Warm-up, not counted.
    #[serde(rename = "warmup_s", serialize_with = "secs")]
    pub warmup: Duration,
    /// The measured window.
    #[serde(rename = "duration_s", serialize_with = "secs")]
    pub duration: Duration,
    /// Messages (connections in `connect` mode, writes in `throughput`)
    /// completed in the window.
    pub messages: u64,
    /// Payload bytes of those messages (one direction).
    pub bytes: u64,
    /// `messages / duration`.
    pub msgs_per_s: f64,
    /// `bytes / duration` in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// What the latency measures: `round trip`, `connect` or `write`.
    pub latency_of: &'static str,
    /// Latency percentiles in microseconds.
    pub latency_us: LatencySummary,
    /// Connections that opened.
    pub connections_established: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Connections that stopped on an error (including verification).
    pub errors: u64,
    /// Of `errors`: connections reset by the peer after they connected
    /// (`ECONNRESET`, `EPIPE`, `ECONNABORTED`), apart from connects that failed.
    pub connection_resets: u64,
    /// Connections whose echo differed from what was sent.
    pub verification_failures: u64,
    /// The first few errors, naming connection and offset.
    pub error_samples: Vec<String>,
    /// The first verification failure, naming connection and offset.
    pub first_verification_failure: Option<String>,
    /// Connections that broke after they opened: reset, closed or timed
    /// out mid-stream (the other connections run on; a verification
    /// failure is counted apart).
    pub broken_connections: u64,
    /// Each of them (the first [`MAX_BROKEN_LISTED`]), with the local
    /// address a balancer in between passes on as the client's.
    ///
    /// [`MAX_BROKEN_LISTED`]: super::MAX_BROKEN_LISTED
    pub broken: Vec<BrokenConnection>,
    /// The server's PID when known (embedded server or `--server-pid`).
    pub server_pid: Option<u32>,
    /// Server user+system CPU over the window ÷ messages, in µs: the PID,
    /// its descendants and the children they reaped (see
    /// [`proc::ProcSample`](super::proc::ProcSample)).
    pub server_cpu_us_per_msg: Option<f64>,
    /// Server CPU busy over the window, percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server resident set size at the end of the window, KiB, summed over
    /// its processes.
    pub server_rss_kib: Option<u64>,
    /// Processes counted for the server: the PID and its live descendants,
    /// the more of the window's two edges (more than 1 for a forking
    /// server).
    pub server_processes: Option<u32>,
    /// Why the server's CPU is missing or may be short, when it is.
    pub server_note: Option<String>,
    /// Idle mode: (RSS while holding − RSS before) ÷ connections, KiB.
    pub server_rss_per_conn_kib: Option<f64>,
    /// The load generator's own CPU over the window ÷ messages, in µs.
    pub client_cpu_us_per_msg: f64,
    /// The load generator's CPU busy, percent of one core.
    pub client_cpu_pct: f64,
    /// The merged latency histogram (for `--histogram` and `--plot`).
    #[serde(skip)]
    pub histogram: LatencyHistogram,
    /// Kind and code of the first failed connect (for the exit status).
    #[serde(skip)]
    pub first_connect_error: Option<(ErrorKind, i32)>,
    /// Echo mode: extra connections requested, held silent through the run.
    pub idle_connections: usize,
    /// Of those, how many opened and echoed their byte.
    pub idle_connections_established: u64,
    /// Of those, how many failed to connect (or to echo in time).
    pub idle_connect_failures: u64,
    /// Whether the connections spoke TLS.
    pub tls: bool,
    /// TLS handshakes counted: in connect mode those started in the
    /// window, in the other modes all of them (made once per connection,
    /// mostly before the window).
    pub handshakes: u64,
    /// Of those, how many resumed a session instead of a full handshake.
    pub resumed_handshakes: u64,
    /// Connect mode over TLS: `handshakes / duration`.
    pub handshakes_per_s: Option<f64>,
    /// TLS: handshake latency percentiles in µs (from the TCP connect's
    /// completion to the handshake's).
    pub handshake_latency_us: Option<LatencySummary>,
    /// Connect mode over TLS: server CPU over the window ÷ handshakes, µs
    /// (each with its connection's accept, one echo and close).
    pub server_cpu_us_per_handshake: Option<f64>,
}

/// One connection that broke mid-run, as `--json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenConnection {
    /// The bench's connection id (also in each message's header).
    pub id: u32,
    /// Its local address (`getsockname(2)`), when the connect got that far.
    pub local: Option<std::net::SocketAddr>,
    /// Bytes echoed and verified on it before it broke.
    pub verified_bytes: u64,
    /// What broke it, naming the target.
    pub error: String,
    /// The error's code (an errno, or a tcpkit code such as
    /// `UNEXPECTED_EOF`).
    pub code: i32,
}

/// How many broken connections the table names (`--json` lists them all).
const BROKEN_IN_TABLE: usize = 5;

pub(super) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl BenchReport {
    /// The human table printed by default.
    pub fn render_table(&self) -> String {
        let mut rows: Vec<(&str, String)> = Vec::new();
        let rate = match self.rate_per_s {
            Some(r) => format!(", open loop at {} /s", thousands(r)),
            None if self.mode == Mode::Echo => format!(", closed loop, pipeline {}", self.pipeline),
            None => String::new(),
        };
        let workload = if self.mode == Mode::Idle {
            // --size does not apply: each connection echoes one byte.
            format!(
                "idle {} × {} conns, each echoes {} B once, then is held silent",
                self.target,
                self.connections,
                super::IDLE_PROBE_BYTES
            )
        } else {
            format!(
                "{} {} × {} conns × {} B{rate}",
                self.mode.name(),
                self.target,
                self.connections,
                self.size_bytes
            )
        };
        rows.push(("workload", workload));
        rows.push((
            "window",
            format!(
                "{:.1} s after {:.1} s warm-up, {} threads",
                self.duration.as_secs_f64(),
                self.warmup.as_secs_f64(),
                self.threads
            ),
        ));
        let unit = self.mode.unit();
        let throughput = if self.mode == Mode::Idle {
            format!(
                "{} connections held {:.1} s",
                self.connections_established,
                self.duration.as_secs_f64()
            )
        } else {
            format!(
                "{} {unit}/s, {:.1} MB/s ({} {unit})",
                thousands(self.msgs_per_s),
                self.mb_per_s,
                self.messages
            )
        };
        rows.push(("throughput", throughput));
        let l = &self.latency_us;
        rows.push((
            "latency µs",
            format!(
                "{}: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                self.latency_of, l.p50, l.p90, l.p99, l.p999, l.max
            ),
        ));
        if let Some(h) = &self.handshake_latency_us {
            let rate = self
                .handshakes_per_s
                .map_or_else(String::new, |r| format!(", {} /s", thousands(r)));
            rows.push((
                "TLS handshakes",
                format!(
                    "{} ({} resumed){rate}",
                    self.handshakes, self.resumed_handshakes
                ),
            ));
            rows.push((
                "handshake µs",
                format!(
                    "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
                    h.p50, h.p90, h.p99, h.max
                ),
            ));
        }
        rows.push((
            "connections",
            format!(
                "{} established, {} connect failures",
                self.connections_established, self.connect_failures
            ),
        ));
        if self.idle_connections > 0 {
            rows.push((
                "idle conns",
                format!(
                    "{} of {} held silent, {} connect failures",
                    self.idle_connections_established,
                    self.idle_connections,
                    self.idle_connect_failures
                ),
            ));
        }
        rows.push((
            "errors",
            format!(
                "{} ({} verification{})",
                self.errors,
                self.verification_failures,
                match self.connection_resets {
                    0 => String::new(),
                    n => format!(", {n} resets"),
                }
            ),
        ));
        for e in &self.error_samples {
            rows.push(("", e.clone()));
        }
        if self.broken_connections > 0 {
            let mut named: Vec<String> = self
                .broken
                .iter()
                .take(BROKEN_IN_TABLE)
                .map(|b| match b.local {
                    Some(local) => format!("{} from {local}", b.id),
                    None => b.id.to_string(),
                })
                .collect();
            if self.broken_connections > named.len() as u64 {
                named.push("...".into());
            }
            rows.push((
                "broken",
                format!("{}: {}", self.broken_connections, named.join(", ")),
            ));
        }
        if let Some(pid) = self.server_pid {
            rows.push(("server", self.server_line(pid)));
            if let Some(kib) = self.server_rss_per_conn_kib {
                rows.push(("server RSS/conn", format!("{kib:.2} KiB")));
            }
            let cpu = match (self.server_cpu_us_per_msg, self.server_cpu_pct) {
                (Some(us), Some(pct)) => self.cpu_cell(us, pct),
                _ => "not measured".to_owned(),
            };
            rows.push(("server CPU", cpu));
            if let Some(us) = self.server_cpu_us_per_handshake {
                rows.push(("server CPU/hs", format!("{us:.2} µs/handshake")));
            }
            if let Some(note) = &self.server_note {
                rows.push(("", note.clone()));
            }
        }
        rows.push((
            "client CPU",
            self.cpu_cell(self.client_cpu_us_per_msg, self.client_cpu_pct),
        ));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let pad = width - k.chars().count();
            let _ = writeln!(out, "{k}{:pad$}  {v}", "");
        }
        out
    }

    /// The PID (and how many processes were counted with it) and RSS.
    fn server_line(&self, pid: u32) -> String {
        let mut line = match self.server_processes {
            Some(n) if n > 1 => format!("pid {pid} and {} descendants", n - 1),
            _ => format!("pid {pid}"),
        };
        if let Some(kib) = self.server_rss_kib {
            let _ = write!(line, ", RSS {kib} KiB");
        }
        line
    }

    /// CPU per counted message and busy share, one format for the server
    /// and client rows so they compare at a glance.
    fn cpu_cell(&self, us_per_msg: f64, busy_pct: f64) -> String {
        let unit = self.mode.unit().trim_end_matches('s');
        format!("{us_per_msg:.2} µs/{unit}, {busy_pct:.0}% busy")
    }
}

/// `1234567.8` → `"1,234,568"`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report built on a fixed histogram: 1..=1000 µs, one value each.
    pub(crate) fn fixed_report() -> BenchReport {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        BenchReport {
            mode: Mode::Echo,
            target: "127.0.0.1:3333".into(),
            connections: 50,
            size_bytes: 64,
            pipeline: 1,
            rate_per_s: None,
            sends_in_window: None,
            threads: 1,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            messages: 2_000_000,
            bytes: 128_000_000,
            msgs_per_s: 200_000.0,
            mb_per_s: 12.8,
            latency_of: "round trip",
            latency_us: h.summary(),
            histogram: h,
            first_connect_error: None,
            connections_established: 50,
            connect_failures: 0,
            errors: 1,
            connection_resets: 0,
            verification_failures: 1,
            error_samples: vec!["connection 3: byte at stream offset 94 ...".into()],
            first_verification_failure: Some("connection 3: byte at stream offset 94 ...".into()),
            broken_connections: 0,
            broken: Vec::new(),
            server_pid: Some(42),
            server_cpu_us_per_msg: Some(4.83),
            server_cpu_pct: Some(96.6),
            server_rss_kib: Some(5120),
            server_processes: Some(1),
            server_note: None,
            server_rss_per_conn_kib: None,
            client_cpu_us_per_msg: 4.9,
            client_cpu_pct: 98.0,
            idle_connections: 0,
            idle_connections_established: 0,
            idle_connect_failures: 0,
            tls: false,
            handshakes: 0,
            resumed_handshakes: 0,
            handshakes_per_s: None,
            handshake_latency_us: None,
            server_cpu_us_per_handshake: None,
        }
    }

    #[test]
    fn tls_rows_say_handshakes_and_their_cost() {
        let mut r = fixed_report();
        r.mode = Mode::Connect;
        r.tls = true;
        r.handshakes = 20_000;
        r.resumed_handshakes = 19_000;
        r.handshakes_per_s = Some(2_000.0);
        r.handshake_latency_us = Some(r.histogram.summary());
        r.server_cpu_us_per_handshake = Some(120.5);
        let table = r.render_table();
        assert!(
            table.contains("TLS handshakes  20000 (19000 resumed), 2,000 /s"),
            "{table}"
        );
        assert!(
            table.contains("handshake µs    p50 500.2  p90 900.1"),
            "{table}"
        );
        assert!(
            table.contains("server CPU/hs   120.50 µs/handshake"),
            "{table}"
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["handshakes_per_s"], 2000.0);
        assert_eq!(json["server_cpu_us_per_handshake"], 120.5);
        assert!(json["handshake_latency_us"]["p99"].as_f64().is_some());
        // Without TLS the fields are there, as null.
        let json = serde_json::to_value(fixed_report()).expect("json");
        assert!(json["handshake_latency_us"].is_null());
        assert_eq!(json["tls"], false);
    }

    #[test]
    fn table_on_a_fixed_histogram() {
        let table = fixed_report().render_table();
        let expected = "\
workload     echo 127.0.0.1:3333 × 50 conns × 64 B, closed loop, pipeline 1
window       10.0 s after 1.0 s warm-up, 1 threads
throughput   200,000 msgs/s, 12.8 MB/s (2000000 msgs)
latency µs   round trip: p50 500.2  p90 900.1  p99 990.2  p99.9 999.4  max 1000.4
connections  50 established, 0 connect failures
errors       1 (1 verification)
             connection 3: byte at stream offset 94 ...
server       pid 42, RSS 5120 KiB
server CPU   4.83 µs/msg, 97% busy
client CPU   4.90 µs/msg, 98% busy
";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn broken_connections_are_named_by_local_address_up_to_five() {
        let mut r = fixed_report();
        r.broken_connections = 7;
        r.broken = (0..7)
            .map(|i| BrokenConnection {
                id: i,
                local: Some(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    40_000 + i as u16,
                ))),
                verified_bytes: 640,
                error: "127.0.0.1:3333 closed the connection".into(),
                code: 1,
            })
            .collect();
        let table = r.render_table();
        assert!(
            table.contains(
                "broken       7: 0 from 127.0.0.1:40000, 1 from 127.0.0.1:40001, \
                 2 from 127.0.0.1:40002, 3 from 127.0.0.1:40003, 4 from 127.0.0.1:40004, ...\n"
            ),
            "{table}"
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["broken"][6]["local"], "127.0.0.1:40006");
        assert_eq!(json["broken"][6]["verified_bytes"], 640);
        // None broken: no row.
        assert!(!fixed_report().render_table().contains("broken"));
    }

    #[test]
    fn table_without_server_and_with_rate() {
        let mut r = fixed_report();
        r.server_pid = None;
        r.rate_per_s = Some(20_000.0);
        r.mode = Mode::Connect;
        r.latency_of = "connect";
        let table = r.render_table();
        assert!(
            table.contains("connect 127.0.0.1:3333 × 50 conns × 64 B, open loop at 20,000 /s"),
            "{table}"
        );
        assert!(table.contains("200,000 conns/s"), "{table}");
        assert!(!table.contains("server "), "{table}");
    }

    #[test]
    fn a_forking_server_shows_its_descendants_and_a_note() {
        let mut r = fixed_report();
        r.server_processes = Some(9);
        r.server_note = Some("no server CPU counted in 9 process(es)".into());
        let table = r.render_table();
        assert!(
            table.contains("server       pid 42 and 8 descendants, "),
            "{table}"
        );
        assert!(
            table.contains("\n             no server CPU counted in 9 process(es)\n"),
            "{table}"
        );
    }

    /// The server and client CPU rows share one unit and precision: the
    /// same measurement prints the same text on both.
    #[test]
    fn server_and_client_cpu_rows_have_one_format() {
        for mode in [Mode::Echo, Mode::Connect, Mode::Idle, Mode::Throughput] {
            let mut r = fixed_report();
            r.mode = mode;
            r.server_cpu_us_per_msg = Some(12.345);
            r.client_cpu_us_per_msg = 12.345;
            r.server_cpu_pct = Some(55.4);
            r.client_cpu_pct = 55.4;
            let table = r.render_table();
            let row = |label: &str| {
                let line = table.lines().find(|l| l.starts_with(label));
                line.map(|l| l[label.len()..].trim().to_owned())
            };
            let server = row("server CPU").expect(&table);
            assert_eq!(Some(&server), row("client CPU").as_ref(), "{table}");
            let unit = mode.unit().trim_end_matches('s');
            assert_eq!(server, format!("12.35 µs/{unit}, 55% busy"), "{table}");
        }
    }

    #[test]
    fn a_server_sample_that_failed_is_said() {
        let mut r = fixed_report();
        r.server_cpu_us_per_msg = None;
        r.server_cpu_pct = None;
        r.server_rss_kib = None;
        r.server_note = Some("server CPU and RSS not measured: read /proc/42/stat".into());
        let table = r.render_table();
        assert!(
            table.contains(
                "server       pid 42\nserver CPU   not measured\n             server CPU and RSS not measured: read /proc/42/stat\n"
            ),
            "{table}"
        );
    }

    /// Idle mode sends one byte per connection whatever `--size` says, and
    /// the workload row says what it does instead of a message size.
    #[test]
    fn idle_workload_says_what_idle_does() {
        let mut r = fixed_report();
        r.mode = Mode::Idle;
        r.latency_of = "round trip";
        let table = r.render_table();
        let workload = table.lines().next().unwrap();
        assert_eq!(
            workload,
            "workload     idle 127.0.0.1:3333 × 50 conns, each echoes 1 B once, then is held silent",
            "{table}"
        );
        assert!(!table.contains("64 B"), "{table}");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }
}
