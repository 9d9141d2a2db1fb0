//! Exit codes scripts can rely on, and how errors are printed.

use std::io::Write;
use std::process::ExitCode;

use super::out::StdoutClosed;

use tcpkit::ErrorKind;

/// Exit statuses, documented in `--help` and README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Any failure not listed below.
    Failure = 1,
    /// Bad arguments or input (also clap's code for usage errors).
    Usage = 2,
    /// A name did not resolve.
    Resolve = 3,
    /// The peer refused the connection.
    Refused = 4,
    /// A connect, idle or overall timeout expired.
    Timeout = 5,
    /// An I/O error in the middle of a stream (reset, broken pipe, ...).
    Io = 6,
    /// The local endpoint could not be bound (in use, permission denied).
    Bind = 7,
    /// Bench: a byte came back wrong, missing or out of order.
    Verification = 8,
    /// TLS: the peer's certificate was refused (untrusted issuer, expired,
    /// wrong name, pin mismatch), or the peer refused ours.
    Certificate = 9,
    /// TLS: the handshake failed for another reason (no common version,
    /// cipher suite or ALPN protocol; the peer does not speak TLS).
    Tls = 10,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Each exit status and what it means, as `--help` lists them.
const MEANINGS: [(Exit, &str); 11] = [
    (Exit::Ok, "success"),
    (Exit::Failure, "other failure"),
    (
        Exit::Usage,
        "bad arguments or input (unparsable address, port, duration, ...)",
    ),
    (Exit::Resolve, "name resolution failed"),
    (Exit::Refused, "connection refused"),
    (Exit::Timeout, "timed out (connect, idle or overall)"),
    (
        Exit::Io,
        "I/O error mid-stream (connection reset, broken pipe, ...)",
    ),
    (
        Exit::Bind,
        "cannot bind the local endpoint (address in use, permission denied)",
    ),
    (Exit::Verification, "echoed data failed verification"),
    (
        Exit::Certificate,
        "TLS certificate refused (untrusted, expired, wrong name, pin mismatch)",
    ),
    (
        Exit::Tls,
        "TLS handshake failed (no common version, cipher or ALPN; not TLS)",
    ),
];

/// The `Exit codes:` block of a command's `--help`, listing `codes` only.
pub fn codes_help(codes: &[Exit]) -> String {
    let mut text = String::from("Exit codes:");
    for (exit, meaning) in MEANINGS.iter().filter(|(e, _)| codes.contains(e)) {
        text.push_str(&format!("\n  {:<2}  {meaning}", *exit as u8));
    }
    text
}

/// Every exit status (`tcpkit --help`, `tcpkit bench --help`).
pub fn all_codes_help() -> String {
    codes_help(&MEANINGS.map(|(e, _)| e))
}

/// The exit code for a library error kind.
pub fn for_kind(kind: ErrorKind) -> Exit {
    match kind {
        ErrorKind::InvalidAddress
        | ErrorKind::InvalidPort
        | ErrorKind::MissingPort
        | ErrorKind::InvalidConfig
        | ErrorKind::BadCertificateFile => Exit::Usage,
        ErrorKind::Resolve => Exit::Resolve,
        ErrorKind::ConnectionRefused => Exit::Refused,
        ErrorKind::TimedOut => Exit::Timeout,
        ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable | ErrorKind::PermissionDenied => {
            Exit::Bind
        }
        ErrorKind::Verification => Exit::Verification,
        ErrorKind::Certificate => Exit::Certificate,
        ErrorKind::Tls => Exit::Tls,
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::UnexpectedEof
        | ErrorKind::Unreachable
        | ErrorKind::LineTooLong
        | ErrorKind::FrameTooLarge
        | ErrorKind::Io => Exit::Io,
        _ => Exit::Failure,
    }
}

/// Prints `tcpkit: error [code N]: message` (and causes) to stderr and picks
/// the exit code from the first `tcpkit::Error` in the chain. `N` is that
/// error's code; for an error from elsewhere, the errno of an `io::Error` in
/// the chain, or else the exit status itself. A closed stdout
/// ([`StdoutClosed`]) is a quiet success.
/// A usage error found by clap (unknown flag, a value out of its range),
/// printed like every other error, with [`code::INVALID_CONFIG`] and exit 2;
/// `--help` and `--version` print as clap does.
///
/// [`code::INVALID_CONFIG`]: tcpkit::error::code::INVALID_CONFIG
pub fn usage(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    if matches!(
        err.kind(),
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Help goes to stdout; a closed stdout is a quiet exit 0.
        let _ = err.print();
        return if err.use_stderr() {
            Exit::Usage.into()
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = err.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let code = tcpkit::error::code::INVALID_CONFIG;
    let _ = write!(std::io::stderr(), "tcpkit: error [code {code}]: {text}");
    Exit::Usage.into()
}

pub fn report(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| e.is::<StdoutClosed>()) {
        return ExitCode::SUCCESS;
    }
    let lib = err.chain().find_map(|e| e.downcast_ref::<tcpkit::Error>());
    let io = err.chain().find_map(|e| e.downcast_ref::<std::io::Error>());
    let (code, exit) = match (lib, io) {
        (Some(e), _) => (e.code(), for_kind(e.kind())),
        (None, Some(e)) => (e.raw_os_error().unwrap_or(libc::EIO), Exit::Failure),
        (None, None) => (i32::from(Exit::Failure as u8), Exit::Failure),
    };
    // Even a closed stderr must not turn an error into a panic.
    let text = format!("tcpkit: error [code {code}]: {err:#}");
    let _ = if super::log::is_json() {
        writeln!(
            std::io::stderr(),
            "{}",
            super::log::json_line("ERROR", &text)
        )
    } else {
        writeln!(std::io::stderr(), "{text}")
    };
    exit.into()
}
