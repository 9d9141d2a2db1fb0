//! The server's counters as Prometheus text (`tcpkit serve --metrics`).
//!
//! The data path keeps updating the plain atomics in [`crate::metrics`];
//! nothing here runs per message. At each scrape a [`Collector`] takes one
//! [`Metrics::snapshot`] and encodes it, so a server without a scraper pays
//! nothing and one with a scraper pays only per scrape. One [`Registry`] per
//! server (from [`registry`]), no global state.
//!
//! The endpoint is a minimal HTTP/1.1 responder on its own task ([`Exporter`]):
//! one `GET /metrics` per connection, then close. It was chosen over `hyper`
//! to keep the dependency tree and build time small for a server that only
//! ever answers one path; requests are bounded (8 KiB head, 5 s deadline).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::metrics::{Close, Durations, Metrics, Rejection, Snapshot};

/// The `Content-Type` of the scrape answer (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest request head read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;

/// How long a scraper has to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A registry holding one collector that reads `metrics` at each scrape.
pub fn registry(metrics: Arc<Metrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector { metrics }));
    registry
}

/// The whole registry as Prometheus text.
pub fn encode(registry: &Registry) -> Result<String> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).map_err(|_| {
        Error::io(
            std::io::Error::other("a collector failed"),
            "encode the metrics as Prometheus text",
        )
    })?;
    Ok(text)
}

#[derive(Debug)]
struct SnapshotCollector {
    metrics: Arc<Metrics>,
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    // Gauges are signed in Prometheus; every value here fits.
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let s: Snapshot = self.metrics.snapshot();
        let e = &mut enc;
        {
            let g = ConstGauge::new(1i64);
            let mut family = e.encode_descriptor(
                "tcpkit_build_info",
                "tcpkit build; the value is always 1.",
                None,
                g.metric_type(),
            )?;
            g.encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        counter(
            e,
            "tcpkit_connections_accepted",
            "Connections accepted and handed to the service.",
            s.connections_accepted,
        )?;
        gauge(
            e,
            "tcpkit_connections_active",
            "Connections open right now.",
            s.connections_active,
        )?;
        labelled(
            e,
            "tcpkit_connections_closed",
            "Connections that have finished, by reason: peer_closed, done (the service \
             ended it, e.g. chat's /quit), idle_timeout, line_too_long, slow_consumer, \
             shutdown, rejected (refused at admission, see tcpkit_connections_rejected_total), \
             error (by kind in tcpkit_connection_errors_total).",
            "reason",
            Close::REASONS.iter().zip(s.closes.by_reason),
        )?;
        labelled(
            e,
            "tcpkit_connection_errors",
            "Connections closed by an error (tcpkit_connections_closed_total{reason=\"error\"}), \
             by kind.",
            "kind",
            Close::ERROR_KINDS.iter().zip(s.closes.errors_by_kind),
        )?;
        {
            let h = DurationHistogram(&s.durations);
            h.encode(e.encode_descriptor(
                "tcpkit_connection_duration_seconds",
                "How long connections lived, from the service taking them to their close \
                 (refused ones are not timed).",
                None,
                h.metric_type(),
            )?)?;
        }
        {
            let c = ConstCounter::new(0u64);
            let mut family = e.encode_descriptor(
                "tcpkit_connections_rejected",
                "Connections turned away before the service saw a byte, by reason: \
                 max_connections (never accepted), access_list, proxy_* (PROXY header), \
                 tls_* (TLS handshake).",
                None,
                c.metric_type(),
            )?;
            for why in Rejection::ALL {
                ConstCounter::new(s.rejected(why))
                    .encode(family.encode_family(&[("reason", why.as_str())])?)?;
            }
        }
        counter(
            e,
            "tcpkit_accept_errors",
            "accept(2) failures the accept loop survived.",
            s.accept_errors,
        )?;
        counter(
            e,
            "tcpkit_accept_backoffs",
            "Pauses of the accept loop after a failure that would repeat at once \
             (out of descriptors or buffers).",
            s.accept_backoffs,
        )?;
        counter(
            e,
            "tcpkit_lingering_closes",
            "Closes on purpose that read what the client still sent.",
            s.lingering_closes,
        )?;
        counter(
            e,
            "tcpkit_lingering_cut_off",
            "Lingering closes ended by their time or byte bound.",
            s.lingering_cut_off,
        )?;
        counter(
            e,
            "tcpkit_received_bytes",
            "Bytes read from clients, counted when a connection closes.",
            s.bytes_in,
        )?;
        counter(
            e,
            "tcpkit_sent_bytes",
            "Bytes written to clients, counted when a connection closes.",
            s.bytes_out,
        )?;
        gauge(
            e,
            "tcpkit_buffered_bytes",
            "Bytes held right now for peers that are not reading.",
            s.buffered_bytes,
        )?;
        gauge(
            e,
            "tcpkit_buffered_bytes_max",
            "The most bytes ever held for peers that are not reading.",
            s.buffered_bytes_max,
        )?;
        counter(
            e,
            "tcpkit_tls_handshakes",
            "TLS handshakes completed.",
            s.tls_handshakes,
        )?;
        gauge(
            e,
            "tcpkit_chat_rooms",
            "Chat rooms right now (a room exists while it has members).",
            s.chat_rooms,
        )?;
        gauge(
            e,
            "tcpkit_chat_members",
            "Chat clients in a room right now.",
            s.chat_members,
        )?;
        counter(
            e,
            "tcpkit_chat_slow_consumer_drops",
            "Chat clients disconnected for falling behind.",
            s.slow_consumers,
        )?;
        gauge(
            e,
            "tcpkit_chat_bus_up",
            "Chat bus (--bus): 1 while connected and subscribed, else 0.",
            s.chat_bus_up,
        )?;
        counter(
            e,
            "tcpkit_chat_bus_published",
            "Chat lines and notices published to the bus.",
            s.chat_bus_published,
        )?;
        counter(
            e,
            "tcpkit_chat_bus_received",
            "Chat lines and notices received from other instances over the bus.",
            s.chat_bus_received,
        )?;
        counter(
            e,
            "tcpkit_chat_bus_dropped",
            "Chat lines and notices not published (queue full, bus down or failing).",
            s.chat_bus_dropped,
        )?;
        counter(
            e,
            "tcpkit_chat_bus_stalls",
            "Chat bus requests that got no answer in time.",
            s.chat_bus_stalls,
        )?;
        counter(
            e,
            "tcpkit_chat_bus_reconnects",
            "Chat bus reconnections.",
            s.chat_bus_reconnects,
        )?;
        counter(
            e,
            "tcpkit_relay_upstream_connect_failures",
            "Relayed clients closed because their upstream could not be reached.",
            s.upstream_connect_failures,
        )?;
        Ok(())
    }
}

/// One counter family with one label.
fn labelled<'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a &'static str, u64)>,
) -> fmt::Result {
    let c = ConstCounter::new(0u64);
    let mut family = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (value, n) in values {
        ConstCounter::new(n).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// [`Durations`] as a Prometheus histogram (seconds).
struct DurationHistogram<'a>(&'a Durations);

impl EncodeMetric for DurationHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        let d = self.0;
        let bounds = Durations::BOUNDS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(d.buckets).collect();
        encoder.encode_histogram::<NoLabelSet>(d.sum_us as f64 / 1e6, d.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The HTTP endpoint: answers `GET /metrics` with the registry as text.
#[derive(Debug)]
pub struct Exporter {
    listener: TcpListener,
    registry: Arc<Registry>,
}

impl Exporter {
    /// Listens on `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr, registry: Registry) -> Result<Exporter> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(e, format_args!("bind metrics endpoint {addr}")))?;
        Ok(Exporter {
            listener,
            registry: Arc::new(registry),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io(e, "metrics endpoint address"))
    }

    /// Serves scrapes until the task is dropped or aborted. Each scrape runs
    /// on its own task; a failed accept is logged and retried after a pause.
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let registry = self.registry.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &registry)).await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, "metrics request: {e}"),
                            Err(_) => tracing::debug!(%peer, "metrics request timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics endpoint accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Reads one request head and writes one answer.
async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            )
            .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    // A query string is allowed and ignored (Prometheus may add one).
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if method != b"GET" && method != b"HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n",
        )
        .await;
    }
    if path != b"/metrics" {
        return respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "only /metrics is served\n",
        )
        .await;
    }
    let body = match encode(registry) {
        Ok(body) => body,
        Err(e) => {
            return respond(
                &mut stream,
                "500 Internal Server Error",
                "text/plain",
                &format!("{e}\n"),
            )
            .await;
        }
    };
    if method == b"HEAD" {
        // The length the GET would have, and no body.
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        return stream.shutdown().await;
    }
    respond(&mut stream, "200 OK", CONTENT_TYPE, &body).await
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::HandshakeFailure;

    #[test]
    fn scrape_reads_the_atomics() {
        let m = Arc::new(Metrics::new());
        let registry = registry(m.clone());
        m.connection_opened();
        m.connection_closed(5, 7);
        m.tls_handshake_failed(HandshakeFailure::Certificate);
        m.upstream_connect_failed();
        let text = encode(&registry).unwrap();
        assert!(
            text.contains("tcpkit_relay_upstream_connect_failures_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tcpkit_connections_accepted_total 1\n"),
            "{text}"
        );
        assert!(text.contains("tcpkit_received_bytes_total 5\n"), "{text}");
        assert!(text.contains("tcpkit_sent_bytes_total 7\n"), "{text}");
        assert!(
            text.contains("tcpkit_connections_rejected_total{reason=\"tls_certificate\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "tcpkit_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        // Read at scrape time: a later change shows in the next scrape.
        m.connection_opened();
        assert!(
            encode(&registry)
                .unwrap()
                .contains("tcpkit_connections_active 1\n")
        );
    }

    async fn ask(request: &[u8]) -> String {
        let exporter = Exporter::bind("127.0.0.1:0".parse().unwrap(), registry(Arc::default()))
            .await
            .unwrap();
        let at = exporter.local_addr().unwrap();
        let task = tokio::spawn(exporter.run());
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        task.abort();
        answer
    }

    #[tokio::test]
    async fn responder_answers_only_get_metrics_within_bounds() {
        let ok = ask(b"GET /metrics?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("tcpkit_connections_active 0\n"), "{ok}");
        let post = ask(b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let other = ask(b"GET /other HTTP/1.0\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        // Exactly the cap, so the server has read every byte when it
        // answers (unread bytes would turn its close into a reset).
        let huge = ask(&vec![b'a'; MAX_REQUEST]).await;
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        let head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        let (head, body) = head.split_once("\r\n\r\n").unwrap();
        assert!(body.is_empty(), "{body}");
        assert!(!head.contains("Content-Length: 0\r"), "{head}");
    }
}
