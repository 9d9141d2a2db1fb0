//! Where the CLI's logs go and in what shape: text for people (the
//! default), or one JSON object a line for log shippers (`serve
//! --log-format json`, tracing-subscriber's JSON output with each event's
//! fields at the top level). In JSON mode the few lines the CLI writes to
//! stderr itself (`metrics on ...`, the draining notice, the final error)
//! are JSON objects too, so every stderr line parses.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Globals;

/// The shape of log lines on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `message` and the
    /// event's fields (`peer`, `bytes_in`, ...).
    Json,
}

/// Set once by [`init`] when the format is JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// `RUST_LOG` wins; otherwise -q/-v pick the level. Logs go to stderr.
///
/// rustls' own log lines (through the `log` bridge) are about what a peer
/// sent (`Illegal SNI extension`, `Sending warning alert`), once per
/// connection and without the peer's endpoint: a hostile client could fill
/// the log with them. They are kept to errors up to `-v`, to warnings at
/// `-vv` (where every connection gets a line anyway); the server logs each
/// failed handshake itself, with the peer, once per address.
///
/// Events below the level cost one comparison with tracing's global
/// maximum level (a relaxed atomic load): the filter here has no span or
/// field directives, so tracing knows its maximum level up front. The
/// server's info line per connection close is free without `-v`.
pub fn init(globals: Globals, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match (globals.quiet, globals.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,rustls=error,tokio_rustls=error",
        (false, 1) => "info,rustls=error,tokio_rustls=error",
        (false, 2) => "debug,rustls=warn,tokio_rustls=warn",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .try_init()
        }
    };
}

/// Writes `text` to stderr as a line the user reads whatever the level
/// (not a log event: `-v` does not gate it, `-q` does at the caller). In
/// JSON mode, a JSON object shaped like a log event at `level`.
pub fn notice(level: &str, text: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    // Even a closed stderr must not turn a notice into a panic.
    let _ = if JSON.load(Ordering::Relaxed) {
        writeln!(err, "{}", json_line(level, &text.to_string()))
    } else {
        writeln!(err, "{text}")
    };
}

/// Whether stderr lines are JSON (`--log-format json`).
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// `{"timestamp":..,"level":..,"message":..}`, as tracing-subscriber
/// writes its events (RFC 3339 UTC timestamp with microseconds).
pub fn json_line(level: &str, message: &str) -> String {
    let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    // In tracing-subscriber's key order; strings escaped by serde_json.
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "{{\"timestamp\":{},\"level\":{},\"message\":{}}}",
        quoted(&timestamp),
        quoted(level),
        quoted(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_notice_is_one_parseable_line() {
        let line = json_line("ERROR", "tcpkit: error [code 98]: bind \"x\"\nsecond line");
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(
            v["message"],
            "tcpkit: error [code 98]: bind \"x\"\nsecond line"
        );
        let ts = v["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }
}
